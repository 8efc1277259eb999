//! The sending side of a connection, owned by its driver: the PDUs the
//! connection core gave out (already stamped, in wire order) are encoded
//! into a [`WriteQueue`] and written with vectored writes (header, data,
//! trailer of many PDUs per system call). Data-In payloads are `Bytes`
//! slices of the device server's buffer: they go to the socket without
//! being copied.
//!
//! There is no writer task: the driver writes when it has something to
//! send and the socket takes it, and otherwise waits for the socket to be
//! writable in the same `select!` that reads frames and command outcomes,
//! so that a command costs no task hop on its way out.

use std::io;

use futures::FutureExt;
use proto::codec::WriteQueue;
use proto::pdu::{DigestConfig, Pdu};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes waiting to be written above which the driver stops taking new
/// commands off the socket until the initiator reads (back-pressure).
pub(crate) const HIGH_WATER: usize = 8 << 20;

/// The output of one connection.
#[derive(Debug)]
pub(crate) struct Output<W> {
    sock: W,
    queue: WriteQueue,
    digests: DigestConfig,
}

impl<W: AsyncWrite + Unpin> Output<W> {
    pub(crate) fn new(sock: W, digests: DigestConfig) -> Self {
        Output {
            sock,
            queue: WriteQueue::new(),
            digests,
        }
    }

    /// Encode `pdus` (in order) behind what is queued.
    pub(crate) fn push(&mut self, pdus: impl IntoIterator<Item = Pdu>) {
        for p in pdus {
            self.queue.push(&p, self.digests);
        }
    }

    /// Bytes waiting to be written.
    pub(crate) fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Whether the initiator has not taken enough of what we sent.
    pub(crate) fn is_full(&self) -> bool {
        self.queue.len() >= HIGH_WATER
    }

    /// Write what the socket takes now, without waiting.
    pub(crate) fn write_now(&mut self) -> io::Result<()> {
        if self.queue.is_empty() {
            return Ok(());
        }
        match self.queue.write_all(&mut self.sock).now_or_never() {
            Some(r) => r.map(drop),
            // Partly written or not at all: the rest waits for
            // `Output::write` (the queue keeps what was not written).
            None => Ok(()),
        }
    }

    /// Write everything queued, waiting for the socket as needed.
    /// Cancel-safe: what was not written stays queued.
    pub(crate) async fn write(&mut self) -> io::Result<()> {
        self.queue.write_all(&mut self.sock).await.map(drop)
    }

    /// Send what is queued, then shut the socket down.
    pub(crate) async fn close(&mut self) {
        if self.write().await.is_ok() {
            let _ = self.sock.flush().await;
            let _ = self.sock.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto::pdu::{DecodeLimits, NopIn, RESERVED_TAG};
    use proto::serial::{CmdSn, StatSn};

    fn nop_in(itt: u32) -> Pdu {
        Pdu::NopIn(NopIn {
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            stat_sn: StatSn::new(100 + itt),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            data: Bytes::from_static(b"ping"),
        })
    }

    #[tokio::test]
    async fn writes_in_order_waits_for_room_and_closes() {
        // A pipe smaller than what is queued: `write_now` takes part,
        // `write` the rest once the reader drains.
        let (client, server) = tokio::io::duplex(256);
        let mut out = Output::new(server, DigestConfig::BOTH);
        out.push((1..=20).map(nop_in));
        out.write_now().unwrap();
        assert!(out.pending() > 0, "the pipe cannot take it all at once");
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut all = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut client, &mut all)
                .await
                .unwrap();
            all
        });
        out.close().await;
        assert_eq!(out.pending(), 0);
        drop(out);
        let all = reader.await.unwrap();
        let mut buf = bytes::BytesMut::from(&all[..]);
        let limits = DecodeLimits {
            max_data_segment_length: 8192,
            digests: DigestConfig::BOTH,
        };
        for itt in 1u32..=20 {
            let Some(Pdu::NopIn(n)) = proto::pdu::decode_frame(&mut buf, &limits).unwrap() else {
                panic!("expected NOP-In")
            };
            assert_eq!(n.itt, itt);
            assert_eq!(n.stat_sn, StatSn::new(100 + itt));
            assert_eq!(&n.data[..], b"ping");
        }
        assert!(buf.is_empty());
    }
}
