//! Network portals (RFC 7143 §4.4.1): TCP listeners for the configured
//! addresses. IPv4 and IPv6 both work; port 0 binds a free port (the server
//! reports the real one).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Listen backlog: initiators reconnecting after a restart come in bursts.
const BACKLOG: u32 = 1024;

/// Bind a listening socket on `addr` with SO_REUSEADDR, so a restarted
/// target gets its port back while old connections sit in TIME_WAIT.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_nodelay(true)?;
    sock.bind(addr)?;
    sock.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_port_zero_v4_and_v6() {
        let l = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let a = l.local_addr().unwrap();
        assert_ne!(a.port(), 0);
        let c = tokio::net::TcpStream::connect(a).await.unwrap();
        let (_s, peer) = l.accept().await.unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        // IPv6 loopback may be unavailable in some containers; only check
        // that a failure is an error, not a panic.
        if let Ok(l6) = bind("[::1]:0".parse().unwrap()).await {
            assert!(l6.local_addr().unwrap().is_ipv6());
        }
    }
}
