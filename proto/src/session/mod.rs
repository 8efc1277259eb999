//! The full-feature phase (RFC 7143 §4.2, §11), sans-IO: the rules both
//! ends must agree on once login is over.
//!
//! | module | what | RFC 7143 |
//! |---|---|---|
//! | [`window`] | CmdSN window: target admission/ordering ([`CmdWindow`]), initiator gating ([`IssueWindow`]) | §4.2.2.1 |
//! | [`stamp`] | StatSN/ExpStatSN, ExpCmdSN/MaxCmdSN stamping | §4.2.2.2 |
//! | [`tags`] | ITT/TTT allocation, the reserved tag | §11.2.1.8 |
//! | [`data_in`] | Data-In segmentation, phase collapse, residuals (target); Data-In checks (initiator) | §11.4.5, §11.7 |
//! | [`collector`] | write data collection: immediate/unsolicited data, R2T issue, DataSN/offset checks (target) | §11.7, §11.8, §13.10-14 |
//! | [`data_out`] | unsolicited plan, Data-Out segmentation, R2T checks (initiator) | §11.7, §11.8, §13.10-14 |
//! | [`reject`] | the initiator's answer to a Reject; retrying after a transport CRC error | §7.3, §7.8, §11.17.1 |
//! | [`target`] | the target's connection core: `handle_pdu`/`poll_transmit`/`poll_event`/`poll_timeout` over the pieces above | §4.2, §11 |
//! | [`initiator`] | the initiator's session core (all its connections): issuing queue and window gating, Data-In reassembly, R2T answers, pings, TMF, Logout, allegiance | §4.2, §11 |
//!
//! No I/O, no clock, no randomness: callers pass PDUs in and send what
//! comes out. Sequence numbers are the typed [`crate::serial`] ones.

pub mod collector;
pub mod data_in;
pub mod data_out;
pub mod initiator;
pub mod reject;
pub mod stamp;
pub mod tags;
pub mod target;
pub mod window;

pub use collector::{DataOutError, R2tRequest, WriteCollector, WriteLimits};
pub use data_in::{Completion, DataInError, DataInLimits, ReadProgress, Residual};
pub use data_out::{DataOutTarget, R2tError, UnsolicitedLimits, UnsolicitedPlan};
pub use stamp::{set_exp_stat_sn, stamp_target, ExpStatSn};
pub use tags::TagAllocator;
pub use window::{Admit, CmdWindow, IssueWindow};
