//! StatSN and ExpStatSN (RFC 7143 §4.2.2.2), ExpCmdSN/MaxCmdSN stamping.
//!
//! Target: [`stamp_target`] fills the StatSN of the connection and the
//! session's window into a PDU at the moment it is sent, so the numbers
//! are in wire order. Initiator: [`ExpStatSn`] follows what the target
//! acknowledged and [`set_exp_stat_sn`] puts it into outgoing PDUs.
//!
//! RFC 7143 §11.19 (NOP-In StatSN): "when the Initiator Task Tag is set to
//! 0xffffffff, the StatSN for the connection is not advanced"; R2T and
//! Data-In without status carry the next StatSN without consuming it
//! (§11.8, §11.7.3).

use crate::pdu::{Pdu, RESERVED_TAG};
use crate::serial::{CmdSn, StatSn};

/// Whether a target PDU consumes a StatSN (RFC 7143 §4.2.2.2): every
/// status-bearing PDU except R2T, Data-In without status and a NOP-In with
/// the reserved ITT.
pub fn consumes_stat_sn(pdu: &Pdu) -> bool {
    match pdu {
        Pdu::R2t(_) => false,
        Pdu::DataIn(d) => d.status.is_some(),
        Pdu::NopIn(n) => n.itt != RESERVED_TAG,
        p => p.stat_sn().is_some(),
    }
}

/// Assigns StatSN, ExpCmdSN and MaxCmdSN to an outgoing target PDU;
/// `next_stat_sn` advances for PDUs that consume a StatSN.
pub fn stamp_target(pdu: &mut Pdu, next_stat_sn: &mut StatSn, window: (CmdSn, CmdSn)) {
    let advance = consumes_stat_sn(pdu);
    let sn = *next_stat_sn;
    if advance {
        *next_stat_sn = next_stat_sn.successor();
    }
    let (exp, max) = window;
    let (stat_sn, exp_cmd_sn, max_cmd_sn) = match pdu {
        Pdu::ScsiResponse(p) => (&mut p.stat_sn, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::DataIn(p) => {
            // RFC 7143 §11.7.6: StatSN is reserved unless S is set.
            if p.status.is_none() {
                p.stat_sn = StatSn::new(0);
                (p.exp_cmd_sn, p.max_cmd_sn) = (exp, max);
                return;
            }
            (&mut p.stat_sn, &mut p.exp_cmd_sn, &mut p.max_cmd_sn)
        }
        Pdu::R2t(p) => (&mut p.stat_sn, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::NopIn(p) => (&mut p.stat_sn, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::TextResponse(p) => (&mut p.stat_sn, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::LogoutResponse(p) => (&mut p.stat_sn, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::TaskMgmtResponse(p) => (&mut p.stat_sn, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::AsyncMessage(p) => (&mut p.stat_sn, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::Reject(p) => (&mut p.stat_sn, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        Pdu::LoginResponse(p) => (&mut p.stat_sn, &mut p.exp_cmd_sn, &mut p.max_cmd_sn),
        // Initiator PDUs are never sent by the target.
        _ => return,
    };
    *stat_sn = sn;
    *exp_cmd_sn = exp;
    *max_cmd_sn = max;
}

/// Puts ExpStatSN into any initiator PDU that carries it.
pub fn set_exp_stat_sn(p: &mut Pdu, v: StatSn) {
    match p {
        Pdu::NopOut(x) => x.exp_stat_sn = v,
        Pdu::ScsiCommand(x) => x.exp_stat_sn = v,
        Pdu::TaskMgmtRequest(x) => x.exp_stat_sn = v,
        Pdu::LoginRequest(x) => x.exp_stat_sn = v,
        Pdu::TextRequest(x) => x.exp_stat_sn = v,
        Pdu::DataOut(x) => x.exp_stat_sn = v,
        Pdu::LogoutRequest(x) => x.exp_stat_sn = v,
        Pdu::SnackRequest(x) => x.exp_stat_sn = v,
        _ => {}
    }
}

/// The initiator's ExpStatSN of one connection: one past the highest
/// StatSN the target consumed; never moves backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpStatSn(StatSn);

impl ExpStatSn {
    /// After login: one past the StatSN of the final Login Response.
    pub fn new(next: StatSn) -> Self {
        ExpStatSn(next)
    }

    /// The value to send.
    pub fn get(&self) -> StatSn {
        self.0
    }

    /// Account for a received target PDU; returns whether ExpStatSN moved.
    pub fn on_pdu(&mut self, pdu: &Pdu) -> bool {
        match pdu.stat_sn() {
            Some(sn) if consumes_stat_sn(pdu) => self.acknowledge(sn),
            _ => false,
        }
    }

    /// The target consumed `stat_sn`.
    pub fn acknowledge(&mut self, stat_sn: StatSn) -> bool {
        let next = stat_sn.successor();
        if next.gt(self.0) {
            self.0 = next;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{NopIn, NopOut, R2t, ScsiResponse};
    use crate::serial::R2tSn;
    use bytes::Bytes;

    fn nop_in(itt: u32) -> Pdu {
        Pdu::NopIn(NopIn {
            lun: 0,
            itt,
            ttt: RESERVED_TAG,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            data: Bytes::from_static(b"ping"),
        })
    }

    fn r2t() -> Pdu {
        Pdu::R2t(R2t {
            lun: 0,
            itt: 1,
            ttt: 2,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            r2t_sn: R2tSn::new(0),
            buffer_offset: 0,
            desired_data_transfer_length: 512,
            data: Bytes::new(),
        })
    }

    fn response(itt: u32) -> Pdu {
        Pdu::ScsiResponse(crate::session::data_in::status_only(
            itt,
            crate::scsi::Status::GOOD,
            None,
            Default::default(),
        ))
    }

    #[test]
    fn stat_sn_rules() {
        let w = (CmdSn::new(5), CmdSn::new(9));
        let mut next = StatSn::new(10);
        let mut p = nop_in(RESERVED_TAG);
        stamp_target(&mut p, &mut next, w);
        assert_eq!(next.get(), 10, "unsolicited NOP-In does not advance StatSN");
        let Pdu::NopIn(n) = &p else { unreachable!() };
        assert_eq!(
            (n.stat_sn.get(), n.exp_cmd_sn.get(), n.max_cmd_sn.get()),
            (10, 5, 9)
        );
        let mut p = nop_in(1);
        stamp_target(&mut p, &mut next, w);
        assert_eq!(next.get(), 11);
        let mut r = r2t();
        stamp_target(&mut r, &mut next, w);
        assert_eq!(next.get(), 11);
        assert_eq!(r.stat_sn(), Some(StatSn::new(11)));
        let mut s = response(3);
        stamp_target(&mut s, &mut next, (CmdSn::new(6), CmdSn::new(9)));
        assert_eq!(next.get(), 12);
        let Pdu::ScsiResponse(ScsiResponse {
            stat_sn,
            exp_cmd_sn,
            ..
        }) = s
        else {
            unreachable!()
        };
        assert_eq!((stat_sn.get(), exp_cmd_sn.get()), (11, 6));
    }

    #[test]
    fn exp_stat_sn_follows_consumed_stat_sns_only() {
        let mut e = ExpStatSn::new(StatSn::new(10));
        let mut next = StatSn::new(10);
        let w = (CmdSn::new(0), CmdSn::new(0));
        let mut unsolicited = nop_in(RESERVED_TAG);
        stamp_target(&mut unsolicited, &mut next, w);
        assert!(!e.on_pdu(&unsolicited));
        let mut r = r2t();
        stamp_target(&mut r, &mut next, w);
        assert!(!e.on_pdu(&r));
        let mut s = response(1);
        stamp_target(&mut s, &mut next, w);
        assert!(e.on_pdu(&s));
        assert_eq!(e.get().get(), 11);
        // An old StatSN (e.g. from another connection's past) is ignored.
        assert!(!e.acknowledge(StatSn::new(5)));
        assert_eq!(e.get().get(), 11);
        let mut out = Pdu::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: 1,
            ttt: RESERVED_TAG,
            cmd_sn: CmdSn::new(0),
            exp_stat_sn: StatSn::new(0),
            data: Bytes::new(),
        });
        set_exp_stat_sn(&mut out, e.get());
        assert_eq!(out.exp_stat_sn(), Some(StatSn::new(11)));
    }
}
