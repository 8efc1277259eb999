//! The fixed newstyle handshake and option haggling (NBD spec § Handshake,
//! § Option types, and the INFO, STRUCTURED_REPLY and BLOCK_STATUS
//! extensions, now part of the spec).
//!
//! Every option gets an answer; unknown options get NBD_REP_ERR_UNSUP and
//! haggling goes on. Option data is bounded before it is read, and a
//! connection may send a bounded number of options.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::exec::ConnMode;
use super::server::{ExportEntry, Registry};
use super::wire::*;

/// Option data larger than this ends the connection (names are at most
/// 4096 bytes, so no valid option comes close).
const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Options one connection may send before it is considered abusive.
const MAX_OPTIONS: usize = 1024;
/// Metadata context queries in one option.
const MAX_QUERIES: u32 = 128;
/// The context id this server gives `base:allocation`.
pub(crate) const BASE_ALLOCATION_ID: u32 = 1;

/// Haggle until the client picks an export (`Some`) or leaves (`None`).
pub(crate) async fn negotiate<R, W>(
    rd: &mut R,
    wr: &mut W,
    reg: &Registry,
) -> io::Result<Option<(Arc<ExportEntry>, ConnMode)>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    wr.write_all(&greeting()).await?;
    wr.flush().await?;
    let client_flags = rd.read_u32().await?;
    // "the server MUST drop the TCP connection if the client sets an
    // unknown flag, or a flag that does not match something advertised".
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        tracing::debug!(client_flags, "NBD client sent unknown flags; closing");
        return Ok(None);
    }
    let mut h = Haggle {
        no_zeroes: client_flags & FLAG_C_NO_ZEROES != 0,
        structured: false,
        meta_export: None,
    };
    for _ in 0..MAX_OPTIONS {
        if rd.read_u64().await? != IHAVEOPT {
            tracing::debug!("NBD client sent a bad option magic; closing");
            return Ok(None);
        }
        let option = rd.read_u32().await?;
        let len = rd.read_u32().await?;
        if len > MAX_OPTION_LEN {
            tracing::debug!(option, len, "NBD option data too long; closing");
            return Ok(None);
        }
        let mut data = vec![0u8; len as usize];
        rd.read_exact(&mut data).await?;
        match h.option(option, &data, reg, wr).await? {
            Step::More => wr.flush().await?,
            Step::Close => {
                wr.flush().await?;
                return Ok(None);
            }
            Step::Go(e) => {
                wr.flush().await?;
                let meta_context = match &h.meta_export {
                    Some(n) if *n == e.export.name => Some(BASE_ALLOCATION_ID),
                    _ => None,
                };
                let mode = ConnMode {
                    structured: h.structured,
                    meta_context,
                };
                return Ok(Some((e, mode)));
            }
        }
    }
    tracing::debug!("NBD client sent too many options; closing");
    Ok(None)
}

enum Step {
    More,
    Close,
    Go(Arc<ExportEntry>),
}

/// Option haggling state of one connection.
struct Haggle {
    no_zeroes: bool,
    structured: bool,
    /// The export for which `base:allocation` was selected.
    meta_export: Option<String>,
}

async fn reply<W: AsyncWrite + Unpin>(
    w: &mut W,
    opt: u32,
    rep: u32,
    data: &[u8],
) -> io::Result<()> {
    w.write_all(&option_reply(opt, rep, data)).await
}

impl Haggle {
    async fn option<W: AsyncWrite + Unpin>(
        &mut self,
        option: u32,
        data: &[u8],
        reg: &Registry,
        w: &mut W,
    ) -> io::Result<Step> {
        match option {
            OPT_EXPORT_NAME => {
                // "If the chosen export does not exist ... the server MUST
                // terminate the session."
                let Some(e) = std::str::from_utf8(data).ok().and_then(|n| reg.lookup(n)) else {
                    tracing::debug!("NBD_OPT_EXPORT_NAME for an unknown export; closing");
                    return Ok(Step::Close);
                };
                let g = e.geometry;
                w.write_all(&export_name_reply(
                    g.size,
                    g.flags(self.structured),
                    self.no_zeroes,
                ))
                .await?;
                Ok(Step::Go(e))
            }
            OPT_ABORT => {
                // "The server MUST reply with NBD_REP_ACK."
                reply(w, option, REP_ACK, &[]).await?;
                Ok(Step::Close)
            }
            OPT_LIST => {
                if !data.is_empty() {
                    reply(w, option, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data").await?;
                    return Ok(Step::More);
                }
                for e in reg.list() {
                    let name = e.export.name.as_bytes();
                    let mut d = Vec::with_capacity(4 + name.len());
                    d.extend_from_slice(&(name.len() as u32).to_be_bytes());
                    d.extend_from_slice(name);
                    reply(w, option, REP_SERVER, &d).await?;
                }
                reply(w, option, REP_ACK, &[]).await?;
                Ok(Step::More)
            }
            OPT_STARTTLS => {
                let msg = b"TLS is not supported: listen on loopback or a unix socket";
                reply(w, option, REP_ERR_POLICY, msg).await?;
                Ok(Step::More)
            }
            OPT_INFO | OPT_GO => self.info_or_go(option, data, reg, w).await,
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() || self.structured {
                    let msg = b"NBD_OPT_STRUCTURED_REPLY takes no data and is sent once";
                    reply(w, option, REP_ERR_INVALID, msg).await?;
                } else {
                    self.structured = true;
                    reply(w, option, REP_ACK, &[]).await?;
                }
                Ok(Step::More)
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                self.meta_context(option, data, reg, w).await?;
                Ok(Step::More)
            }
            _ => {
                // Unknown option: NBD_REP_ERR_UNSUP, and haggling goes on.
                reply(w, option, REP_ERR_UNSUP, b"option not supported").await?;
                Ok(Step::More)
            }
        }
    }

    /// NBD_OPT_INFO / NBD_OPT_GO: name, then a list of NBD_INFO requests.
    async fn info_or_go<W: AsyncWrite + Unpin>(
        &mut self,
        option: u32,
        data: &[u8],
        reg: &Registry,
        w: &mut W,
    ) -> io::Result<Step> {
        let mut r = Reader(data);
        let parsed = (|| {
            let n = r.u32()?;
            let name = r.string(n)?;
            let count = r.u16()?;
            let infos = (0..count).map(|_| r.u16()).collect::<Option<Vec<u16>>>()?;
            r.is_empty().then_some((name, infos))
        })();
        let Some((name, infos)) = parsed else {
            reply(
                w,
                option,
                REP_ERR_INVALID,
                b"malformed NBD_OPT_INFO/GO data",
            )
            .await?;
            return Ok(Step::More);
        };
        let Some(e) = reg.lookup(name) else {
            let msg = format!(
                "no export named {name:?}; exports: {}",
                reg.names().join(", ")
            );
            reply(w, option, REP_ERR_UNKNOWN, msg.as_bytes()).await?;
            return Ok(Step::More);
        };
        let g = e.geometry;
        // The INFO extension: the server MUST send NBD_INFO_EXPORT before
        // a successful NBD_REP_ACK; other information when asked, and the
        // block sizes always (this server enforces them).
        reply(
            w,
            option,
            REP_INFO,
            &info_export(g.size, g.flags(self.structured)),
        )
        .await?;
        if infos.contains(&INFO_NAME) {
            reply(w, option, REP_INFO, &info_string(INFO_NAME, &e.export.name)).await?;
        }
        if infos.contains(&INFO_DESCRIPTION) {
            let d = truncate_utf8(&e.export.description, 4096);
            reply(w, option, REP_INFO, &info_string(INFO_DESCRIPTION, d)).await?;
        }
        let bs = info_block_size(g.min_block, g.preferred_block, g.max_payload);
        reply(w, option, REP_INFO, &bs).await?;
        reply(w, option, REP_ACK, &[]).await?;
        Ok(if option == OPT_GO {
            Step::Go(e)
        } else {
            Step::More
        })
    }

    /// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: export name,
    /// then queries. Only `base:allocation` exists.
    async fn meta_context<W: AsyncWrite + Unpin>(
        &mut self,
        option: u32,
        data: &[u8],
        reg: &Registry,
        w: &mut W,
    ) -> io::Result<()> {
        if !self.structured {
            // "This option MUST NOT be requested unless structured replies
            // have been negotiated first ... SHOULD send NBD_REP_ERR_INVALID."
            let msg = b"negotiate NBD_OPT_STRUCTURED_REPLY first";
            return reply(w, option, REP_ERR_INVALID, msg).await;
        }
        let mut r = Reader(data);
        let parsed = (|| {
            let n = r.u32()?;
            let name = r.string(n)?;
            let count = r.u32().filter(|&c| c <= MAX_QUERIES)?;
            let mut queries = Vec::new();
            for _ in 0..count {
                let l = r.u32()?;
                queries.push(r.string(l)?);
            }
            r.is_empty().then_some((name, queries))
        })();
        let Some((name, queries)) = parsed else {
            return reply(w, option, REP_ERR_INVALID, b"malformed meta context data").await;
        };
        let Some(e) = reg.lookup(name) else {
            let msg = format!("no export named {name:?}");
            return reply(w, option, REP_ERR_UNKNOWN, msg.as_bytes()).await;
        };
        let list = option == OPT_LIST_META_CONTEXT;
        // LIST with no query lists everything; "base:" selects the whole
        // namespace when listing. SET with no query selects nothing.
        let selected = if queries.is_empty() {
            list
        } else {
            queries
                .iter()
                .any(|q| *q == BASE_ALLOCATION || (list && *q == "base:"))
        };
        if selected {
            // The id in LIST replies "SHOULD be set to zero".
            let id = if list { 0 } else { BASE_ALLOCATION_ID };
            let mut d = id.to_be_bytes().to_vec();
            d.extend_from_slice(BASE_ALLOCATION.as_bytes());
            reply(w, option, REP_META_CONTEXT, &d).await?;
        }
        if !list {
            self.meta_export = selected.then(|| e.export.name.clone());
        }
        reply(w, option, REP_ACK, &[]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    async fn option(c: &mut DuplexStream, opt: u32, data: &[u8]) {
        c.write_u64(IHAVEOPT).await.unwrap();
        c.write_u32(opt).await.unwrap();
        c.write_u32(data.len() as u32).await.unwrap();
        c.write_all(data).await.unwrap();
    }

    async fn reply(c: &mut DuplexStream) -> (u32, u32, Vec<u8>) {
        assert_eq!(c.read_u64().await.unwrap(), OPT_REPLY_MAGIC);
        let (opt, kind, len) = (
            c.read_u32().await.unwrap(),
            c.read_u32().await.unwrap(),
            c.read_u32().await.unwrap(),
        );
        let mut d = vec![0; len as usize];
        c.read_exact(&mut d).await.unwrap();
        (opt, kind, d)
    }

    /// Option haggling with an empty registry (no LUN needed).
    #[tokio::test]
    async fn options_answered_and_haggling_goes_on() {
        let (mut client, server) = duplex(1 << 16);
        let task = tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(server);
            negotiate(&mut rd, &mut wr, &Registry::default()).await
        });
        let mut g = [0u8; 18];
        client.read_exact(&mut g).await.unwrap();
        assert_eq!(g, greeting());
        client
            .write_u32(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
            .await
            .unwrap();
        option(&mut client, 42, b"junk").await;
        let (opt, kind, _) = reply(&mut client).await;
        assert_eq!((opt, kind), (42, REP_ERR_UNSUP));
        option(&mut client, OPT_LIST, &[]).await;
        assert_eq!(reply(&mut client).await.1, REP_ACK, "no exports");
        option(&mut client, OPT_LIST, b"x").await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_INVALID);
        option(&mut client, OPT_STARTTLS, &[]).await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_POLICY);
        // Meta contexts need structured replies first.
        option(
            &mut client,
            OPT_LIST_META_CONTEXT,
            &[0, 0, 0, 0, 0, 0, 0, 0],
        )
        .await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_INVALID);
        option(&mut client, OPT_STRUCTURED_REPLY, &[]).await;
        assert_eq!(reply(&mut client).await.1, REP_ACK);
        option(&mut client, OPT_STRUCTURED_REPLY, &[]).await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_INVALID, "only once");
        // Unknown export, and malformed GO data.
        let go = [0, 0, 0, 4, b'l', b'u', b'n', b'9', 0, 0];
        option(&mut client, OPT_GO, &go).await;
        let (_, kind, msg) = reply(&mut client).await;
        assert_eq!(kind, REP_ERR_UNKNOWN);
        assert!(String::from_utf8_lossy(&msg).contains("lun9"));
        option(&mut client, OPT_INFO, &[0, 0, 0, 200, b'x']).await;
        assert_eq!(reply(&mut client).await.1, REP_ERR_INVALID);
        option(
            &mut client,
            OPT_SET_META_CONTEXT,
            &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
        )
        .await;
        assert_eq!(
            reply(&mut client).await.1,
            REP_ERR_INVALID,
            "query count bounded"
        );
        option(&mut client, OPT_ABORT, &[]).await;
        assert_eq!(reply(&mut client).await.1, REP_ACK);
        assert!(task.await.unwrap().unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_option_and_bad_flags_close() {
        for (flags, opt_len) in [(FLAG_C_FIXED_NEWSTYLE, MAX_OPTION_LEN + 1), (0x80, 0)] {
            let (mut client, server) = duplex(1 << 16);
            let task = tokio::spawn(async move {
                let (mut rd, mut wr) = tokio::io::split(server);
                negotiate(&mut rd, &mut wr, &Registry::default()).await
            });
            let mut g = [0u8; 18];
            client.read_exact(&mut g).await.unwrap();
            client.write_u32(flags).await.unwrap();
            client.write_u64(IHAVEOPT).await.unwrap();
            client.write_u32(OPT_LIST).await.unwrap();
            client.write_u32(opt_len).await.unwrap();
            assert!(task.await.unwrap().unwrap().is_none());
        }
    }
}
