//! PDU framing over a TCP stream with `proto`'s one framed transport: a
//! reader (`proto::codec::PduCodec` in a `FramedRead`) that decodes frames
//! with the negotiated limits (RFC 7143 §13.12: nothing larger than our
//! MaxRecvDataSegmentLength is accepted, checked before any allocation),
//! and a writer that sends header, data and trailer of many PDUs in one
//! vectored write (`proto::codec::WriteQueue`).

use futures::StreamExt;
use proto::codec::{CodecError, PduCodec, WriteQueue};
use proto::pdu::{DecodeLimits, DigestConfig, Pdu};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

use crate::error::{Error, Lost, ProtocolError, Result};

/// Decodes PDUs from the read half of a connection.
pub struct PduReader {
    frames: FramedRead<OwnedReadHalf, PduCodec>,
}

impl PduReader {
    pub fn new(rd: OwnedReadHalf, limits: DecodeLimits) -> Self {
        PduReader {
            frames: FramedRead::with_capacity(rd, PduCodec::new(limits), 64 * 1024),
        }
    }

    /// Switch limits/digests after login (RFC 7143 §13.1: digests start
    /// with the first PDU after the Login Response that ends the login).
    pub fn set_limits(&mut self, limits: DecodeLimits) {
        self.frames.decoder_mut().set_limits(limits);
    }

    /// The next PDU and its length on the wire.
    pub async fn read(&mut self) -> Result<(Pdu, usize)> {
        let before = self.frames.decoder().decoded_bytes();
        match self.frames.next().await {
            Some(Ok(pdu)) => {
                let len = self.frames.decoder().decoded_bytes() - before;
                Ok((pdu, len as usize))
            }
            Some(Err(CodecError::Decode(e))) => Err(ProtocolError::Decode(e).into()),
            Some(Err(CodecError::Io(source))) => Err(Error::ConnectionLost(Lost::Io {
                what: "read",
                source,
            })),
            None => Err(Error::ConnectionLost(Lost::ClosedByTarget)),
        }
    }
}

/// Encodes PDUs onto the write half of a connection.
pub struct PduWriter {
    wr: OwnedWriteHalf,
    digests: DigestConfig,
    queue: WriteQueue,
}

impl PduWriter {
    pub fn new(wr: OwnedWriteHalf, digests: DigestConfig) -> Self {
        PduWriter {
            wr,
            digests,
            queue: WriteQueue::new(),
        }
    }

    pub fn set_digests(&mut self, digests: DigestConfig) {
        self.digests = digests;
    }

    /// Write one PDU.
    pub async fn write(&mut self, pdu: &Pdu) -> Result<usize> {
        self.write_batch(std::slice::from_ref(pdu)).await
    }

    /// Write several PDUs with as few syscalls as possible; returns bytes written.
    pub async fn write_batch(&mut self, pdus: &[Pdu]) -> Result<usize> {
        for p in pdus {
            self.queue.push(p, self.digests);
        }
        self.queue.write_all(&mut self.wr).await.map_err(|source| {
            Error::ConnectionLost(Lost::Io {
                what: "write",
                source,
            })
        })
    }

    /// Half-close the write side.
    pub async fn shutdown(&mut self) {
        let _ = self.wr.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto::pdu::{DataOut, DecodeError, NopOut};
    use proto::serial::{CmdSn, DataSn, StatSn};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn batch_round_trip_with_digests() {
        let (a, b) = pair().await;
        let (_ra, wa) = a.into_split();
        let (rb, _wb) = b.into_split();
        let mut w = PduWriter::new(wa, DigestConfig::BOTH);
        let limits = DecodeLimits {
            max_data_segment_length: 1 << 20,
            digests: DigestConfig::BOTH,
        };
        let mut r = PduReader::new(rb, limits);
        let big = Bytes::from((0..300_001u32).map(|i| (i * 7) as u8).collect::<Vec<_>>());
        let mut pdus = Vec::new();
        for i in 0..100u32 {
            pdus.push(Pdu::NopOut(NopOut {
                immediate: true,
                lun: 0,
                itt: i,
                ttt: 0xffff_ffff,
                cmd_sn: CmdSn::new(i),
                exp_stat_sn: StatSn::new(0),
                data: Bytes::from(vec![i as u8; (i % 5) as usize]),
            }));
        }
        pdus.push(Pdu::DataOut(DataOut {
            final_: true,
            lun: 1,
            itt: 9,
            ttt: 3,
            exp_stat_sn: StatSn::new(0),
            data_sn: DataSn::new(0),
            buffer_offset: 0,
            data: big.clone(),
        }));
        for p in pdus.iter_mut() {
            proto::session::set_exp_stat_sn(p, StatSn::new(42));
        }
        let sent = pdus.clone();
        let wt = tokio::spawn(async move { w.write_batch(&pdus).await.unwrap() });
        for want in sent {
            let (got, _) = r.read().await.unwrap();
            assert_eq!(got, want);
            assert_eq!(got.exp_stat_sn(), Some(StatSn::new(42)));
        }
        assert!(wt.await.unwrap() > 300_000);
    }

    #[tokio::test]
    async fn oversized_segment_is_refused() {
        let (a, b) = pair().await;
        let (_ra, wa) = a.into_split();
        let (rb, _wb) = b.into_split();
        let mut w = PduWriter::new(wa, DigestConfig::NONE);
        let mut r = PduReader::new(rb, DecodeLimits::default());
        let p = Pdu::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: 1,
            ttt: 0xffff_ffff,
            cmd_sn: CmdSn::new(0),
            exp_stat_sn: StatSn::new(0),
            data: Bytes::from(vec![0u8; 10_000]),
        });
        tokio::spawn(async move { w.write(&p).await });
        let e = r.read().await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Protocol(ProtocolError::Decode(
                    DecodeError::DataSegmentTooLong { .. }
                ))
            ),
            "{e:?}"
        );
        // The decode error is kept as the cause, not only as text.
        let cause = std::error::Error::source(&e).and_then(|p| p.source());
        assert!(cause.is_some_and(|c| c.is::<DecodeError>()), "{e:?}");
    }

    #[tokio::test]
    async fn eof_is_connection_lost() {
        let (a, b) = pair().await;
        drop(a);
        let (rb, _wb) = b.into_split();
        let mut r = PduReader::new(rb, DecodeLimits::default());
        assert!(matches!(r.read().await, Err(Error::ConnectionLost(_))));
    }
}
