//! Information the device server reports: REQUEST SENSE (SPC-5 §6.39),
//! INQUIRY and its VPD pages (SPC-5 §6.7, §7.8; SBC-4 §6.6), MODE SENSE and
//! MODE SELECT with their pages (SPC-5 §6.11-§6.14, §7.5; SBC-4 §6.5),
//! REPORT LUNS (SPC-5 §6.33), READ CAPACITY (SBC-4 §5.20, §5.21), REPORT
//! SUPPORTED OPERATION CODES and TASK MANAGEMENT FUNCTIONS (SPC-5 §6.35,
//! §6.36) and READ DEFECT DATA (SBC-4 §5.18).

use super::{
    invalid_cdb, invalid_param, param_list_length_error, report_luns, supported, truncate, Ctx, R,
};
use crate::scsi::lu::{IoMode, LogicalUnit};
use bytes::Bytes;
use proto::scsi::cdb::{Opcode, COMMANDS};
use proto::scsi::inquiry::{self as inq, vpd, Designator, StandardInquiry};
use proto::scsi::mode::{self, Caching, Control, ModePage};
use proto::scsi::{Asc, Sense, SenseKey};

impl Ctx<'_> {
    /// REPORT LUNS, which also clears this nexus' REPORTED LUNS DATA HAS
    /// CHANGED unit attention (SPC-5 §6.33).
    pub(super) fn report_luns(&self, select_report: u8, alloc_len: u32) -> R {
        let r = report_luns(self.srv, self.nexus, select_report, alloc_len)?;
        if let Some(q) = self.lu.state().ua.get_mut(self.nexus) {
            q.retain(|a| *a != Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
        }
        Ok(r)
    }

    /// READ CAPACITY (10) parameter data (SBC-4 §5.20).
    pub(super) fn read_capacity10(&self) -> Bytes {
        let last = self.lu.num_blocks().saturating_sub(1);
        Bytes::copy_from_slice(&inq::encode_read_capacity10(last, self.lu.block_size()))
    }

    /// READ CAPACITY (16) parameter data (SBC-4 §5.21), with the logical
    /// block provisioning bits of a thin unit.
    pub(super) fn read_capacity16(&self, alloc_len: u32) -> Bytes {
        let thin = self.lu.thin();
        let rc = inq::ReadCapacity16 {
            last_lba: self.lu.num_blocks().saturating_sub(1),
            block_len: self.lu.block_size(),
            lbpme: thin,
            lbprz: thin && self.lu.cfg.backend.unmap_reads_zero(),
            lbppbe: self.lu.lbppbe(),
            ..Default::default()
        };
        truncate(rc.encode().to_vec(), alloc_len as usize)
    }

    pub(super) fn request_sense(&self, desc: bool, alloc_len: u8) -> R {
        let mut st = self.lu.state();
        let sense = if let Some(asc) = st.ua.get_mut(self.nexus).and_then(|q| q.pop_front()) {
            Sense::unit_attention(asc)
        } else if st.sanitizing {
            st.sanitize_in_progress()
        } else if self.lu.cfg.removable && !st.medium_present {
            Sense::new(SenseKey::NOT_READY, Asc::MEDIUM_NOT_PRESENT)
        } else {
            Sense::new(SenseKey::NO_SENSE, Asc::NO_ADDITIONAL_SENSE)
        };
        Ok(truncate(sense.encode(desc), alloc_len as usize))
    }

    pub(super) fn standard_inquiry(&self) -> StandardInquiry {
        let c = &self.lu.cfg;
        let mut s = StandardInquiry::block_device(&c.vendor, &c.product, &c.revision);
        s.rmb = c.removable;
        s
    }

    pub(super) fn supported_vpd_pages(&self) -> Vec<u8> {
        let mut v = vec![
            vpd::SUPPORTED_PAGES,
            vpd::UNIT_SERIAL_NUMBER,
            vpd::DEVICE_IDENTIFICATION,
            vpd::THIRD_PARTY_COPY,
            vpd::BLOCK_LIMITS,
            vpd::BLOCK_DEVICE_CHARACTERISTICS,
        ];
        if self.lu.thin() {
            v.push(vpd::LOGICAL_BLOCK_PROVISIONING);
        }
        if self.lu.control.enabled() {
            v.push(proto::scsi::control::CTL_VPD_PAGE);
        }
        v
    }

    pub(super) fn inquiry(&self, evpd: bool, page_code: u8, alloc_len: u16) -> R {
        let alloc = alloc_len as usize;
        if !evpd {
            if page_code != 0 {
                return Err(invalid_cdb(2, None));
            }
            return Ok(truncate(self.standard_inquiry().encode(), alloc));
        }
        let pdt = inq::PDT_DIRECT_ACCESS;
        let body = match page_code {
            vpd::SUPPORTED_PAGES => self.supported_vpd_pages(),
            vpd::UNIT_SERIAL_NUMBER => self.lu.serial.as_bytes().to_vec(),
            vpd::DEVICE_IDENTIFICATION => {
                let c = &self.lu.cfg;
                let vendor: [u8; 8] = inq::ascii_field(&c.vendor);
                let ds = vec![
                    Designator::naa(self.lu.naa),
                    Designator::t10_vendor(vendor, &self.lu.serial),
                    Designator::relative_target_port(self.nexus.relative_target_port),
                    Designator::scsi_name(
                        &self.nexus.target_port,
                        inq::designator::ASSOC_TARGET_PORT,
                    ),
                ];
                inq::encode_device_identification(&ds)
            }
            vpd::THIRD_PARTY_COPY => crate::scsi::xcopy::third_party_copy_vpd(),
            vpd::BLOCK_LIMITS => {
                let bs = self.bs();
                let thin = self.lu.thin();
                let l = &self.srv.limits;
                let bl = inq::BlockLimits {
                    wsnz: false,
                    max_compare_and_write_length: l.max_compare_and_write,
                    optimal_transfer_length_granularity: 1,
                    max_transfer_length: (l.max_transfer_bytes as u64 / bs) as u32,
                    // Linux sd uses this as max_sectors_kb: report 1 MiB (the
                    // MaxBurstLength initiators negotiate by default), capped
                    // at the maximum, so big I/O is not cut into 128 KiB
                    // commands (docs/interop/kernel-initiator.md, finding 3).
                    optimal_transfer_length: ((1u64 << 20).min(l.max_transfer_bytes as u64) / bs)
                        as u32,
                    max_prefetch_length: 0,
                    max_unmap_lba_count: if thin { l.max_unmap_lba_count } else { 0 },
                    max_unmap_block_descriptor_count: if thin {
                        l.max_unmap_descriptors
                    } else {
                        0
                    },
                    optimal_unmap_granularity: if thin {
                        self.lu.unmap_granularity_blocks()
                    } else {
                        0
                    },
                    unmap_granularity_alignment: if thin { Some(0) } else { None },
                    max_write_same_length: l.max_write_same_blocks as u64,
                    max_atomic_transfer_length: (l.max_transfer_bytes as u64 / bs) as u32,
                    atomic_alignment: 0,
                    atomic_transfer_length_granularity: 0,
                    max_atomic_transfer_length_with_boundary: 0,
                    max_atomic_boundary_size: 0,
                };
                bl.encode()
            }
            // WABEREQ/WACEREQ 01b: reads after SANITIZE succeed and return
            // what the erase left (zeros); 00b (not specified) when the LU
            // does not accept SANITIZE (SBC-4 §6.6.2).
            vpd::BLOCK_DEVICE_CHARACTERISTICS => {
                let after_erase = u8::from(self.lu.cfg.sanitize);
                inq::BlockDeviceCharacteristics {
                    medium_rotation_rate: 1,
                    fuab: true,
                    wabereq: after_erase,
                    wacereq: after_erase,
                    ..Default::default()
                }
                .encode()
            }
            vpd::LOGICAL_BLOCK_PROVISIONING if self.lu.thin() => inq::LogicalBlockProvisioning {
                lbpu: true,
                lbpws: true,
                lbpws10: true,
                // LBPRZ 0 where a discard may leave data (RBD below its
                // discard granularity; SBC-4 §4.7.3.3).
                lbprz: u8::from(self.lu.cfg.backend.unmap_reads_zero()),
                provisioning_type: 2,
                ..Default::default()
            }
            .encode(),
            proto::scsi::control::CTL_VPD_PAGE if self.lu.control.enabled() => {
                crate::scsi::control::switches::vpd_body(self.srv, self.lu, self.nexus)
            }
            _ => return Err(invalid_cdb(2, None)),
        };
        Ok(truncate(inq::vpd_page(pdt, page_code, &body), alloc))
    }

    // ---- mode parameters ----

    pub(super) fn mode_pages(&self, pc: u8) -> Vec<ModePage> {
        let st = self.lu.state();
        let (caching, control) = match pc {
            mode::pc::CHANGEABLE => (
                Caching {
                    wce: true,
                    rcd: false,
                },
                Control {
                    d_sense: true,
                    swp: true,
                    ..Default::default()
                },
            ),
            mode::pc::DEFAULT => (
                Caching {
                    wce: self.lu.cfg.mode == IoMode::WriteBack,
                    rcd: false,
                },
                Control {
                    qerr: 0,
                    tas: true,
                    ..Default::default()
                },
            ),
            _ => (
                Caching {
                    wce: st.modes.wce,
                    rcd: false,
                },
                Control {
                    d_sense: st.modes.d_sense,
                    swp: st.modes.swp,
                    tas: true,
                    ..Default::default()
                },
            ),
        };
        let mut control = control;
        if pc == mode::pc::CHANGEABLE {
            control.tas = false;
        }
        let changeable = pc == mode::pc::CHANGEABLE;
        let zero = |p: ModePage| {
            if changeable {
                ModePage {
                    body: vec![0; p.body.len()],
                    ..p
                }
            } else {
                p
            }
        };
        vec![
            zero(mode::read_write_error_recovery(true, true)),
            zero(mode::disconnect_reconnect()),
            caching.page(),
            control.page(),
            zero(mode::informational_exceptions(false, 0)),
        ]
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn mode_sense(
        &self,
        ten: bool,
        dbd: bool,
        llbaa: bool,
        pc: u8,
        page: u8,
        subpage: u8,
        alloc_len: u16,
    ) -> R {
        if pc == mode::pc::SAVED {
            return Err(Sense::illegal_request(Asc::SAVING_PARAMETERS_NOT_SUPPORTED)
                .with_field_pointer(true, 2, Some(7))
                .into());
        }
        let all = self.mode_pages(pc);
        let pages: Vec<ModePage> = if page == mode::page::ALL {
            if subpage != 0 && subpage != 0xFF {
                return Err(invalid_cdb(3, None));
            }
            all
        } else {
            if subpage != 0 {
                return Err(invalid_cdb(3, None));
            }
            let p: Vec<ModePage> = all.into_iter().filter(|p| p.page == page).collect();
            if p.is_empty() {
                return Err(invalid_cdb(2, Some(5)));
            }
            p
        };
        let st = self.lu.state();
        let mut dsp = mode::DSP_DPOFUA;
        if st.mode == IoMode::ReadOnly || st.modes.swp {
            dsp |= mode::DSP_WP;
        }
        drop(st);
        let bd = (!dbd).then(|| (self.lu.num_blocks(), self.lu.block_size()));
        let data = mode::encode_mode_sense(ten, dsp, bd, llbaa, &pages);
        Ok(truncate(data, alloc_len as usize))
    }

    pub(super) fn mode_select(&self, ten: bool, _pf: bool, sp: bool, param_len: u16) -> R {
        if sp {
            return Err(invalid_cdb(1, Some(0)));
        }
        if param_len == 0 {
            return Ok(Bytes::new());
        }
        let data = &self.req.data_out;
        if data.len() < param_len as usize {
            return Err(param_list_length_error());
        }
        let data = &data[..param_len as usize];
        let params = mode::parse_mode_parameters(ten, data).map_err(|e| {
            if e.byte == 0 {
                param_list_length_error()
            } else {
                invalid_param(e.byte as u16, None)
            }
        })?;
        // Block descriptor: the block length must stay ours.
        let bd = &params.block_descriptors;
        if !bd.is_empty() {
            let (len_at, len) = if bd.len() >= 16 && ten && data[4] & 1 != 0 {
                (12, u32::from_be_bytes([bd[12], bd[13], bd[14], bd[15]]))
            } else if bd.len() >= 8 {
                (5, u32::from_be_bytes([0, bd[5], bd[6], bd[7]]))
            } else {
                return Err(invalid_param(if ten { 6 } else { 3 } as u16, None));
            };
            if len != 0 && len != self.lu.block_size() {
                return Err(invalid_param(
                    (params.pages_offset - bd.len() + len_at) as u16,
                    None,
                ));
            }
        }
        let current = self.mode_pages(mode::pc::CURRENT);
        let changeable = self.mode_pages(mode::pc::CHANGEABLE);
        let mut new = self.lu.state().modes;
        for (off, p) in &params.pages {
            let Some(idx) = current
                .iter()
                .position(|c| c.page == p.page && c.subpage == p.subpage)
            else {
                return Err(invalid_param(*off as u16, None));
            };
            let (cur, chg) = (&current[idx], &changeable[idx]);
            if p.body.len() != cur.body.len() {
                return Err(invalid_param(*off as u16 + 1, None));
            }
            for (i, ((&n, &c), &m)) in p
                .body
                .iter()
                .zip(cur.body.iter())
                .zip(chg.body.iter())
                .enumerate()
            {
                let diff = (n ^ c) & !m;
                if diff != 0 {
                    let bit = 7 - diff.leading_zeros() as u8;
                    return Err(invalid_param((*off + 2 + i) as u16, Some(bit)));
                }
            }
            match p.page {
                mode::page::CACHING => {
                    if let Some(c) = Caching::parse(&p.body) {
                        new.wce = c.wce;
                    }
                }
                mode::page::CONTROL => {
                    if let Some(c) = Control::parse(&p.body) {
                        new.d_sense = c.d_sense;
                        new.swp = c.swp;
                    }
                }
                _ => {}
            }
        }
        let mut st = self.lu.state();
        if st.modes != new {
            st.modes = new;
            // SPC-5 §7.5.1: other I_T nexuses learn of the change.
            st.push_ua_all(Asc::MODE_PARAMETERS_CHANGED, Some(self.nexus));
        }
        Ok(Bytes::new())
    }
}

/// REPORT SUPPORTED OPERATION CODES (SPC-5 §6.35).
/// One command as REPORT SUPPORTED OPERATION CODES reports it.
struct Supported {
    opcode: Opcode,
    service_action: Option<u16>,
    usage: Vec<u8>,
}

/// The commands `lu` executes with their CDB usage masks: with the control
/// channel on, READ/WRITE(10/12/16) have the tag bits in their masks and
/// the vendor command C7h is listed (SPC-5 §6.35: the truth either way).
fn supported_specs(lu: &LogicalUnit) -> Vec<Supported> {
    let on = lu.control.enabled();
    let mut v: Vec<Supported> = COMMANDS
        .iter()
        .filter(|c| supported(lu, c))
        .map(|c| {
            let mut usage = c.usage.to_vec();
            if on {
                proto::scsi::control::widen_usage(&mut usage);
            }
            Supported {
                opcode: c.opcode,
                service_action: c.service_action,
                usage,
            }
        })
        .collect();
    if on {
        v.push(Supported {
            opcode: Opcode(proto::scsi::control::CTL_OPCODE),
            service_action: None,
            usage: proto::scsi::control::CTL_USAGE.to_vec(),
        });
    }
    v
}

pub(super) fn report_supported_opcodes(
    lu: &LogicalUnit,
    rctd: bool,
    options: u8,
    opcode: u8,
    service_action: u16,
    alloc_len: u32,
) -> R {
    let timeouts = |v: &mut Vec<u8>| {
        // Command timeouts descriptor: length 0Ah, nominal and recommended
        // timeouts in seconds.
        v.extend_from_slice(&[0x00, 0x0A, 0x00, 0x00]);
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&60u32.to_be_bytes());
    };
    let specs = supported_specs(lu);
    let op = Opcode(opcode);
    let data = match options {
        0 => {
            let mut v = vec![0u8; 4];
            for c in &specs {
                v.push(c.opcode.0);
                v.push(0);
                v.extend_from_slice(&c.service_action.unwrap_or(0).to_be_bytes());
                v.push(0);
                v.push(if rctd { 0x02 } else { 0 } | c.service_action.is_some() as u8);
                v.extend_from_slice(&(c.usage.len() as u16).to_be_bytes());
                if rctd {
                    timeouts(&mut v);
                }
            }
            let l = (v.len() - 4) as u32;
            v[0..4].copy_from_slice(&l.to_be_bytes());
            v
        }
        1..=3 => {
            // Whether the opcode has service actions is the standard's, not
            // ours: a known service-action opcode we do not execute is
            // reported as not supported (SUPPORT 001b) under option 2.
            let has_sa = op.has_service_action();
            let want_sa = match options {
                1 if has_sa => return Err(invalid_cdb(2, Some(2))),
                1 => None,
                2 if !has_sa => return Err(invalid_cdb(2, Some(2))),
                2 => Some(service_action),
                _ => has_sa.then_some(service_action),
            };
            let found = specs
                .iter()
                .find(|c| c.opcode == op && c.service_action == want_sa);
            let mut v = vec![0u8; 4];
            match found {
                Some(c) => {
                    v[1] = if rctd { 0x80 } else { 0 } | 0x03;
                    v[2..4].copy_from_slice(&(c.usage.len() as u16).to_be_bytes());
                    v.extend_from_slice(&c.usage);
                    if rctd {
                        timeouts(&mut v);
                    }
                }
                None => v[1] = 0x01,
            }
            v
        }
        _ => return Err(invalid_cdb(2, Some(2))),
    };
    Ok(truncate(data, alloc_len as usize))
}

/// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-5 §6.36): ABORT TASK,
/// ABORT TASK SET, LOGICAL UNIT RESET and TARGET RESET; REPD adds the
/// extended format.
pub(super) fn report_supported_tmfs(repd: bool, alloc_len: u32) -> Bytes {
    let mut v = vec![0x80 | 0x40 | 0x08 | 0x02, 0, 0, 0];
    if repd {
        v[3] = 0x0C;
        v.resize(16, 0);
    }
    truncate(v, alloc_len as usize)
}

/// READ DEFECT DATA (SBC-4 §5.18, §5.19): no defects, an empty list in the
/// requested format (the 12-byte CDB has an 8-byte header).
pub(super) fn read_defect_data(twelve: bool, format: u8, alloc_len: u32) -> Bytes {
    let v = if twelve {
        vec![0, format & 7, 0, 0, 0, 0, 0, 0]
    } else {
        vec![0, format & 7, 0, 0]
    };
    truncate(v, alloc_len as usize)
}
