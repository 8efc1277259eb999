//! The transmission phase of one connection (NBD spec § Transmission),
//! driven by one poll loop ([`Conn::poll_drive`]): it parses every request
//! a read brought, starts each as a future of its own (many in flight,
//! bounded by a count and a byte budget), queues replies as they complete
//! (out of order) and sends every reply ready at once in one vectored
//! write. No task, channel or semaphore per request: one allocation (the
//! request's future) and, at queue depth, a fraction of a syscall each.
//!
//! A WRITE whose payload exceeds the advertised maximum cannot be skipped
//! safely, so the connection is closed ("Either side MAY initiate a hard
//! disconnect if it detects a violation by the other party of a mandatory
//! condition"); every other bad request gets an error reply and the
//! connection goes on. A bad request magic ends the connection: the stream
//! cannot be re-synchronised.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use proto::codec::WriteQueue;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::exec::{self, ConnMode, Op, Outcome, MAX_PAYLOAD};
use super::server::ExportEntry;
use super::wire::*;

/// Requests in flight per connection (a whole session's queue depth fits),
/// replies not yet sent included.
const MAX_IN_FLIGHT: usize = 128;
/// Payload bytes in flight per connection (requests executing plus replies
/// not yet sent), in units of `UNIT` bytes.
const UNIT: u32 = 64 * 1024;
const BUDGET_UNITS: u32 = (128 << 20) / UNIT;
/// The least a read from the client asks for.
const READ_CHUNK: usize = 64 * 1024;
/// Rounds of one poll before it yields to other tasks.
const ROUNDS: usize = 32;
/// After the client leaves or the export ends, in-flight requests get this
/// long to finish (a session in recovery may hold them) before they are
/// abandoned.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(150);

/// Serve requests until the client disconnects, breaks the protocol, or
/// the export is removed / the server shuts down (in-flight requests are
/// answered first). `early` holds bytes the handshake read past its end.
pub(crate) async fn serve<R, W>(rd: R, early: &[u8], wr: W, e: Arc<ExportEntry>, mode: ConnMode)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK.max(early.len()));
    inbuf.extend_from_slice(early);
    let mut conn = Conn {
        rd,
        wr,
        cancel: Box::pin(e.cancel.clone().cancelled_owned()),
        e,
        mode,
        inbuf,
        inflight: FuturesUnordered::new(),
        start: run_owned,
        units: 0,
        out: WriteQueue::new(),
        reading: true,
        writing: true,
        drain: None,
    };
    std::future::poll_fn(|cx| conn.poll_drive(cx)).await;
    if conn.writing {
        let _ = conn.wr.shutdown().await;
    }
}

/// One connection's state; `start` makes a request's future `F`.
struct Conn<R, W, F> {
    rd: R,
    wr: W,
    e: Arc<ExportEntry>,
    mode: ConnMode,
    cancel: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Bytes read from the client and not parsed yet.
    inbuf: BytesMut,
    inflight: FuturesUnordered<F>,
    start: Start<F>,
    /// Budget units held by `inflight`.
    units: u32,
    /// Replies waiting for the socket.
    out: WriteQueue,
    /// False once no more requests are taken (EOF, DISC, a protocol
    /// violation, cancellation, a failed write).
    reading: bool,
    /// False once a write to the client failed: replies are dropped.
    writing: bool,
    /// Started when reading stops with requests or replies pending.
    drain: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// What the parser did with the bytes at hand.
enum Parsed {
    Started,
    /// This many more bytes are needed before the next request is whole.
    Need(usize),
    /// The connection must end (DISC, bad magic, oversized WRITE).
    Stop,
}

type Start<F> = fn(Arc<ExportEntry>, Request, ConnMode, Result<Op, exec::Refusal>, u32) -> F;

impl<R, W, F> Conn<R, W, F>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: Future<Output = (Frame, u32)>,
{
    /// Make progress on every front until nothing moves (Pending, with
    /// every waker registered) or the connection is done (Ready).
    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..ROUNDS {
            if self.reading && self.cancel.as_mut().poll(cx).is_ready() {
                self.reading = false;
            }
            let mut busy = self.poll_completions(cx);
            busy |= self.poll_write(cx);
            if self.reading {
                busy |= self.poll_requests(cx);
            }
            if !self.reading {
                if self.inflight.is_empty() && (self.out.is_empty() || !self.writing) {
                    return Poll::Ready(());
                }
                if self.poll_drain_timeout(cx) {
                    return Poll::Ready(());
                }
            }
            if !busy {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Queue the replies of every request that completed.
    fn poll_completions(&mut self, cx: &mut Context<'_>) -> bool {
        let mut busy = false;
        while let Poll::Ready(Some((frame, units))) = self.inflight.poll_next_unpin(cx) {
            self.units -= units;
            if self.writing {
                self.out.push_bytes(frame.head.freeze());
                if let Some(d) = frame.data {
                    self.out.push_bytes(d);
                }
            }
            busy = true;
        }
        busy
    }

    /// Send queued replies until the socket is full or nothing is left.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        let mut busy = false;
        while self.writing && !self.out.is_empty() {
            match self.out.poll_write(&mut self.wr, cx) {
                Poll::Ready(Ok(_)) => busy = true,
                Poll::Ready(Err(err)) => {
                    tracing::debug!(export = %self.e.export.name, error = %err,
                        "NBD client stopped taking replies; closing");
                    (self.writing, self.reading) = (false, false);
                    self.out = WriteQueue::new();
                    return true;
                }
                Poll::Pending => break,
            }
        }
        if busy && self.out.is_empty() {
            let _ = Pin::new(&mut self.wr).poll_flush(cx);
        }
        busy
    }

    /// Whether another request may start: the count and the byte budget
    /// cover replies not yet sent, so a client that stops reading replies
    /// stops being read.
    fn has_room(&self) -> bool {
        self.inflight.len() + self.out.parts() < MAX_IN_FLIGHT
            && (self.units as usize + self.out.len() / UNIT as usize) < BUDGET_UNITS as usize
    }

    /// Start every whole request at hand, reading more while there is room.
    fn poll_requests(&mut self, cx: &mut Context<'_>) -> bool {
        let mut busy = false;
        while self.has_room() {
            match self.parse_one() {
                Parsed::Started => busy = true,
                Parsed::Stop => {
                    self.reading = false;
                    return true;
                }
                Parsed::Need(n) => {
                    self.inbuf.reserve(n.max(READ_CHUNK));
                    match tokio_util::io::poll_read_buf(Pin::new(&mut self.rd), cx, &mut self.inbuf)
                    {
                        Poll::Ready(Ok(n)) if n > 0 => busy = true,
                        Poll::Ready(_) => {
                            self.reading = false;
                            return true;
                        }
                        Poll::Pending => return busy,
                    }
                }
            }
        }
        busy
    }

    /// Parse and start the request at the front of `inbuf`, if it is whole
    /// (a WRITE with its payload).
    fn parse_one(&mut self) -> Parsed {
        let Some(hdr) = self.inbuf.get(..REQUEST_LEN) else {
            return Parsed::Need(REQUEST_LEN - self.inbuf.len());
        };
        let hdr: &[u8; REQUEST_LEN] = hdr.try_into().expect("REQUEST_LEN bytes");
        let Some(req) = Request::parse(hdr) else {
            tracing::debug!(export = %self.e.export.name, "bad NBD request magic; closing");
            return Parsed::Stop;
        };
        if req.kind == CMD_DISC {
            // "The server MUST handle all outstanding requests ... and close
            // the TCP session."
            return Parsed::Stop;
        }
        let data = if req.kind == CMD_WRITE {
            if req.length > MAX_PAYLOAD {
                tracing::warn!(export = %self.e.export.name, length = req.length,
                    "NBD WRITE larger than the advertised maximum; closing the connection");
                return Parsed::Stop;
            }
            let whole = REQUEST_LEN + req.length as usize;
            if self.inbuf.len() < whole {
                return Parsed::Need(whole - self.inbuf.len());
            }
            self.inbuf.advance(REQUEST_LEN);
            Some(self.inbuf.split_to(req.length as usize).freeze())
        } else {
            self.inbuf.advance(REQUEST_LEN);
            None
        };
        let units = match req.kind {
            CMD_READ | CMD_WRITE => req.length.min(MAX_PAYLOAD).div_ceil(UNIT).max(1),
            _ => 1,
        };
        let op = exec::validate(&req, &self.e.geometry, &self.mode, data);
        self.units += units;
        let fut = (self.start)(self.e.clone(), req, self.mode, op, units);
        self.inflight.push(fut);
        Parsed::Started
    }

    /// True when what is still pending after reading stopped (requests in
    /// flight, replies the client does not take) has had its time: it is
    /// abandoned (dropped).
    fn poll_drain_timeout(&mut self, cx: &mut Context<'_>) -> bool {
        let sleep = self
            .drain
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(DRAIN_TIMEOUT)));
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        tracing::warn!(export = %self.e.export.name,
            "NBD requests or replies still pending at close; abandoned");
        true
    }
}

/// [`run`] over owned arguments, returning the budget units to release.
async fn run_owned(
    e: Arc<ExportEntry>,
    req: Request,
    mode: ConnMode,
    op: Result<Op, exec::Refusal>,
    units: u32,
) -> (Frame, u32) {
    (run(&e, &req, &mode, op).await, units)
}

/// Execute one request and build its reply.
async fn run(
    e: &ExportEntry,
    req: &Request,
    mode: &ConnMode,
    op: Result<Op, exec::Refusal>,
) -> Frame {
    let c = &e.counters;
    let op = match op {
        Ok(op) => op,
        Err((errno, msg)) => {
            c.errors.fetch_add(1, Relaxed);
            tracing::debug!(export = %e.export.name, kind = req.kind, offset = req.offset,
                length = req.length, msg, "NBD request refused");
            return error_frame(req.handle, mode.structured, errno, msg);
        }
    };
    let is_write = matches!(op, Op::Write { .. });
    match exec::execute(&e.export.device, &e.geometry, op).await {
        Ok(Outcome::Done) => {
            if is_write {
                c.writes.fetch_add(1, Relaxed);
                c.bytes_written.fetch_add(u64::from(req.length), Relaxed);
            }
            frame(simple_reply(req.handle, 0), None)
        }
        Ok(Outcome::Data(d)) => {
            c.reads.fetch_add(1, Relaxed);
            c.bytes_read.fetch_add(d.len() as u64, Relaxed);
            if mode.structured {
                frame(offset_data_header(req.handle, req.offset, d.len()), Some(d))
            } else {
                frame(simple_reply(req.handle, 0), Some(d))
            }
        }
        Ok(Outcome::Extents(x)) => {
            let id = mode.meta_context.unwrap_or(0);
            frame(block_status_chunk(req.handle, id, &x), None)
        }
        Err(err) => {
            c.errors.fetch_add(1, Relaxed);
            let errno = exec::errno(&err);
            tracing::warn!(export = %e.export.name, kind = req.kind, offset = req.offset,
                length = req.length, error = %err, ?errno, "NBD request failed");
            error_frame(req.handle, mode.structured, errno, &err.to_string())
        }
    }
}

fn frame(head: BytesMut, data: Option<Bytes>) -> Frame {
    Frame { head, data }
}

/// An error reply: a structured error chunk with a message when structured
/// replies were negotiated (the only legal error reply to READ then), else a
/// simple reply without payload.
fn error_frame(handle: u64, structured: bool, errno: Errno, msg: &str) -> Frame {
    if structured {
        frame(error_chunk(handle, errno, msg), None)
    } else {
        frame(simple_reply(handle, errno as u32), None)
    }
}
