//! Reservations: SPC-2 RESERVE/RELEASE (6/10) and SPC-4 persistent
//! reservations (SPC-5 §5.13 and §6.15/§6.16), as pure state machines over
//! an I_T nexus identity. The device server keeps one [`Reservations`] per
//! logical unit behind its state lock.
//!
//! - [`moving`]: REGISTER AND MOVE; [`transport_id`]: iSCSI TransportIDs.
//! - [`persist`]: APTPL (SPC-5 §5.14.5 "Persistent reservations and power
//!   loss"): the state saved atomically to a file per logical unit while
//!   the last APTPL bit received was one, and restored at start.
//!
//! Not done, on purpose: ALL_TG_PT and SPEC_I_PT (refused as INVALID FIELD
//! IN PARAMETER LIST, and REPORT CAPABILITIES says so), REPLACE LOST
//! RESERVATION, and Compatible Reservation Handling (an SPC-2 reservation
//! and a persistent one exclude each other, CRH = 0).

pub mod moving;
pub mod persist;
pub mod transport_id;

use super::Nexus;
use proto::scsi::{Asc, Sense};

/// Persistent reservation types (SPC-5 table 222).
pub mod pr_type {
    pub const WRITE_EXCLUSIVE: u8 = 1;
    pub const EXCLUSIVE_ACCESS: u8 = 3;
    pub const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: u8 = 5;
    pub const EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: u8 = 6;
    pub const WRITE_EXCLUSIVE_ALL_REGISTRANTS: u8 = 7;
    pub const EXCLUSIVE_ACCESS_ALL_REGISTRANTS: u8 = 8;

    pub fn valid(t: u8) -> bool {
        matches!(t, 1 | 3 | 5 | 6 | 7 | 8)
    }
    pub fn all_registrants(t: u8) -> bool {
        matches!(t, 7 | 8)
    }
    pub fn registrants_only(t: u8) -> bool {
        matches!(t, 5 | 6)
    }
}

/// How a command is affected by reservations (SPC-5 table 63, condensed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Never conflicts (INQUIRY, REPORT LUNS, PRIN/PROUT, TUR, ...).
    Always,
    /// Reads the medium.
    Read,
    /// Changes the medium or device state.
    Write,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub nexus: Nexus,
    pub key: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persistent {
    /// The reserving nexus (meaningful for non all-registrants types).
    pub holder: Nexus,
    pub pr_type: u8,
}

/// Outcome of a PROUT service action: the sense to return on failure, and
/// unit attentions to queue for other nexuses on success.
pub type ProutResult = Result<Vec<(Nexus, Asc)>, ProutError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProutError {
    Conflict,
    Check(Sense),
}

/// All reservation state of one logical unit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reservations {
    /// SPC-2 RESERVE(6)/(10) holder.
    pub legacy: Option<Nexus>,
    pub generation: u32,
    pub registrations: Vec<Registration>,
    pub reservation: Option<Persistent>,
    /// The last APTPL bit of a successful REGISTER, REGISTER AND IGNORE
    /// EXISTING KEY or REGISTER AND MOVE (SPC-5 §5.14.5): registrations
    /// and reservation survive a restart while it is set (PTPL_A).
    pub aptpl: bool,
}

/// PERSISTENT RESERVE OUT parameter list (SPC-5 §6.16.3), 24 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProutParams {
    pub key: u64,
    pub sa_key: u64,
    pub spec_i_pt: bool,
    pub all_tg_pt: bool,
    pub aptpl: bool,
}

impl ProutParams {
    pub fn parse(p: &[u8]) -> Option<Self> {
        if p.len() < 24 {
            return None;
        }
        Some(Self {
            key: u64::from_be_bytes(p[0..8].try_into().ok()?),
            sa_key: u64::from_be_bytes(p[8..16].try_into().ok()?),
            spec_i_pt: p[20] & 0x08 != 0,
            all_tg_pt: p[20] & 0x04 != 0,
            aptpl: p[20] & 0x01 != 0,
        })
    }
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&self.key.to_be_bytes());
        b[8..16].copy_from_slice(&self.sa_key.to_be_bytes());
        b[20] = if self.spec_i_pt { 0x08 } else { 0 }
            | if self.all_tg_pt { 0x04 } else { 0 }
            | self.aptpl as u8;
        b
    }
}

impl Reservations {
    /// Takes the persistent-reservation state of `next` (a copy a PROUT
    /// was applied to), leaving the SPC-2 holder alone: RESERVE(6)/(10)
    /// and nexus loss may have changed it meanwhile.
    pub fn commit(&mut self, next: Reservations) {
        self.generation = next.generation;
        self.registrations = next.registrations;
        self.reservation = next.reservation;
        self.aptpl = next.aptpl;
    }

    fn key_of(&self, n: &Nexus) -> Option<u64> {
        self.registrations
            .iter()
            .find(|r| &r.nexus == n)
            .map(|r| r.key)
    }

    pub fn is_registered(&self, n: &Nexus) -> bool {
        self.key_of(n).is_some()
    }

    /// Whether `n` holds the persistent reservation.
    pub fn is_holder(&self, n: &Nexus) -> bool {
        match &self.reservation {
            Some(r) if pr_type::all_registrants(r.pr_type) => self.is_registered(n),
            Some(r) => &r.holder == n,
            None => false,
        }
    }

    /// SPC-5 §5.13.1 / table 63: does `access` by `n` conflict?
    pub fn conflicts(&self, n: &Nexus, access: Access) -> bool {
        if access == Access::Always {
            return false;
        }
        let Some(r) = &self.reservation else {
            return false;
        };
        if self.is_holder(n) {
            return false;
        }
        let registered = self.is_registered(n);
        match r.pr_type {
            pr_type::WRITE_EXCLUSIVE => access == Access::Write,
            pr_type::EXCLUSIVE_ACCESS => true,
            pr_type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY
            | pr_type::WRITE_EXCLUSIVE_ALL_REGISTRANTS => !registered && access == Access::Write,
            _ => !registered,
        }
    }

    /// SPC-2 reservation held by another nexus (every command but the
    /// exempt ones conflicts, SPC-2 §5.5.1).
    pub fn legacy_conflicts(&self, n: &Nexus) -> bool {
        self.legacy.as_ref().is_some_and(|h| h != n)
    }

    /// RESERVE(6)/(10) (SPC-2 §7.21).
    pub fn reserve_legacy(&mut self, n: &Nexus) -> Result<(), ProutError> {
        if self.reservation.is_some() || self.legacy.as_ref().is_some_and(|h| h != n) {
            return Err(ProutError::Conflict);
        }
        self.legacy = Some(n.clone());
        Ok(())
    }

    /// RELEASE(6)/(10): releasing a reservation one does not hold is GOOD.
    pub fn release_legacy(&mut self, n: &Nexus) -> Result<(), ProutError> {
        if self.reservation.is_some() {
            return Err(ProutError::Conflict);
        }
        if self.legacy.as_ref() == Some(n) {
            self.legacy = None;
        }
        Ok(())
    }

    /// Forget what an I_T nexus held when it goes away (registrations
    /// survive I_T nexus loss, SPC-5 §5.13.11.1).
    pub fn nexus_lost(&mut self, n: &Nexus) {
        if self.legacy.as_ref() == Some(n) {
            self.legacy = None;
        }
    }

    fn others_registered(&self, except: &Nexus) -> Vec<Nexus> {
        self.registrations
            .iter()
            .filter(|r| &r.nexus != except)
            .map(|r| r.nexus.clone())
            .collect()
    }

    /// Removes the registration of `n`, releasing the reservation per
    /// SPC-5 §5.13.11.2 when appropriate; returns UAs.
    fn unregister(&mut self, n: &Nexus) -> Vec<(Nexus, Asc)> {
        self.registrations.retain(|r| &r.nexus != n);
        let mut uas = Vec::new();
        if let Some(r) = &self.reservation {
            let release = if pr_type::all_registrants(r.pr_type) {
                self.registrations.is_empty()
            } else {
                &r.holder == n
            };
            if release {
                let t = r.pr_type;
                self.reservation = None;
                if pr_type::registrants_only(t) {
                    uas = self
                        .others_registered(n)
                        .into_iter()
                        .map(|x| (x, Asc::RESERVATIONS_RELEASED))
                        .collect();
                }
            }
        }
        uas
    }

    /// PERSISTENT RESERVE OUT (SPC-5 §6.16).
    pub fn prout(&mut self, n: &Nexus, sa: u8, scope: u8, t: u8, p: &ProutParams) -> ProutResult {
        use proto::scsi::cdb::sa as s;
        let sa = sa as u16;
        if p.all_tg_pt || p.spec_i_pt {
            // ALL_TG_PT and SPEC_I_PT are not supported (REPORT CAPABILITIES
            // says so): INVALID FIELD IN PARAMETER LIST at byte 20.
            let bit = if p.spec_i_pt { 3 } else { 2 };
            return Err(ProutError::Check(Sense::invalid_field_in_parameter_list(
                20,
                Some(bit),
            )));
        }
        if self.legacy.is_some() && self.legacy.as_ref() != Some(n) {
            return Err(ProutError::Conflict);
        }
        let mine = self.key_of(n);
        match sa {
            s::PROUT_REGISTER | s::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY => {
                let ignore = sa == s::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY;
                self.prout_register(n, mine, ignore, p)
            }
            // The other service actions need the sender registered with
            // the RESERVATION KEY it sends, else RESERVATION CONFLICT (SPC-5 §6.16).
            s::PROUT_RESERVE
            | s::PROUT_RELEASE
            | s::PROUT_CLEAR
            | s::PROUT_PREEMPT
            | s::PROUT_PREEMPT_AND_ABORT
                if mine != Some(p.key) =>
            {
                Err(ProutError::Conflict)
            }
            s::PROUT_RESERVE => self.prout_reserve(n, scope, t),
            s::PROUT_RELEASE => self.prout_release(n, scope, t),
            s::PROUT_CLEAR => self.prout_clear(n),
            s::PROUT_PREEMPT | s::PROUT_PREEMPT_AND_ABORT => self.prout_preempt(n, scope, t, p),
            _ => Err(ProutError::Check(Sense::invalid_field_in_cdb(1, Some(4)))),
        }
    }

    /// PERSISTENT RESERVE OUT service actions REGISTER and REGISTER AND
    /// IGNORE EXISTING KEY (SPC-5 §6.16): a registration added, changed or
    /// (key 0) removed.
    fn prout_register(
        &mut self,
        n: &Nexus,
        mine: Option<u64>,
        ignore: bool,
        p: &ProutParams,
    ) -> ProutResult {
        match mine {
            None => {
                if !ignore && p.key != 0 {
                    return Err(ProutError::Conflict);
                }
                if p.sa_key != 0 {
                    self.registrations.push(Registration {
                        nexus: n.clone(),
                        key: p.sa_key,
                    });
                    self.aptpl = p.aptpl;
                }
                self.generation = self.generation.wrapping_add(1);
                Ok(vec![])
            }
            Some(k) => {
                if !ignore && p.key != k {
                    return Err(ProutError::Conflict);
                }
                self.generation = self.generation.wrapping_add(1);
                self.aptpl = p.aptpl;
                if p.sa_key == 0 {
                    Ok(self.unregister(n))
                } else {
                    for r in self.registrations.iter_mut().filter(|r| &r.nexus == n) {
                        r.key = p.sa_key;
                    }
                    Ok(vec![])
                }
            }
        }
    }

    /// PERSISTENT RESERVE OUT service action RESERVE (SPC-5 §6.16).
    fn prout_reserve(&mut self, n: &Nexus, scope: u8, t: u8) -> ProutResult {
        if scope != 0 || !pr_type::valid(t) {
            return Err(ProutError::Check(Sense::invalid_field_in_cdb(2, None)));
        }
        match &self.reservation {
            Some(r) if self.is_holder(n) && r.pr_type == t => Ok(vec![]),
            Some(_) => Err(ProutError::Conflict),
            None => {
                self.reservation = Some(Persistent {
                    holder: n.clone(),
                    pr_type: t,
                });
                Ok(vec![])
            }
        }
    }

    /// PERSISTENT RESERVE OUT service action RELEASE (SPC-5 §6.16).
    fn prout_release(&mut self, n: &Nexus, scope: u8, t: u8) -> ProutResult {
        let Some(r) = self.reservation.clone() else {
            return Ok(vec![]);
        };
        if !self.is_holder(n) {
            return Ok(vec![]);
        }
        if scope != 0 || r.pr_type != t {
            return Err(ProutError::Check(Sense::illegal_request(
                Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
            )));
        }
        self.reservation = None;
        // SPC-5 §5.13.11.2.2: registrants-only and all-registrants
        // releases notify the other registrants.
        let uas = if pr_type::registrants_only(t) || pr_type::all_registrants(t) {
            self.others_registered(n)
                .into_iter()
                .map(|x| (x, Asc::RESERVATIONS_RELEASED))
                .collect()
        } else {
            vec![]
        };
        Ok(uas)
    }

    /// PERSISTENT RESERVE OUT service action CLEAR (SPC-5 §6.16): every
    /// registration and the reservation removed.
    fn prout_clear(&mut self, n: &Nexus) -> ProutResult {
        let uas = self
            .others_registered(n)
            .into_iter()
            .map(|x| (x, Asc::RESERVATIONS_PREEMPTED))
            .collect();
        self.registrations.clear();
        self.reservation = None;
        self.generation = self.generation.wrapping_add(1);
        Ok(uas)
    }

    /// PERSISTENT RESERVE OUT service actions PREEMPT and PREEMPT AND ABORT
    /// (SPC-5 §6.16); the aborts themselves are the caller's.
    fn prout_preempt(&mut self, n: &Nexus, scope: u8, t: u8, p: &ProutParams) -> ProutResult {
        let mut uas = Vec::new();
        let res = self.reservation.clone();
        match res {
            Some(r) if pr_type::all_registrants(r.pr_type) && p.sa_key == 0 => {
                // Preempt an all-registrants reservation: remove all
                // other registrations, take the reservation.
                for x in self.others_registered(n) {
                    uas.push((x, Asc::REGISTRATIONS_PREEMPTED));
                }
                self.registrations.retain(|r| &r.nexus == n);
                self.reservation = Some(Persistent {
                    holder: n.clone(),
                    pr_type: t,
                });
            }
            Some(r)
                if !pr_type::all_registrants(r.pr_type)
                    && self.key_of(&r.holder) == Some(p.sa_key) =>
            {
                if scope != 0 || !pr_type::valid(t) {
                    return Err(ProutError::Check(Sense::invalid_field_in_cdb(2, None)));
                }
                let victims: Vec<Nexus> = self
                    .registrations
                    .iter()
                    .filter(|x| x.key == p.sa_key && &x.nexus != n)
                    .map(|x| x.nexus.clone())
                    .collect();
                self.registrations
                    .retain(|x| !(x.key == p.sa_key && &x.nexus != n));
                for v in victims {
                    uas.push((v, Asc::REGISTRATIONS_PREEMPTED));
                }
                self.reservation = Some(Persistent {
                    holder: n.clone(),
                    pr_type: t,
                });
                if r.pr_type != t {
                    for x in self.others_registered(n) {
                        if !uas.iter().any(|(u, _)| u == &x) {
                            uas.push((x, Asc::RESERVATIONS_RELEASED));
                        }
                    }
                }
            }
            _ => {
                // No reservation (or it is not held by the key):
                // remove the registrations with SERVICE ACTION
                // RESERVATION KEY.
                if p.sa_key == 0 {
                    return Err(ProutError::Check(Sense::invalid_field_in_parameter_list(
                        8, None,
                    )));
                }
                let victims: Vec<Nexus> = self
                    .registrations
                    .iter()
                    .filter(|x| x.key == p.sa_key)
                    .map(|x| x.nexus.clone())
                    .collect();
                if victims.is_empty() {
                    return Err(ProutError::Conflict);
                }
                for v in &victims {
                    uas.extend(self.unregister(v));
                    if v != n {
                        uas.push((v.clone(), Asc::REGISTRATIONS_PREEMPTED));
                    }
                }
            }
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(uas)
    }

    /// PRIN READ KEYS data (full; caller truncates).
    pub fn read_keys(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + 8 * self.registrations.len());
        b.extend_from_slice(&self.generation.to_be_bytes());
        b.extend_from_slice(&((self.registrations.len() * 8) as u32).to_be_bytes());
        for r in &self.registrations {
            b.extend_from_slice(&r.key.to_be_bytes());
        }
        b
    }

    /// PRIN READ RESERVATION data.
    pub fn read_reservation(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&self.generation.to_be_bytes());
        match &self.reservation {
            None => b.extend_from_slice(&0u32.to_be_bytes()),
            Some(r) => {
                b.extend_from_slice(&16u32.to_be_bytes());
                let key = if pr_type::all_registrants(r.pr_type) {
                    0
                } else {
                    self.key_of(&r.holder).unwrap_or(0)
                };
                b.extend_from_slice(&key.to_be_bytes());
                b.extend_from_slice(&[0; 4]);
                b.push(0);
                b.push(r.pr_type & 0x0F);
                b.extend_from_slice(&[0; 2]);
            }
        }
        b
    }

    /// PRIN REPORT CAPABILITIES (SPC-5 §6.15.4): no CRH, SIP_C or ATP_C;
    /// PTPL_C when the logical unit has a place to persist its state,
    /// PTPL_A when the last APTPL bit received was one; TMV with every
    /// type supported.
    pub fn report_capabilities(&self, ptpl_capable: bool) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b[1] = 8;
        b[2] = u8::from(ptpl_capable); // PTPL_C
        b[3] = 0x80 | u8::from(ptpl_capable && self.aptpl); // TMV, PTPL_A
                                                            // PERSISTENT RESERVATION TYPE MASK: WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX / EX_AC_AR.
        b[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
        b[5] = 0x01;
        b
    }

    /// PRIN READ FULL STATUS (SPC-5 §6.15.5).
    pub fn read_full_status(&self, relative_port_of: impl Fn(&Nexus) -> u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.generation.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        for r in &self.registrations {
            let tid = transport_id::encode(&r.nexus.initiator_port);
            b.extend_from_slice(&r.key.to_be_bytes());
            b.extend_from_slice(&[0; 4]);
            let holder = self.is_holder(&r.nexus);
            b.push(if holder { 0x01 } else { 0 });
            let t = self
                .reservation
                .as_ref()
                .filter(|_| holder)
                .map(|x| x.pr_type)
                .unwrap_or(0);
            b.push(t & 0x0F);
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&relative_port_of(&r.nexus).to_be_bytes());
            b.extend_from_slice(&(tid.len() as u32).to_be_bytes());
            b.extend_from_slice(&tid);
        }
        let l = (b.len() - 8) as u32;
        b[4..8].copy_from_slice(&l.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests;

/// I_T nexus number `i` of the unit tests: initiator `i`, ISID ending in
/// `i`, target port 1.
#[cfg(test)]
fn test_nexus(i: u8) -> Nexus {
    Nexus::new(
        &format!("iqn.2024-01.org.example:i{i}"),
        [0x80, 0x12, 0x34, 0x56, 0, i],
        "iqn.2024-01.org.example:t",
        1,
    )
}
