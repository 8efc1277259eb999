//! The one framed transport of the stack (RFC 7143 §11), behind the `codec`
//! feature so the rest of the crate stays runtime-free: target (login and
//! full-feature phase), initiator and the test peers all read frames with
//! these codecs in a `tokio_util::codec::FramedRead`/`Framed`, and write
//! with [`WriteQueue`].
//!
//! [`PduCodec`] decodes with [`crate::pdu::decode_frame`] (data segments are
//! zero-copy slices of the read buffer; DataSegmentLength is checked against
//! the negotiated MaxRecvDataSegmentLength before anything is reserved) and
//! encodes with [`Pdu::encode`]. While it waits for bytes it keeps room for
//! a large read (`read_chunk`), so that a busy connection is read in few
//! system calls. [`WriteQueue`] sends header, data and trailer of many PDUs
//! with vectored writes, without copying the data segments.
//!
//! Note on errors: `FramedRead` ends the stream after any decoder error
//! (it yields `Some(Err)` and then `None`). A target that wants to answer a
//! data digest error or an unknown opcode with a Reject and carry on
//! (RFC 7143 §7.8) should use [`RecoverablePduCodec`], whose items are
//! `Result<Pdu, DecodeError>` and whose only errors are fatal ones.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio_util::codec::{Decoder, Encoder};

use crate::pdu::{decode_frame, DecodeError, DecodeLimits, DigestConfig, EncodedPdu, Pdu};

/// Room kept free in the read buffer while waiting for bytes, at least.
const MIN_READ_CHUNK: usize = 64 * 1024;

/// Errors of the framed transport: a decode error or an I/O error.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl CodecError {
    /// Whether the connection must be dropped (I/O errors always are).
    pub fn is_fatal(&self) -> bool {
        match self {
            CodecError::Decode(e) => e.is_fatal(),
            CodecError::Io(_) => true,
        }
    }
}

/// Decoder/encoder of whole PDUs.
///
/// The digests of `limits` are used in both directions (RFC 7143 §13.1:
/// HeaderDigest and DataDigest are negotiated for the connection as a whole).
#[derive(Debug, Clone, Default)]
pub struct PduCodec {
    limits: DecodeLimits,
    decoded_bytes: u64,
}

impl PduCodec {
    /// A codec with the given limits; [`DecodeLimits::default`] is the state
    /// during login (8192-byte segments, no digests).
    pub fn new(limits: DecodeLimits) -> Self {
        PduCodec {
            limits,
            decoded_bytes: 0,
        }
    }

    /// Wire bytes of every PDU decoded so far (for connection counters).
    pub fn decoded_bytes(&self) -> u64 {
        self.decoded_bytes
    }

    /// One frame off `src`; `Ok(None)` after making room for the next read.
    fn decode_one(&mut self, src: &mut BytesMut) -> Result<Option<Pdu>, DecodeError> {
        let before = src.len();
        let r = decode_frame(src, &self.limits);
        self.decoded_bytes += (before - src.len()) as u64;
        if matches!(r, Ok(None)) {
            // Read big pieces: a segment and its header, or 64 KiB.
            let chunk = (self.limits.max_data_segment_length as usize + 1024).max(MIN_READ_CHUNK);
            if src.capacity() - src.len() < chunk / 2 {
                src.reserve(chunk);
            }
        }
        r
    }

    /// Current limits.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Replaces the limits, e.g. after login negotiated MaxRecvDataSegmentLength
    /// and digests. Takes effect from the next PDU.
    pub fn set_limits(&mut self, limits: DecodeLimits) {
        self.limits = limits;
    }
}

impl Decoder for PduCodec {
    type Item = Pdu;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Pdu>, CodecError> {
        Ok(self.decode_one(src)?)
    }
}

impl Encoder<Pdu> for PduCodec {
    type Error = CodecError;

    fn encode(&mut self, pdu: Pdu, dst: &mut BytesMut) -> Result<(), CodecError> {
        Encoder::<&Pdu>::encode(self, &pdu, dst)
    }
}

impl Encoder<&Pdu> for PduCodec {
    type Error = CodecError;

    fn encode(&mut self, pdu: &Pdu, dst: &mut BytesMut) -> Result<(), CodecError> {
        pdu.encode(self.limits.digests).write_to(dst);
        Ok(())
    }
}

/// Like [`PduCodec`], but non-fatal decode errors (data digest, unknown
/// opcode, malformed field: exactly one PDU consumed) are items, so that a
/// `FramedRead` keeps going. Only fatal errors end the stream.
#[derive(Debug, Clone, Default)]
pub struct RecoverablePduCodec {
    /// The inner codec (limits, encoding).
    pub inner: PduCodec,
}

impl RecoverablePduCodec {
    pub fn new(limits: DecodeLimits) -> Self {
        RecoverablePduCodec {
            inner: PduCodec::new(limits),
        }
    }

    pub fn set_limits(&mut self, limits: DecodeLimits) {
        self.inner.set_limits(limits);
    }

    /// Current limits.
    pub fn limits(&self) -> &DecodeLimits {
        self.inner.limits()
    }
}

impl Decoder for RecoverablePduCodec {
    type Item = Result<Pdu, DecodeError>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match self.inner.decode_one(src) {
            Ok(Some(pdu)) => Ok(Some(Ok(pdu))),
            Ok(None) => Ok(None),
            Err(e) if !e.is_fatal() => Ok(Some(Err(e))),
            Err(e) => Err(e.into()),
        }
    }
}

impl Encoder<Pdu> for RecoverablePduCodec {
    type Error = CodecError;

    fn encode(&mut self, pdu: Pdu, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.inner.encode(pdu, dst)
    }
}

/// IoSlices per `write_vectored` call (IOV_MAX is 1024 on Linux).
const MAX_IOV: usize = 512;

/// Encoded PDUs waiting to be written: the header, data and trailer of each
/// as separate `Bytes` (data segments are not copied), written with as few
/// vectored writes as possible.
#[derive(Debug, Default)]
pub struct WriteQueue {
    bufs: VecDeque<Bytes>,
    bytes: usize,
}

impl WriteQueue {
    /// An empty queue.
    pub fn new() -> Self {
        WriteQueue::default()
    }

    /// Encode `pdu` with `digests` and queue it; returns its wire length.
    pub fn push(&mut self, pdu: &Pdu, digests: DigestConfig) -> usize {
        self.push_encoded(pdu.encode(digests))
    }

    /// Queue an encoded PDU; returns its wire length.
    pub fn push_encoded(&mut self, enc: EncodedPdu) -> usize {
        let len = enc.len();
        for b in [enc.header, enc.data, enc.trailer] {
            if !b.is_empty() {
                self.bufs.push_back(b);
            }
        }
        self.bytes += len;
        len
    }

    /// Queue bytes that are already on-the-wire form (another protocol's
    /// frames sharing this writer, e.g. the NBD export's replies); the
    /// buffer is not copied.
    pub fn push_bytes(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.bytes += b.len();
            self.bufs.push_back(b);
        }
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Buffers queued (three per PDU at most).
    pub fn parts(&self) -> usize {
        self.bufs.len()
    }

    /// Write everything queued; returns the bytes written. On error the
    /// queue keeps what was not written.
    pub async fn write_all<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<usize> {
        let total = self.bytes;
        while !self.bufs.is_empty() {
            std::future::poll_fn(|cx| self.poll_write(w, cx)).await?;
        }
        self.bytes = 0;
        Ok(total)
    }

    /// One vectored write of the front of the queue (for a caller that
    /// drives its own poll loop); returns the bytes written, which leave
    /// the queue. Ready(Ok(0)) only when the queue is empty; a writer that
    /// accepts nothing is `WriteZero`.
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if self.bufs.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let slices: Vec<io::IoSlice<'_>> = self
            .bufs
            .iter()
            .take(MAX_IOV)
            .map(|b| io::IoSlice::new(b))
            .collect();
        let written = ready!(Pin::new(w).poll_write_vectored(cx, &slices))?;
        drop(slices);
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.bytes = self.bytes.saturating_sub(written);
        let mut n = written;
        while n > 0 {
            let Some(front) = self.bufs.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                self.bufs.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
        Poll::Ready(Ok(written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{DigestConfig, NopOut};
    use crate::serial::{CmdSn, StatSn};
    use bytes::Bytes;

    fn nop(itt: u32, data: &'static [u8]) -> Pdu {
        NopOut {
            immediate: true,
            lun: 0,
            itt,
            ttt: 0xffff_ffff,
            cmd_sn: CmdSn::new(7),
            exp_stat_sn: StatSn::new(3),
            data: Bytes::from_static(data),
        }
        .into()
    }

    #[test]
    fn round_trip_byte_by_byte() {
        for digests in [DigestConfig::NONE, DigestConfig::BOTH] {
            let limits = DecodeLimits {
                digests,
                ..DecodeLimits::default()
            };
            let mut codec = PduCodec::new(limits);
            let mut wire = BytesMut::new();
            codec.encode(nop(1, b"ping!"), &mut wire).unwrap();
            codec.encode(nop(2, b""), &mut wire).unwrap();
            let mut rx = BytesMut::new();
            let mut out = Vec::new();
            for b in wire.iter() {
                rx.extend_from_slice(&[*b]);
                while let Some(p) = codec.decode(&mut rx).unwrap() {
                    out.push(p);
                }
            }
            assert_eq!(out, vec![nop(1, b"ping!"), nop(2, b"")]);
            assert!(rx.is_empty());
        }
    }

    #[test]
    fn limit_change_applies() {
        let mut codec = PduCodec::default();
        let mut wire = BytesMut::new();
        codec.encode(nop(1, &[0u8; 100]), &mut wire).unwrap();
        codec.set_limits(DecodeLimits {
            max_data_segment_length: 64,
            ..DecodeLimits::default()
        });
        let err = codec.decode(&mut wire.clone()).unwrap_err();
        assert!(err.is_fatal());
        assert!(matches!(
            err,
            CodecError::Decode(DecodeError::DataSegmentTooLong { len: 100, max: 64 })
        ));
    }

    #[test]
    fn recoverable_codec_continues_after_data_digest_error() {
        let limits = DecodeLimits {
            digests: DigestConfig::BOTH,
            ..DecodeLimits::default()
        };
        let mut codec = RecoverablePduCodec::new(limits);
        let mut wire = BytesMut::new();
        codec.encode(nop(1, b"abcd"), &mut wire).unwrap();
        let first_len = wire.len();
        codec.encode(nop(2, b"efgh"), &mut wire).unwrap();
        let second_len = wire.len() - first_len;
        // Corrupt one data byte of the first PDU (offset 48 + 4 header digest).
        wire[52] ^= 0x01;
        let first = codec.decode(&mut wire).unwrap().unwrap();
        let err = first.unwrap_err();
        assert!(matches!(err, DecodeError::DataDigest { itt: 1, .. }));
        assert_eq!(wire.len(), second_len, "exactly the bad PDU was consumed");
        let second = codec.decode(&mut wire).unwrap().unwrap().unwrap();
        assert_eq!(second, nop(2, b"efgh"));
    }

    #[test]
    fn decoder_counts_bytes_and_keeps_room_for_a_read() {
        let mut codec = PduCodec::default();
        let mut wire = BytesMut::new();
        codec.encode(nop(1, b"abc"), &mut wire).unwrap();
        let len = wire.len() as u64;
        let mut rx = BytesMut::from(&wire[..10]);
        assert!(codec.decode(&mut rx).unwrap().is_none());
        assert!(rx.capacity() - rx.len() >= MIN_READ_CHUNK / 2);
        rx.extend_from_slice(&wire[10..]);
        assert_eq!(codec.decode(&mut rx).unwrap(), Some(nop(1, b"abc")));
        assert_eq!(codec.decoded_bytes(), len);
    }

    #[tokio::test]
    async fn write_queue_writes_everything_in_order() {
        let mut q = WriteQueue::new();
        let mut expect = BytesMut::new();
        for i in 0..700u32 {
            // 700 PDUs: more parts than one vectored write takes.
            let p = nop(i, if i % 2 == 0 { b"data!" } else { b"" });
            q.push(&p, DigestConfig::BOTH);
            p.encode(DigestConfig::BOTH).write_to(&mut expect);
        }
        assert!(q.parts() > MAX_IOV);
        let mut out: Vec<u8> = Vec::new();
        let n = q.write_all(&mut out).await.unwrap();
        assert_eq!(n, expect.len());
        assert_eq!(out, expect);
        assert!(q.is_empty());
        assert_eq!(q.parts(), 0);
    }

    #[tokio::test]
    async fn raw_bytes_keep_their_place_and_empty_ones_are_dropped() {
        let mut q = WriteQueue::new();
        q.push_bytes(Bytes::from_static(b"head"));
        q.push_bytes(Bytes::new());
        let p = nop(9, b"mid");
        let len = q.push(&p, DigestConfig::NONE);
        q.push_bytes(Bytes::from_static(b"tail"));
        assert_eq!(q.len(), 8 + len);
        let mut expect = BytesMut::from(&b"head"[..]);
        p.encode(DigestConfig::NONE).write_to(&mut expect);
        expect.extend_from_slice(b"tail");
        let mut out: Vec<u8> = Vec::new();
        assert_eq!(q.write_all(&mut out).await.unwrap(), expect.len());
        assert_eq!(out, expect);
    }
}
