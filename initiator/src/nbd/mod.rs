//! An NBD server that exports the LUNs of an iSCSI session (NBD protocol,
//! `doc/proto.md` of NetworkBlockDevice/nbd), on tokio.
//!
//! - [`wire`]: magic numbers, codes, request header and reply encoders.
//! - [`handshake`]: fixed newstyle option haggling (EXPORT_NAME, ABORT,
//!   LIST, INFO, GO, STRUCTURED_REPLY, LIST/SET_META_CONTEXT).
//! - [`exec`]: request validation, execution on a [`ScsiDevice`], and the
//!   one place where initiator errors become NBD error values.
//! - [`transmission`]: the request loop of one connection: many requests in
//!   flight, replies out of order through one writer.
//! - [`server`]: [`NbdServer`], the listener and the export registry.
//!
//! One [`NbdServer`] serves one session; each LUN is an export named
//! `lun<N>`. The empty export name (the NBD "default export") is the first
//! export added.
//!
//! Tagged views (the control channel, docs/control-channel.md): a client
//! that asks for `lun<N>@tag<T>` (T in 1..=7) gets the same LUN with every
//! READ and WRITE tagged T, whatever the session's own tags
//! (`--tag-writes`/`--tag-reads`); `lun<N>@tag0` is the LUN untagged. So one
//! mount can be tagged and another not. A view is registered when first
//! asked for (then NBD_OPT_LIST and the session's counters show it) and
//! ends with its LUN's export ([`server::tagged_name`]).
//!
//! NBD has no authentication: [`NbdServer::bind`] refuses a non-loopback
//! TCP address unless the caller opts in.
//!
//! Deliberately not done: TLS (NBD_OPT_STARTTLS is refused with
//! NBD_REP_ERR_POLICY), extended headers, NBD_CMD_CACHE, fast zero, and
//! resize; none is advertised, so no compliant client sends them.

pub(crate) mod exec;
pub(crate) mod handshake;
pub mod server;
pub(crate) mod transmission;
pub(crate) mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::device::ScsiDevice;

pub use server::{NbdExportStats, NbdServer};

/// The IANA port of NBD.
pub const DEFAULT_PORT: u16 = 10809;

/// Where an [`NbdServer`] listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Default for NbdListen {
    /// 127.0.0.1:10809, the NBD port on loopback.
    fn default() -> Self {
        NbdListen::Tcp(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            DEFAULT_PORT,
        ))
    }
}

impl NbdListen {
    /// Loopback TCP addresses and unix sockets are local to this host.
    pub fn is_loopback(&self) -> bool {
        match self {
            NbdListen::Tcp(a) => a.ip().is_loopback(),
            NbdListen::Unix(_) => true,
        }
    }
}

impl std::str::FromStr for NbdListen {
    type Err = String;

    /// `HOST:PORT` (IP address or `localhost`), `[V6]:PORT`, or `unix:PATH`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/run/iscsi-nbd.sock".into());
            }
            return Ok(NbdListen::Unix(PathBuf::from(p)));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(NbdListen::Tcp(a));
        }
        if let Some(port) = s.strip_prefix("localhost:") {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("bad port in NBD address {s:?}"))?;
            return Ok(NbdListen::Tcp(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            )));
        }
        Err(format!(
            "NBD address {s:?} is not HOST:PORT (an IP address, e.g. 127.0.0.1:10809 or \
             [::1]:10809) or unix:PATH"
        ))
    }
}

impl std::fmt::Display for NbdListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NbdListen::Tcp(a) => write!(f, "{a}"),
            NbdListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One LUN offered as an NBD export.
#[derive(Debug, Clone)]
pub struct NbdExport {
    /// Export name, e.g. `lun0`.
    pub name: String,
    /// Human-readable description (NBD_INFO_DESCRIPTION).
    pub description: String,
    pub device: ScsiDevice,
    /// Export read-only; also forced when the LUN reports write-protect.
    pub read_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_parse_and_display() {
        for s in [
            "127.0.0.1:10809",
            "[::1]:10809",
            "0.0.0.0:1",
            "unix:/tmp/x.sock",
        ] {
            let l: NbdListen = s.parse().unwrap();
            assert_eq!(l.to_string(), s);
        }
        let l: NbdListen = "localhost:10".parse().unwrap();
        assert_eq!(l.to_string(), "127.0.0.1:10");
        assert!(l.is_loopback());
        assert!("[::1]:1".parse::<NbdListen>().unwrap().is_loopback());
        assert!("unix:/x".parse::<NbdListen>().unwrap().is_loopback());
        assert!(!"192.0.2.1:10809"
            .parse::<NbdListen>()
            .unwrap()
            .is_loopback());
        assert!("unix:".parse::<NbdListen>().is_err());
        assert!("nohost".parse::<NbdListen>().is_err());
        assert!("example.com:10809".parse::<NbdListen>().is_err());
        assert_eq!(NbdListen::default().to_string(), "127.0.0.1:10809");
    }
}
