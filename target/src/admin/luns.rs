//! `add-lun`, `remove-lun` and `set-lun`: logical units added, removed,
//! resized or switched between cache modes at run time; the device server
//! raises REPORTED LUNS DATA HAS CHANGED (SPC-5 §6.33), CAPACITY DATA HAS
//! CHANGED (SBC-4 §4.10) and MODE PARAMETERS CHANGED to the I_T nexuses
//! concerned.

use serde_json::{json, Value};

use super::handlers::{
    failed, initiators, invalid, lu_of, not_found, refused, sorted_insert, users_of, Failure,
    Outcome,
};
use super::{build_lu, Admin, AdminState};
use crate::config::{parse_size, BackendConfig, IoMode, LunConfig};
use crate::config_file::{self, LunExt, MAX_LUN};
use crate::sync::write_lock;

impl Admin {
    pub(super) async fn add_lun(
        &self,
        st: &mut AdminState,
        target: &str,
        lun: Option<u64>,
        spec: &str,
        serial: Option<String>,
        ext: LunExt,
    ) -> Outcome {
        let rt = self.target(target)?;
        let cfg = rt.config();
        let taken = |n: u64| cfg.luns.iter().any(|l| l.lun == n) || lu_of(&rt, n).is_some();
        let n = match lun {
            Some(n) if n > MAX_LUN => {
                return Err(invalid(format!(
                    "LUN number {n} out of range (0..={MAX_LUN})"
                )))
            }
            Some(n) if taken(n) => {
                return Err(refused(format!("LUN {n} of {} already exists", rt.name)))
            }
            Some(n) => n,
            None => (0..=MAX_LUN)
                .find(|n| !taken(*n))
                .ok_or_else(|| refused("no free LUN number"))?,
        };
        let mut l = LunConfig::parse_spec(n, spec).map_err(|e| invalid(e.to_string()))?;
        if let Some(s) = serial {
            config_file::check_ascii_field("serial", &s, 64).map_err(|e| invalid(e.to_string()))?;
            l.serial = Some(s);
        }
        for (what, v, max) in [
            ("vendor", &ext.vendor, 8),
            ("product", &ext.product, 16),
            ("wwn_seed", &ext.wwn_seed, 255),
        ] {
            if let Some(v) = v {
                config_file::check_ascii_field(what, v, max).map_err(|e| invalid(e.to_string()))?;
            }
        }
        let (lu, handle) = {
            let (name, l, ext) = (rt.name.clone(), l.clone(), ext.clone());
            let company_id = st.ext.company_id;
            tokio::task::spawn_blocking(move || build_lu(&name, &l, Some(&ext), company_id))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(failed)?
        };
        rt.device.add_lun(lu).map_err(|e| refused(e.to_string()))?;
        sorted_insert(&mut write_lock(&rt.config).luns, l.clone());
        st.luns.insert((rt.name.to_ascii_lowercase(), n), handle);
        if ext != LunExt::default() {
            st.ext.target_mut(&rt.name).luns.insert(n, ext);
        }
        Ok(json!({"target": rt.name, "lun": n, "spec": spec}))
    }

    pub(super) fn remove_lun(
        &self,
        st: &mut AdminState,
        target: &str,
        n: u64,
        force: bool,
    ) -> Outcome {
        let rt = self.target(target)?;
        let lu = lu_of(&rt, n).ok_or_else(|| not_found(format!("no LUN {n} in {}", rt.name)))?;
        let using = users_of(&self.shared.sessions_of(&rt.name), &lu);
        if !using.is_empty() && !force {
            return Err(refused(format!(
                "LUN {n} of {} is in use by {} session(s) ({}); pass --force to remove it anyway",
                rt.name,
                using.len(),
                initiators(&using)
            )));
        }
        rt.device
            .remove_lun(n as u16)
            .map_err(|e| not_found(e.to_string()))?;
        {
            let mut c = write_lock(&rt.config);
            c.luns.retain(|l| l.lun != n);
            // A masked initiator loses the LUN for good: re-adding a LUN
            // with this number does not re-grant access.
            for a in c.initiators.values_mut() {
                if let Some(ls) = &mut a.luns {
                    ls.retain(|x| *x != n);
                }
            }
        }
        crate::device::apply_acl(&rt.device, &rt.config());
        let key = rt.name.to_ascii_lowercase();
        st.luns.remove(&(key.clone(), n));
        if let Some(e) = st.ext.targets.get_mut(&key) {
            e.luns.remove(&n);
        }
        Ok(json!({"target": rt.name, "lun": n, "was_in_use": !using.is_empty()}))
    }

    /// `set-lun`: the mode and size through [`Admin::set_lun`], the control
    /// channel switch through [`Admin::set_lun_control`], either or both.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn set_lun_request(
        &self,
        st: &mut AdminState,
        target: &str,
        n: u64,
        mode: Option<String>,
        size: Option<String>,
        force: bool,
        control: Option<bool>,
    ) -> Outcome {
        match control {
            Some(on) if mode.is_none() && size.is_none() => self.set_lun_control(target, n, on),
            Some(on) => {
                let mut v = self.set_lun(st, target, n, mode, size, force).await?;
                self.set_lun_control(target, n, on)?;
                v["control"] = Value::Bool(on);
                Ok(v)
            }
            None => self.set_lun(st, target, n, mode, size, force).await,
        }
    }

    pub(super) async fn set_lun(
        &self,
        st: &mut AdminState,
        target: &str,
        n: u64,
        mode: Option<String>,
        size: Option<String>,
        force: bool,
    ) -> Outcome {
        let rt = self.target(target)?;
        let lu = lu_of(&rt, n).ok_or_else(|| not_found(format!("no LUN {n} in {}", rt.name)))?;
        let cfg = rt.config();
        let lc = cfg
            .luns
            .iter()
            .find(|l| l.lun == n)
            .cloned()
            .ok_or_else(|| not_found(format!("no LUN {n} in {}", rt.name)))?;
        if mode.is_none() && size.is_none() {
            return Err(invalid("nothing to change: give a mode and/or a size"));
        }
        let handle = st.luns.get(&(rt.name.to_ascii_lowercase(), n)).cloned();
        let new_mode = match &mode {
            Some(m) => {
                let m = IoMode::parse(m)
                    .ok_or_else(|| invalid(format!("mode must be wb, wt or ro, got {m:?}")))?;
                if m != IoMode::ReadOnly && handle.as_ref().is_some_and(|h| h.opened_read_only) {
                    return Err(refused(format!(
                        "LUN {n} was opened read-only; remove it and add it again to make it writable"
                    )));
                }
                Some(m)
            }
            None => None,
        };
        let new_size = size
            .as_deref()
            .map(|s| checked_new_size(n, s, &lu, &lc.backend, force))
            .transpose()?;
        if let Some(bytes) = new_size {
            let dev = rt.device.clone();
            tokio::task::spawn_blocking(move || dev.resize(n as u16, bytes))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(format!("resize failed: {e}")))?;
        }
        if let Some(m) = new_mode {
            rt.device
                .set_mode(n as u16, m)
                .map_err(|e| failed(e.to_string()))?;
        }
        {
            let mut c = write_lock(&rt.config);
            if let Some(l) = c.luns.iter_mut().find(|l| l.lun == n) {
                if let Some(m) = new_mode {
                    l.mode = m;
                }
                if let Some(b) = new_size {
                    match &mut l.backend {
                        BackendConfig::Memory { size } | BackendConfig::Null { size } => *size = b,
                        BackendConfig::File { size, .. } => *size = Some(b),
                        BackendConfig::Block { .. } | BackendConfig::Rbd(_) => {}
                    }
                }
            }
        }
        let mode_now = lu.state().mode.as_str();
        Ok(json!({
            "target": rt.name,
            "lun": n,
            "mode": mode_now,
            "size_bytes": lu.cfg.backend.size(),
        }))
    }
}

/// A `set-lun` size for LUN `n`: a whole number of sectors, a backend that
/// can be resized here, and no shrinking without `force`.
fn checked_new_size(
    n: u64,
    s: &str,
    lu: &crate::scsi::LogicalUnit,
    backend: &BackendConfig,
    force: bool,
) -> Result<u64, Failure> {
    let bytes = parse_size(s).map_err(|e| invalid(e.to_string()))?;
    let bs = u64::from(lu.block_size());
    if bytes < bs || !bytes.is_multiple_of(bs) {
        return Err(invalid(format!(
            "size must be a non-zero multiple of the sector size {bs}, got {bytes}"
        )));
    }
    match backend {
        BackendConfig::Block { .. } => {
            return Err(refused("a block LUN has the size of its device"))
        }
        BackendConfig::Null { .. } => {
            return Err(refused("null LUNs cannot be resized (remove and add it)"))
        }
        BackendConfig::Rbd(r) => {
            return Err(refused(format!(
                "an rbd LUN has the size of its image: run `rbd resize --size SIZE {}`; \
                 the target notices and reports CAPACITY DATA HAS CHANGED",
                r.display_name()
            )))
        }
        _ => {}
    }
    if bytes < lu.cfg.backend.size() && !force {
        return Err(refused(format!(
            "shrinking LUN {n} from {} to {bytes} bytes discards data; pass --force",
            lu.cfg.backend.size()
        )));
    }
    Ok(bytes)
}
