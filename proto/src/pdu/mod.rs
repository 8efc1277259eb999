//! iSCSI PDUs (RFC 7143 §11): typed PDUs, framing, encoding and decoding.
//!
//! Wire layout of every PDU (RFC 7143 §11.2):
//!
//! ```text
//! +-----------------------------------+
//! | Basic Header Segment (BHS)        | 48 bytes
//! +-----------------------------------+
//! | Additional Header Segment 1 (AHS) | optional, TotalAHSLength * 4 bytes
//! +-----------------------------------+
//! | Header-Digest                     | optional, 4 bytes (CRC32C)
//! +-----------------------------------+
//! | Data Segment                      | optional, DataSegmentLength bytes,
//! |                                   |   padded to a multiple of 4
//! +-----------------------------------+
//! | Data-Digest                       | optional, 4 bytes (CRC32C)
//! +-----------------------------------+
//! ```
//!
//! * Decoding ([`decode_frame`], [`Pdu::decode`]) never copies the data
//!   segment: it is a `Bytes` slice of the received frame. DataSegmentLength
//!   is checked against [`DecodeLimits::max_data_segment_length`] before
//!   anything is reserved for it.
//! * Encoding ([`Pdu::encode`]) is infallible and returns the header, the
//!   data and the trailer (padding + data digest) separately, so that the
//!   writer can send them with one vectored write.
//! * Reserved fields and undefined bits are sent as 0 and ignored when
//!   received; decoding then re-encoding such a PDU clears them.
//! * Not done here (callers' concern): which opcodes a role may receive,
//!   sequence-number checks, and the per-opcode rules on when a data
//!   segment is allowed (a data segment on e.g. R2T is kept, not refused).
//!
//! Which opcodes a given role may receive is the caller's concern
//! ([`Opcode::is_initiator`]).

mod async_msg;
mod bhs;
mod data;
mod login;
mod logout;
mod nop;
mod scsi;
mod snack;
mod text;
mod tmf;

use std::io::IoSlice;

use bytes::{BufMut, Bytes, BytesMut};

use crate::digest::{self, DIGEST_LEN};
use crate::serial::{CmdSn, StatSn};
use bhs::{open_enum, Bhs, BhsMut};

pub use async_msg::{AsyncEvent, AsyncMessage, Reject, RejectReason};
pub use bhs::BHS_LEN;
pub use data::{DataIn, DataOut, R2t};
pub use login::{Isid, LoginRequest, LoginResponse, Stage};
pub use logout::{LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode};
pub use nop::{NopIn, NopOut};
pub use scsi::{ScsiCommand, ScsiResponse, ScsiResponseCode, TaskAttr, BHS_CDB_LEN};
pub use snack::{SnackRequest, SnackType};
pub use text::{TextRequest, TextResponse};
pub use tmf::{TaskMgmtRequest, TaskMgmtResponse, TmfFunction, TmfResponse};

/// The reserved tag value 0xffffffff (RFC 7143 §11.2.1.8 and elsewhere).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// Largest DataSegmentLength representable in the 24-bit field.
pub const MAX_DATA_SEGMENT_LENGTH: u32 = 0x00ff_ffff;

/// Default MaxRecvDataSegmentLength (RFC 7143 §13.12), also the limit in force
/// during login.
pub const DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 8192;

open_enum! {
    /// The 6-bit opcode of byte 0 (RFC 7143 §11.2.1.2).
    pub struct Opcode(u8) {
        NOP_OUT = 0x00,
        SCSI_COMMAND = 0x01,
        TASK_MGMT_REQUEST = 0x02,
        LOGIN_REQUEST = 0x03,
        TEXT_REQUEST = 0x04,
        DATA_OUT = 0x05,
        LOGOUT_REQUEST = 0x06,
        SNACK_REQUEST = 0x10,
        NOP_IN = 0x20,
        SCSI_RESPONSE = 0x21,
        TASK_MGMT_RESPONSE = 0x22,
        LOGIN_RESPONSE = 0x23,
        TEXT_RESPONSE = 0x24,
        DATA_IN = 0x25,
        LOGOUT_RESPONSE = 0x26,
        R2T = 0x31,
        ASYNC_MESSAGE = 0x32,
        REJECT = 0x3f,
    }
}

impl Opcode {
    /// Initiator opcodes are 0x00-0x1f, target opcodes 0x20-0x3f.
    pub fn is_initiator(self) -> bool {
        self.0 & 0x20 == 0
    }

    /// Whether this is a target opcode (0x20-0x3f).
    pub fn is_target(self) -> bool {
        !self.is_initiator()
    }

    /// Vendor-specific opcodes 0x1c-0x1e and 0x3c-0x3e (RFC 7143 §11.2.1.2).
    pub fn is_vendor_specific(self) -> bool {
        matches!(self.0, 0x1c..=0x1e | 0x3c..=0x3e)
    }
}

/// Which digests are in use on a connection (HeaderDigest / DataDigest keys,
/// RFC 7143 §13.1). Both are off during login until negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DigestConfig {
    /// HeaderDigest=CRC32C.
    pub header: bool,
    /// DataDigest=CRC32C.
    pub data: bool,
}

impl DigestConfig {
    /// No digests (the state during login).
    pub const NONE: DigestConfig = DigestConfig {
        header: false,
        data: false,
    };
    /// Both digests on.
    pub const BOTH: DigestConfig = DigestConfig {
        header: true,
        data: true,
    };
}

/// Limits applied while decoding a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecodeLimits {
    /// Our MaxRecvDataSegmentLength: larger data segments are refused before
    /// anything is allocated for them. Default 8192 (RFC 7143 §13.12).
    pub max_data_segment_length: u32,
    /// Digests expected on received PDUs.
    pub digests: DigestConfig,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_data_segment_length: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
            digests: DigestConfig::NONE,
        }
    }
}

/// Errors found while decoding a PDU.
///
/// [`DecodeError::is_fatal`] says whether the byte stream is still in sync.
/// Non-fatal errors consumed exactly one PDU; the target can answer them with
/// a Reject ([`DecodeError::reject_reason`], data = [`DecodeError::rejected_header`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header says the PDU has (only from [`Pdu::decode`];
    /// [`decode_frame`] returns `Ok(None)` instead).
    #[error("truncated PDU: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    /// The frame given to [`Pdu::decode`] is longer than its header says.
    #[error("PDU frame is {actual} bytes but its header describes {expected}")]
    TrailingBytes { expected: usize, actual: usize },
    /// DataSegmentLength is above our MaxRecvDataSegmentLength. Fatal: the
    /// bytes are not read, the connection must be dropped.
    #[error("DataSegmentLength {len} exceeds MaxRecvDataSegmentLength {max}")]
    DataSegmentTooLong { len: u32, max: u32 },
    /// Header digest mismatch. Fatal: RFC 7143 §7.8 lets the receiver either
    /// find the next PDU by other means (a sync layer, which we do not have,
    /// since the length fields cannot be trusted) or close the connection.
    #[error("header digest mismatch: expected {expected:#010x}, received {actual:#010x}")]
    HeaderDigest { expected: u32, actual: u32 },
    /// Data digest mismatch. The PDU was consumed; per RFC 7143 §7.8 the
    /// target discards it and answers with a Reject, reason Data-Digest-Error
    /// (the initiator discards it and recovers per its ErrorRecoveryLevel).
    #[error("data digest mismatch on {opcode} ITT {itt:#010x}: expected {expected:#010x}, received {actual:#010x}")]
    DataDigest {
        opcode: Opcode,
        itt: u32,
        expected: u32,
        actual: u32,
        /// BHS + AHS of the PDU, for the Reject data segment.
        header: Bytes,
    },
    /// An opcode this crate does not know. The PDU was consumed.
    #[error("unknown opcode {opcode:#04x} (ITT {itt:#010x})")]
    UnknownOpcode {
        opcode: u8,
        itt: u32,
        /// BHS + AHS of the PDU, for the Reject data segment.
        header: Bytes,
    },
    /// A field has a value the PDU cannot carry. The PDU was consumed.
    #[error("malformed {opcode} PDU: {reason}")]
    Malformed {
        opcode: Opcode,
        reason: &'static str,
        /// BHS + AHS of the PDU, for the Reject data segment.
        header: Bytes,
    },
}

impl DecodeError {
    /// True when the stream is out of sync (or its framing untrustworthy) and
    /// the connection must be dropped; false when exactly one PDU was consumed
    /// and the caller may continue with the next one.
    pub fn is_fatal(&self) -> bool {
        match self {
            DecodeError::Truncated { .. }
            | DecodeError::TrailingBytes { .. }
            | DecodeError::DataSegmentTooLong { .. }
            | DecodeError::HeaderDigest { .. } => true,
            DecodeError::DataDigest { .. }
            | DecodeError::UnknownOpcode { .. }
            | DecodeError::Malformed { .. } => false,
        }
    }

    /// The Reject reason a target sends for a non-fatal error (RFC 7143 §11.17.1).
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            DecodeError::DataDigest { .. } => Some(RejectReason::DATA_DIGEST_ERROR),
            DecodeError::UnknownOpcode { .. } => Some(RejectReason::COMMAND_NOT_SUPPORTED),
            DecodeError::Malformed { .. } => Some(RejectReason::INVALID_PDU_FIELD),
            _ => None,
        }
    }

    /// For a data digest error: the PDU decoded from its header alone, with
    /// an empty data segment (the corrupted data is never handed out).
    ///
    /// RFC 7143 §7.8 has the receiver discard a PDU whose data digest
    /// fails, but a target still needs the header of a discarded Data-Out
    /// (ITT, TTT, F bit) to end its task cleanly at ERL 0. The header is
    /// trustworthy when HeaderDigest is in use (its digest was checked
    /// before the data digest); `None` if the header does not decode.
    pub fn discarded_pdu_header(&self) -> Option<Pdu> {
        let DecodeError::DataDigest { header, .. } = self else {
            return None;
        };
        let mut frame = BytesMut::from(&header[..]);
        frame
            .get_mut(bhs::DATA_SEGMENT_LENGTH..bhs::DATA_SEGMENT_LENGTH + 3)?
            .fill(0);
        Pdu::decode(frame.freeze(), DigestConfig::NONE).ok()
    }

    /// The header of the offending PDU (the Reject data segment, RFC 7143 §11.17).
    pub fn rejected_header(&self) -> Option<&Bytes> {
        match self {
            DecodeError::DataDigest { header, .. }
            | DecodeError::UnknownOpcode { header, .. }
            | DecodeError::Malformed { header, .. } => Some(header),
            _ => None,
        }
    }
}

/// Per-opcode field codec, implemented by every PDU struct.
pub(crate) trait Body: Sized {
    const OPCODE: Opcode;

    /// Decodes the opcode-specific fields; the frame around is already checked.
    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str>;

    /// Like `decode_body`, with the AHS bytes. Only SCSI Command defines AHS
    /// (RFC 7143 §11.2.2); any other PDU carrying one is malformed.
    fn decode_with_ahs(h: Bhs<'_>, ahs: &[u8], data: Bytes) -> Result<Self, &'static str> {
        if !ahs.is_empty() {
            return Err("AHS not allowed on this PDU");
        }
        Self::decode_body(h, data)
    }

    /// Writes every field except the opcode, TotalAHSLength and DataSegmentLength.
    fn encode_bhs(&self, b: &mut BhsMut);

    /// Appends the AHS (already padded); returns its length.
    fn encode_ahs(&self, _out: &mut BytesMut) -> usize {
        0
    }

    fn data(&self) -> &Bytes;
}

macro_rules! pdus {
    ($( $variant:ident($ty:ident), )*) => {
        /// Any iSCSI PDU. Initiator PDUs first, then target PDUs (RFC 7143 §11.2.1.2).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Pdu {
            $( $variant($ty), )*
        }

        $(
            impl From<$ty> for Pdu {
                fn from(p: $ty) -> Pdu {
                    Pdu::$variant(p)
                }
            }
        )*

        impl Pdu {
            /// The PDU's opcode.
            pub fn opcode(&self) -> Opcode {
                match self {
                    $( Pdu::$variant(_) => <$ty as Body>::OPCODE, )*
                }
            }

            /// The data segment (unpadded).
            pub fn data(&self) -> &Bytes {
                match self {
                    $( Pdu::$variant(p) => Body::data(p), )*
                }
            }

            fn encode_bhs(&self, b: &mut BhsMut) {
                match self {
                    $( Pdu::$variant(p) => p.encode_bhs(b), )*
                }
            }

            fn encode_ahs(&self, out: &mut BytesMut) -> usize {
                match self {
                    $( Pdu::$variant(p) => p.encode_ahs(out), )*
                }
            }

            fn decode_fields(
                opcode: Opcode,
                h: Bhs<'_>,
                ahs: &[u8],
                data: Bytes,
            ) -> Option<Result<Pdu, &'static str>> {
                $(
                    if opcode == <$ty as Body>::OPCODE {
                        return Some($ty::decode_with_ahs(h, ahs, data).map(Pdu::$variant));
                    }
                )*
                None
            }
        }
    };
}

pdus! {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    SnackRequest(SnackRequest),
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

impl Pdu {
    /// The Initiator Task Tag (0xffffffff for Async Message and Reject).
    pub fn itt(&self) -> u32 {
        match self {
            Pdu::NopOut(p) => p.itt,
            Pdu::ScsiCommand(p) => p.itt,
            Pdu::TaskMgmtRequest(p) => p.itt,
            Pdu::LoginRequest(p) => p.itt,
            Pdu::TextRequest(p) => p.itt,
            Pdu::DataOut(p) => p.itt,
            Pdu::LogoutRequest(p) => p.itt,
            Pdu::SnackRequest(p) => p.itt,
            Pdu::NopIn(p) => p.itt,
            Pdu::ScsiResponse(p) => p.itt,
            Pdu::TaskMgmtResponse(p) => p.itt,
            Pdu::LoginResponse(p) => p.itt,
            Pdu::TextResponse(p) => p.itt,
            Pdu::DataIn(p) => p.itt,
            Pdu::LogoutResponse(p) => p.itt,
            Pdu::R2t(p) => p.itt,
            Pdu::AsyncMessage(_) | Pdu::Reject(_) => RESERVED_TAG,
        }
    }

    /// The I (immediate delivery) bit; always true for Login Request and
    /// false for target PDUs, Data-Out and SNACK.
    pub fn immediate(&self) -> bool {
        match self {
            Pdu::NopOut(p) => p.immediate,
            Pdu::ScsiCommand(p) => p.immediate,
            Pdu::TaskMgmtRequest(p) => p.immediate,
            Pdu::LoginRequest(_) => true,
            Pdu::TextRequest(p) => p.immediate,
            Pdu::LogoutRequest(p) => p.immediate,
            _ => false,
        }
    }

    /// CmdSN of initiator PDUs that carry one.
    pub fn cmd_sn(&self) -> Option<CmdSn> {
        match self {
            Pdu::NopOut(p) => Some(p.cmd_sn),
            Pdu::ScsiCommand(p) => Some(p.cmd_sn),
            Pdu::TaskMgmtRequest(p) => Some(p.cmd_sn),
            Pdu::LoginRequest(p) => Some(p.cmd_sn),
            Pdu::TextRequest(p) => Some(p.cmd_sn),
            Pdu::LogoutRequest(p) => Some(p.cmd_sn),
            _ => None,
        }
    }

    /// ExpStatSN of initiator PDUs that carry one.
    pub fn exp_stat_sn(&self) -> Option<StatSn> {
        match self {
            Pdu::NopOut(p) => Some(p.exp_stat_sn),
            Pdu::ScsiCommand(p) => Some(p.exp_stat_sn),
            Pdu::TaskMgmtRequest(p) => Some(p.exp_stat_sn),
            Pdu::LoginRequest(p) => Some(p.exp_stat_sn),
            Pdu::TextRequest(p) => Some(p.exp_stat_sn),
            Pdu::DataOut(p) => Some(p.exp_stat_sn),
            Pdu::LogoutRequest(p) => Some(p.exp_stat_sn),
            Pdu::SnackRequest(p) => Some(p.exp_stat_sn),
            _ => None,
        }
    }

    /// StatSN of target PDUs that carry one (Data-In only when S is set,
    /// RFC 7143 §11.7.6; the field is reserved otherwise).
    pub fn stat_sn(&self) -> Option<StatSn> {
        match self {
            Pdu::NopIn(p) => Some(p.stat_sn),
            Pdu::ScsiResponse(p) => Some(p.stat_sn),
            Pdu::TaskMgmtResponse(p) => Some(p.stat_sn),
            Pdu::LoginResponse(p) => Some(p.stat_sn),
            Pdu::TextResponse(p) => Some(p.stat_sn),
            Pdu::DataIn(p) if p.status.is_some() => Some(p.stat_sn),
            Pdu::LogoutResponse(p) => Some(p.stat_sn),
            Pdu::R2t(p) => Some(p.stat_sn),
            Pdu::AsyncMessage(p) => Some(p.stat_sn),
            Pdu::Reject(p) => Some(p.stat_sn),
            _ => None,
        }
    }

    /// (ExpCmdSN, MaxCmdSN) of target PDUs, which all carry the window.
    pub fn cmd_sn_window(&self) -> Option<(CmdSn, CmdSn)> {
        match self {
            Pdu::NopIn(p) => Some((p.exp_cmd_sn, p.max_cmd_sn)),
            Pdu::ScsiResponse(p) => Some((p.exp_cmd_sn, p.max_cmd_sn)),
            Pdu::TaskMgmtResponse(p) => Some((p.exp_cmd_sn, p.max_cmd_sn)),
            Pdu::LoginResponse(p) => Some((p.exp_cmd_sn, p.max_cmd_sn)),
            Pdu::TextResponse(p) => Some((p.exp_cmd_sn, p.max_cmd_sn)),
            Pdu::DataIn(p) => Some((p.exp_cmd_sn, p.max_cmd_sn)),
            Pdu::LogoutResponse(p) => Some((p.exp_cmd_sn, p.max_cmd_sn)),
            Pdu::R2t(p) => Some((p.exp_cmd_sn, p.max_cmd_sn)),
            Pdu::AsyncMessage(p) => Some((p.exp_cmd_sn, p.max_cmd_sn)),
            Pdu::Reject(p) => Some((p.exp_cmd_sn, p.max_cmd_sn)),
            _ => None,
        }
    }

    /// Encodes the PDU. Infallible; the data segment is not copied.
    ///
    /// A data segment longer than 2^24-1 bytes (the DataSegmentLength field)
    /// cannot be represented and is cut to that length; callers keep data
    /// within the negotiated MaxRecvDataSegmentLength anyway.
    pub fn encode(&self, digests: DigestConfig) -> EncodedPdu {
        let mut data = self.data().clone();
        if data.len() > MAX_DATA_SEGMENT_LENGTH as usize {
            debug_assert!(false, "data segment longer than 2^24-1 bytes");
            data.truncate(MAX_DATA_SEGMENT_LENGTH as usize);
        }
        let mut b = BhsMut::new();
        self.encode_bhs(&mut b);
        b.0[bhs::OPCODE] = (b.0[bhs::OPCODE] & bhs::IMMEDIATE_BIT) | self.opcode().0;
        let dsl = (data.len() as u32).to_be_bytes();
        b.0[bhs::DATA_SEGMENT_LENGTH..bhs::DATA_SEGMENT_LENGTH + 3].copy_from_slice(&dsl[1..]);

        let mut header = BytesMut::with_capacity(BHS_LEN + DIGEST_LEN);
        header.put_slice(&b.0);
        let ahs_len = self.encode_ahs(&mut header);
        debug_assert!(ahs_len & 3 == 0 && ahs_len <= 255 * 4);
        header[bhs::TOTAL_AHS_LENGTH] = (ahs_len / 4) as u8;
        if digests.header {
            // RFC 7143 §11.2: the header digest covers BHS and AHS.
            let d = digest::wire_digest(&header);
            header.put_slice(&d);
        }

        let pad = padding(data.len());
        let mut trailer = BytesMut::with_capacity(pad + DIGEST_LEN);
        trailer.put_bytes(0, pad);
        if digests.data && !data.is_empty() {
            // The data digest covers the data segment and its padding.
            let crc = digest::crc32c_append(digest::crc32c(&data), &trailer);
            trailer.put_slice(&digest::to_wire(crc));
        }
        EncodedPdu {
            header: header.freeze(),
            data,
            trailer: trailer.freeze(),
        }
    }

    /// Decodes one complete frame (exactly one PDU, with its digests).
    ///
    /// No length limit applies here: the frame is already in memory. Use
    /// [`decode_frame`] on a byte stream.
    pub fn decode(frame: Bytes, digests: DigestConfig) -> Result<Pdu, DecodeError> {
        let header_len = match header_len(&frame, digests) {
            Some(n) => n,
            None => {
                let needed = if frame.len() < BHS_LEN {
                    BHS_LEN
                } else {
                    BHS_LEN
                        + usize::from(frame[bhs::TOTAL_AHS_LENGTH]) * 4
                        + digest_len(digests.header)
                };
                return Err(DecodeError::Truncated {
                    needed,
                    available: frame.len(),
                });
            }
        };
        if digests.header {
            check_header_digest(&frame[..header_len])?;
        }
        let expected = frame_len(&frame, digests);
        if frame.len() < expected {
            return Err(DecodeError::Truncated {
                needed: expected,
                available: frame.len(),
            });
        }
        if frame.len() > expected {
            return Err(DecodeError::TrailingBytes {
                expected,
                actual: frame.len(),
            });
        }
        decode_checked(frame, digests, header_len)
    }
}

fn digest_len(on: bool) -> usize {
    if on {
        DIGEST_LEN
    } else {
        0
    }
}

/// Number of pad bytes after a data segment of `len` bytes.
pub fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn bhs_of(buf: &[u8]) -> Option<&[u8; BHS_LEN]> {
    buf.get(..BHS_LEN)?.try_into().ok()
}

/// BHS + AHS + header digest length, if `buf` holds at least the BHS and that much.
fn header_len(buf: &[u8], digests: DigestConfig) -> Option<usize> {
    let h = Bhs(bhs_of(buf)?);
    let n = BHS_LEN + h.total_ahs_length() + digest_len(digests.header);
    (buf.len() >= n).then_some(n)
}

/// Whole frame length from a buffer holding at least the BHS.
fn frame_len(buf: &[u8], digests: DigestConfig) -> usize {
    let Some(b) = bhs_of(buf) else { return BHS_LEN };
    let h = Bhs(b);
    let dsl = h.data_segment_length() as usize;
    BHS_LEN
        + h.total_ahs_length()
        + digest_len(digests.header)
        + dsl
        + padding(dsl)
        + if dsl > 0 { digest_len(digests.data) } else { 0 }
}

/// Verifies the header digest at the end of `header` (BHS + AHS + digest).
fn check_header_digest(header: &[u8]) -> Result<(), DecodeError> {
    let (covered, d) = header.split_at(header.len() - DIGEST_LEN);
    let expected = digest::crc32c(covered);
    let actual = digest::from_wire([d[0], d[1], d[2], d[3]]);
    if expected != actual {
        return Err(DecodeError::HeaderDigest { expected, actual });
    }
    Ok(())
}

/// Decodes a frame whose length and header digest are already verified.
fn decode_checked(
    frame: Bytes,
    digests: DigestConfig,
    header_len: usize,
) -> Result<Pdu, DecodeError> {
    let Some(b) = bhs_of(&frame) else {
        return Err(DecodeError::Truncated {
            needed: BHS_LEN,
            available: frame.len(),
        });
    };
    let h = Bhs(b);
    let ahs_end = BHS_LEN + h.total_ahs_length();
    let dsl = h.data_segment_length() as usize;
    let data_start = header_len;
    let data_end = data_start + dsl;
    let opcode = Opcode(h.u8(bhs::OPCODE) & bhs::OPCODE_MASK);
    let header = || frame.slice(..ahs_end);

    if digests.data && dsl > 0 {
        let padded_end = data_end + padding(dsl);
        let expected = digest::crc32c(&frame[data_start..padded_end]);
        let d = &frame[padded_end..padded_end + DIGEST_LEN];
        let actual = digest::from_wire([d[0], d[1], d[2], d[3]]);
        if expected != actual {
            return Err(DecodeError::DataDigest {
                opcode,
                itt: h.itt(),
                expected,
                actual,
                header: header(),
            });
        }
    }

    let data = frame.slice(data_start..data_end);
    match Pdu::decode_fields(opcode, h, &frame[BHS_LEN..ahs_end], data) {
        Some(Ok(pdu)) => Ok(pdu),
        Some(Err(reason)) => Err(DecodeError::Malformed {
            opcode,
            reason,
            header: header(),
        }),
        None => Err(DecodeError::UnknownOpcode {
            opcode: opcode.0,
            itt: h.itt(),
            header: header(),
        }),
    }
}

/// Takes one PDU off the front of a receive buffer.
///
/// Returns `Ok(None)` when more bytes are needed (after reserving room for
/// the rest of the frame, once its length is known and within limits).
/// On success, or on a non-fatal error, exactly one frame has been removed
/// from `buf`; the data segment shares the buffer's memory (no copy).
/// On a fatal error nothing is removed and the connection must be dropped.
///
/// With header digests on, no field is trusted before the digest is checked,
/// except TotalAHSLength, which says where the digest is: a corrupted
/// TotalAHSLength makes the decoder wait for at most 1020 more bytes, after
/// which the digest check fails (or the connection's NOP/idle timeout fires).
pub fn decode_frame(buf: &mut BytesMut, limits: &DecodeLimits) -> Result<Option<Pdu>, DecodeError> {
    let digests = limits.digests;
    let Some(bhs) = bhs_of(buf) else {
        return Ok(None);
    };
    let h = Bhs(bhs);
    // TotalAHSLength is one byte: at most 1020 bytes, safe to wait for.
    let header_len = BHS_LEN + h.total_ahs_length() + digest_len(digests.header);
    let dsl = h.data_segment_length();
    if buf.len() < header_len {
        buf.reserve(header_len - buf.len());
        return Ok(None);
    }
    // With header digests, trust no length before the digest is verified.
    if digests.header {
        check_header_digest(&buf[..header_len])?;
    }
    if dsl > limits.max_data_segment_length {
        return Err(DecodeError::DataSegmentTooLong {
            len: dsl,
            max: limits.max_data_segment_length,
        });
    }
    let total = frame_len(buf, digests);
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(total).freeze();
    decode_checked(frame, digests, header_len).map(Some)
}

/// An encoded PDU in three parts, for one vectored write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncodedPdu {
    /// BHS + AHS + optional header digest.
    pub header: Bytes,
    /// The data segment, unpadded (shares memory with the PDU's data).
    pub data: Bytes,
    /// 0-3 pad bytes + optional data digest.
    pub trailer: Bytes,
}

impl EncodedPdu {
    /// Total length on the wire.
    pub fn len(&self) -> usize {
        self.header.len() + self.data.len() + self.trailer.len()
    }

    /// Never true for a real PDU (the BHS alone is 48 bytes).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The three parts for `write_vectored` / `write_all_vectored`.
    pub fn io_slices(&self) -> [IoSlice<'_>; 3] {
        [
            IoSlice::new(&self.header),
            IoSlice::new(&self.data),
            IoSlice::new(&self.trailer),
        ]
    }

    /// Appends the whole PDU to `dst` (copies).
    pub fn write_to(&self, dst: &mut BytesMut) {
        dst.reserve(self.len());
        dst.put_slice(&self.header);
        dst.put_slice(&self.data);
        dst.put_slice(&self.trailer);
    }

    /// The whole PDU as one buffer (copies).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.len());
        self.write_to(&mut b);
        b.freeze()
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// Bytes from hex words (whitespace ignored), e.g. `["40 80 00 00", ...]`.
    pub(crate) fn hx(parts: &[&str]) -> Bytes {
        let s: String = parts.concat().split_whitespace().collect();
        Bytes::from(hex::decode(s).expect("valid hex fixture"))
    }

    /// The common checks for one hand-written fixture: decode, byte-exact
    /// encode, every truncation, trailing bytes, streaming, digests.
    pub(crate) fn check_fixture(fixture: &[&str], expected: Pdu) {
        let wire = hx(fixture);
        let got = Pdu::decode(wire.clone(), DigestConfig::NONE).expect("fixture decodes");
        assert_eq!(got, expected);
        let enc = expected.encode(DigestConfig::NONE);
        assert_eq!(
            hex::encode(enc.to_bytes()),
            hex::encode(&wire),
            "byte-exact encode"
        );
        assert_eq!(enc.len(), wire.len());

        for n in 0..wire.len() {
            match Pdu::decode(wire.slice(..n), DigestConfig::NONE) {
                Err(DecodeError::Truncated { available, .. }) => assert_eq!(available, n),
                other => panic!("prefix of {n} bytes: {other:?}"),
            }
            let mut buf = BytesMut::from(&wire[..n]);
            assert_eq!(decode_frame(&mut buf, &DecodeLimits::default()), Ok(None));
            assert_eq!(buf.len(), n, "nothing consumed while incomplete");
        }
        let mut long = BytesMut::from(&wire[..]);
        long.put_u8(0);
        assert!(matches!(
            Pdu::decode(long.freeze(), DigestConfig::NONE),
            Err(DecodeError::TrailingBytes { .. })
        ));

        for digests in [
            DigestConfig {
                header: true,
                data: false,
            },
            DigestConfig {
                header: false,
                data: true,
            },
            DigestConfig::BOTH,
        ] {
            let enc = expected.encode(digests).to_bytes();
            let extra = digest_len(digests.header)
                + if expected.data().is_empty() {
                    0
                } else {
                    digest_len(digests.data)
                };
            assert_eq!(enc.len(), wire.len() + extra);
            assert_eq!(Pdu::decode(enc.clone(), digests).as_ref(), Ok(&expected));
            let mut buf = BytesMut::from(&enc[..]);
            let limits = DecodeLimits {
                digests,
                ..DecodeLimits::default()
            };
            assert_eq!(decode_frame(&mut buf, &limits), Ok(Some(expected.clone())));
            assert!(buf.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use crate::serial::{DataSn, SerialNumber};

    fn nop_out(data: &'static [u8]) -> Pdu {
        Pdu::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: 0x11,
            ttt: RESERVED_TAG,
            cmd_sn: CmdSn::new(7),
            exp_stat_sn: StatSn::new(3),
            data: Bytes::from_static(data),
        })
    }

    #[test]
    fn opcode_classes() {
        assert!(Opcode::SCSI_COMMAND.is_initiator());
        assert!(Opcode::SNACK_REQUEST.is_initiator());
        assert!(Opcode::REJECT.is_target());
        assert!(Opcode::NOP_IN.is_target());
        assert!(Opcode(0x1c).is_vendor_specific() && Opcode(0x3e).is_vendor_specific());
        assert!(!Opcode::R2T.is_vendor_specific());
        assert_eq!(format!("{:?}", Opcode::DATA_IN), "DATA_IN");
        assert_eq!(format!("{:?}", Opcode(0x1c)), "Opcode(Unknown(0x1c))");
        assert!(!Opcode(0x1c).is_known());
    }

    #[test]
    fn padding_lengths() {
        let expected = [0, 3, 2, 1, 0, 3, 2, 1, 0];
        for (len, pad) in expected.iter().enumerate() {
            assert_eq!(padding(len), *pad);
        }
        // The trailer holds the pad, then the data digest over data + pad.
        let data: &'static [u8] = b"abcde";
        let enc = nop_out(data).encode(DigestConfig::BOTH);
        assert_eq!(&enc.trailer[..3], &[0, 0, 0]);
        let crc = digest::crc32c(b"abcde\0\0\0");
        assert_eq!(&enc.trailer[3..], &crc.to_le_bytes());
        // The header digest covers the 48-byte BHS.
        assert_eq!(enc.header.len(), 52);
        assert_eq!(&enc.header[48..], &digest::wire_digest(&enc.header[..48]));
        // No data: no pad, no data digest even when negotiated.
        let enc = nop_out(b"").encode(DigestConfig::BOTH);
        assert!(enc.trailer.is_empty() && enc.data.is_empty());
    }

    #[test]
    fn io_slices_match_to_bytes() {
        let enc = nop_out(b"xyz").encode(DigestConfig::BOTH);
        let joined: Vec<u8> = enc
            .io_slices()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(joined, enc.to_bytes());
        assert_eq!(enc.len(), joined.len());
        assert!(!enc.is_empty());
    }

    #[test]
    fn data_segment_is_zero_copy() {
        let enc = nop_out(b"zero-copy").encode(DigestConfig::NONE).to_bytes();
        let mut buf = BytesMut::from(&enc[..]);
        let start = buf.as_ptr() as usize;
        let pdu = decode_frame(&mut buf, &DecodeLimits::default())
            .unwrap()
            .unwrap();
        let p = pdu.data().as_ptr() as usize;
        assert_eq!(p, start + BHS_LEN, "data points into the receive buffer");
        // And encoding shares the PDU's data.
        let enc = pdu.encode(DigestConfig::NONE);
        assert_eq!(enc.data.as_ptr(), pdu.data().as_ptr());
    }

    #[test]
    fn too_long_is_refused_before_allocation() {
        // A NOP-Out header claiming a 16 MiB - 1 data segment.
        let mut buf = BytesMut::with_capacity(64);
        buf.put_slice(&hx(&["40 80 00 00", "00 ff ff ff"]));
        buf.put_bytes(0, BHS_LEN - 8);
        let cap = buf.capacity();
        let err = decode_frame(&mut buf, &DecodeLimits::default()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::DataSegmentTooLong {
                len: 0xff_ffff,
                max: 8192
            }
        );
        assert!(err.is_fatal());
        assert_eq!(buf.capacity(), cap, "nothing reserved");
        assert_eq!(buf.len(), BHS_LEN, "nothing consumed");
        // Exactly at the limit is fine (waits for the data).
        let limits = DecodeLimits {
            max_data_segment_length: 0xff_ffff,
            ..Default::default()
        };
        assert_eq!(decode_frame(&mut buf, &limits), Ok(None));
    }

    #[test]
    fn unknown_opcode_is_consumed_and_rejectable() {
        let mut wire = BytesMut::new();
        // Vendor-specific opcode 0x1c with 2 data bytes (+2 pad), ITT 0x99.
        wire.put_slice(&hx(&[
            "1c 80 00 00",
            "00 00 00 02",
            "00000000 00000000",
            "00 00 00 99",
        ]));
        wire.put_bytes(0, 28);
        wire.put_slice(&[0xab, 0xcd, 0, 0]);
        nop_out(b"after")
            .encode(DigestConfig::NONE)
            .write_to(&mut wire);
        let err = decode_frame(&mut wire, &DecodeLimits::default()).unwrap_err();
        let DecodeError::UnknownOpcode {
            opcode,
            itt,
            ref header,
        } = err
        else {
            panic!("{err:?}");
        };
        assert_eq!((opcode, itt), (0x1c, 0x99));
        assert_eq!(header.len(), BHS_LEN);
        assert_eq!(header[0], 0x1c);
        assert!(!err.is_fatal());
        assert_eq!(
            err.reject_reason(),
            Some(RejectReason::COMMAND_NOT_SUPPORTED)
        );
        assert_eq!(err.rejected_header().map(|h| h.len()), Some(48));
        assert_eq!(
            wire.len(),
            nop_out(b"after").encode(DigestConfig::NONE).len()
        );
        assert_eq!(
            decode_frame(&mut wire, &DecodeLimits::default()),
            Ok(Some(nop_out(b"after")))
        );
    }

    #[test]
    fn header_digest_error_is_fatal_and_consumes_nothing() {
        let limits = DecodeLimits {
            digests: DigestConfig::BOTH,
            ..Default::default()
        };
        let enc = nop_out(b"hi").encode(DigestConfig::BOTH).to_bytes();
        let mut bad = BytesMut::from(&enc[..]);
        bad[20] ^= 0x80; // TTT
        let err = decode_frame(&mut bad, &limits).unwrap_err();
        assert!(matches!(err, DecodeError::HeaderDigest { .. }));
        assert!(err.is_fatal());
        assert_eq!(bad.len(), enc.len());
        assert_eq!(err.reject_reason(), None);
        // A corrupted length is caught by the digest, before the length check.
        let mut bad = BytesMut::from(&enc[..]);
        bad[5] = 0xff;
        assert!(matches!(
            decode_frame(&mut bad, &limits),
            Err(DecodeError::HeaderDigest { .. })
        ));
        // Corrupting the digest itself is also caught.
        let mut bad = BytesMut::from(&enc[..]);
        bad[49] ^= 1;
        assert!(matches!(
            Pdu::decode(bad.freeze(), DigestConfig::BOTH),
            Err(DecodeError::HeaderDigest { .. })
        ));
    }

    #[test]
    fn data_digest_error_is_recoverable() {
        let limits = DecodeLimits {
            digests: DigestConfig::BOTH,
            ..Default::default()
        };
        let enc = nop_out(b"payload").encode(DigestConfig::BOTH).to_bytes();
        let mut bad = BytesMut::from(&enc[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        let err = decode_frame(&mut bad, &limits).unwrap_err();
        let DecodeError::DataDigest {
            opcode,
            itt,
            expected,
            actual,
            ref header,
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!((opcode, itt), (Opcode::NOP_OUT, 0x11));
        assert_eq!(
            expected ^ actual,
            0x0100_0000,
            "last wire byte is the CRC's top byte"
        );
        assert_eq!(
            header.len(),
            BHS_LEN,
            "the header digest is not part of the Reject data"
        );
        assert!(bad.is_empty(), "the whole PDU was consumed");
        assert!(!err.is_fatal());
        assert_eq!(err.reject_reason(), Some(RejectReason::DATA_DIGEST_ERROR));
    }

    #[test]
    fn discarded_data_out_keeps_its_header_only() {
        let limits = DecodeLimits {
            digests: DigestConfig::BOTH,
            ..Default::default()
        };
        let d = DataOut {
            final_: true,
            lun: 0,
            itt: 7,
            ttt: 0x55,
            exp_stat_sn: StatSn::new(3),
            data_sn: DataSn::new(2),
            buffer_offset: 1024,
            data: Bytes::from_static(b"corrupted payload"),
        };
        let enc = Pdu::DataOut(d.clone())
            .encode(DigestConfig::BOTH)
            .to_bytes();
        let mut bad = BytesMut::from(&enc[..]);
        bad[BHS_LEN + DIGEST_LEN + 3] ^= 0x40;
        let err = decode_frame(&mut bad, &limits).unwrap_err();
        let Some(Pdu::DataOut(h)) = err.discarded_pdu_header() else {
            panic!("{err:?}")
        };
        assert_eq!(
            h,
            DataOut {
                data: Bytes::new(),
                ..d
            }
        );
        // Other errors have no discarded header.
        let e = DecodeError::HeaderDigest {
            expected: 1,
            actual: 2,
        };
        assert!(e.discarded_pdu_header().is_none());
    }

    #[test]
    fn ahs_on_other_pdus_is_malformed() {
        let mut wire = BytesMut::new();
        // NOP-Out with TotalAHSLength 1 (4 bytes of AHS).
        wire.put_slice(&hx(&["40 80 00 00", "01 00 00 00"]));
        wire.put_bytes(0, 40);
        wire.put_slice(&hx(&["00 01 01 00"]));
        let err = Pdu::decode(wire.freeze(), DigestConfig::NONE).unwrap_err();
        let DecodeError::Malformed { opcode, header, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*opcode, Opcode::NOP_OUT);
        assert_eq!(header.len(), 52, "the Reject data carries BHS and AHS");
        assert_eq!(err.reject_reason(), Some(RejectReason::INVALID_PDU_FIELD));
    }

    #[test]
    fn decode_frame_takes_one_pdu_at_a_time() {
        let mut wire = BytesMut::new();
        for data in [&b""[..], b"a", b"abcd", b"abcdefghi"] {
            Pdu::NopOut(NopOut {
                data: Bytes::copy_from_slice(data),
                ..nop_out_plain()
            })
            .encode(DigestConfig::NONE)
            .write_to(&mut wire);
        }
        let mut lens = Vec::new();
        while let Some(p) = decode_frame(&mut wire, &DecodeLimits::default()).unwrap() {
            lens.push(p.data().len());
        }
        assert_eq!(lens, vec![0, 1, 4, 9]);
        assert!(wire.is_empty());
    }

    fn nop_out_plain() -> NopOut {
        let Pdu::NopOut(n) = nop_out(b"") else {
            unreachable!()
        };
        n
    }

    #[test]
    fn accessors() {
        let p = nop_out(b"");
        assert_eq!(p.itt(), 0x11);
        assert_eq!(p.cmd_sn(), Some(CmdSn::new(7)));
        assert_eq!(p.exp_stat_sn(), Some(StatSn::new(3)));
        assert_eq!(p.stat_sn(), None);
        assert!(p.immediate());
        let r = Pdu::Reject(Reject {
            reason: RejectReason::PROTOCOL_ERROR,
            stat_sn: StatSn::new(1),
            exp_cmd_sn: CmdSn::new(2),
            max_cmd_sn: CmdSn::new(3),
            data_sn_or_r2t_sn: SerialNumber::new(0),
            data: Bytes::new(),
        });
        assert_eq!(r.itt(), RESERVED_TAG);
        assert_eq!(r.cmd_sn_window(), Some((CmdSn::new(2), CmdSn::new(3))));
        assert_eq!(r.stat_sn(), Some(StatSn::new(1)));
        assert_eq!(r.cmd_sn(), None);
    }

    #[test]
    fn fixture_helper_rejects_wrong_expectations() {
        // The fixture helper must fail when the fixture and the value differ.
        let res = std::panic::catch_unwind(|| {
            check_fixture(
                &[
                    "40 80 00 00",
                    "00 00 00 00",
                    "00000000 00000000",
                    "00 00 00 12",
                    "ff ff ff ff",
                    "00 00 00 07",
                    "00 00 00 03",
                    "00000000 00000000 00000000 00000000",
                ],
                nop_out(b""),
            )
        });
        assert!(res.is_err());
    }
}
