//! An NBD client for tests and the compose demo's check, built on the
//! `nbd` crate (0.3): independent code, not ours, that talks to our NBD
//! server (NBD protocol spec, "Fixed newstyle negotiation" with
//! NBD_OPT_EXPORT_NAME, then simple replies; one request at a time per
//! connection, so parallelism comes from several connections).
//!
//! [`NbdIo`] is a [`BlockIo`] for the scenario workload; every request is
//! bounded by the socket timeouts given to [`NbdIo::connect`].

use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use nbd::client::{handshake, NbdClient, NbdExt};

use crate::scenarios::workload::BlockIo;

/// A TCP stream with buffered writes: the crate writes a request field by
/// field and flushes once per request.
struct Stream {
    r: BufReader<TcpStream>,
    w: BufWriter<TcpStream>,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.r.read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// What the server said about the export during the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportInfo {
    pub size: u64,
    pub read_only: bool,
    pub send_flush: bool,
    pub send_trim: bool,
}

/// One NBD connection to one export.
pub struct NbdIo {
    client: NbdClient<Stream>,
    info: ExportInfo,
}

impl NbdIo {
    /// Connect to `addr` (anything `ToSocketAddrs` takes, e.g. a compose
    /// service name with its port) and select `export`; `timeout` bounds
    /// the connect and every later request.
    pub fn connect(addr: &str, export: &str, timeout: Duration) -> io::Result<NbdIo> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => return Self::over(s, export, timeout),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// [`NbdIo::connect`], retried until `patience` is over (for a server
    /// that is still starting, as in the compose demo).
    pub fn connect_retry(
        addr: &str,
        export: &str,
        timeout: Duration,
        patience: Duration,
    ) -> io::Result<NbdIo> {
        let until = Instant::now() + patience;
        loop {
            match Self::connect(addr, export, timeout) {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    fn over(s: TcpStream, export: &str, timeout: Duration) -> io::Result<NbdIo> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let mut stream = Stream {
            r: BufReader::with_capacity(256 << 10, s.try_clone()?),
            w: BufWriter::with_capacity(256 << 10, s),
        };
        let e = handshake(&mut stream, export.as_bytes())?;
        let info = ExportInfo {
            size: e.size,
            read_only: e.readonly,
            send_flush: e.send_flush,
            send_trim: e.send_trim,
        };
        Ok(NbdIo {
            client: NbdClient::new(stream, &e),
            info,
        })
    }

    pub fn info(&self) -> ExportInfo {
        self.info
    }
}

impl BlockIo for NbdIo {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.client.seek(SeekFrom::Start(offset))?;
        self.client.read_exact(buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.client.seek(SeekFrom::Start(offset))?;
        self.client.write_all(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.info.send_flush {
            self.client.flush()
        } else {
            Ok(())
        }
    }

    fn trim(&mut self, offset: u64, len: u64) -> io::Result<bool> {
        if !self.info.send_trim {
            return Ok(false);
        }
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.client.seek(SeekFrom::Start(offset))?;
        self.client.trim(len)?;
        Ok(true)
    }
}
