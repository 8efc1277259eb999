//! Execution of admin requests against the running server: [`Admin::handle`]
//! and the one dispatch from [`Request`] to its handler, the [`Failure`]
//! kinds, and the helpers the handlers share.
//!
//! Each handler checks everything first and changes state last, so a
//! refused request changes nothing. The device server's runtime methods
//! raise the unit attentions (SPC-5 §6.33 REPORTED LUNS DATA HAS CHANGED,
//! SBC-4 §4.10 CAPACITY DATA HAS CHANGED, SPC-5 MODE PARAMETERS CHANGED).
//! ACL edits (`allow`, `deny`, LUN masks, `remove-lun`) hand the target's
//! new access policy to the device server ([`crate::device::apply_acl`]),
//! which raises REPORTED LUNS DATA HAS CHANGED on the I_T nexuses whose
//! LUN inventory changed; CHAP edits apply from the next login.
//!
//! The handlers, by what they act on: `show.rs` (show), `targets.rs`
//! (add/remove target), `portals.rs` (add portal, logout session),
//! `luns.rs` (add/remove/set LUN), `access.rs` (allow, deny, set-chap),
//! `control.rs` (control-channel switches), `save.rs` (save).

use std::net::SocketAddr;
use std::sync::Arc;

use proto::scsi::Lun;
use serde_json::Value;

use super::access::ChapChange;
use super::protocol::{ErrorKind, Request, Response};
use super::{Admin, AdminState};
use crate::config::LunConfig;
use crate::config_file::{LunExt, MAX_LUN};
use crate::server::{Session, TargetRuntime};

/// A failed request: the error kind and a message for the admin.
#[derive(Debug)]
pub(crate) struct Failure(pub(super) ErrorKind, pub(super) String);

pub(super) type Outcome = Result<Value, Failure>;

pub(super) fn refused(msg: impl Into<String>) -> Failure {
    Failure(ErrorKind::Refused, msg.into())
}
pub(super) fn invalid(msg: impl Into<String>) -> Failure {
    Failure(ErrorKind::Invalid, msg.into())
}
pub(super) fn not_found(msg: impl Into<String>) -> Failure {
    Failure(ErrorKind::NotFound, msg.into())
}
pub(super) fn failed(msg: impl Into<String>) -> Failure {
    Failure(ErrorKind::Failed, msg.into())
}

fn raw_lun(n: u64) -> u64 {
    Lun::from_number(n as u16).0
}

pub(super) fn lu_of(rt: &TargetRuntime, n: u64) -> Option<Arc<crate::scsi::LogicalUnit>> {
    if n > MAX_LUN {
        return None;
    }
    rt.device.lu(raw_lun(n))
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) fn sorted_insert(luns: &mut Vec<LunConfig>, l: LunConfig) {
    let pos = luns
        .iter()
        .position(|o| o.lun > l.lun)
        .unwrap_or(luns.len());
    luns.insert(pos, l);
}

/// The sessions of a target whose I_T nexus has used `lu`.
pub(super) fn users_of(
    sessions: &[Arc<Session>],
    lu: &crate::scsi::LogicalUnit,
) -> Vec<Arc<Session>> {
    let st = lu.state();
    sessions
        .iter()
        .filter(|s| s.nexus.as_ref().is_some_and(|n| st.seen.contains(n)))
        .cloned()
        .collect()
}

impl Admin {
    /// Execute one request.
    pub async fn handle(&self, req: Request) -> Response {
        let op = req.op();
        let r = self.dispatch(req).await;
        match r {
            Ok(v) => {
                tracing::info!(op, "admin request done");
                Response::ok(v)
            }
            Err(Failure(kind, msg)) => {
                tracing::info!(op, ?kind, reason = %msg, "admin request refused");
                Response::err(kind, msg)
            }
        }
    }

    /// Targets, LUNs and portals here; access (ACL, CHAP, sessions) and
    /// saving in [`Admin::dispatch_access`].
    async fn dispatch(&self, req: Request) -> Outcome {
        let mut st = self.state.lock().await;
        match req {
            Request::Show { target } => self.show(&st, target.as_deref()),
            Request::AddTarget {
                name,
                alias,
                portals,
                tpgt,
                luns,
            } => {
                self.add_target(&mut st, name, alias, portals, tpgt, luns)
                    .await
            }
            Request::RemoveTarget { name, force } => {
                self.remove_target(&mut st, &name, force).await
            }
            Request::AddLun {
                target,
                lun,
                spec,
                vendor,
                product,
                serial,
                wwn_seed,
            } => {
                let ext = LunExt {
                    comment: None,
                    vendor,
                    product,
                    wwn_seed,
                };
                self.add_lun(&mut st, &target, lun, &spec, serial, ext)
                    .await
            }
            Request::RemoveLun { target, lun, force } => {
                self.remove_lun(&mut st, &target, lun, force)
            }
            Request::SetLun {
                target,
                lun,
                mode,
                size,
                force,
                control,
            } => {
                self.set_lun_request(&mut st, &target, lun, mode, size, force, control)
                    .await
            }
            Request::AddPortal {
                target,
                portal,
                tpgt,
            } => self.add_portal(&mut st, &target, &portal, tpgt).await,
            other => self.dispatch_access(&mut st, other).await,
        }
    }

    /// Who may log in and with which accounts, sessions, saving.
    async fn dispatch_access(&self, st: &mut AdminState, req: Request) -> Outcome {
        match req {
            Request::Allow {
                target,
                initiator,
                luns,
                all_luns,
                chap,
                mutual_chap,
                control,
            } => self.allow(
                st.ext.strict_names,
                &target,
                &initiator,
                (luns, all_luns),
                chap,
                mutual_chap,
                control,
            ),
            Request::Deny {
                target,
                initiator,
                allow_any,
            } => self.deny(st, &target, &initiator, allow_any),
            Request::SetChap {
                target,
                initiator,
                add,
                remove,
                mutual,
                no_mutual,
                clear,
            } => self.set_chap(
                target.as_deref(),
                initiator.as_deref(),
                ChapChange {
                    add,
                    remove,
                    mutual,
                    no_mutual,
                    clear,
                },
            ),
            Request::LogoutSession { tsih, target } => {
                self.logout_session(tsih, target.as_deref()).await
            }
            Request::Save { file } => self.save(st, file).await,
            // `dispatch` handles the rest.
            _ => Err(invalid("not an access request")),
        }
    }

    pub(super) fn target(&self, name: &str) -> Result<Arc<TargetRuntime>, Failure> {
        self.shared
            .target(name)
            .ok_or_else(|| not_found(format!("no target {name:?}")))
    }

    pub(super) fn listening(&self, st: &AdminState) -> Vec<SocketAddr> {
        let mut v = self.shared.local_addrs.clone();
        v.extend(st.extra_listeners.iter().map(|(a, _)| *a));
        v
    }
}

pub(super) fn initiators(sessions: &[Arc<Session>]) -> String {
    let mut v: Vec<String> = sessions
        .iter()
        .map(|s| s.core.initiator_name.clone())
        .collect();
    v.sort();
    v.dedup();
    v.join(", ")
}
