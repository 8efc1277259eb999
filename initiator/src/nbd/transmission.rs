//! The transmission phase of one connection (NBD spec § Transmission):
//! one reader parses requests and spawns one task per request, bounded by
//! a per-connection count and a byte budget; replies go out of order
//! through one writer task, which sends every reply ready at once in one
//! vectored write.
//!
//! A WRITE whose payload exceeds the advertised maximum cannot be skipped
//! safely, so the connection is closed ("Either side MAY initiate a hard
//! disconnect if it detects a violation by the other party of a mandatory
//! condition"); every other bad request gets an error reply and the
//! connection goes on. A bad request magic ends the connection: the stream
//! cannot be re-synchronised.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proto::codec::WriteQueue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::exec::{self, ConnMode, Op, Outcome, MAX_PAYLOAD};
use super::server::ExportEntry;
use super::wire::*;

/// Requests in flight per connection (a whole session's queue depth fits).
const MAX_IN_FLIGHT: usize = 128;
/// Payload bytes in flight per connection, in units of `UNIT` bytes.
const UNIT: u32 = 64 * 1024;
const BUDGET_UNITS: u32 = (128 << 20) / UNIT;
/// After the client leaves or the export ends, in-flight requests get this
/// long to finish (a session in recovery may hold them) before they are
/// abandoned.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(150);

/// Serve requests until the client disconnects, breaks the protocol, or
/// the export is removed / the server shuts down (in-flight requests are
/// answered first).
pub(crate) async fn serve<R, W>(mut rd: R, wr: W, e: Arc<ExportEntry>, mode: ConnMode)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Frame>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(write_loop(wr, rx));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let budget = Arc::new(Semaphore::new(BUDGET_UNITS as usize));
    let mut tasks = JoinSet::new();
    let cancel = e.cancel.clone();
    loop {
        while tasks.try_join_next().is_some() {}
        let mut hdr = [0u8; REQUEST_LEN];
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = rd.read_exact(&mut hdr) => r,
        };
        if read.is_err() {
            break;
        }
        let Some(req) = Request::parse(&hdr) else {
            tracing::debug!(export = %e.export.name, "bad NBD request magic; closing");
            break;
        };
        if req.kind == CMD_DISC {
            // "The server MUST handle all outstanding requests ... and close
            // the TCP session."
            break;
        }
        if req.kind == CMD_WRITE && req.length > MAX_PAYLOAD {
            tracing::warn!(export = %e.export.name, length = req.length,
                "NBD WRITE larger than the advertised maximum; closing the connection");
            break;
        }
        let units = match req.kind {
            CMD_READ | CMD_WRITE => req.length.min(MAX_PAYLOAD).div_ceil(UNIT).max(1),
            _ => 1,
        };
        let (Ok(slot), Ok(bytes)) = (
            slots.clone().acquire_owned().await,
            budget.clone().acquire_many_owned(units).await,
        ) else {
            break;
        };
        let data = if req.kind == CMD_WRITE {
            match read_payload(&mut rd, req.length).await {
                Ok(d) => Some(d),
                Err(_) => break,
            }
        } else {
            None
        };
        let op = exec::validate(&req, &e.geometry, &mode, data);
        let (tx, e) = (tx.clone(), e.clone());
        tasks.spawn(async move {
            let frame = run(&e, &req, &mode, op).await;
            let _ = tx.send(frame).await;
            drop((slot, bytes));
        });
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!(export = %e.export.name, "NBD requests still pending at close; abandoned");
        tasks.abort_all();
    }
    drop(tx);
    let _ = writer.await;
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

/// Read exactly `len` payload bytes (`len` was checked against the maximum).
async fn read_payload<R: AsyncRead + Unpin>(rd: &mut R, len: u32) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(len as usize);
    let mut take = rd.take(u64::from(len));
    while buf.len() < len as usize {
        if take.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf.freeze())
}

/// Reply bytes gathered into one vectored write at most (the rest waits
/// for the next round).
const BATCH_BYTES: usize = 4 << 20;

/// The single writer: replies in completion order; every reply ready at
/// once goes out in one `writev`, payloads not copied.
async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Frame>) {
    let mut q = WriteQueue::new();
    while let Some(f) = rx.recv().await {
        queue(&mut q, f);
        while q.len() < BATCH_BYTES {
            let Ok(f) = rx.try_recv() else { break };
            queue(&mut q, f);
        }
        if q.write_all(&mut w).await.is_err() || w.flush().await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

fn queue(q: &mut WriteQueue, f: Frame) {
    q.push_bytes(f.head.freeze());
    if let Some(d) = f.data {
        q.push_bytes(d);
    }
}
