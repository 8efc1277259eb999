//! The session-wide command window (RFC 7143 §4.2.2.1, §3.2.2.1 of RFC 3720).
//!
//! One [`CmdWindow`] per session, shared by all its connections (MC/S): it
//! decides which CmdSNs are admitted, advances ExpCmdSN over contiguous
//! received commands (connections may deliver them out of order), and opens
//! MaxCmdSN as commands complete so that at most `queue_depth` non-immediate
//! commands are outstanding.
//!
//! RFC 7143 §4.2.2.1: "The target MUST silently ignore any non-immediate
//! command outside of this range or non-immediate duplicates within the
//! range." Immediate commands are delivered at once and do not advance
//! ExpCmdSN ("The CmdSN of immediate commands is not advanced").

use std::collections::HashSet;

use proto::serial::SerialNumber;

/// What to do with an arriving command.
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

/// CmdSN bookkeeping for one session.
#[derive(Debug)]
pub struct CmdWindow {
    exp_cmd_sn: SerialNumber,
    max_cmd_sn: SerialNumber,
    queue_depth: u32,
    in_flight: u32,
    /// CmdSNs received beyond a gap (MC/S: connections race).
    ahead: HashSet<u32>,
}

impl CmdWindow {
    /// A window whose next expected CmdSN is `first_cmd_sn` (the CmdSN of
    /// the leading Login Request) and that admits `queue_depth` commands.
    pub fn new(first_cmd_sn: u32, queue_depth: u32) -> Self {
        let depth = queue_depth.max(1);
        let exp = SerialNumber(first_cmd_sn);
        CmdWindow {
            exp_cmd_sn: exp,
            max_cmd_sn: exp.wrapping_add(depth - 1),
            queue_depth: depth,
            in_flight: 0,
            ahead: HashSet::new(),
        }
    }

    /// ExpCmdSN to advertise.
    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn.0
    }

    /// MaxCmdSN to advertise.
    pub fn max_cmd_sn(&self) -> u32 {
        self.max_cmd_sn.0
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
    pub fn admit(&mut self, cmd_sn: u32, immediate: bool) -> Admit {
        if immediate {
            return Admit::Accept { counted: false };
        }
        let sn = SerialNumber(cmd_sn);
        if sn.lt(self.exp_cmd_sn) || self.ahead.contains(&cmd_sn) {
            return Admit::Duplicate;
        }
        if !sn.in_window(self.exp_cmd_sn, self.max_cmd_sn) {
            return Admit::OutOfWindow;
        }
        self.in_flight += 1;
        if sn == self.exp_cmd_sn {
            self.exp_cmd_sn = self.exp_cmd_sn.successor();
            while self.ahead.remove(&self.exp_cmd_sn.0) {
                self.exp_cmd_sn = self.exp_cmd_sn.successor();
            }
        } else {
            self.ahead.insert(cmd_sn);
        }
        Admit::Accept { counted: true }
    }

    /// A counted command finished (response sent or task aborted): open one
    /// slot. MaxCmdSN never moves backwards.
    pub fn complete(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.recompute();
    }

    fn recompute(&mut self) {
        let free = self.queue_depth.saturating_sub(self.in_flight);
        // MaxCmdSN = ExpCmdSN - 1 + free slots; kept monotonic.
        let candidate = self.exp_cmd_sn.wrapping_add(free).wrapping_sub(1);
        self.max_cmd_sn = self.max_cmd_sn.serial_max(candidate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_commands_fill_and_reopen_the_window() {
        let mut w = CmdWindow::new(10, 2);
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (10, 11));
        assert_eq!(w.admit(10, false), Admit::Accept { counted: true });
        assert_eq!(w.admit(11, false), Admit::Accept { counted: true });
        assert_eq!(w.exp_cmd_sn(), 12);
        // Window full: 12 is beyond MaxCmdSN = 11.
        assert_eq!(w.admit(12, false), Admit::OutOfWindow);
        w.complete();
        assert_eq!(w.max_cmd_sn(), 12);
        assert_eq!(w.admit(12, false), Admit::Accept { counted: true });
        w.complete();
        assert_eq!(w.max_cmd_sn(), 13);
        assert_eq!(w.in_flight(), 1);
        w.complete();
        assert_eq!(w.max_cmd_sn(), 14);
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn duplicates_and_too_low_are_ignored() {
        let mut w = CmdWindow::new(5, 8);
        assert_eq!(w.admit(5, false), Admit::Accept { counted: true });
        assert_eq!(w.admit(5, false), Admit::Duplicate);
        assert_eq!(w.admit(4, false), Admit::Duplicate);
        assert_eq!(w.admit(7, false), Admit::Accept { counted: true });
        assert_eq!(w.admit(7, false), Admit::Duplicate);
        assert_eq!(w.exp_cmd_sn(), 6);
        // Filling the gap advances over the command received ahead.
        assert_eq!(w.admit(6, false), Admit::Accept { counted: true });
        assert_eq!(w.exp_cmd_sn(), 8);
    }

    #[test]
    fn immediate_commands_do_not_use_slots() {
        let mut w = CmdWindow::new(0, 1);
        assert_eq!(w.admit(0, true), Admit::Accept { counted: false });
        assert_eq!(w.exp_cmd_sn(), 0);
        assert_eq!(w.admit(0, false), Admit::Accept { counted: true });
        assert_eq!(w.admit(1, false), Admit::OutOfWindow);
        assert_eq!(w.admit(1, true), Admit::Accept { counted: false });
    }

    #[test]
    fn wraps_around_the_serial_space() {
        let mut w = CmdWindow::new(u32::MAX, 4);
        assert_eq!(w.max_cmd_sn(), 2);
        assert_eq!(w.admit(u32::MAX, false), Admit::Accept { counted: true });
        assert_eq!(w.admit(0, false), Admit::Accept { counted: true });
        assert_eq!(w.exp_cmd_sn(), 1);
        assert_eq!(w.admit(3, false), Admit::OutOfWindow);
        assert_eq!(w.admit(u32::MAX - 1, false), Admit::Duplicate);
        w.complete();
        assert_eq!(w.max_cmd_sn(), 3);
    }

    #[test]
    fn max_cmd_sn_never_decreases() {
        let mut w = CmdWindow::new(0, 4);
        assert_eq!(w.max_cmd_sn(), 3);
        // Received ahead: in_flight grows while ExpCmdSN stays.
        assert_eq!(w.admit(2, false), Admit::Accept { counted: true });
        w.complete();
        assert_eq!(w.max_cmd_sn(), 3);
    }
}
