//! The control channel through the admin API (issue #12,
//! docs/control-channel.md): `set-lun ... control=on|off` turns a LUN's
//! channel on or off at run time (kept by `save` as the LUN's `"control"`),
//! and `serve --control` grants the control right to every initiator.
//! The per-initiator control right is the ACL entry's `control` flag
//! (`allow ... --control`, in [`super::access`]).

use serde_json::{json, Value};

use super::handlers::{not_found, Failure};
use super::Admin;
use crate::sync::write_lock;

impl Admin {
    /// Turns the control channel of LUN `n` of `target` on or off.
    pub(super) fn set_lun_control(&self, target: &str, n: u64, on: bool) -> Result<Value, Failure> {
        let rt = self.target(target)?;
        let lun = u16::try_from(n)
            .ok()
            .filter(|_| rt.config().luns.iter().any(|l| l.lun == n))
            .ok_or_else(|| not_found(format!("no LUN {n} in {}", rt.name)))?;
        rt.device
            .set_control(lun, on)
            .map_err(|e| not_found(e.to_string()))?;
        {
            let mut c = write_lock(&rt.config);
            if let Some(l) = c.luns.iter_mut().find(|l| l.lun == n) {
                l.control = on;
            }
        }
        tracing::info!(target = %rt.name, lun = n, on, "control channel set by the admin API");
        let size = rt.device.backend(lun).map_or(0, |b| b.size());
        let mode = rt
            .device
            .lu(proto::scsi::Lun::from_number(lun).0)
            .map(|l| l.state().mode.as_str())
            .unwrap_or("wb");
        Ok(json!({"target": rt.name, "lun": n, "control": on, "mode": mode, "size_bytes": size}))
    }

    /// `serve --control`: every initiator of every target has the control
    /// right (a demo and test convenience; not saved).
    pub fn grant_control_to_all(&self) {
        for t in self.shared.all_targets() {
            t.device.set_control_all(true);
        }
    }
}
