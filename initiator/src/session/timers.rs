//! The session's timer: one ticker task drives the core's timers
//! (`proto::session::initiator`: NOP-Out pings on idle connections and
//! their timeout, RFC 7143 §11.18; command timeouts answered with ABORT
//! TASK, §11.5.1; the bound on commands waiting for a closed CmdSN window,
//! §4.2.2.1; the wait for TMF and Logout answers), and adds back a missing
//! MC/S connection (`readd.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::{Inner, Phase};
use crate::sync::lock;

impl Inner {
    /// Periodic work: whatever of the core's timers is due, then re-adding
    /// connections.
    pub(super) fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let (epoch, after) = {
            let mut st = lock(&self.st);
            if !matches!(st.phase, Phase::Up | Phase::Draining | Phase::Closing) {
                return;
            }
            if st.core.poll_timeout().is_some_and(|t| t <= now) {
                st.core.handle_timeout(now);
            }
            // MC/S: a connection left out when its path was down.
            self.maybe_readd(&mut st, now);
            (st.epoch, self.flush(&mut st))
        };
        self.after(epoch, after);
    }
}

pub(super) async fn ticker(inner: std::sync::Weak<Inner>) {
    let period = {
        let Some(i) = inner.upgrade() else { return };
        (i.cfg
            .nop_interval
            .min(i.cfg.nop_timeout)
            .min(i.cfg.command_timeout)
            / 4)
        .clamp(Duration::from_millis(50), Duration::from_millis(500))
    };
    let mut iv = tokio::time::interval(period);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        iv.tick().await;
        let Some(i) = inner.upgrade() else { return };
        i.tick();
    }
}
