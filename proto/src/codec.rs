//! `tokio_util::codec` framing for iSCSI PDUs (RFC 7143 §11), behind the
//! `codec` feature so the rest of the crate stays runtime-free.
//!
//! [`PduCodec`] decodes with [`crate::pdu::decode_frame`] (data segments are
//! zero-copy slices of the read buffer; DataSegmentLength is checked against
//! the negotiated MaxRecvDataSegmentLength before anything is reserved) and
//! encodes with [`Pdu::encode`].
//!
//! Note on errors: `FramedRead` ends the stream after any decoder error
//! (it yields `Some(Err)` and then `None`). A target that wants to answer a
//! data digest error or an unknown opcode with a Reject and carry on
//! (RFC 7143 §7.8) should use [`RecoverablePduCodec`], whose items are
//! `Result<Pdu, DecodeError>` and whose only errors are fatal ones.

use std::io;

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::pdu::{decode_frame, DecodeError, DecodeLimits, Pdu};

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
}

impl PduCodec {
    /// A codec with the given limits; [`DecodeLimits::default`] is the state
    /// during login (8192-byte segments, no digests).
    pub fn new(limits: DecodeLimits) -> Self {
        PduCodec { limits }
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
        Ok(decode_frame(src, &self.limits)?)
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
}

impl Decoder for RecoverablePduCodec {
    type Item = Result<Pdu, DecodeError>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match decode_frame(src, &self.inner.limits) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{DigestConfig, NopOut};
    use bytes::Bytes;

    fn nop(itt: u32, data: &'static [u8]) -> Pdu {
        NopOut {
            immediate: true,
            lun: 0,
            itt,
            ttt: 0xffff_ffff,
            cmd_sn: 7,
            exp_stat_sn: 3,
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
}
