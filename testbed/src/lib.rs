//! Test harness for the iSCSI stack (DESIGN.md, "testbed").
//!
//! * [`conformance`]: libiscsi's `iscsi-test-cu` run against a URL and
//!   summarised per test (clean, skipped, failed).
//! * [`fake_target`]: a scripted raw-PDU fake target (real TCP, `proto`'s
//!   login and codec) for protocol-level initiator tests.
//! * [`proxy`]: a fault-injecting TCP proxy (latency, cuts, stalls,
//!   corruption, refused connections) controllable at run time.
//! * [`verify`]: deterministic data patterns and a [`verify::Verifier`] that
//!   remembers what was written where and checks what is read back.
//! * [`process`]: run a server binary, wait for its "listening" line, extract
//!   the address, kill it on drop.
//! * [`nbd_client`]: the `nbd` crate's client (independent code) as a
//!   [`scenarios::BlockIo`], for checking our NBD server.
//! * [`scenarios`]: named fault scenarios (connection cuts, target kill,
//!   stalls, corruption with digests, a slow target) that run a mixed
//!   workload through our initiator and audit every block afterwards.
//! * [`tgtd`]: a private Debian `tgtd` (the tgt project's target) on a free
//!   port, configured through `tgtadm`, as a real peer for the initiator.

pub mod conformance;
pub mod fake_target;
pub mod nbd_client;
pub mod process;
pub mod proxy;
pub mod scenarios;
mod sync;
pub mod tgtd;
pub mod verify;

pub use fake_target::{FakeConn, FakeTarget, FakeTargetConfig};
pub use process::{free_port, ServerProcess};
pub use proxy::{Direction, Proxy, ProxyStats};
pub use tgtd::{Tgtd, TgtdConfig};
pub use verify::{Audit, Mismatch, Pattern, Unwritten, Verifier};
