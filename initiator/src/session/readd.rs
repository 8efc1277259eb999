//! MC/S: bringing a session back to the number of connections it asked for
//! (RFC 7143 §4.2.1 "Multiple connections per session"; a connection joins
//! an existing session by logging in with the session's ISID and TSIH and
//! a new CID, §6.3).
//!
//! A connection whose network path is down when the session is (re)built
//! is left out rather than failing the whole session (`establish`). The
//! session's timer then tries to log a replacement in, one attempt at a
//! time, with exponential backoff from [`FIRST_BACKOFF`] to
//! [`MAX_BACKOFF`], each failure logged with the next retry time; when the
//! path comes back the connection is added and carries commands again.
//! Session recovery (a new incarnation) starts the backoff over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::session::initiator::ConnId;

use super::login_spec;
use super::state::{Inner, Phase, State};
use crate::connection;
use crate::sync::lock;

/// Wait before the first attempt after a connection went missing.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between two attempts.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Backoff state of the re-add attempts.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReAdd {
    /// No attempt before this (`None`: the shortage was not seen yet).
    next_at: Option<Instant>,
    backoff: Duration,
    /// An attempt is running.
    busy: bool,
}

impl Default for ReAdd {
    fn default() -> Self {
        ReAdd {
            next_at: None,
            backoff: FIRST_BACKOFF,
            busy: false,
        }
    }
}

impl Inner {
    /// How many connections the session should have: what was asked for,
    /// within the target's MaxConnections.
    fn wanted_connections(&self, st: &State) -> usize {
        usize::from(self.cfg.connections.min(st.neg.max_connections.max(1)))
    }

    /// From the timer: if the session is short of connections and the
    /// backoff allows, start one attempt to add one.
    pub(super) fn maybe_readd(self: &Arc<Self>, st: &mut State, now: Instant) {
        if st.phase != Phase::Up
            || st.readd.busy
            || st.core.connection_count() >= self.wanted_connections(st)
        {
            return;
        }
        let due = *st.readd.next_at.get_or_insert(now + st.readd.backoff);
        if now < due {
            return;
        }
        // The lowest CID not in use (RFC 7143 §11.12.7: unique in the session).
        let n = st.core.connection_count();
        let in_use = |c: u16| (0..n).any(|i| st.core.cid(ConnId(i)) == Some(c));
        let Some(cid) = (0..=u16::MAX).find(|c| !in_use(*c)) else {
            return;
        };
        st.readd.busy = true;
        let spec = login_spec(&self.cfg, st.isid, st.tsih, cid, st.core.window().cmd_sn());
        let epoch = st.epoch;
        let me = self.clone();
        tokio::spawn(async move {
            let r = connection::login(&spec).await;
            me.readd_done(epoch, cid, r);
        });
    }

    fn readd_done(
        self: &Arc<Self>,
        epoch: u64,
        cid: u16,
        r: crate::error::Result<connection::Established>,
    ) {
        let mut st = lock(&self.st);
        if st.epoch != epoch {
            // The session was rebuilt meanwhile; a connection logged in for
            // the old incarnation is dropped (closing it).
            return;
        }
        st.readd.busy = false;
        match r {
            Ok(e)
                if st.phase == Phase::Up
                    && st.core.connection_count() < self.wanted_connections(&st) =>
            {
                let (exp, max) = (e.exp_cmd_sn, e.max_cmd_sn);
                self.attach(&mut st, epoch, e);
                st.readd = ReAdd::default();
                tracing::info!(
                    cid,
                    conns = st.core.connection_count(),
                    "connection added back to the session"
                );
                st.core.update_window(exp, max, Instant::now());
                let after = self.flush(&mut st);
                drop(st);
                self.after(epoch, after);
            }
            Ok(_) => {}
            Err(e) => {
                let wait = st.readd.backoff;
                st.readd.next_at = Some(Instant::now() + wait);
                st.readd.backoff = (wait * 2).min(MAX_BACKOFF);
                tracing::warn!(
                    cid,
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "could not add a connection back to the session"
                );
            }
        }
    }
}
