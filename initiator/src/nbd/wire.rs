//! NBD wire format (NBD protocol, doc/proto.md of NetworkBlockDevice/nbd):
//! magic numbers, flag bits, option and reply codes, the 28-byte request
//! header, and encoders for option replies, simple replies and structured
//! reply chunks. Pure functions over bytes; no I/O.

use bytes::{BufMut, Bytes, BytesMut};

/// "NBDMAGIC", the first 8 bytes the server sends (§ Newstyle negotiation).
pub(crate) const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT", sent by the server after NBDMAGIC and by the client before each option.
pub(crate) const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Magic of every option reply (§ Fixed newstyle negotiation).
pub(crate) const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub(crate) const REQUEST_MAGIC: u32 = 0x2560_9513;
pub(crate) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub(crate) const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server) and client flags.
pub(crate) const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub(crate) const FLAG_NO_ZEROES: u16 = 1 << 1;
pub(crate) const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub(crate) const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags (§ Transmission flags).
pub(crate) const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub(crate) const FLAG_READ_ONLY: u16 = 1 << 1;
pub(crate) const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub(crate) const FLAG_SEND_FUA: u16 = 1 << 3;
pub(crate) const FLAG_SEND_TRIM: u16 = 1 << 5;
pub(crate) const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub(crate) const FLAG_SEND_DF: u16 = 1 << 7;
pub(crate) const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Option types.
pub(crate) const OPT_EXPORT_NAME: u32 = 1;
pub(crate) const OPT_ABORT: u32 = 2;
pub(crate) const OPT_LIST: u32 = 3;
pub(crate) const OPT_STARTTLS: u32 = 5;
pub(crate) const OPT_INFO: u32 = 6;
pub(crate) const OPT_GO: u32 = 7;
pub(crate) const OPT_STRUCTURED_REPLY: u32 = 8;
pub(crate) const OPT_LIST_META_CONTEXT: u32 = 9;
pub(crate) const OPT_SET_META_CONTEXT: u32 = 10;

/// Option reply types; errors have bit 31 set.
pub(crate) const REP_ACK: u32 = 1;
pub(crate) const REP_SERVER: u32 = 2;
pub(crate) const REP_INFO: u32 = 3;
pub(crate) const REP_META_CONTEXT: u32 = 4;
pub(crate) const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub(crate) const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub(crate) const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub(crate) const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

/// NBD_REP_INFO types.
pub(crate) const INFO_EXPORT: u16 = 0;
pub(crate) const INFO_NAME: u16 = 1;
pub(crate) const INFO_DESCRIPTION: u16 = 2;
pub(crate) const INFO_BLOCK_SIZE: u16 = 3;

/// Command types.
pub(crate) const CMD_READ: u16 = 0;
pub(crate) const CMD_WRITE: u16 = 1;
pub(crate) const CMD_DISC: u16 = 2;
pub(crate) const CMD_FLUSH: u16 = 3;
pub(crate) const CMD_TRIM: u16 = 4;
pub(crate) const CMD_WRITE_ZEROES: u16 = 6;
pub(crate) const CMD_BLOCK_STATUS: u16 = 7;

/// Command flags.
pub(crate) const CMD_FLAG_FUA: u16 = 1 << 0;
pub(crate) const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub(crate) const CMD_FLAG_DF: u16 = 1 << 2;
pub(crate) const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

/// Structured reply flags and chunk types.
pub(crate) const REPLY_FLAG_DONE: u16 = 1 << 0;
pub(crate) const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub(crate) const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub(crate) const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// `base:allocation` status flags.
pub(crate) const STATE_HOLE: u32 = 1 << 0;
pub(crate) const STATE_ZERO: u32 = 1 << 1;

/// The only metadata context this server knows.
pub(crate) const BASE_ALLOCATION: &str = "base:allocation";

/// Error values (§ Error values): the subset of the values the spec
/// defines (EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN)
/// that this server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Errno {
    Perm = 1,
    Io = 5,
    Inval = 22,
    NoSpc = 28,
    Shutdown = 108,
}

/// Length of a transmission request header.
pub(crate) const REQUEST_LEN: usize = 28;

/// A transmission-phase request header.
///
/// ```text
/// C: 32 bits, 0x25609513, magic (NBD_REQUEST_MAGIC)
/// C: 16 bits, command flags
/// C: 16 bits, type
/// C: 64 bits, handle
/// C: 64 bits, offset (unsigned)
/// C: 32 bits, length (unsigned)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    pub flags: u16,
    pub kind: u16,
    pub handle: u64,
    pub offset: u64,
    pub length: u32,
}

impl Request {
    /// `None` when the magic is wrong (the stream cannot be trusted any more).
    pub(crate) fn parse(b: &[u8; REQUEST_LEN]) -> Option<Request> {
        let be32 = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let be64 = |i: usize| (u64::from(be32(i)) << 32) | u64::from(be32(i + 4));
        if be32(0) != REQUEST_MAGIC {
            return None;
        }
        Some(Request {
            flags: u16::from_be_bytes([b[4], b[5]]),
            kind: u16::from_be_bytes([b[6], b[7]]),
            handle: be64(8),
            offset: be64(16),
            length: be32(24),
        })
    }

    #[cfg(test)]
    pub(crate) fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.handle.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// The server's opening: NBDMAGIC, IHAVEOPT, handshake flags.
pub(crate) fn greeting() -> [u8; 18] {
    let mut b = [0u8; 18];
    b[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..18].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    b
}

/// An option reply: magic, option, reply type, length, data.
pub(crate) fn option_reply(option: u32, reply: u32, data: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(20 + data.len());
    b.put_u64(OPT_REPLY_MAGIC);
    b.put_u32(option);
    b.put_u32(reply);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b
}

/// NBD_INFO_EXPORT payload: type, size, transmission flags.
pub(crate) fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b
}

/// NBD_INFO_NAME / NBD_INFO_DESCRIPTION payload.
pub(crate) fn info_string(kind: u16, s: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + s.len());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(s.as_bytes());
    b
}

/// NBD_INFO_BLOCK_SIZE payload: minimum, preferred, maximum.
pub(crate) fn info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(14);
    b.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    b.extend_from_slice(&min.to_be_bytes());
    b.extend_from_slice(&preferred.to_be_bytes());
    b.extend_from_slice(&max.to_be_bytes());
    b
}

/// The reply to NBD_OPT_EXPORT_NAME: size, flags, and 124 zero bytes
/// unless the client set NBD_FLAG_C_NO_ZEROES.
pub(crate) fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> BytesMut {
    let mut b = BytesMut::with_capacity(134);
    b.put_u64(size);
    b.put_u16(flags);
    if !no_zeroes {
        b.put_bytes(0, 124);
    }
    b
}

/// A simple reply header (the data, if any, follows separately).
pub(crate) fn simple_reply(handle: u64, error: u32) -> BytesMut {
    let mut b = BytesMut::with_capacity(16);
    b.put_u32(SIMPLE_REPLY_MAGIC);
    b.put_u32(error);
    b.put_u64(handle);
    b
}

/// A structured reply chunk header for `len` payload bytes.
pub(crate) fn chunk_header(handle: u64, flags: u16, kind: u16, len: u32) -> BytesMut {
    let mut b = BytesMut::with_capacity(20 + 64);
    b.put_u32(STRUCTURED_REPLY_MAGIC);
    b.put_u16(flags);
    b.put_u16(kind);
    b.put_u64(handle);
    b.put_u32(len);
    b
}

/// NBD_REPLY_TYPE_ERROR chunk (final) with a human-readable message.
pub(crate) fn error_chunk(handle: u64, errno: Errno, message: &str) -> BytesMut {
    // The message is a 16-bit-length string; keep it short.
    let msg = truncate_utf8(message, 512);
    let mut b = chunk_header(
        handle,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        6 + msg.len() as u32,
    );
    b.put_u32(errno as u32);
    b.put_u16(msg.len() as u16);
    b.put_slice(msg.as_bytes());
    b
}

/// NBD_REPLY_TYPE_OFFSET_DATA header (final); the data follows separately.
pub(crate) fn offset_data_header(handle: u64, offset: u64, data_len: usize) -> BytesMut {
    let mut b = chunk_header(
        handle,
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        8 + data_len as u32,
    );
    b.put_u64(offset);
    b
}

/// NBD_REPLY_TYPE_BLOCK_STATUS chunk (final) for one context.
pub(crate) fn block_status_chunk(handle: u64, context: u32, extents: &[(u32, u32)]) -> BytesMut {
    let mut b = chunk_header(
        handle,
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        4 + 8 * extents.len() as u32,
    );
    b.put_u32(context);
    for &(len, flags) in extents {
        b.put_u32(len);
        b.put_u32(flags);
    }
    b
}

/// The longest prefix of `s` of at most `max` bytes that is valid UTF-8.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A cursor over option data that refuses to read past its end.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn u16(&mut self) -> Option<u16> {
        let (h, t) = self.0.split_first_chunk::<2>()?;
        self.0 = t;
        Some(u16::from_be_bytes(*h))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        let (h, t) = self.0.split_first_chunk::<4>()?;
        self.0 = t;
        Some(u32::from_be_bytes(*h))
    }
    /// A string of `len` bytes (UTF-8, at most 4096 bytes as the spec requires).
    pub(crate) fn string(&mut self, len: u32) -> Option<&'a str> {
        let len = usize::try_from(len).ok().filter(|&l| l <= 4096)?;
        if len > self.0.len() {
            return None;
        }
        let (h, t) = self.0.split_at(len);
        self.0 = t;
        std::str::from_utf8(h).ok()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A reply ready for the writer: a header and an optional payload that is
/// written after it without copying.
pub(crate) struct Frame {
    pub head: BytesMut,
    pub data: Option<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_and_bad_magic() {
        let r = Request {
            flags: CMD_FLAG_FUA,
            kind: CMD_WRITE,
            handle: 0x0102_0304_0506_0708,
            offset: 4096,
            length: 512,
        };
        let b = r.encode();
        assert_eq!(
            hex(&b),
            "25609513000100010102030405060708000000000000100000000200"
        );
        assert_eq!(Request::parse(&b), Some(r));
        let mut bad = b;
        bad[0] = 0;
        assert_eq!(Request::parse(&bad), None);
    }

    #[test]
    fn greeting_bytes() {
        assert_eq!(hex(&greeting()), "4e42444d4147494349484156454f50540003");
    }

    #[test]
    fn option_reply_layout() {
        let b = option_reply(OPT_LIST, REP_SERVER, b"\0\0\0\x04lun0");
        assert_eq!(
            hex(&b),
            "0003e889045565a9000000030000000200000008000000046c756e30"
        );
    }

    #[test]
    fn chunks() {
        let e = error_chunk(7, Errno::Inval, "bad");
        assert_eq!(
            hex(&e),
            "668e33ef000180010000000000000007000000090000001600036261 64".replace(' ', "")
        );
        let s = block_status_chunk(1, 1, &[(4096, STATE_HOLE | STATE_ZERO)]);
        assert_eq!(s.len(), 20 + 12);
        assert_eq!(&s[20..], &[0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0, 0, 3]);
        let d = offset_data_header(2, 512, 4096);
        assert_eq!(&d[16..20], &(4104u32).to_be_bytes());
        assert_eq!(&d[20..28], &512u64.to_be_bytes());
        assert_eq!(export_name_reply(1, 3, false).len(), 134);
        assert_eq!(export_name_reply(1, 3, true).len(), 10);
    }

    #[test]
    fn reader_bounds() {
        let mut r = Reader(&[0, 0, 0, 2, b'a', b'b', 0, 1]);
        let n = r.u32().unwrap();
        assert_eq!(r.string(n), Some("ab"));
        assert_eq!(r.u16(), Some(1));
        assert!(r.is_empty());
        assert_eq!(r.u16(), None);
        let mut r = Reader(&[0xff, 0xff]);
        assert_eq!(r.string(3), None);
        assert_eq!(Reader(&[0xc3]).string(1), None, "invalid UTF-8");
        assert_eq!(truncate_utf8("héllo", 2), "h");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
