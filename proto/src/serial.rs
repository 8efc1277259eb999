//! Serial number arithmetic (RFC 1982) for iSCSI's 32-bit sequence numbers.
//!
//! RFC 7143 §4.2.2.1 (and §11.2.2.x for StatSN/DataSN/R2TSN): "CmdSN ... comparisons
//! and arithmetic on CmdSN use Serial Number Arithmetic as defined in [RFC1982]
//! where SERIAL_BITS = 32." The same holds for ExpCmdSN, MaxCmdSN, StatSN,
//! ExpStatSN, DataSN and R2TSN.
//!
//! # Comparison (RFC 1982 §3.2)
//!
//! With `SERIAL_BITS = 32`, `s1 < s2` iff
//! `(i1 < i2 && i2 - i1 < 2^31) || (i1 > i2 && i1 - i2 > 2^31)`.
//! RFC 1982 leaves the comparison *undefined* when the two values are exactly
//! `2^31` apart. This module resolves that deterministically: such a pair is
//! **incomparable** — [`SerialNumber::lt`], [`SerialNumber::gt`],
//! [`SerialNumber::le`] and [`SerialNumber::ge`] all return `false` and
//! [`SerialNumber::serial_cmp`] returns `None`. A sequence number that far
//! away from the reference is never "newer", never "older" and never inside a
//! window, which is the conservative answer for every iSCSI use (an
//! out-of-window command is dropped, a stale ExpCmdSN is ignored).
//!
//! `SerialNumber` deliberately does not implement `PartialOrd`/`Ord`: serial
//! order is not transitive, so the std traits' contracts cannot hold.
//!
//! # Addition (RFC 1982 §3.1)
//!
//! Addition wraps modulo 2^32. RFC 1982 only defines adding `n` in
//! `0..=2^31-1`; [`SerialNumber::wrapping_add`] accepts any `u32` (plain
//! modular arithmetic), callers that need the RFC restriction use
//! [`SerialNumber::checked_add`].

use core::cmp::Ordering;
use core::fmt;

/// Half the sequence space, `2^(SERIAL_BITS - 1)`.
pub const HALF: u32 = 1 << 31;

/// A 32-bit sequence number compared with RFC 1982 serial arithmetic.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SerialNumber(pub u32);

/// CmdSN / ExpCmdSN / MaxCmdSN (RFC 7143 §4.2.2.1).
pub type CmdSn = SerialNumber;
/// StatSN / ExpStatSN (RFC 7143 §4.2.2.2).
pub type StatSn = SerialNumber;
/// DataSN (RFC 7143 §11.7.5).
pub type DataSn = SerialNumber;
/// R2TSN (RFC 7143 §11.8.5).
pub type R2tSn = SerialNumber;

impl SerialNumber {
    /// Wrap a raw wire value.
    pub const fn new(value: u32) -> Self {
        SerialNumber(value)
    }

    /// The raw wire value.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// `self + n` modulo 2^32.
    #[must_use]
    pub const fn wrapping_add(self, n: u32) -> Self {
        SerialNumber(self.0.wrapping_add(n))
    }

    /// `self - n` modulo 2^32.
    #[must_use]
    pub const fn wrapping_sub(self, n: u32) -> Self {
        SerialNumber(self.0.wrapping_sub(n))
    }

    /// RFC 1982 §3.1 addition: only defined for `n <= 2^31 - 1`.
    pub const fn checked_add(self, n: u32) -> Option<Self> {
        if n < HALF {
            Some(self.wrapping_add(n))
        } else {
            None
        }
    }

    /// The following sequence number (`self + 1`).
    #[must_use]
    pub const fn successor(self) -> Self {
        self.wrapping_add(1)
    }

    /// Forward distance from `self` to `later`: how many increments take
    /// `self` to `later`, modulo 2^32 (`0..=2^32-1`).
    pub const fn distance(self, later: Self) -> u32 {
        later.0.wrapping_sub(self.0)
    }

    /// Signed distance from `self` to `other` (positive when `other` is
    /// after `self`); `None` when they are exactly 2^31 apart (undefined).
    pub const fn signed_distance(self, other: Self) -> Option<i32> {
        let d = other.0.wrapping_sub(self.0);
        if d == HALF {
            None
        } else {
            Some(d as i32)
        }
    }

    /// RFC 1982 §3.2 comparison; `None` for the undefined case (distance
    /// exactly 2^31), see the module docs.
    pub const fn serial_cmp(self, other: Self) -> Option<Ordering> {
        let d = other.0.wrapping_sub(self.0);
        if d == 0 {
            Some(Ordering::Equal)
        } else if d == HALF {
            None
        } else if d < HALF {
            Some(Ordering::Less)
        } else {
            Some(Ordering::Greater)
        }
    }

    /// `self < other` in serial arithmetic.
    pub const fn lt(self, other: Self) -> bool {
        matches!(self.serial_cmp(other), Some(Ordering::Less))
    }

    /// `self <= other` in serial arithmetic.
    pub const fn le(self, other: Self) -> bool {
        matches!(
            self.serial_cmp(other),
            Some(Ordering::Less | Ordering::Equal)
        )
    }

    /// `self > other` in serial arithmetic.
    pub const fn gt(self, other: Self) -> bool {
        matches!(self.serial_cmp(other), Some(Ordering::Greater))
    }

    /// `self >= other` in serial arithmetic.
    pub const fn ge(self, other: Self) -> bool {
        matches!(
            self.serial_cmp(other),
            Some(Ordering::Greater | Ordering::Equal)
        )
    }

    /// The later of two serial numbers; `self` when they are equal or
    /// incomparable.
    #[must_use]
    pub const fn serial_max(self, other: Self) -> Self {
        if other.gt(self) {
            other
        } else {
            self
        }
    }

    /// Move `self` forward to `received` if `received` is later; returns
    /// whether it moved. Used for ExpCmdSN/MaxCmdSN/ExpStatSN updates, which
    /// must never go backwards.
    pub fn advance_to(&mut self, received: Self) -> bool {
        if received.gt(*self) {
            *self = received;
            true
        } else {
            false
        }
    }

    /// Is this CmdSN inside the command window `[exp_cmd_sn, max_cmd_sn]`?
    ///
    /// RFC 7143 §4.2.2.1: the target "MUST ... accept commands with
    /// ExpCmdSN <= CmdSN <= MaxCmdSN" (serial arithmetic). A window with
    /// MaxCmdSN = ExpCmdSN - 1 is closed (no command is in it), and one with
    /// MaxCmdSN < ExpCmdSN - 1 is invalid: nothing is in it either.
    pub const fn in_window(self, exp_cmd_sn: Self, max_cmd_sn: Self) -> bool {
        match window_size(exp_cmd_sn, max_cmd_sn) {
            Some(size) => exp_cmd_sn.distance(self) < size,
            None => false,
        }
    }
}

/// Number of CmdSNs the window `[exp_cmd_sn, max_cmd_sn]` admits.
///
/// `Some(0)` when the window is closed (MaxCmdSN = ExpCmdSN - 1),
/// `None` when it is invalid.
/// RFC 7143 §4.2.2.1: "MaxCmdSN - ExpCmdSN + 1 ... If MaxCmdSN < ExpCmdSN - 1
/// (in serial arithmetic) ... the initiator MUST ignore" the values; the
/// largest valid window therefore spans 2^31 numbers.
pub const fn window_size(exp_cmd_sn: SerialNumber, max_cmd_sn: SerialNumber) -> Option<u32> {
    // size = MaxCmdSN - ExpCmdSN + 1 (mod 2^32): 0 means closed, up to 2^31
    // is valid; anything larger means MaxCmdSN < ExpCmdSN - 1.
    let size = max_cmd_sn.0.wrapping_sub(exp_cmd_sn.0).wrapping_add(1);
    if size <= HALF {
        Some(size)
    } else {
        None
    }
}

/// Does the pair (ExpCmdSN, MaxCmdSN) describe a usable window?
/// RFC 7143 §4.2.2.1: values with MaxCmdSN < ExpCmdSN - 1 "MUST be ignored".
pub const fn window_is_valid(exp_cmd_sn: SerialNumber, max_cmd_sn: SerialNumber) -> bool {
    window_size(exp_cmd_sn, max_cmd_sn).is_some()
}

impl fmt::Debug for SerialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sn({})", self.0)
    }
}

impl fmt::Display for SerialNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u32> for SerialNumber {
    fn from(v: u32) -> Self {
        SerialNumber(v)
    }
}

impl From<SerialNumber> for u32 {
    fn from(s: SerialNumber) -> u32 {
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sn(v: u32) -> SerialNumber {
        SerialNumber(v)
    }

    #[test]
    fn rfc1982_examples() {
        // RFC 1982 §5.2 uses SERIAL_BITS = 2; translate to 32 bits by scale.
        assert!(sn(0).lt(sn(1)));
        assert!(sn(1).gt(sn(0)));
        assert!(sn(u32::MAX).lt(sn(0)), "wrap: 2^32-1 < 0");
        assert!(sn(0).gt(sn(u32::MAX)));
        assert!(sn(u32::MAX - 5).lt(sn(10)));
        assert!(sn(0).lt(sn(HALF - 1)));
        assert!(sn(0).gt(sn(HALF + 1)));
        assert!(sn(7).le(sn(7)) && sn(7).ge(sn(7)));
        assert!(!sn(7).lt(sn(7)) && !sn(7).gt(sn(7)));
    }

    #[test]
    fn undefined_half_distance_is_incomparable() {
        for base in [0u32, 1, HALF, u32::MAX, 0x1234_5678] {
            let a = sn(base);
            let b = sn(base.wrapping_add(HALF));
            assert_eq!(a.serial_cmp(b), None);
            assert_eq!(b.serial_cmp(a), None);
            assert!(!a.lt(b) && !a.gt(b) && !a.le(b) && !a.ge(b));
            assert_eq!(a.signed_distance(b), None);
            assert_eq!(a.serial_max(b), a);
        }
    }

    #[test]
    fn distance_and_add_wrap() {
        assert_eq!(sn(u32::MAX).wrapping_add(2), sn(1));
        assert_eq!(sn(1).wrapping_sub(2), sn(u32::MAX));
        assert_eq!(sn(u32::MAX).successor(), sn(0));
        assert_eq!(sn(u32::MAX).distance(sn(1)), 2);
        assert_eq!(sn(1).signed_distance(sn(u32::MAX)), Some(-2));
        assert_eq!(sn(5).checked_add(HALF), None);
        assert_eq!(sn(5).checked_add(HALF - 1), Some(sn(5 + HALF - 1)));
    }

    #[test]
    fn advance_only_forward() {
        let mut s = sn(u32::MAX - 1);
        assert!(s.advance_to(sn(3)), "wrapping forward");
        assert_eq!(s, sn(3));
        assert!(!s.advance_to(sn(2)), "backwards is ignored");
        assert!(!s.advance_to(sn(3)));
        assert!(
            !s.advance_to(sn(3u32.wrapping_add(HALF))),
            "undefined is ignored"
        );
        assert_eq!(s, sn(3));
    }

    #[test]
    fn command_window() {
        // Open window of 10 across the wrap.
        let exp = sn(u32::MAX - 4);
        let max = exp.wrapping_add(9);
        assert_eq!(window_size(exp, max), Some(10));
        assert!(exp.in_window(exp, max));
        assert!(max.in_window(exp, max));
        assert!(sn(0).in_window(exp, max));
        assert!(!max.successor().in_window(exp, max));
        assert!(!exp.wrapping_sub(1).in_window(exp, max));
        // Closed window: MaxCmdSN = ExpCmdSN - 1.
        let closed = exp.wrapping_sub(1);
        assert_eq!(window_size(exp, closed), Some(0));
        assert!(window_is_valid(exp, closed));
        assert!(!exp.in_window(exp, closed));
        assert!(!closed.in_window(exp, closed));
        // Invalid: MaxCmdSN < ExpCmdSN - 1.
        let invalid = exp.wrapping_sub(2);
        assert_eq!(window_size(exp, invalid), None);
        assert!(!window_is_valid(exp, invalid));
        assert!(!exp.in_window(exp, invalid));
        // Single-slot window.
        assert!(exp.in_window(exp, exp));
        assert!(!exp.successor().in_window(exp, exp));
        // Largest valid window spans 2^31 numbers.
        let big = exp.wrapping_add(HALF - 1);
        assert_eq!(window_size(exp, big), Some(HALF));
        assert!(big.in_window(exp, big));
        assert_eq!(window_size(exp, big.successor()), None);
    }

    proptest! {
        #[test]
        fn forward_is_greater(a: u32, n in 1u32..HALF) {
            let s = sn(a);
            let t = s.wrapping_add(n);
            prop_assert!(s.lt(t));
            prop_assert!(t.gt(s));
            prop_assert!(s.le(t) && !s.ge(t));
            prop_assert_eq!(s.distance(t), n);
            prop_assert_eq!(s.signed_distance(t), Some(n as i32));
            prop_assert_eq!(t.signed_distance(s), Some(-(n as i32)));
        }

        #[test]
        fn trichotomy(a: u32, b: u32) {
            let (s, t) = (sn(a), sn(b));
            let defined = a.wrapping_sub(b) != HALF;
            let count = [s.lt(t), s == t, s.gt(t)].iter().filter(|x| **x).count();
            prop_assert_eq!(count, usize::from(defined));
            prop_assert_eq!(s.lt(t), t.gt(s));
            prop_assert_eq!(s.le(t), t.ge(s));
        }

        #[test]
        fn window_matches_definition(exp: u32, size in 0u32..=HALF, c: u32) {
            let exp = sn(exp);
            let max = exp.wrapping_add(size).wrapping_sub(1);
            let c = sn(c);
            let by_definition = exp.le(c) && c.le(max);
            prop_assert_eq!(c.in_window(exp, max), by_definition);
            prop_assert_eq!(window_size(exp, max), Some(size));
        }

        #[test]
        fn in_window_implies_serial_bounds(exp: u32, max: u32, c: u32) {
            let (exp, max, c) = (sn(exp), sn(max), sn(c));
            if c.in_window(exp, max) {
                prop_assert!(exp.le(c));
                prop_assert!(c.le(max));
            }
        }
    }
}
