//! The writer task of a connection: sends the PDUs the connection core
//! gave out (already stamped, in wire order) as vectored writes (header,
//! data, trailer; `proto::codec::WriteQueue`), batching whatever is queued.
//! Data-In payloads are `Bytes` slices of the device server's buffer: they
//! go to the socket without being copied.

use std::io;

use proto::codec::WriteQueue;
use proto::pdu::{DigestConfig, Pdu};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the writer is asked to do.
#[derive(Debug)]
pub enum Outbound {
    Pdu(Pdu),
    /// Several PDUs that belong together (a read's Data-In + status).
    Pdus(Vec<Pdu>),
    /// Send everything queued before this, then shut the socket down.
    Close,
}

/// Bytes queued per batch before writing (keeps latency bounded).
const BATCH_BYTES: usize = 4 << 20;
/// Buffers queued per batch before writing.
const BATCH_PARTS: usize = 2048;

/// Run the writer until the channel closes, [`Outbound::Close`] arrives, the
/// token is cancelled or the socket fails.
pub async fn run<W: AsyncWrite + Unpin>(
    mut sock: W,
    mut rx: mpsc::Receiver<Outbound>,
    digests: DigestConfig,
    cancel: CancellationToken,
) -> io::Result<()> {
    let mut queue = WriteQueue::new();
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = cancel.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut close = enqueue(first, &mut queue, digests);
        while !close && queue.parts() < BATCH_PARTS && queue.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(m) => close |= enqueue(m, &mut queue, digests),
                Err(_) => break,
            }
        }
        tokio::select! {
            r = queue.write_all(&mut sock) => { r?; }
            _ = cancel.cancelled() => break,
        }
        if close {
            break;
        }
    }
    let _ = sock.flush().await;
    let _ = sock.shutdown().await;
    Ok(())
}

/// Encode one message into `queue`; returns true for Close.
fn enqueue(m: Outbound, queue: &mut WriteQueue, digests: DigestConfig) -> bool {
    let mut push = |pdu: Pdu| {
        queue.push(&pdu, digests);
    };
    match m {
        Outbound::Pdu(p) => push(p),
        Outbound::Pdus(v) => v.into_iter().for_each(push),
        Outbound::Close => return true,
    }
    false
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
    async fn writes_batches_in_order_and_closes() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (tx, rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let h = tokio::spawn(run(server, rx, DigestConfig::BOTH, cancel.clone()));
        tx.send(Outbound::Pdu(nop_in(1))).await.unwrap();
        tx.send(Outbound::Pdus(vec![nop_in(2), nop_in(3)]))
            .await
            .unwrap();
        tx.send(Outbound::Close).await.unwrap();
        h.await.unwrap().unwrap();
        let mut client = client;
        let mut all = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut all)
            .await
            .unwrap();
        let mut buf = bytes::BytesMut::from(&all[..]);
        let limits = DecodeLimits {
            max_data_segment_length: 8192,
            digests: DigestConfig::BOTH,
        };
        for itt in [1u32, 2, 3].iter() {
            let Some(Pdu::NopIn(n)) = proto::pdu::decode_frame(&mut buf, &limits).unwrap() else {
                panic!("expected NOP-In")
            };
            assert_eq!(n.itt, *itt);
            assert_eq!(n.stat_sn, StatSn::new(100 + itt));
            assert_eq!(&n.data[..], b"ping");
        }
        assert!(buf.is_empty());
    }
}
