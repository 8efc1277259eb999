//! The seam between the iSCSI transport and the SCSI device server
//! (SAM-5 §4.5 "the SCSI transport protocol services").
//!
//! The connection code only uses the functions and types here; they map
//! onto [`crate::scsi`]. Keeping the seam in one file means a change in the
//! device server's API touches nothing else on the transport side.

use bytes::Bytes;

use crate::config::TargetConfig;

use std::sync::Arc;

use crate::backend::{Backend, BlockBackend, FileBackend, FileOptions, MemoryBackend, NullBackend};
use crate::config::{BackendConfig, IoMode, LunConfig};
use crate::scsi::{DeviceServer, LuConfig, ScsiRequest};

pub use crate::scsi::{LunAccess, Nexus};

/// The device server of one target.
pub type Device = Arc<DeviceServer>;

/// A SCSI command as the transport delivers it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The raw 8-byte LUN field.
    pub lun: u64,
    pub cdb: Bytes,
    pub data_out: Bytes,
    /// EDTL of the read direction.
    pub expected_data_in_length: u32,
    pub task_attr: u8,
}

/// What the device server answered.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u8,
    /// Sense data, without the iSCSI SenseLength prefix.
    pub sense: Option<Bytes>,
    pub data_in: Bytes,
    /// The length the command itself wanted to transfer (SPDTL), when the
    /// device server knows it; `None`: the length of `data_in`.
    pub transfer_length: Option<u32>,
}

/// Build the device server of one target from its LUN configuration and
/// its ACL (LUN masking, see [`apply_acl`]). Errors carry the LUN number
/// and the reason.
pub fn build(t: &TargetConfig) -> Result<Device, (u64, String)> {
    let mut luns = Vec::new();
    for l in &t.luns {
        luns.push(lu_config(&t.name, l).map_err(|e| (l.lun, e))?);
    }
    let d = DeviceServer::new(luns)
        .map_err(|e| (t.luns.first().map(|l| l.lun).unwrap_or(0), e.to_string()))?;
    d.set_target(&t.name, t.portal_groups.iter().map(|g| g.tpgt));
    apply_acl(&d, t);
    Ok(d)
}

/// Give the device server the target's current access policy (its ACL
/// and per-initiator LUN masking). Call after every ACL change; the device
/// server raises REPORTED LUNS DATA HAS CHANGED on the I_T nexuses whose
/// set of visible LUNs changed.
pub fn apply_acl(d: &Device, t: &TargetConfig) {
    d.set_access(lun_access(t));
}

/// The device server's view of a target's ACL: with an ACL, only its
/// initiators access logical units (sessions of initiators removed from it
/// at run time keep their login but see no LU), each limited to its LUN
/// mask when it has one; without an ACL every initiator sees every LU.
pub fn lun_access(t: &TargetConfig) -> LunAccess {
    LunAccess {
        restricted: !t.allow.is_empty(),
        initiators: t
            .allow
            .iter()
            .map(|ini| {
                let mask = t
                    .lun_mask(ini)
                    .map(|m| m.iter().filter_map(|n| u16::try_from(*n).ok()).collect());
                (ini.to_ascii_lowercase(), mask)
            })
            .collect(),
        control: t
            .initiators
            .iter()
            .filter(|(_, i)| i.control)
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect(),
    }
}

/// The backend and SCSI settings of one LUN. Serial and WWN seeds come from
/// the target name and the LUN's identity (path or number), so they stay
/// the same across restarts.
pub fn lu_config(target: &str, l: &LunConfig) -> Result<LuConfig, String> {
    let lun = u16::try_from(l.lun)
        .ok()
        .filter(|n| *n <= 16383)
        .ok_or_else(|| format!("LUN number {} out of range (0..=16383)", l.lun))?;
    let ro = l.mode == IoMode::ReadOnly;
    let (backend, thin, ident): (Arc<dyn Backend>, bool, String) = match &l.backend {
        BackendConfig::Memory { size } => (
            Arc::new(MemoryBackend::new(*size)),
            true,
            format!("mem{lun}"),
        ),
        BackendConfig::Null { size } => (
            Arc::new(NullBackend::new(*size)),
            false,
            format!("null{lun}"),
        ),
        BackendConfig::File { path, size, thin } => {
            let opts = FileOptions {
                size: *size,
                thin: *thin,
                write_through: l.mode == IoMode::WriteThrough,
                read_only: ro,
            };
            let b =
                FileBackend::open(path, &opts).map_err(|e| format!("{}: {e}", path.display()))?;
            let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            (Arc::new(b), *thin, abs.display().to_string())
        }
        BackendConfig::Block { path } => {
            let b = BlockBackend::open(path, true, ro)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            (Arc::new(b), false, path.display().to_string())
        }
        BackendConfig::Rbd(spec) => (open_rbd(spec, ro)?, true, spec.display_name()),
    };
    let mut c = LuConfig::new(lun, backend);
    c.block_size = l.block_size;
    c.mode = l.mode;
    c.thin = thin;
    c.removable = l.removable;
    c.sanitize = l.sanitize;
    c.control = l.control;
    let seed = format!("{target}/{ident}/{lun}");
    if let Some(s) = &l.serial {
        crate::scsi::lu::check_serial(s).map_err(|e| format!("LUN {}: {e}", l.lun))?;
    }
    // A serial the user set is reported as written (and still seeds
    // nothing else: the WWN keeps coming from the target and backing).
    c.serial = l.serial.clone();
    c.serial_seed = seed.clone();
    c.wwn_seed = seed;
    Ok(c)
}

/// Whether sense data for `lun`, as `n` addresses it, is in descriptor
/// format (the Control mode page's D_SENSE); fixed format for a LUN
/// without a logical unit.
pub fn descriptor_sense(d: &Device, n: &Nexus, lun: u64) -> bool {
    d.descriptor_sense(n, lun)
}

/// Opens a Ceph RBD image (blocks up to the spec's timeout).
#[cfg(feature = "rbd")]
fn open_rbd(spec: &crate::config::RbdSpec, ro: bool) -> Result<Arc<dyn Backend>, String> {
    Ok(Arc::new(crate::backend::rbd::RbdBackend::open(spec, ro)?))
}

#[cfg(not(feature = "rbd"))]
fn open_rbd(spec: &crate::config::RbdSpec, _ro: bool) -> Result<Arc<dyn Backend>, String> {
    Err(format!(
        "rbd:{}: this build has no Ceph RBD support; rebuild with `cargo build --features rbd` \
         (needs librbd-dev and librados-dev)",
        spec.display_name()
    ))
}

/// Execute one command.
pub async fn execute(d: &Device, n: &Nexus, r: Request) -> Outcome {
    let res = d
        .execute(
            n,
            ScsiRequest {
                lun: r.lun,
                cdb: r.cdb,
                data_out: r.data_out,
                expected_data_in_length: r.expected_data_in_length,
                task_attr: r.task_attr,
            },
        )
        .await;
    Outcome {
        status: res.status,
        sense: res.sense,
        data_in: res.data_in,
        transfer_length: res.transfer_length,
    }
}

/// The data-out length the CDB asks for (SPDTL of the write direction),
/// as the I_T nexus sees the LUN (a masked LUN is a missing one).
pub fn data_out_length(d: &Device, n: &Nexus, lun: u64, cdb: &[u8]) -> u32 {
    d.data_out_length_for(n, lun, cdb)
}

/// Whether `lun` (raw 8-byte field) exists for the I_T nexus (LUN masking).
pub fn has_lun(d: &Device, n: &Nexus, lun: u64) -> bool {
    d.lu_for(n, lun).is_some()
}

/// LOGICAL UNIT RESET reached the device server.
pub async fn lun_reset(d: &Device, lun: u64, by: &Nexus) {
    d.lun_reset(lun, by)
}

/// TARGET WARM/COLD RESET reached the device server.
pub async fn target_reset(d: &Device, by: &Nexus, cold: bool) {
    d.target_reset(by, cold)
}

/// The I_T nexus ended (session closed).
pub async fn nexus_gone(d: &Device, n: &Nexus) {
    d.nexus_gone(n)
}

/// Build the nexus names (SAM-5 §4.6.6, RFC 7143 §4.4.2): initiator port
/// "<initiator name>,i,0x<ISID>", target port "<target name>,t,0x<TPGT>".
pub fn nexus(initiator: &str, isid: [u8; 6], target: &str, tpgt: u16) -> Nexus {
    Nexus::new(initiator, isid, target, tpgt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, InitiatorConfig, SessionLimits};
    use proto::scsi::cdb;
    use proto::scsi::lun::{parse_report_luns, Lun};
    use proto::scsi::{Asc, SenseKey};

    const H1: &str = "iqn.2024-01.org.example:h1";
    const H2: &str = "iqn.2024-01.org.example:h2";

    /// LUNs 0 (512-byte blocks) and 1 (4096-byte blocks); H1 sees LUN 0
    /// only, H2 everything.
    fn target() -> TargetConfig {
        let mut t = TargetConfig {
            name: "iqn.2024-01.org.example:t".into(),
            alias: None,
            portal_groups: vec![],
            luns: vec![
                LunConfig::parse_spec(0, "mem:1M").unwrap(),
                LunConfig::parse_spec(1, "mem:1M,sector=4096").unwrap(),
            ],
            auth: AuthConfig::default(),
            allow: vec![H1.into(), H2.into()],
            initiators: Default::default(),
            limits: SessionLimits::default(),
        };
        t.initiators.insert(
            H1.into(),
            InitiatorConfig {
                luns: Some(vec![0]),
                auth: None,
                control: false,
            },
        );
        t
    }

    async fn run(d: &Device, n: &Nexus, lun: u16, cdb: &[u8], data: &[u8]) -> Outcome {
        execute(
            d,
            n,
            Request {
                lun: Lun::from_number(lun).0,
                cdb: Bytes::copy_from_slice(cdb),
                data_out: Bytes::copy_from_slice(data),
                expected_data_in_length: 4096,
                task_attr: 1,
            },
        )
        .await
    }

    async fn luns(d: &Device, n: &Nexus) -> Vec<u16> {
        let r = run(d, n, 0, cdb::report_luns(4096).as_bytes(), &[]).await;
        assert_eq!(r.status, 0);
        let (v, _) = parse_report_luns(&r.data_in).unwrap();
        v.iter().filter_map(|l| l.number()).collect()
    }

    /// TEST UNIT READY until GOOD; the unit attentions seen.
    async fn uas(d: &Device, n: &Nexus, lun: u16) -> Vec<Asc> {
        let mut v = Vec::new();
        for _ in 0..8 {
            let r = run(d, n, lun, cdb::test_unit_ready().as_bytes(), &[]).await;
            if r.status == 0 {
                return v;
            }
            let s = proto::scsi::Sense::parse(&r.sense.unwrap()).unwrap();
            assert_eq!(s.key, SenseKey::UNIT_ATTENTION, "{s:?}");
            v.push(s.asc);
        }
        panic!("unit attentions do not stop: {v:?}");
    }

    fn sense(o: &Outcome) -> (SenseKey, Asc) {
        let s = proto::scsi::Sense::parse(o.sense.as_ref().unwrap()).unwrap();
        (s.key, s.asc)
    }

    /// Issue 10 item 3: a serial the user set is reported as written (it
    /// used to be hashed into 16 hex digits); a derived one stays stable;
    /// one SPC-5 cannot carry is refused with the reason.
    #[tokio::test]
    async fn user_serial_is_reported_verbatim() {
        let mut t = target();
        t.allow.clear();
        t.initiators.clear();
        t.luns[0] = LunConfig::parse_spec(0, "mem:1M,serial=Disk 0001-a").unwrap();
        let d = build(&t).unwrap();
        let n = nexus(H1, [0x40, 0, 1, 0x37, 0, 0], "iqn.t", 1);
        uas(&d, &n, 0).await;
        let vpd80 = cdb::inquiry(true, 0x80, 255);
        let r = run(&d, &n, 0, vpd80.as_bytes(), &[]).await;
        assert_eq!(&r.data_in[4..], b"Disk 0001-a");
        let r = run(&d, &n, 1, vpd80.as_bytes(), &[]).await;
        assert_eq!(r.data_in.len(), 4 + 16, "derived: 16 hex digits");
        let r = run(&d, &n, 0, cdb::inquiry(true, 0x83, 255).as_bytes(), &[]).await;
        assert!(r.data_in.windows(11).any(|w| w == b"Disk 0001-a"));
        for bad in ["tab\there", "caf\u{e9}", &"x".repeat(200)] {
            let mut l = LunConfig::parse_spec(0, "mem:1M").unwrap();
            l.serial = Some(bad.to_string());
            let e = lu_config(&t.name, &l).unwrap_err();
            assert!(e.contains("serial"), "{e}");
        }
    }

    #[test]
    fn access_policy_from_the_acl() {
        let t = target();
        let a = lun_access(&t);
        assert!(a.can_access("IQN.2024-01.org.example:H1", 0));
        assert!(!a.can_access(H1, 1));
        assert!(a.can_access(H2, 1));
        assert!(!a.can_access("iqn.2024-01.org.example:stranger", 0));
        let open = TargetConfig {
            allow: vec![],
            initiators: Default::default(),
            ..t
        };
        assert!(lun_access(&open).can_access("iqn.any", 5));
        let n = nexus(H1, [0x40, 0, 1, 0x37, 0, 0], "iqn.t", 1);
        assert_eq!(n.initiator_name(), H1);
    }

    #[tokio::test]
    async fn a_masked_lun_is_a_missing_lun() {
        let d = build(&target()).unwrap();
        let n1 = nexus(H1, [0x40, 0, 0, 0, 0, 1], "iqn.t", 1);
        let n2 = nexus(H2, [0x40, 0, 0, 0, 0, 2], "iqn.t", 1);
        assert_eq!(luns(&d, &n1).await, vec![0]);
        assert_eq!(luns(&d, &n2).await, vec![0, 1]);
        // Every command to the hidden LUN 1 answers exactly as to LUN 7,
        // which does not exist.
        let w = cdb::write10(0, 1, false);
        let cdbs: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (cdb::inquiry(false, 0, 96).as_bytes().to_vec(), vec![]),
            (cdb::inquiry(true, 0x83, 96).as_bytes().to_vec(), vec![]),
            (cdb::test_unit_ready().as_bytes().to_vec(), vec![]),
            (cdb::read10(0, 1, false).as_bytes().to_vec(), vec![]),
            (w.as_bytes().to_vec(), vec![0xA5; 4096]),
            (vec![0x03, 0, 0, 0, 18, 0], vec![]),
            (cdb::report_luns(4096).as_bytes().to_vec(), vec![]),
        ];
        for (c, data) in &cdbs {
            let hidden = run(&d, &n1, 1, c, data).await;
            let missing = run(&d, &n1, 7, c, data).await;
            assert_eq!(hidden.status, missing.status, "{c:02x?}");
            assert_eq!(hidden.sense, missing.sense, "{c:02x?}");
            assert_eq!(hidden.data_in, missing.data_in, "{c:02x?}");
            assert_eq!(hidden.transfer_length, missing.transfer_length, "{c:02x?}");
        }
        let inq = run(&d, &n1, 1, cdb::inquiry(false, 0, 96).as_bytes(), &[]).await;
        assert_eq!(inq.data_in[0], 0x7F, "peripheral qualifier 011b, type 1Fh");
        let wr = run(&d, &n1, 1, w.as_bytes(), &[0xA5; 4096]).await;
        assert_eq!(
            sense(&wr),
            (SenseKey::ILLEGAL_REQUEST, Asc::LOGICAL_UNIT_NOT_SUPPORTED)
        );
        // The SPDTL a masked LUN reports is that of a missing one (its
        // 4096-byte blocks do not show through residuals).
        let raw1 = Lun::from_number(1).0;
        let raw7 = Lun::from_number(7).0;
        assert_eq!(
            data_out_length(&d, &n1, raw1, w.as_bytes()),
            data_out_length(&d, &n1, raw7, w.as_bytes())
        );
        assert_eq!(data_out_length(&d, &n2, raw1, w.as_bytes()), 4096);
        assert!(!has_lun(&d, &n1, raw1));
        assert!(has_lun(&d, &n2, raw1));
        // The other initiator uses LUN 1 normally.
        uas(&d, &n2, 1).await;
        let ok = run(&d, &n2, 1, w.as_bytes(), &[0xA5; 4096]).await;
        assert_eq!(ok.status, 0);
        // Nothing of LUN 1 reached H1: LUN 0 still has no trace of H1's
        // attempts beyond its own power-on unit attention.
        assert_eq!(
            uas(&d, &n1, 0).await,
            vec![Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET]
        );
    }

    #[tokio::test]
    async fn acl_changes_raise_reported_luns_data_has_changed() {
        let mut t = target();
        let d = build(&t).unwrap();
        let n1 = nexus(H1, [0x40, 0, 0, 0, 0, 1], "iqn.t", 1);
        let n2 = nexus(H2, [0x40, 0, 0, 0, 0, 2], "iqn.t", 1);
        uas(&d, &n1, 0).await;
        uas(&d, &n2, 0).await;
        // H1 gets LUN 1 too: H1 is told, H2 is not.
        t.initiators.get_mut(H1).unwrap().luns = Some(vec![0, 1]);
        apply_acl(&d, &t);
        assert_eq!(
            uas(&d, &n1, 0).await,
            vec![Asc::REPORTED_LUNS_DATA_HAS_CHANGED]
        );
        assert!(uas(&d, &n2, 0).await.is_empty());
        assert_eq!(luns(&d, &n1).await, vec![0, 1]);
        // The same policy again changes nothing.
        apply_acl(&d, &t);
        assert!(uas(&d, &n1, 0).await.is_empty());
        // H2 leaves the ACL: its session sees nothing any more.
        t.allow.retain(|a| a != H2);
        apply_acl(&d, &t);
        assert!(luns(&d, &n2).await.is_empty());
        let r = run(&d, &n2, 0, cdb::test_unit_ready().as_bytes(), &[]).await;
        assert_eq!(
            sense(&r),
            (SenseKey::ILLEGAL_REQUEST, Asc::LOGICAL_UNIT_NOT_SUPPORTED)
        );
        assert!(uas(&d, &n1, 0).await.is_empty());
        // A LUN added at run time: only those who may see it are told.
        t.initiators.get_mut(H1).unwrap().luns = Some(vec![0]);
        apply_acl(&d, &t);
        uas(&d, &n1, 0).await;
        t.allow.push(H2.into());
        apply_acl(&d, &t);
        uas(&d, &n2, 0).await;
        d.add_lun(lu_config(&t.name, &LunConfig::parse_spec(2, "mem:1M").unwrap()).unwrap())
            .unwrap();
        assert!(uas(&d, &n1, 0).await.is_empty(), "masked: not told");
        assert_eq!(
            uas(&d, &n2, 0).await,
            vec![Asc::REPORTED_LUNS_DATA_HAS_CHANGED]
        );
        assert_eq!(luns(&d, &n1).await, vec![0]);
        assert_eq!(luns(&d, &n2).await, vec![0, 1, 2]);
    }
}
