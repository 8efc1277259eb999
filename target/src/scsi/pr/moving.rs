//! PERSISTENT RESERVE OUT with REGISTER AND MOVE (SPC-4 §5.13.8 / SPC-5
//! §5.14.8 "Registering and moving the reservation", parameter list
//! §6.17.4): the reservation holder registers another I_T nexus, named by
//! a TransportID and a RELATIVE TARGET PORT IDENTIFIER, and hands it the
//! reservation (same scope and type), optionally unregistering itself
//! (UNREG).
//!
//! Checks, in this order (the SPC text each one follows):
//! 1. an SPC-2 reservation of another nexus: RESERVATION CONFLICT;
//! 2. "unregistered I_T nexus" or a RESERVATION KEY other than its key:
//!    RESERVATION CONFLICT;
//! 3. SERVICE ACTION RESERVATION KEY zero: ILLEGAL REQUEST, INVALID FIELD
//!    IN PARAMETER LIST;
//! 4. no persistent reservation: ILLEGAL REQUEST, INVALID FIELD IN CDB;
//! 5. an all-registrants reservation (types 7h, 8h): RESERVATION CONFLICT;
//! 6. the nexus is not the reservation holder: RESERVATION CONFLICT;
//! 7. the TransportID or relative target port does not name an I_T nexus
//!    of this logical unit (the caller's `destination`): ILLEGAL REQUEST,
//!    INVALID FIELD IN PARAMETER LIST;
//! 8. "a TransportID that is the same as the initiator port of the I_T
//!    nexus for the command received": ILLEGAL REQUEST, INVALID FIELD IN
//!    PARAMETER LIST.
//!
//! "It is not an error for a REGISTER AND MOVE service action to register
//! an I_T nexus that is already registered": its key is replaced. The
//! SCOPE and TYPE fields of the CDB are ignored. No unit attention is
//! established (the standard asks for none).

use super::{pr_type, Nexus, Persistent, ProutError, ProutResult, Registration, Reservations};
use proto::scsi::{Asc, Sense};

/// Offset of the TransportID in the parameter list.
pub const TRANSPORT_ID_OFFSET: usize = 24;

/// The REGISTER AND MOVE parameter list (SPC-5 table 233).
///
/// ```text
/// 0-7    RESERVATION KEY
/// 8-15   SERVICE ACTION RESERVATION KEY
/// 16     reserved
/// 17     reserved | UNREG (bit 1) | APTPL (bit 0)
/// 18-19  RELATIVE TARGET PORT IDENTIFIER
/// 20-23  TRANSPORTID PARAMETER DATA LENGTH (n - 23)
/// 24-n   TransportID
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MoveParams {
    pub key: u64,
    pub sa_key: u64,
    pub unreg: bool,
    pub aptpl: bool,
    pub relative_target_port: u16,
    /// The TransportID bytes, exactly as long as the list says.
    pub transport_id: Vec<u8>,
}

impl MoveParams {
    /// Parses the list. `None` when it is shorter than its header or than
    /// the TransportID length it states (PARAMETER LIST LENGTH ERROR).
    pub fn parse(p: &[u8]) -> Option<Self> {
        let head = p.get(..TRANSPORT_ID_OFFSET)?;
        let be64 = |r: std::ops::Range<usize>| head[r].try_into().ok().map(u64::from_be_bytes);
        let tid_len = u32::from_be_bytes(head[20..24].try_into().ok()?);
        let end = TRANSPORT_ID_OFFSET.checked_add(usize::try_from(tid_len).ok()?)?;
        Some(Self {
            key: be64(0..8)?,
            sa_key: be64(8..16)?,
            unreg: head[17] & 0x02 != 0,
            aptpl: head[17] & 0x01 != 0,
            relative_target_port: u16::from_be_bytes([head[18], head[19]]),
            transport_id: p.get(TRANSPORT_ID_OFFSET..end)?.to_vec(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; TRANSPORT_ID_OFFSET];
        b[0..8].copy_from_slice(&self.key.to_be_bytes());
        b[8..16].copy_from_slice(&self.sa_key.to_be_bytes());
        b[17] = (u8::from(self.unreg) << 1) | u8::from(self.aptpl);
        b[18..20].copy_from_slice(&self.relative_target_port.to_be_bytes());
        b[20..24].copy_from_slice(&(self.transport_id.len() as u32).to_be_bytes());
        b.extend_from_slice(&self.transport_id);
        b
    }
}

impl Reservations {
    /// REGISTER AND MOVE from `n`. `destination` turns the TransportID and
    /// relative target port into the destination I_T nexus, or says which
    /// field is wrong; it runs only once the checks on the sender passed.
    pub fn register_and_move(
        &mut self,
        n: &Nexus,
        p: &MoveParams,
        destination: impl FnOnce(&[u8], u16) -> Result<Nexus, Sense>,
    ) -> ProutResult {
        if self.legacy.as_ref().is_some_and(|h| h != n) {
            return Err(ProutError::Conflict);
        }
        if self.key_of(n) != Some(p.key) {
            return Err(ProutError::Conflict);
        }
        if p.sa_key == 0 {
            return Err(ProutError::Check(Sense::invalid_field_in_parameter_list(
                8, None,
            )));
        }
        let Some(r) = self.reservation.clone() else {
            return Err(ProutError::Check(Sense::invalid_field_in_cdb(1, Some(4))));
        };
        if pr_type::all_registrants(r.pr_type) || &r.holder != n {
            return Err(ProutError::Conflict);
        }
        let dest =
            destination(&p.transport_id, p.relative_target_port).map_err(ProutError::Check)?;
        if dest.initiator_port.eq_ignore_ascii_case(&n.initiator_port) {
            return Err(ProutError::Check(Sense::invalid_field_in_parameter_list(
                TRANSPORT_ID_OFFSET as u16,
                None,
            )));
        }
        match self.registrations.iter_mut().find(|x| x.nexus == dest) {
            Some(x) => x.key = p.sa_key,
            None => self.registrations.push(Registration {
                nexus: dest.clone(),
                key: p.sa_key,
            }),
        }
        self.reservation = Some(Persistent {
            holder: dest,
            pr_type: r.pr_type,
        });
        if p.unreg {
            // The reservation has moved: unregistering the sender releases
            // nothing (SPC-5 §5.14.11.3).
            self.registrations.retain(|x| &x.nexus != n);
        }
        self.aptpl = p.aptpl;
        self.generation = self.generation.wrapping_add(1);
        Ok(Vec::<(Nexus, Asc)>::new())
    }
}

#[cfg(test)]
mod tests {
    use super::super::transport_id;
    use super::*;
    use proto::scsi::cdb::sa;

    use super::super::test_nexus as nx;

    fn setup(t: u8) -> (Reservations, Nexus, Nexus) {
        let mut r = Reservations::default();
        let (a, b) = (nx(1), nx(2));
        let reg = sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY as u8;
        for (n, k) in [(&a, 0xA), (&b, 0xB)] {
            let p = super::super::ProutParams {
                sa_key: k,
                ..Default::default()
            };
            r.prout(n, reg, 0, 0, &p).unwrap();
        }
        let p = super::super::ProutParams {
            key: 0xA,
            ..Default::default()
        };
        r.prout(&a, sa::PROUT_RESERVE as u8, 0, t, &p).unwrap();
        (r, a, b)
    }

    fn to(n: &Nexus, key: u64, sa_key: u64, unreg: bool) -> MoveParams {
        MoveParams {
            key,
            sa_key,
            unreg,
            aptpl: false,
            relative_target_port: n.relative_target_port,
            transport_id: transport_id::encode(&n.initiator_port),
        }
    }

    fn resolve(known: Vec<Nexus>) -> impl FnOnce(&[u8], u16) -> Result<Nexus, Sense> {
        move |tid, rtpi| {
            let id = transport_id::parse_port(tid)
                .map_err(|_| Sense::invalid_field_in_parameter_list(24, None))?;
            known
                .into_iter()
                .find(|n| n.initiator_port == id.initiator_port() && n.relative_target_port == rtpi)
                .ok_or_else(|| Sense::invalid_field_in_parameter_list(18, None))
        }
    }

    #[test]
    fn moves_the_reservation_and_keeps_or_drops_the_sender() {
        for unreg in [false, true] {
            let (mut r, a, b) = setup(pr_type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY);
            let g = r.generation;
            let uas = r
                .register_and_move(&a, &to(&b, 0xA, 0xB2, unreg), resolve(vec![b.clone()]))
                .unwrap();
            assert!(uas.is_empty());
            assert!(r.is_holder(&b) && !r.is_holder(&a));
            assert_eq!(r.reservation.as_ref().unwrap().pr_type, 5, "type kept");
            assert_eq!(r.key_of(&b), Some(0xB2), "existing registration rekeyed");
            assert_eq!(r.is_registered(&a), !unreg);
            assert_eq!(r.generation, g + 1);
        }
        // An unregistered destination gets registered.
        let (mut r, a, _) = setup(pr_type::EXCLUSIVE_ACCESS);
        let c = nx(3);
        r.register_and_move(&a, &to(&c, 0xA, 0xC, false), resolve(vec![c.clone()]))
            .unwrap();
        assert_eq!(r.key_of(&c), Some(0xC));
        assert!(r.is_holder(&c));
    }

    #[test]
    fn refusals() {
        let check = |s: &Sense| Err(ProutError::Check(s.clone()));
        let (mut r, a, b) = setup(pr_type::EXCLUSIVE_ACCESS);
        let before = format!("{r:?}");
        let c = nx(3);
        // Unregistered sender; wrong key; not the holder.
        for (n, key) in [(&c, 0), (&a, 0xB), (&b, 0xB)] {
            assert_eq!(
                r.register_and_move(n, &to(&c, key, 1, false), resolve(vec![c.clone()])),
                Err(ProutError::Conflict)
            );
        }
        assert_eq!(
            r.register_and_move(&a, &to(&b, 0xA, 0, false), resolve(vec![b.clone()])),
            check(&Sense::invalid_field_in_parameter_list(8, None))
        );
        // To itself (even with another ISID case): refused.
        assert_eq!(
            r.register_and_move(&a, &to(&a, 0xA, 1, false), resolve(vec![a.clone()])),
            check(&Sense::invalid_field_in_parameter_list(24, None))
        );
        // The destination resolver's refusal is passed on.
        assert_eq!(
            r.register_and_move(&a, &to(&c, 0xA, 1, false), resolve(vec![])),
            check(&Sense::invalid_field_in_parameter_list(18, None))
        );
        assert_eq!(format!("{r:?}"), before, "nothing changed");
        // All-registrants reservation: conflict; none at all: INVALID FIELD IN CDB.
        let (mut r, a, b) = setup(pr_type::WRITE_EXCLUSIVE_ALL_REGISTRANTS);
        assert_eq!(
            r.register_and_move(&a, &to(&b, 0xA, 1, false), resolve(vec![b.clone()])),
            Err(ProutError::Conflict)
        );
        r.reservation = None;
        assert_eq!(
            r.register_and_move(&a, &to(&b, 0xA, 1, false), resolve(vec![b.clone()])),
            check(&Sense::invalid_field_in_cdb(1, Some(4)))
        );
    }

    #[test]
    fn parameter_list() {
        let p = to(&nx(2), 1, 2, true);
        let mut b = p.encode();
        assert_eq!(MoveParams::parse(&b), Some(p));
        b.pop();
        assert_eq!(
            MoveParams::parse(&b),
            None,
            "shorter than the stated TransportID"
        );
        assert_eq!(MoveParams::parse(&[0; 23]), None);
        let mut huge = vec![0u8; 24];
        huge[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(MoveParams::parse(&huge), None);
    }
}
