//! INQUIRY data (SPC-5 §6.7.2) and the vital product data pages a block
//! device reports (SPC-5 §7.7, SBC-4 §6.6): builders for the target and
//! parsers for the initiator.

/// Peripheral device type: direct access block device (SBC).
pub const PDT_DIRECT_ACCESS: u8 = 0x00;
/// Peripheral qualifier 011b: no logical unit at this LUN (SPC-5 §6.7.2).
pub const PQ_NOT_CAPABLE: u8 = 0x03;

/// Version descriptors (SPC-5 table 146).
pub mod version {
    pub const SAM_5: u16 = 0x00A0;
    pub const SPC_4: u16 = 0x0460;
    pub const SBC_3: u16 = 0x04C0;
    pub const ISCSI: u16 = 0x0960;
}

/// VPD page codes.
pub mod vpd {
    pub const SUPPORTED_PAGES: u8 = 0x00;
    pub const UNIT_SERIAL_NUMBER: u8 = 0x80;
    pub const DEVICE_IDENTIFICATION: u8 = 0x83;
    pub const EXTENDED_INQUIRY: u8 = 0x86;
    pub const THIRD_PARTY_COPY: u8 = 0x8F;
    pub const BLOCK_LIMITS: u8 = 0xB0;
    pub const BLOCK_DEVICE_CHARACTERISTICS: u8 = 0xB1;
    pub const LOGICAL_BLOCK_PROVISIONING: u8 = 0xB2;
}

/// Standard INQUIRY data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandardInquiry {
    pub peripheral_qualifier: u8,
    pub device_type: u8,
    pub rmb: bool,
    /// VERSION: 06h = SPC-4.
    pub version: u8,
    pub normaca: bool,
    pub hisup: bool,
    pub tpgs: u8,
    pub three_pc: bool,
    pub protect: bool,
    pub cmdque: bool,
    pub vendor: [u8; 8],
    pub product: [u8; 16],
    pub revision: [u8; 4],
    pub version_descriptors: Vec<u16>,
}

/// Space-pads (and truncates) an ASCII identifier field.
pub fn ascii_field<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    for (o, c) in out
        .iter_mut()
        .zip(s.bytes().filter(|c| (0x20..0x7F).contains(c)))
    {
        *o = c;
    }
    out
}

impl StandardInquiry {
    /// A direct-access block device claiming SPC-4.
    pub fn block_device(vendor: &str, product: &str, revision: &str) -> Self {
        Self {
            peripheral_qualifier: 0,
            device_type: PDT_DIRECT_ACCESS,
            rmb: false,
            version: 0x06,
            normaca: false,
            hisup: true,
            tpgs: 0,
            three_pc: false,
            protect: false,
            cmdque: true,
            vendor: ascii_field(vendor),
            product: ascii_field(product),
            revision: ascii_field(revision),
            version_descriptors: vec![
                version::SAM_5,
                version::ISCSI,
                version::SPC_4,
                version::SBC_3,
            ],
        }
    }

    /// Encodes the 96-byte form (with up to 8 version descriptors).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 96];
        b[0] = (self.peripheral_qualifier << 5) | (self.device_type & 0x1F);
        b[1] = if self.rmb { 0x80 } else { 0 };
        b[2] = self.version;
        b[3] = 0x02 | if self.normaca { 0x20 } else { 0 } | if self.hisup { 0x10 } else { 0 };
        b[4] = (96 - 5) as u8;
        b[5] = ((self.tpgs & 3) << 4) | if self.three_pc { 0x08 } else { 0 } | self.protect as u8;
        b[7] = if self.cmdque { 0x02 } else { 0 };
        b[8..16].copy_from_slice(&self.vendor);
        b[16..32].copy_from_slice(&self.product);
        b[32..36].copy_from_slice(&self.revision);
        for (i, v) in self.version_descriptors.iter().take(8).enumerate() {
            b[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
        }
        b
    }

    /// Parses at least the first 36 bytes.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < 36 {
            return None;
        }
        let mut s = Self {
            peripheral_qualifier: b[0] >> 5,
            device_type: b[0] & 0x1F,
            rmb: b[1] & 0x80 != 0,
            version: b[2],
            normaca: b[3] & 0x20 != 0,
            hisup: b[3] & 0x10 != 0,
            tpgs: (b[5] >> 4) & 3,
            three_pc: b[5] & 0x08 != 0,
            protect: b[5] & 1 != 0,
            cmdque: b[7] & 0x02 != 0,
            vendor: [0; 8],
            product: [0; 16],
            revision: [0; 4],
            version_descriptors: Vec::new(),
        };
        s.vendor.copy_from_slice(&b[8..16]);
        s.product.copy_from_slice(&b[16..32]);
        s.revision.copy_from_slice(&b[32..36]);
        let end = (b[4] as usize + 5).min(b.len()).min(74);
        let mut i = 58;
        while i + 2 <= end {
            let v = u16::from_be_bytes([b[i], b[i + 1]]);
            if v != 0 {
                s.version_descriptors.push(v);
            }
            i += 2;
        }
        Some(s)
    }
}

/// Wraps a VPD page body in its 4-byte header (SPC-5 §7.7.1).
pub fn vpd_page(pdt: u8, page_code: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + body.len());
    v.push(pdt & 0x1F);
    v.push(page_code);
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Splits a VPD page into (page code, body), bounded by the buffer.
pub fn parse_vpd(b: &[u8]) -> Option<(u8, &[u8])> {
    if b.len() < 4 {
        return None;
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    Some((b[1], &b[4..(4 + len).min(b.len())]))
}

/// Designator types (SPC-5 §7.7.6.1, table 581).
pub mod designator {
    pub const T10_VENDOR_ID: u8 = 1;
    pub const EUI64: u8 = 2;
    pub const NAA: u8 = 3;
    pub const RELATIVE_TARGET_PORT: u8 = 4;
    pub const TARGET_PORT_GROUP: u8 = 5;
    pub const SCSI_NAME_STRING: u8 = 8;
    pub const CODE_SET_BINARY: u8 = 1;
    pub const CODE_SET_ASCII: u8 = 2;
    pub const CODE_SET_UTF8: u8 = 3;
    pub const ASSOC_LU: u8 = 0;
    pub const ASSOC_TARGET_PORT: u8 = 1;
    pub const ASSOC_TARGET_DEVICE: u8 = 2;
    pub const PROTOCOL_ISCSI: u8 = 5;
}

/// One designation descriptor of the Device Identification VPD page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Designator {
    pub protocol_id: u8,
    pub code_set: u8,
    pub piv: bool,
    pub association: u8,
    pub designator_type: u8,
    pub value: Vec<u8>,
}

impl Designator {
    /// NAA IEEE Registered Extended (type 6) from a 16-byte id (the caller
    /// puts the NAA nibble in the top of byte 0).
    pub fn naa(id: [u8; 16]) -> Self {
        Self {
            protocol_id: 0,
            code_set: designator::CODE_SET_BINARY,
            piv: false,
            association: designator::ASSOC_LU,
            designator_type: designator::NAA,
            value: id.to_vec(),
        }
    }

    /// T10 vendor ID based: 8-byte vendor then the vendor-specific part.
    pub fn t10_vendor(vendor: [u8; 8], specific: &str) -> Self {
        let mut value = vendor.to_vec();
        value.extend(specific.bytes().filter(|c| (0x20..0x7F).contains(c)));
        Self {
            protocol_id: 0,
            code_set: designator::CODE_SET_ASCII,
            piv: false,
            association: designator::ASSOC_LU,
            designator_type: designator::T10_VENDOR_ID,
            value,
        }
    }

    pub fn relative_target_port(rtp: u16) -> Self {
        let r = rtp.to_be_bytes();
        Self {
            protocol_id: designator::PROTOCOL_ISCSI,
            code_set: designator::CODE_SET_BINARY,
            piv: true,
            association: designator::ASSOC_TARGET_PORT,
            designator_type: designator::RELATIVE_TARGET_PORT,
            value: vec![0, 0, r[0], r[1]],
        }
    }

    /// SCSI name string (UTF-8, NUL-terminated, padded to a multiple of 4).
    pub fn scsi_name(name: &str, association: u8) -> Self {
        let mut value = name.as_bytes().to_vec();
        value.push(0);
        while !value.len().is_multiple_of(4) {
            value.push(0);
        }
        Self {
            protocol_id: designator::PROTOCOL_ISCSI,
            code_set: designator::CODE_SET_UTF8,
            piv: true,
            association,
            designator_type: designator::SCSI_NAME_STRING,
            value,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push((self.protocol_id << 4) | (self.code_set & 0x0F));
        out.push(
            if self.piv { 0x80 } else { 0 }
                | ((self.association & 3) << 4)
                | (self.designator_type & 0x0F),
        );
        out.push(0);
        out.push(self.value.len().min(255) as u8);
        out.extend_from_slice(&self.value[..self.value.len().min(255)]);
    }
}

/// Device Identification page body (page 83h) from designators.
pub fn encode_device_identification(ds: &[Designator]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in ds {
        d.encode_into(&mut out);
    }
    out
}

/// Parses a Device Identification page body into designators.
pub fn parse_device_identification(mut b: &[u8]) -> Vec<Designator> {
    let mut v = Vec::new();
    while b.len() >= 4 {
        let len = b[3] as usize;
        if b.len() < 4 + len {
            break;
        }
        v.push(Designator {
            protocol_id: b[0] >> 4,
            code_set: b[0] & 0x0F,
            piv: b[1] & 0x80 != 0,
            association: (b[1] >> 4) & 3,
            designator_type: b[1] & 0x0F,
            value: b[4..4 + len].to_vec(),
        });
        b = &b[4 + len..];
    }
    v
}

/// Block Limits VPD page (SBC-4 §6.6.4), page length 3Ch.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BlockLimits {
    pub wsnz: bool,
    pub max_compare_and_write_length: u8,
    pub optimal_transfer_length_granularity: u16,
    pub max_transfer_length: u32,
    pub optimal_transfer_length: u32,
    pub max_prefetch_length: u32,
    pub max_unmap_lba_count: u32,
    pub max_unmap_block_descriptor_count: u32,
    pub optimal_unmap_granularity: u32,
    pub unmap_granularity_alignment: Option<u32>,
    pub max_write_same_length: u64,
    pub max_atomic_transfer_length: u32,
    pub atomic_alignment: u32,
    pub atomic_transfer_length_granularity: u32,
    pub max_atomic_transfer_length_with_boundary: u32,
    pub max_atomic_boundary_size: u32,
}

impl BlockLimits {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 0x3C];
        b[0] = self.wsnz as u8;
        b[1] = self.max_compare_and_write_length;
        b[2..4].copy_from_slice(&self.optimal_transfer_length_granularity.to_be_bytes());
        b[4..8].copy_from_slice(&self.max_transfer_length.to_be_bytes());
        b[8..12].copy_from_slice(&self.optimal_transfer_length.to_be_bytes());
        b[12..16].copy_from_slice(&self.max_prefetch_length.to_be_bytes());
        b[16..20].copy_from_slice(&self.max_unmap_lba_count.to_be_bytes());
        b[20..24].copy_from_slice(&self.max_unmap_block_descriptor_count.to_be_bytes());
        b[24..28].copy_from_slice(&self.optimal_unmap_granularity.to_be_bytes());
        if let Some(a) = self.unmap_granularity_alignment {
            b[28..32].copy_from_slice(&(0x8000_0000 | (a & 0x7FFF_FFFF)).to_be_bytes());
        }
        b[32..40].copy_from_slice(&self.max_write_same_length.to_be_bytes());
        b[40..44].copy_from_slice(&self.max_atomic_transfer_length.to_be_bytes());
        b[44..48].copy_from_slice(&self.atomic_alignment.to_be_bytes());
        b[48..52].copy_from_slice(&self.atomic_transfer_length_granularity.to_be_bytes());
        b[52..56].copy_from_slice(&self.max_atomic_transfer_length_with_boundary.to_be_bytes());
        b[56..60].copy_from_slice(&self.max_atomic_boundary_size.to_be_bytes());
        b
    }

    /// Parses a page body; short (SBC-2, 8-byte) bodies fill what they have.
    pub fn parse(body: &[u8]) -> Self {
        let mut b = [0u8; 0x3C];
        let n = body.len().min(0x3C);
        b[..n].copy_from_slice(&body[..n]);
        let u32at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let uga = u32at(28);
        Self {
            wsnz: b[0] & 1 != 0,
            max_compare_and_write_length: b[1],
            optimal_transfer_length_granularity: u16::from_be_bytes([b[2], b[3]]),
            max_transfer_length: u32at(4),
            optimal_transfer_length: u32at(8),
            max_prefetch_length: u32at(12),
            max_unmap_lba_count: u32at(16),
            max_unmap_block_descriptor_count: u32at(20),
            optimal_unmap_granularity: u32at(24),
            unmap_granularity_alignment: (uga & 0x8000_0000 != 0).then_some(uga & 0x7FFF_FFFF),
            max_write_same_length: ((u32at(32) as u64) << 32) | u32at(36) as u64,
            max_atomic_transfer_length: u32at(40),
            atomic_alignment: u32at(44),
            atomic_transfer_length_granularity: u32at(48),
            max_atomic_transfer_length_with_boundary: u32at(52),
            max_atomic_boundary_size: u32at(56),
        }
    }
}

/// Block Device Characteristics VPD page (SBC-4 §6.6.2), page length 3Ch.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BlockDeviceCharacteristics {
    /// 1 = non-rotating medium (solid state).
    pub medium_rotation_rate: u16,
    pub product_type: u8,
    /// WABEREQ: what reads return after a SANITIZE BLOCK ERASE (01b: data
    /// as the erase left it, GOOD status).
    pub wabereq: u8,
    /// WACEREQ: the same after a CRYPTOGRAPHIC ERASE.
    pub wacereq: u8,
    pub nominal_form_factor: u8,
    pub fuab: bool,
    pub vbuls: bool,
}

impl BlockDeviceCharacteristics {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 0x3C];
        b[0..2].copy_from_slice(&self.medium_rotation_rate.to_be_bytes());
        b[2] = self.product_type;
        b[3] = ((self.wabereq & 3) << 6)
            | ((self.wacereq & 3) << 4)
            | (self.nominal_form_factor & 0x0F);
        b[4] = if self.fuab { 0x02 } else { 0 } | self.vbuls as u8;
        b
    }
    pub fn parse(body: &[u8]) -> Option<Self> {
        if body.len() < 5 {
            return None;
        }
        Some(Self {
            medium_rotation_rate: u16::from_be_bytes([body[0], body[1]]),
            product_type: body[2],
            wabereq: body[3] >> 6,
            wacereq: (body[3] >> 4) & 3,
            nominal_form_factor: body[3] & 0x0F,
            fuab: body[4] & 0x02 != 0,
            vbuls: body[4] & 1 != 0,
        })
    }
}

/// Logical Block Provisioning VPD page (SBC-4 §6.6.6).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LogicalBlockProvisioning {
    pub threshold_exponent: u8,
    pub lbpu: bool,
    pub lbpws: bool,
    pub lbpws10: bool,
    /// LBPRZ field (3 bits in SBC-4; 001b = unmapped blocks read as zero).
    pub lbprz: u8,
    pub anc_sup: bool,
    pub dp: bool,
    /// 000b full, 001b resource, 010b thin provisioned.
    pub provisioning_type: u8,
}

impl LogicalBlockProvisioning {
    pub fn encode(&self) -> Vec<u8> {
        vec![
            self.threshold_exponent,
            if self.lbpu { 0x80 } else { 0 }
                | if self.lbpws { 0x40 } else { 0 }
                | if self.lbpws10 { 0x20 } else { 0 }
                | ((self.lbprz & 7) << 2)
                | if self.anc_sup { 0x02 } else { 0 }
                | self.dp as u8,
            self.provisioning_type & 7,
            0,
        ]
    }
    pub fn parse(body: &[u8]) -> Option<Self> {
        if body.len() < 3 {
            return None;
        }
        Some(Self {
            threshold_exponent: body[0],
            lbpu: body[1] & 0x80 != 0,
            lbpws: body[1] & 0x40 != 0,
            lbpws10: body[1] & 0x20 != 0,
            lbprz: (body[1] >> 2) & 7,
            anc_sup: body[1] & 0x02 != 0,
            dp: body[1] & 1 != 0,
            provisioning_type: body[2] & 7,
        })
    }
}

/// READ CAPACITY (10) data (SBC-4 §5.20.2): the last LBA saturates at
/// FFFFFFFFh when the capacity does not fit.
pub fn encode_read_capacity10(last_lba: u64, block_len: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&(u32::try_from(last_lba).unwrap_or(u32::MAX)).to_be_bytes());
    b[4..8].copy_from_slice(&block_len.to_be_bytes());
    b
}

/// READ CAPACITY (16) parameter data (SBC-4 §5.21.2).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReadCapacity16 {
    pub last_lba: u64,
    pub block_len: u32,
    pub p_type: u8,
    pub prot_en: bool,
    pub p_i_exponent: u8,
    pub lbppbe: u8,
    pub lbpme: bool,
    pub lbprz: bool,
    pub lowest_aligned_lba: u16,
}

impl ReadCapacity16 {
    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&self.last_lba.to_be_bytes());
        b[8..12].copy_from_slice(&self.block_len.to_be_bytes());
        b[12] = ((self.p_type & 7) << 1) | self.prot_en as u8;
        b[13] = (self.p_i_exponent << 4) | (self.lbppbe & 0x0F);
        let la = self.lowest_aligned_lba & 0x3FFF;
        b[14] =
            if self.lbpme { 0x80 } else { 0 } | if self.lbprz { 0x40 } else { 0 } | (la >> 8) as u8;
        b[15] = la as u8;
        b
    }
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < 16 {
            return None;
        }
        Some(Self {
            last_lba: u64::from_be_bytes(b[0..8].try_into().ok()?),
            block_len: u32::from_be_bytes(b[8..12].try_into().ok()?),
            p_type: (b[12] >> 1) & 7,
            prot_en: b[12] & 1 != 0,
            p_i_exponent: b[13] >> 4,
            lbppbe: b[13] & 0x0F,
            lbpme: b[14] & 0x80 != 0,
            lbprz: b[14] & 0x40 != 0,
            lowest_aligned_lba: u16::from_be_bytes([b[14] & 0x3F, b[15]]),
        })
    }
}

/// Provisioning status of an LBA status descriptor (SBC-4 §5.8.2).
pub mod lba_status {
    pub const MAPPED: u8 = 0;
    pub const DEALLOCATED: u8 = 1;
    pub const ANCHORED: u8 = 2;
}

/// GET LBA STATUS parameter data: 8-byte header then 16-byte descriptors
/// of (starting LBA, number of blocks, provisioning status).
pub fn encode_lba_status(descs: &[(u64, u32, u8)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 16 * descs.len());
    b.extend_from_slice(&((4 + 16 * descs.len()) as u32).to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    for (lba, n, st) in descs {
        b.extend_from_slice(&lba.to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.push(st & 0x0F);
        b.extend_from_slice(&[0; 3]);
    }
    b
}

pub fn parse_lba_status(b: &[u8]) -> Option<Vec<(u64, u32, u8)>> {
    if b.len() < 8 {
        return None;
    }
    let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let end = (len.saturating_add(4)).min(b.len());
    let mut v = Vec::new();
    let mut i = 8;
    while i + 16 <= end {
        let d = &b[i..i + 16];
        v.push((
            u64::from_be_bytes(d[0..8].try_into().ok()?),
            u32::from_be_bytes(d[8..12].try_into().ok()?),
            d[12] & 0x0F,
        ));
        i += 16;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_round_trip() {
        let s = StandardInquiry::block_device("RUST-ISC", "disk", "0001");
        let b = s.encode();
        assert_eq!(b.len(), 96);
        assert_eq!(b[4] as usize, b.len() - 5);
        assert_eq!(&b[8..16], b"RUST-ISC");
        assert_eq!(&b[16..32], b"disk            ");
        assert_eq!(&b[58..60], &[0x00, 0xA0]);
        assert_eq!(StandardInquiry::parse(&b).unwrap(), s);
        assert!(StandardInquiry::parse(&b[..35]).is_none());
    }

    #[test]
    fn device_identification_round_trip() {
        let ds = vec![
            Designator::naa([0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
            Designator::t10_vendor(*b"RUST-ISC", "abc"),
            Designator::relative_target_port(1),
            Designator::scsi_name("iqn.2020-01.x:y,t,0x0001", designator::ASSOC_TARGET_PORT),
        ];
        let body = encode_device_identification(&ds);
        assert_eq!(&body[0..4], &[0x01, 0x03, 0x00, 16]);
        let parsed = parse_device_identification(&body);
        assert_eq!(parsed, ds);
        assert_eq!(parsed[3].value.len() % 4, 0);
        // Truncated: the partial designator is dropped.
        assert_eq!(parse_device_identification(&body[..25]).len(), 1);
    }

    #[test]
    fn block_limits_round_trip() {
        let bl = BlockLimits {
            wsnz: true,
            max_compare_and_write_length: 255,
            max_transfer_length: 1 << 16,
            max_unmap_lba_count: 1 << 20,
            max_unmap_block_descriptor_count: 256,
            unmap_granularity_alignment: Some(0),
            max_write_same_length: 1 << 22,
            ..Default::default()
        };
        let b = bl.encode();
        assert_eq!(b.len(), 0x3C);
        assert_eq!(BlockLimits::parse(&b), bl);
        let page = vpd_page(0, vpd::BLOCK_LIMITS, &b);
        let (code, body) = parse_vpd(&page).unwrap();
        assert_eq!((code, body.len()), (0xB0, 0x3C));
    }

    #[test]
    fn lbp_and_capacity() {
        let l = LogicalBlockProvisioning {
            lbpu: true,
            lbpws: true,
            lbpws10: true,
            lbprz: 1,
            provisioning_type: 2,
            ..Default::default()
        };
        let b = l.encode();
        assert_eq!(b[1], 0xE4);
        assert_eq!(LogicalBlockProvisioning::parse(&b).unwrap(), l);
        let rc = ReadCapacity16 {
            last_lba: 1 << 33,
            block_len: 4096,
            lbpme: true,
            lbprz: true,
            ..Default::default()
        };
        assert_eq!(ReadCapacity16::parse(&rc.encode()).unwrap(), rc);
        assert_eq!(
            encode_read_capacity10(1 << 33, 512),
            [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 2, 0]
        );
        let s = encode_lba_status(&[(0, 8, 0), (8, 100, 1)]);
        assert_eq!(&s[0..4], &[0, 0, 0, 36]);
        assert_eq!(parse_lba_status(&s).unwrap(), vec![(0, 8, 0), (8, 100, 1)]);
        assert_eq!(parse_lba_status(&s[..30]).unwrap(), vec![(0, 8, 0)]);
    }
}
