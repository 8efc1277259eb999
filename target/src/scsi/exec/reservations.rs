//! Glue between the CDB and the persistent-reservation state of `scsi::pr`:
//! PERSISTENT RESERVE IN/OUT (SPC-5 §6.16, §6.17).
//!
//! A PERSISTENT RESERVE OUT runs as a small transaction: under the LU's
//! PROUT lock, the service action is applied to a copy of the state; when
//! APTPL is (or was) active, the copy is saved (or the saved file removed)
//! before it becomes the LU's state and before the command completes, so a
//! GOOD status is only sent for state that will survive a restart, and a
//! failed save changes nothing (INSUFFICIENT REGISTRATION RESOURCES, as
//! for any registration the device server cannot store).

use super::{invalid_cdb, param_list_length_error, truncate, Ctx, Fail, R};
use crate::scsi::lu::LuState;
use crate::scsi::pr::moving::{MoveParams, TRANSPORT_ID_OFFSET};
use crate::scsi::pr::{transport_id, ProutError, ProutParams, ProutResult};
use crate::scsi::Nexus;
use bytes::Bytes;
use proto::scsi::cdb::sa;
use proto::scsi::{Asc, Sense, Status};

/// Largest REGISTER AND MOVE parameter list: the 24-byte header and one
/// TransportID (an iSCSI name of at most 223 bytes, ",i,0x", 12 ISID
/// digits, the terminating null, padding).
const MAX_MOVE_PARAM_LEN: u32 = 24 + 4 + 256;

impl Ctx<'_> {
    pub(super) fn prin(&self, service_action: u8, alloc_len: u16) -> R {
        let st = self.lu.state();
        let data = match service_action as u16 {
            sa::PRIN_READ_KEYS => st.res.read_keys(),
            sa::PRIN_READ_RESERVATION => st.res.read_reservation(),
            sa::PRIN_REPORT_CAPABILITIES => st.res.report_capabilities(self.lu.pr_store.is_some()),
            sa::PRIN_READ_FULL_STATUS => st.res.read_full_status(|n| n.relative_target_port),
            _ => return Err(invalid_cdb(1, Some(4))),
        };
        Ok(truncate(data, alloc_len as usize))
    }

    pub(super) async fn prout(
        &self,
        service_action: u8,
        scope: u8,
        pr_type: u8,
        param_len: u32,
    ) -> R {
        let moving = u16::from(service_action) == sa::PROUT_REGISTER_AND_MOVE;
        // SPC-5 §6.17.3: the basic parameter list is 24 bytes (no
        // SPEC_I_PT); REGISTER AND MOVE's is 24 bytes and a TransportID.
        let len_ok = if moving {
            (24..=MAX_MOVE_PARAM_LEN).contains(&param_len)
        } else {
            param_len == 24
        };
        if !len_ok {
            return Err(param_list_length_error());
        }
        let data = self.data_out(u64::from(param_len))?;
        let ptpl_capable = self.lu.pr_store.is_some();
        let _serial = self.lu.pr_lock.lock().await;
        let (next, uas, was_aptpl) = {
            let st = self.lu.state();
            let mut next = st.res.clone();
            let result = if moving {
                let m = MoveParams::parse(&data).ok_or_else(param_list_length_error)?;
                if m.aptpl && !ptpl_capable {
                    return Err(Sense::invalid_field_in_parameter_list(17, Some(0)).into());
                }
                next.register_and_move(self.nexus, &m, |tid, rtpi| {
                    self.move_destination(&st, tid, rtpi)
                })
            } else {
                let p = ProutParams::parse(&data).ok_or_else(param_list_length_error)?;
                // SPC-5 §6.17.3: "If a device server that does not support
                // an APTPL bit set to one receives that value ..., then the
                // command shall be terminated with ... INVALID FIELD IN
                // PARAMETER LIST" (the bit counts for the register actions
                // only and is ignored for the others).
                let registers = matches!(
                    u16::from(service_action),
                    sa::PROUT_REGISTER | sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY
                );
                if registers && p.aptpl && !ptpl_capable {
                    return Err(Sense::invalid_field_in_parameter_list(20, Some(0)).into());
                }
                next.prout(self.nexus, service_action, scope, pr_type, &p)
            };
            let uas = outcome(result)?;
            (next, uas, st.res.aptpl)
        };
        if let Some(store) = self.lu.pr_store.clone().filter(|_| next.aptpl || was_aptpl) {
            let snapshot = next.aptpl.then(|| next.clone());
            let saved = tokio::task::spawn_blocking(move || {
                store.save(snapshot.as_ref()).map_err(|e| (store.path, e))
            })
            .await;
            if let Err(why) = flatten(saved) {
                tracing::error!(lun = self.lu.cfg.lun, error = %why,
                    "cannot save persistent reservations (APTPL); command refused, state unchanged");
                return Err(
                    Sense::illegal_request(Asc::INSUFFICIENT_REGISTRATION_RESOURCES).into(),
                );
            }
        }
        let mut st = self.lu.state();
        st.res.commit(next);
        for (n, asc) in uas {
            st.push_ua(&n, asc);
        }
        Ok(Bytes::new())
    }

    /// The I_T nexus a REGISTER AND MOVE names: an iSCSI initiator port
    /// (TransportID format 01b) behind a relative target port of this
    /// target that may access this logical unit. A nexus the LU knows
    /// (registered or seen) is matched without regard to case (iSCSI names
    /// are case-insensitive, RFC 3722); otherwise one is built the way
    /// login builds them, so that the initiator finds its registration
    /// when it logs in.
    fn move_destination(&self, st: &LuState, tid: &[u8], rtpi: u16) -> Result<Nexus, Sense> {
        let at = |byte: u16, bit| {
            Sense::invalid_field_in_parameter_list(TRANSPORT_ID_OFFSET as u16 + byte, bit)
        };
        let id = transport_id::parse_port(tid).map_err(|b| at(b.byte, b.bit))?;
        if !self.srv.has_target_port(rtpi, self.nexus) {
            return Err(Sense::invalid_field_in_parameter_list(18, None));
        }
        let port = id.initiator_port();
        let known = st
            .res
            .registrations
            .iter()
            .map(|r| &r.nexus)
            .chain(st.seen.iter())
            .find(|n| {
                n.relative_target_port == rtpi && n.initiator_port.eq_ignore_ascii_case(&port)
            });
        let dest = match known {
            Some(n) => n.clone(),
            None => Nexus::new(&id.name, id.isid, self.nexus.target_name(), rtpi),
        };
        // LUN masking: an initiator that may not access this LU cannot
        // hold its reservation.
        if !self.srv.can_access(&dest, self.lu.cfg.lun) {
            return Err(at(4, None));
        }
        Ok(dest)
    }
}

fn outcome(r: ProutResult) -> Result<Vec<(Nexus, Asc)>, Fail> {
    match r {
        Ok(uas) => Ok(uas),
        Err(ProutError::Conflict) => Err(Fail::Status(Status::RESERVATION_CONFLICT)),
        Err(ProutError::Check(s)) => Err(s.into()),
    }
}

fn flatten(
    r: Result<Result<(), (std::path::PathBuf, std::io::Error)>, tokio::task::JoinError>,
) -> Result<(), String> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err((path, e))) => Err(format!("{}: {e}", path.display())),
        Err(e) => Err(e.to_string()),
    }
}
