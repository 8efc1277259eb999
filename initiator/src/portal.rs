//! Portals: `HOST[:PORT]` addresses of a target (RFC 7143 §4.2.1, §13.9
//! TargetAddress syntax `domainname[:port][,portal-group-tag]`), and TCP
//! connection establishment with a bounded timeout.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::Error;

/// The well-known iSCSI port (RFC 7143 §13.9 / IANA).
pub const DEFAULT_PORT: u16 = 3260;

/// A target portal, as the user typed it or as SendTargets returned it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Portal {
    /// Host name, IPv4 literal or IPv6 literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Portal {
    /// Parse `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 literal.
    /// A trailing `,TPGT` (as in a TargetAddress value) is ignored.
    pub fn parse(s: &str) -> Result<Portal, Error> {
        let s = s.trim();
        let s = match s.rfind(',') {
            // "host:port,tpgt" — drop the portal group tag.
            Some(i) if s[i + 1..].chars().all(|c| c.is_ascii_digit()) => &s[..i],
            _ => s,
        };
        let bad = || Error::Usage(format!("invalid portal {s:?}: expected HOST[:PORT]"));
        if s.is_empty() {
            return Err(bad());
        }
        if let Some(rest) = s.strip_prefix('[') {
            let end = rest.find(']').ok_or_else(bad)?;
            let host = &rest[..end];
            let after = &rest[end + 1..];
            let port = if after.is_empty() {
                DEFAULT_PORT
            } else {
                after
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(bad)?
            };
            if host.is_empty() {
                return Err(bad());
            }
            return Ok(Portal {
                host: host.to_string(),
                port,
            });
        }
        match s.matches(':').count() {
            0 => Ok(Portal {
                host: s.to_string(),
                port: DEFAULT_PORT,
            }),
            1 => {
                let (h, p) = s.split_once(':').ok_or_else(bad)?;
                let port = p.parse().map_err(|_| bad())?;
                if h.is_empty() {
                    return Err(bad());
                }
                Ok(Portal {
                    host: h.to_string(),
                    port,
                })
            }
            // A bare IPv6 literal without brackets or port.
            _ => Ok(Portal {
                host: s.to_string(),
                port: DEFAULT_PORT,
            }),
        }
    }

    /// Resolve and connect, trying every address, each attempt bounded by
    /// `timeout` (so an unresponsive host cannot hang the caller).
    pub async fn connect(&self, timeout: Duration) -> Result<TcpStream, Error> {
        self.connect_nth(timeout, 0).await
    }

    /// [`Portal::connect`] starting at the `nth` address (modulo how many
    /// the name resolves to), then the others in order. Connections of one
    /// session pass their CID, so a name that resolves to several portals
    /// (e.g. one per network) gets one connection per portal (MC/S across
    /// networks), each falling back to the other portals when its own is
    /// unreachable.
    pub async fn connect_nth(&self, timeout: Duration, nth: usize) -> Result<TcpStream, Error> {
        let target = (self.host.as_str(), self.port);
        let addrs: Vec<SocketAddr> =
            match tokio::time::timeout(timeout, tokio::net::lookup_host(target)).await {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(e)) => {
                    return Err(Error::Unreachable(format!(
                        "cannot resolve {}: {e}",
                        self.host
                    )));
                }
                Err(_) => {
                    return Err(Error::Unreachable(format!(
                        "timed out resolving {}",
                        self.host
                    )))
                }
            };
        let mut last = format!("no address found for {}", self.host);
        let start = if addrs.is_empty() {
            0
        } else {
            nth % addrs.len()
        };
        let ordered = addrs[start..].iter().chain(&addrs[..start]).copied();
        for addr in ordered {
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
                Err(_) => last = format!("timed out connecting to {addr} after {timeout:?}"),
            }
        }
        Err(Error::Unreachable(last))
    }
}

impl fmt::Display for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for Portal {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Portal::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert_eq!(
            Portal::parse("10.0.0.1").unwrap(),
            Portal {
                host: "10.0.0.1".into(),
                port: 3260
            }
        );
        assert_eq!(
            Portal::parse("host:3261").unwrap(),
            Portal {
                host: "host".into(),
                port: 3261
            }
        );
        assert_eq!(
            Portal::parse("[::1]:900").unwrap(),
            Portal {
                host: "::1".into(),
                port: 900
            }
        );
        assert_eq!(Portal::parse("[fe80::1]").unwrap().port, 3260);
        assert_eq!(Portal::parse("fe80::1").unwrap().host, "fe80::1");
        assert_eq!(
            Portal::parse("1.2.3.4:3260,1").unwrap(),
            Portal {
                host: "1.2.3.4".into(),
                port: 3260
            }
        );
        assert_eq!(Portal::parse("[::1]:3260,12").unwrap().host, "::1");
    }

    #[test]
    fn parse_rejects() {
        for bad in [
            "", "host:", "host:x", ":3260", "[::1", "[]:1", "[::1]x", "h:99999",
        ] {
            assert!(Portal::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["1.2.3.4:3260", "[::1]:3261", "example.com:1"] {
            assert_eq!(Portal::parse(s).unwrap().to_string(), s);
        }
    }

    #[tokio::test]
    async fn refused_is_unreachable() {
        // Bind then drop to get a port that is (very likely) closed.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let p = Portal {
            host: "127.0.0.1".into(),
            port,
        };
        let e = p.connect(Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(e, Error::Unreachable(_)), "{e:?}");
    }

    #[tokio::test]
    async fn connect_nth_wraps_around_the_addresses() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let p = Portal::parse(&format!("127.0.0.1:{port}")).unwrap();
        // One address: every CID lands on it.
        for nth in [0, 1, 7] {
            let s = p.connect_nth(Duration::from_secs(2), nth).await.unwrap();
            assert_eq!(s.peer_addr().unwrap().port(), port);
        }
    }
}
