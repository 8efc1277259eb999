//! Glue between the CDB and the persistent-reservation state of `scsi::pr`:
//! PERSISTENT RESERVE IN/OUT (SPC-5 §6.16, §6.17).

use super::{invalid_cdb, param_list_length_error, truncate, Ctx, Fail, R};
use crate::scsi::pr::{ProutError, ProutParams};
use bytes::Bytes;
use proto::scsi::cdb::sa;
use proto::scsi::Status;

impl Ctx<'_> {
    pub(super) fn prin(&self, service_action: u8, alloc_len: u16) -> R {
        let st = self.lu.state();
        let data = match service_action as u16 {
            sa::PRIN_READ_KEYS => st.res.read_keys(),
            sa::PRIN_READ_RESERVATION => st.res.read_reservation(),
            sa::PRIN_REPORT_CAPABILITIES => crate::scsi::pr::Reservations::report_capabilities(),
            sa::PRIN_READ_FULL_STATUS => st.res.read_full_status(|n| n.relative_target_port),
            _ => return Err(invalid_cdb(1, Some(4))),
        };
        Ok(truncate(data, alloc_len as usize))
    }

    pub(super) fn prout(&self, service_action: u8, scope: u8, pr_type: u8, param_len: u32) -> R {
        // SPC-5 §6.16.3: the parameter list is 24 bytes (no SPEC_I_PT).
        if param_len != 24 {
            return Err(param_list_length_error());
        }
        let data = self.data_out(24)?;
        let p = ProutParams::parse(&data).ok_or_else(param_list_length_error)?;
        let mut st = self.lu.state();
        match st.res.prout(self.nexus, service_action, scope, pr_type, &p) {
            Ok(uas) => {
                for (n, asc) in uas {
                    st.push_ua(&n, asc);
                }
                Ok(Bytes::new())
            }
            Err(ProutError::Conflict) => Err(Fail::Status(Status::RESERVATION_CONFLICT)),
            Err(ProutError::Check(s)) => Err(s.into()),
        }
    }
}
