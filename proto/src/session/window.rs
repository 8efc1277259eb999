//! The CmdSN window of a session, for both roles (RFC 7143 §4.2.2.1).
//!
//! * Target: one [`CmdWindow`] per session, shared by all its connections
//!   (MC/S). It decides which CmdSNs are admitted, advances ExpCmdSN over
//!   contiguously received commands (connections may deliver them out of
//!   order), and opens MaxCmdSN as commands complete so that at most
//!   `queue_depth` non-immediate commands are outstanding.
//! * Initiator: one [`IssueWindow`] per session: the next CmdSN to use and
//!   the window the target last advertised, which gates issuing.
//!
//! RFC 7143 §4.2.2.1: "The target MUST silently ignore any non-immediate
//! command outside of this range or non-immediate duplicates within the
//! range." Immediate commands are delivered at once and do not advance
//! ExpCmdSN ("The CmdSN of immediate commands is not advanced").

use std::collections::HashSet;

use crate::serial::CmdSn;

/// What to do with an arriving command (target side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Deliver it. `counted` says whether it occupies a window slot (and
    /// therefore must be released with [`CmdWindow::complete`]).
    Accept { counted: bool },
    /// Already received (CmdSN below ExpCmdSN or seen ahead): ignore.
    Duplicate,
    /// Outside `[ExpCmdSN, MaxCmdSN]`: ignore.
    OutOfWindow,
}

/// CmdSN bookkeeping of one session, target side.
#[derive(Debug)]
pub struct CmdWindow {
    exp_cmd_sn: CmdSn,
    max_cmd_sn: CmdSn,
    queue_depth: u32,
    in_flight: u32,
    /// CmdSNs received beyond a gap (MC/S: connections race).
    ahead: HashSet<u32>,
}

impl CmdWindow {
    /// A window whose next expected CmdSN is `first_cmd_sn` (the CmdSN of
    /// the leading Login Request) and that admits `queue_depth` commands.
    pub fn new(first_cmd_sn: CmdSn, queue_depth: u32) -> Self {
        let depth = queue_depth.max(1);
        CmdWindow {
            exp_cmd_sn: first_cmd_sn,
            max_cmd_sn: first_cmd_sn.wrapping_add(depth - 1),
            queue_depth: depth,
            in_flight: 0,
            ahead: HashSet::new(),
        }
    }

    /// ExpCmdSN to advertise.
    pub fn exp_cmd_sn(&self) -> CmdSn {
        self.exp_cmd_sn
    }

    /// MaxCmdSN to advertise.
    pub fn max_cmd_sn(&self) -> CmdSn {
        self.max_cmd_sn
    }

    /// (ExpCmdSN, MaxCmdSN) to advertise.
    pub fn snapshot(&self) -> (CmdSn, CmdSn) {
        (self.exp_cmd_sn, self.max_cmd_sn)
    }

    /// The configured number of commands in flight.
    pub fn queue_depth(&self) -> u32 {
        self.queue_depth
    }

    /// Non-immediate commands admitted and not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Decide on a command with `cmd_sn`; `immediate` is the I bit.
    pub fn admit(&mut self, cmd_sn: CmdSn, immediate: bool) -> Admit {
        if immediate {
            return Admit::Accept { counted: false };
        }
        if cmd_sn.lt(self.exp_cmd_sn) || self.ahead.contains(&cmd_sn.get()) {
            return Admit::Duplicate;
        }
        if !cmd_sn.in_window(self.exp_cmd_sn, self.max_cmd_sn) {
            return Admit::OutOfWindow;
        }
        self.in_flight += 1;
        if cmd_sn == self.exp_cmd_sn {
            self.exp_cmd_sn = self.exp_cmd_sn.successor();
            while self.ahead.remove(&self.exp_cmd_sn.get()) {
                self.exp_cmd_sn = self.exp_cmd_sn.successor();
            }
        } else {
            self.ahead.insert(cmd_sn.get());
        }
        Admit::Accept { counted: true }
    }

    /// A counted command finished (response sent or task aborted): open one
    /// slot. MaxCmdSN never moves backwards.
    pub fn complete(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let free = self.queue_depth.saturating_sub(self.in_flight);
        // MaxCmdSN = ExpCmdSN - 1 + free slots; kept monotonic.
        let candidate = self.exp_cmd_sn.wrapping_add(free).wrapping_sub(1);
        self.max_cmd_sn = self.max_cmd_sn.serial_max(candidate);
    }

    /// ABORT TASK for a command not received yet (RFC 7143 §11.5.1 b): "If
    /// the Referenced Task Tag does not identify an existing task but if
    /// the CmdSN indicated by the RefCmdSN field in the Task Management
    /// Function Request is within the valid CmdSN window and less than the
    /// CmdSN of the Task Management Function Request itself, then targets
    /// must consider the CmdSN as received". Returns whether it was in
    /// that range (the abort then completes); the slot is taken and
    /// released at once so that ExpCmdSN moves past it.
    pub fn consider_received(&mut self, ref_cmd_sn: CmdSn, tmf_cmd_sn: CmdSn) -> bool {
        let in_range = ref_cmd_sn.ge(self.exp_cmd_sn)
            && ref_cmd_sn.le(self.max_cmd_sn)
            && ref_cmd_sn.lt(tmf_cmd_sn);
        if in_range && self.admit(ref_cmd_sn, false) == (Admit::Accept { counted: true }) {
            self.complete();
        }
        in_range
    }
}

/// The initiator's view of the session's CmdSN window.
///
/// RFC 7143 §4.2.2.1: "the initiator MUST NOT send a non-immediate command
/// with CmdSN > MaxCmdSN"; immediate PDUs carry the current CmdSN without
/// advancing it. Stale or invalid windows from the target are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueWindow {
    cmd_sn: CmdSn,
    exp_cmd_sn: CmdSn,
    max_cmd_sn: CmdSn,
}

impl IssueWindow {
    /// Before login completes: CmdSN `first`, a window of one.
    pub fn new(first: CmdSn) -> Self {
        IssueWindow {
            cmd_sn: first,
            exp_cmd_sn: first,
            max_cmd_sn: first,
        }
    }

    /// After a (re)login: the target's ExpCmdSN is the next CmdSN to use.
    pub fn reset(&mut self, exp_cmd_sn: CmdSn, max_cmd_sn: CmdSn) {
        self.cmd_sn = exp_cmd_sn;
        self.exp_cmd_sn = exp_cmd_sn;
        self.max_cmd_sn = max_cmd_sn;
    }

    /// The CmdSN the next command carries (and immediate PDUs carry now).
    pub fn cmd_sn(&self) -> CmdSn {
        self.cmd_sn
    }

    /// The last ExpCmdSN the target sent.
    pub fn exp_cmd_sn(&self) -> CmdSn {
        self.exp_cmd_sn
    }

    /// The last MaxCmdSN the target sent.
    pub fn max_cmd_sn(&self) -> CmdSn {
        self.max_cmd_sn
    }

    /// Whether a non-immediate command may be sent now.
    pub fn is_open(&self) -> bool {
        self.cmd_sn.le(self.max_cmd_sn)
    }

    /// Take a CmdSN for a non-immediate command, if the window allows.
    pub fn take(&mut self) -> Option<CmdSn> {
        if !self.is_open() {
            return None;
        }
        let sn = self.cmd_sn;
        self.cmd_sn = sn.successor();
        Some(sn)
    }

    /// ExpCmdSN/MaxCmdSN from a target PDU. RFC 7143 §4.2.2.1: values that
    /// would move backwards are ignored, and so is a window with
    /// MaxCmdSN < ExpCmdSN - 1. Returns whether the window is open.
    pub fn update(&mut self, exp_cmd_sn: CmdSn, max_cmd_sn: CmdSn) -> bool {
        if max_cmd_sn.lt(exp_cmd_sn.wrapping_sub(1)) {
            return self.is_open();
        }
        self.exp_cmd_sn = self.exp_cmd_sn.serial_max(exp_cmd_sn);
        self.max_cmd_sn = self.max_cmd_sn.serial_max(max_cmd_sn);
        self.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn(v: u32) -> CmdSn {
        CmdSn::new(v)
    }

    #[test]
    fn in_order_commands_fill_and_reopen_the_window() {
        let mut w = CmdWindow::new(sn(10), 2);
        assert_eq!(w.snapshot(), (sn(10), sn(11)));
        assert_eq!(w.admit(sn(10), false), Admit::Accept { counted: true });
        assert_eq!(w.admit(sn(11), false), Admit::Accept { counted: true });
        assert_eq!(w.exp_cmd_sn(), sn(12));
        // Window full: 12 is beyond MaxCmdSN = 11.
        assert_eq!(w.admit(sn(12), false), Admit::OutOfWindow);
        w.complete();
        assert_eq!(w.max_cmd_sn(), sn(12));
        assert_eq!(w.admit(sn(12), false), Admit::Accept { counted: true });
        w.complete();
        assert_eq!(w.max_cmd_sn(), sn(13));
        assert_eq!(w.in_flight(), 1);
        w.complete();
        assert_eq!(w.max_cmd_sn(), sn(14));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn duplicates_and_too_low_are_ignored() {
        let mut w = CmdWindow::new(sn(5), 8);
        assert_eq!(w.admit(sn(5), false), Admit::Accept { counted: true });
        assert_eq!(w.admit(sn(5), false), Admit::Duplicate);
        assert_eq!(w.admit(sn(4), false), Admit::Duplicate);
        assert_eq!(w.admit(sn(7), false), Admit::Accept { counted: true });
        assert_eq!(w.admit(sn(7), false), Admit::Duplicate);
        assert_eq!(w.exp_cmd_sn(), sn(6));
        // Filling the gap advances over the command received ahead.
        assert_eq!(w.admit(sn(6), false), Admit::Accept { counted: true });
        assert_eq!(w.exp_cmd_sn(), sn(8));
    }

    #[test]
    fn immediate_commands_do_not_use_slots() {
        let mut w = CmdWindow::new(sn(0), 1);
        assert_eq!(w.admit(sn(0), true), Admit::Accept { counted: false });
        assert_eq!(w.exp_cmd_sn(), sn(0));
        assert_eq!(w.admit(sn(0), false), Admit::Accept { counted: true });
        assert_eq!(w.admit(sn(1), false), Admit::OutOfWindow);
        assert_eq!(w.admit(sn(1), true), Admit::Accept { counted: false });
    }

    #[test]
    fn wraps_around_the_serial_space() {
        let mut w = CmdWindow::new(sn(u32::MAX), 4);
        assert_eq!(w.max_cmd_sn(), sn(2));
        assert_eq!(
            w.admit(sn(u32::MAX), false),
            Admit::Accept { counted: true }
        );
        assert_eq!(w.admit(sn(0), false), Admit::Accept { counted: true });
        assert_eq!(w.exp_cmd_sn(), sn(1));
        assert_eq!(w.admit(sn(3), false), Admit::OutOfWindow);
        assert_eq!(w.admit(sn(u32::MAX - 1), false), Admit::Duplicate);
        w.complete();
        assert_eq!(w.max_cmd_sn(), sn(3));
    }

    #[test]
    fn max_cmd_sn_never_decreases() {
        let mut w = CmdWindow::new(sn(0), 4);
        assert_eq!(w.max_cmd_sn(), sn(3));
        // Received ahead: in_flight grows while ExpCmdSN stays.
        assert_eq!(w.admit(sn(2), false), Admit::Accept { counted: true });
        w.complete();
        assert_eq!(w.max_cmd_sn(), sn(3));
    }

    #[test]
    fn unreceived_referenced_command_is_considered_received() {
        let mut w = CmdWindow::new(sn(10), 4);
        // RefCmdSN 10 below the TMF's CmdSN 11: consumed, ExpCmdSN moves.
        assert!(w.consider_received(sn(10), sn(11)));
        assert_eq!(w.exp_cmd_sn(), sn(11));
        assert_eq!(w.in_flight(), 0);
        // Not below the TMF's CmdSN, or outside the window: not received.
        assert!(!w.consider_received(sn(11), sn(11)));
        assert!(!w.consider_received(sn(30), sn(40)));
        assert!(!w.consider_received(sn(9), sn(11)));
    }

    #[test]
    fn initiator_window_gates_issuing() {
        let mut w = IssueWindow::new(sn(100));
        w.reset(sn(100), sn(101));
        assert_eq!(w.take(), Some(sn(100)));
        assert_eq!(w.take(), Some(sn(101)));
        assert_eq!(w.take(), None, "CmdSN 102 > MaxCmdSN 101");
        assert_eq!(w.cmd_sn(), sn(102));
        // A stale window (smaller MaxCmdSN) is ignored.
        assert!(!w.update(sn(101), sn(100)));
        assert_eq!(w.max_cmd_sn(), sn(101));
        // An invalid one (MaxCmdSN < ExpCmdSN - 1) too.
        assert!(!w.update(sn(200), sn(150)));
        assert_eq!(w.exp_cmd_sn(), sn(101));
        // Opening it lets the next command through.
        assert!(w.update(sn(102), sn(109)));
        assert_eq!(w.take(), Some(sn(102)));
    }

    #[test]
    fn initiator_window_wraps() {
        let mut w = IssueWindow::new(sn(u32::MAX));
        w.reset(sn(u32::MAX), sn(0));
        assert_eq!(w.take(), Some(sn(u32::MAX)));
        assert_eq!(w.take(), Some(sn(0)));
        assert!(!w.is_open());
        assert!(w.update(sn(1), sn(1)));
        assert_eq!(w.take(), Some(sn(1)));
    }
}
