//! Sense data (SPC-5 §4.4): sense keys, additional sense codes and the fixed
//! (response codes 70h/71h) and descriptor (72h/73h) formats.
//!
//! `Sense` is the decoded form; `Sense::encode` produces either format and
//! `Sense::parse` reads both, tolerating truncated or garbage buffers.

use std::fmt;

/// Sense key (SPC-5 §4.4.2, table 50). Open newtype: unknown values round-trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SenseKey(pub u8);

impl SenseKey {
    pub const NO_SENSE: Self = Self(0x0);
    pub const RECOVERED_ERROR: Self = Self(0x1);
    pub const NOT_READY: Self = Self(0x2);
    pub const MEDIUM_ERROR: Self = Self(0x3);
    pub const HARDWARE_ERROR: Self = Self(0x4);
    pub const ILLEGAL_REQUEST: Self = Self(0x5);
    pub const UNIT_ATTENTION: Self = Self(0x6);
    pub const DATA_PROTECT: Self = Self(0x7);
    pub const BLANK_CHECK: Self = Self(0x8);
    pub const VENDOR_SPECIFIC: Self = Self(0x9);
    pub const COPY_ABORTED: Self = Self(0xA);
    pub const ABORTED_COMMAND: Self = Self(0xB);
    pub const VOLUME_OVERFLOW: Self = Self(0xD);
    pub const MISCOMPARE: Self = Self(0xE);
    pub const COMPLETED: Self = Self(0xF);

    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0 => "NO SENSE",
            0x1 => "RECOVERED ERROR",
            0x2 => "NOT READY",
            0x3 => "MEDIUM ERROR",
            0x4 => "HARDWARE ERROR",
            0x5 => "ILLEGAL REQUEST",
            0x6 => "UNIT ATTENTION",
            0x7 => "DATA PROTECT",
            0x8 => "BLANK CHECK",
            0x9 => "VENDOR SPECIFIC",
            0xA => "COPY ABORTED",
            0xB => "ABORTED COMMAND",
            0xD => "VOLUME OVERFLOW",
            0xE => "MISCOMPARE",
            0xF => "COMPLETED",
            _ => return None,
        })
    }
}

impl fmt::Debug for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "SenseKey({:#x})", self.0),
        }
    }
}

/// Additional sense code and qualifier packed as `ASC << 8 | ASCQ`
/// (SPC-5 §4.4.3, table 51). Open newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Asc(pub u16);

impl Asc {
    pub const fn new(asc: u8, ascq: u8) -> Self {
        Self(((asc as u16) << 8) | ascq as u16)
    }
    pub const fn asc(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub const fn ascq(self) -> u8 {
        self.0 as u8
    }

    pub const NO_ADDITIONAL_SENSE: Self = Self(0x0000);
    pub const LOGICAL_UNIT_NOT_READY: Self = Self(0x0400);
    pub const LOGICAL_UNIT_NOT_READY_INITIALIZING_COMMAND_REQUIRED: Self = Self(0x0402);
    pub const LOGICAL_UNIT_NOT_READY_MANUAL_INTERVENTION_REQUIRED: Self = Self(0x0403);
    pub const SANITIZE_IN_PROGRESS: Self = Self(0x041B);
    pub const UNREACHABLE_COPY_TARGET: Self = Self(0x0804);
    pub const WRITE_ERROR: Self = Self(0x0C00);
    pub const COPY_TARGET_DEVICE_NOT_REACHABLE: Self = Self(0x0D02);
    pub const UNRECOVERED_READ_ERROR: Self = Self(0x1100);
    /// SAM-5 §5.4.3: the Data-Out the transport delivered does not fit the
    /// command (EDTL smaller than the CDB's transfer length).
    pub const INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT: Self = Self(0x0E03);
    pub const PARAMETER_LIST_LENGTH_ERROR: Self = Self(0x1A00);
    pub const MISCOMPARE_DURING_VERIFY: Self = Self(0x1D00);
    pub const MISCOMPARE_VERIFY_OF_UNMAPPED_LBA: Self = Self(0x1D01);
    pub const INVALID_COMMAND_OPERATION_CODE: Self = Self(0x2000);
    pub const LBA_OUT_OF_RANGE: Self = Self(0x2100);
    pub const INVALID_FIELD_IN_CDB: Self = Self(0x2400);
    pub const LOGICAL_UNIT_NOT_SUPPORTED: Self = Self(0x2500);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Self = Self(0x2600);
    pub const PARAMETER_NOT_SUPPORTED: Self = Self(0x2601);
    pub const PARAMETER_VALUE_INVALID: Self = Self(0x2602);
    pub const INVALID_RELEASE_OF_PERSISTENT_RESERVATION: Self = Self(0x2604);
    pub const TOO_MANY_TARGET_DESCRIPTORS: Self = Self(0x2606);
    pub const UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE: Self = Self(0x2607);
    pub const TOO_MANY_SEGMENT_DESCRIPTORS: Self = Self(0x2608);
    pub const UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE: Self = Self(0x2609);
    pub const WRITE_PROTECTED: Self = Self(0x2700);
    pub const SOFTWARE_WRITE_PROTECTED: Self = Self(0x2702);
    pub const POWER_ON_RESET_OR_BUS_DEVICE_RESET: Self = Self(0x2900);
    pub const POWER_ON_OCCURRED: Self = Self(0x2901);
    pub const SCSI_BUS_RESET_OCCURRED: Self = Self(0x2902);
    pub const BUS_DEVICE_RESET_FUNCTION_OCCURRED: Self = Self(0x2903);
    pub const I_T_NEXUS_LOSS_OCCURRED: Self = Self(0x2907);
    pub const MODE_PARAMETERS_CHANGED: Self = Self(0x2A01);
    pub const RESERVATIONS_PREEMPTED: Self = Self(0x2A03);
    pub const RESERVATIONS_RELEASED: Self = Self(0x2A04);
    pub const REGISTRATIONS_PREEMPTED: Self = Self(0x2A05);
    pub const CAPACITY_DATA_HAS_CHANGED: Self = Self(0x2A09);
    pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: Self = Self(0x2F00);
    pub const COMMANDS_CLEARED_BY_DEVICE_SERVER: Self = Self(0x2F02);
    pub const MEDIUM_FORMAT_CORRUPTED: Self = Self(0x3100);
    pub const SANITIZE_COMMAND_FAILED: Self = Self(0x3103);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Self = Self(0x3900);
    pub const MEDIUM_NOT_PRESENT: Self = Self(0x3A00);
    pub const MEDIUM_NOT_PRESENT_TRAY_CLOSED: Self = Self(0x3A01);
    pub const MEDIUM_NOT_PRESENT_TRAY_OPEN: Self = Self(0x3A02);
    pub const INQUIRY_DATA_HAS_CHANGED: Self = Self(0x3F03);
    pub const REPORTED_LUNS_DATA_HAS_CHANGED: Self = Self(0x3F0E);
    pub const INTERNAL_TARGET_FAILURE: Self = Self(0x4400);
    /// DATA PHASE ERROR: a write's Data-Out sequence broke the rules
    /// (DataSN, offsets, bursts; RFC 7143 §7.9).
    pub const DATA_PHASE_ERROR: Self = Self(0x4B00);
    /// PROTOCOL SERVICE CRC ERROR: RFC 7143 §11.4.7.2 "iSCSI Condition",
    /// the answer to a Data-Out that failed its data digest (§7.8) with
    /// sense key ABORTED COMMAND. The command may be retried.
    pub const PROTOCOL_SERVICE_CRC_ERROR: Self = Self(0x4705);
    pub const MEDIUM_REMOVAL_PREVENTED: Self = Self(0x5302);
    pub const INSUFFICIENT_REGISTRATION_RESOURCES: Self = Self(0x5504);
}

impl fmt::Debug for Asc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Asc({:02x}/{:02x})", self.asc(), self.ascq())
    }
}

/// Sense-key-specific information (SPC-5 §4.4.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenseKeySpecific {
    /// Field pointer (ILLEGAL REQUEST): which byte (and optionally bit) of the
    /// CDB (`cdb == true`, C/D = 1) or of the parameter list is wrong.
    FieldPointer {
        cdb: bool,
        bit: Option<u8>,
        field: u16,
    },
    /// Progress indication (NOT READY, NO SENSE): 0..=65535 of 65536.
    Progress(u16),
    /// Any other content, kept raw (3 bytes, SKSV bit included).
    Raw([u8; 3]),
}

impl SenseKeySpecific {
    fn encode(self) -> [u8; 3] {
        match self {
            SenseKeySpecific::FieldPointer { cdb, bit, field } => {
                let mut b0 = 0x80;
                if cdb {
                    b0 |= 0x40;
                }
                if let Some(bit) = bit {
                    b0 |= 0x08 | (bit & 0x07);
                }
                let f = field.to_be_bytes();
                [b0, f[0], f[1]]
            }
            SenseKeySpecific::Progress(p) => {
                let f = p.to_be_bytes();
                [0x80, f[0], f[1]]
            }
            SenseKeySpecific::Raw(r) => r,
        }
    }

    fn decode(key: SenseKey, b: [u8; 3]) -> Option<Self> {
        if b[0] & 0x80 == 0 {
            return None;
        }
        let v = u16::from_be_bytes([b[1], b[2]]);
        Some(match key {
            SenseKey::ILLEGAL_REQUEST => SenseKeySpecific::FieldPointer {
                cdb: b[0] & 0x40 != 0,
                bit: (b[0] & 0x08 != 0).then_some(b[0] & 0x07),
                field: v,
            },
            SenseKey::NOT_READY | SenseKey::NO_SENSE => SenseKeySpecific::Progress(v),
            _ => SenseKeySpecific::Raw(b),
        })
    }
}

/// Decoded sense data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: Asc,
    /// Deferred error (response code 71h/73h) rather than current (70h/72h).
    pub deferred: bool,
    /// INFORMATION field (e.g. the first LBA that miscompared), VALID bit set.
    pub information: Option<u64>,
    /// COMMAND-SPECIFIC INFORMATION field.
    pub command_specific: Option<u64>,
    pub sense_key_specific: Option<SenseKeySpecific>,
}

/// Sense buffer could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SenseError {
    #[error("sense data too short ({0} bytes)")]
    Truncated(usize),
    #[error("unknown sense response code {0:#04x}")]
    UnknownResponseCode(u8),
}

/// Length of the fixed-format sense data we produce (SPC-5 §4.4.3: 18 bytes).
pub const FIXED_SENSE_LEN: usize = 18;

impl Sense {
    pub fn new(key: SenseKey, asc: Asc) -> Self {
        Self {
            key,
            asc,
            deferred: false,
            information: None,
            command_specific: None,
            sense_key_specific: None,
        }
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN CDB with a field pointer at `byte`
    /// (and `bit` when known).
    pub fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Self {
        Self::new(SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB)
            .with_field_pointer(true, byte, bit)
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST with a field pointer.
    pub fn invalid_field_in_parameter_list(byte: u16, bit: Option<u8>) -> Self {
        Self::new(
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST,
        )
        .with_field_pointer(false, byte, bit)
    }

    pub fn illegal_request(asc: Asc) -> Self {
        Self::new(SenseKey::ILLEGAL_REQUEST, asc)
    }

    pub fn unit_attention(asc: Asc) -> Self {
        Self::new(SenseKey::UNIT_ATTENTION, asc)
    }

    pub fn with_field_pointer(mut self, cdb: bool, field: u16, bit: Option<u8>) -> Self {
        self.sense_key_specific = Some(SenseKeySpecific::FieldPointer { cdb, bit, field });
        self
    }

    pub fn with_information(mut self, info: u64) -> Self {
        self.information = Some(info);
        self
    }

    /// Encodes in descriptor format (72h/73h) when `descriptor`, else fixed
    /// format (70h/71h).
    pub fn encode(&self, descriptor: bool) -> Vec<u8> {
        if descriptor {
            self.encode_descriptor()
        } else {
            self.encode_fixed().to_vec()
        }
    }

    /// Fixed format (SPC-5 §4.4.3, table 56). The INFORMATION field is 4
    /// bytes: a larger value sets VALID = 0 as the standard requires.
    pub fn encode_fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut b = [0u8; FIXED_SENSE_LEN];
        b[0] = if self.deferred { 0x71 } else { 0x70 };
        b[2] = self.key.0 & 0x0F;
        if let Some(info) = self.information {
            if let Ok(v) = u32::try_from(info) {
                b[0] |= 0x80;
                b[3..7].copy_from_slice(&v.to_be_bytes());
            }
        }
        b[7] = (FIXED_SENSE_LEN - 8) as u8;
        if let Some(cs) = self.command_specific {
            b[8..12].copy_from_slice(&(cs as u32).to_be_bytes());
        }
        b[12] = self.asc.asc();
        b[13] = self.asc.ascq();
        if let Some(sks) = self.sense_key_specific {
            b[15..18].copy_from_slice(&sks.encode());
        }
        b
    }

    /// Descriptor format (SPC-5 §4.4.2, table 27) with information (00h),
    /// command-specific (01h) and sense-key-specific (02h) descriptors.
    pub fn encode_descriptor(&self) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b[0] = if self.deferred { 0x73 } else { 0x72 };
        b[1] = self.key.0 & 0x0F;
        b[2] = self.asc.asc();
        b[3] = self.asc.ascq();
        if let Some(info) = self.information {
            b.extend_from_slice(&[0x00, 0x0A, 0x80, 0x00]);
            b.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(cs) = self.command_specific {
            b.extend_from_slice(&[0x01, 0x0A, 0x00, 0x00]);
            b.extend_from_slice(&cs.to_be_bytes());
        }
        if let Some(sks) = self.sense_key_specific {
            b.extend_from_slice(&[0x02, 0x06, 0x00]);
            b.extend_from_slice(&sks.encode());
            b.extend_from_slice(&[0x00, 0x00]);
        }
        b[7] = (b.len() - 8) as u8;
        b
    }

    /// Parses fixed or descriptor sense data. Truncated buffers yield what
    /// is present (the ADDITIONAL SENSE LENGTH is never trusted beyond the
    /// buffer); fewer than the key bytes is an error.
    pub fn parse(buf: &[u8]) -> Result<Self, SenseError> {
        let first = *buf.first().ok_or(SenseError::Truncated(0))?;
        let code = first & 0x7F;
        match code {
            0x70 | 0x71 => {
                if buf.len() < 3 {
                    return Err(SenseError::Truncated(buf.len()));
                }
                let mut s = Sense::new(SenseKey(buf[2] & 0x0F), Asc(0));
                s.deferred = code == 0x71;
                let add_len = buf.get(7).copied().unwrap_or(0) as usize;
                let end = (8 + add_len).min(buf.len());
                let get = |i: usize| if i < end { buf[i] } else { 0 };
                if first & 0x80 != 0 && end >= 7 {
                    s.information =
                        Some(u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as u64);
                }
                if end >= 12 {
                    let cs = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                    if cs != 0 {
                        s.command_specific = Some(cs as u64);
                    }
                }
                s.asc = Asc::new(get(12), get(13));
                if end >= 18 {
                    s.sense_key_specific =
                        SenseKeySpecific::decode(s.key, [buf[15], buf[16], buf[17]]);
                }
                Ok(s)
            }
            0x72 | 0x73 => {
                if buf.len() < 4 {
                    return Err(SenseError::Truncated(buf.len()));
                }
                let mut s = Sense::new(SenseKey(buf[1] & 0x0F), Asc::new(buf[2], buf[3]));
                s.deferred = code == 0x73;
                let add_len = buf.get(7).copied().unwrap_or(0) as usize;
                let end = (8 + add_len).min(buf.len());
                let mut i = 8;
                while i + 2 <= end {
                    let dtype = buf[i];
                    let dlen = buf[i + 1] as usize;
                    let body_end = i + 2 + dlen;
                    if body_end > end {
                        break;
                    }
                    let d = &buf[i + 2..body_end];
                    match dtype {
                        0x00 if d.len() >= 10 => {
                            let v = u64::from_be_bytes(d[2..10].try_into().unwrap_or([0; 8]));
                            if d[0] & 0x80 != 0 {
                                s.information = Some(v);
                            }
                        }
                        0x01 if d.len() >= 10 => {
                            s.command_specific =
                                Some(u64::from_be_bytes(d[2..10].try_into().unwrap_or([0; 8])));
                        }
                        0x02 if d.len() >= 4 => {
                            s.sense_key_specific =
                                SenseKeySpecific::decode(s.key, [d[1], d[2], d[3]]);
                        }
                        _ => {}
                    }
                    i = body_end;
                }
                Ok(s)
            }
            _ => Err(SenseError::UnknownResponseCode(first)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_round_trip_with_field_pointer() {
        let s = Sense::invalid_field_in_cdb(2, Some(7));
        let b = s.encode_fixed();
        assert_eq!(b[0], 0x70);
        assert_eq!(b[2], 0x05);
        assert_eq!(b[7], 10);
        assert_eq!((b[12], b[13]), (0x24, 0x00));
        assert_eq!(&b[15..18], &[0xCF, 0x00, 0x02]);
        assert_eq!(Sense::parse(&b).unwrap(), s);
    }

    #[test]
    fn descriptor_round_trip_with_information() {
        let s = Sense::new(SenseKey::MISCOMPARE, Asc::MISCOMPARE_DURING_VERIFY)
            .with_information(0x1_0000_0005);
        let b = s.encode_descriptor();
        assert_eq!(b[0], 0x72);
        assert_eq!(b[7] as usize, b.len() - 8);
        assert_eq!(Sense::parse(&b).unwrap(), s);
        // Fixed format cannot carry a 64-bit INFORMATION: VALID must be 0.
        let f = s.encode_fixed();
        assert_eq!(f[0], 0x70);
        assert_eq!(Sense::parse(&f).unwrap().information, None);
    }

    #[test]
    fn fixed_information_small_value() {
        let s = Sense::new(SenseKey::MISCOMPARE, Asc::MISCOMPARE_DURING_VERIFY).with_information(9);
        let b = s.encode_fixed();
        assert_eq!(b[0], 0xF0);
        assert_eq!(&b[3..7], &[0, 0, 0, 9]);
        assert_eq!(Sense::parse(&b).unwrap(), s);
    }

    #[test]
    fn parse_never_panics_on_garbage() {
        let mut seed = 0x1234_5678u32;
        for len in 0..64 {
            for _ in 0..50 {
                let buf: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (seed >> 16) as u8
                    })
                    .collect();
                let _ = Sense::parse(&buf);
            }
        }
        assert!(Sense::parse(&[]).is_err());
        assert!(Sense::parse(&[0x70, 0]).is_err());
        assert_eq!(
            Sense::parse(&[0x05]),
            Err(SenseError::UnknownResponseCode(5))
        );
    }

    #[test]
    fn truncated_fixed_keeps_key() {
        let b = Sense::unit_attention(Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET).encode_fixed();
        let s = Sense::parse(&b[..8]).unwrap();
        assert_eq!(s.key, SenseKey::UNIT_ATTENTION);
        assert_eq!(s.asc, Asc(0));
        let s = Sense::parse(&b[..14]).unwrap();
        assert_eq!(s.asc, Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET);
    }
}
