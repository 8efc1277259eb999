//! CRC32C header and data digests (RFC 7143 §11.1 and §13.1, RFC 3720 Appendix B.4).
//!
//! iSCSI digests use CRC32C (Castagnoli, polynomial 0x1EDC6F41, reflected,
//! initial value and final XOR 0xFFFFFFFF): exactly the function computed by
//! the `crc32c` crate (hardware-accelerated where available).
//!
//! Wire byte order: the CRC register is sent least-significant byte first.
//! RFC 3720 B.4 gives "32 bytes of zeroes" -> bytes `aa 36 91 8a`, which is
//! `0x8A9136AA.to_le_bytes()`; the unit tests check all of the RFC's vectors
//! this way, and the captured tgtd/libiscsi vectors with digests enabled
//! (`proto/tests/pdu_vectors.rs`) confirm it against real peers.
//!
//! RFC 7143 §11.2: the header digest covers the BHS and AHS; the data digest
//! covers the data segment including its padding, and is present only when
//! the data segment is not empty.

/// Length of a digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// CRC32C of `data` as an integer (the value compared, not the wire bytes).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continues a CRC32C over more bytes: `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The 4 wire bytes of a digest value (little-endian, see the module docs).
pub fn to_wire(digest: u32) -> [u8; DIGEST_LEN] {
    digest.to_le_bytes()
}

/// The digest value carried by 4 wire bytes.
pub fn from_wire(bytes: [u8; DIGEST_LEN]) -> u32 {
    u32::from_le_bytes(bytes)
}

/// The wire bytes of the digest of `data`.
pub fn wire_digest(data: &[u8]) -> [u8; DIGEST_LEN] {
    to_wire(crc32c(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 3720 Appendix B.4, "CRC Examples": each line gives the data and the
    // CRC bytes as they appear in the PDU.
    #[test]
    fn rfc3720_b4_zeros() {
        assert_eq!(wire_digest(&[0u8; 32]), [0xaa, 0x36, 0x91, 0x8a]);
    }

    #[test]
    fn rfc3720_b4_ones() {
        assert_eq!(wire_digest(&[0xffu8; 32]), [0x43, 0xab, 0xa8, 0x62]);
    }

    #[test]
    fn rfc3720_b4_incrementing() {
        let data: Vec<u8> = (0u8..32).collect();
        assert_eq!(wire_digest(&data), [0x4e, 0x79, 0xdd, 0x46]);
    }

    #[test]
    fn rfc3720_b4_decrementing() {
        let data: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(wire_digest(&data), [0x5c, 0xdb, 0x3f, 0x11]);
    }

    #[test]
    fn rfc3720_b4_scsi_read_pdu() {
        // An iSCSI SCSI Read (10) Command PDU.
        let pdu = [
            0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0..8
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 8..16
            0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, // 16..24
            0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, // 24..32
            0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 32..40 CDB
            0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 40..48
        ];
        assert_eq!(wire_digest(&pdu), [0x56, 0x3a, 0x96, 0xd9]);
    }

    #[test]
    fn standard_check_value() {
        // The CRC-32C catalogue check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn append_matches_whole() {
        let a = b"hello ";
        let b = b"iscsi world";
        let whole: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        assert_eq!(crc32c_append(crc32c(a), b), crc32c(&whole));
        assert_eq!(from_wire(to_wire(0x1234_5678)), 0x1234_5678);
        assert_eq!(to_wire(0x1234_5678), [0x78, 0x56, 0x34, 0x12]);
    }
}
