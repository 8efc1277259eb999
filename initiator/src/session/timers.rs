//! The session's timer: NOP-Out pings on idle connections and their
//! timeout (RFC 7143 §11.18), command timeouts (ABORT TASK, §11.5.1) and
//! the bound on commands waiting for a closed CmdSN window (§4.2.2.1);
//! also when to add back a missing MC/S connection (`readd.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::pdu::{NopOut, Pdu, TmfFunction, RESERVED_TAG};
use proto::serial::{CmdSn, StatSn};

use super::state::{Control, Inner, Phase};
use crate::error::Error;
use crate::sync::lock;

impl Inner {
    /// Periodic work: pings, ping timeouts, command timeouts.
    pub(super) fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let mut failed = None;
        let mut to_abort = Vec::new();
        {
            let mut st = lock(&self.st);
            if st.phase != Phase::Up && st.phase != Phase::Draining {
                return;
            }
            let epoch = st.epoch;
            // NOP timeout: an outstanding ping older than nop_timeout.
            for (&itt, c) in st.control.iter() {
                if let Control::Ping { conn, sent } = c {
                    if now.duration_since(*sent) > self.cfg.nop_timeout {
                        failed = Some((
                            epoch,
                            format!("no NOP-In answer on connection {conn} (ping {itt:#x})"),
                        ));
                    }
                }
            }
            if failed.is_none() {
                let mut pings = Vec::new();
                for (i, c) in st.conns.iter().enumerate() {
                    if !c.ping_outstanding && now.duration_since(c.last_rx) >= self.cfg.nop_interval
                    {
                        pings.push(i);
                    }
                }
                for i in pings {
                    let itt = st.alloc_itt();
                    st.control.insert(itt, Control::Ping { conn: i, sent: now });
                    let cmd_sn = st.window.cmd_sn();
                    let c = &mut st.conns[i];
                    c.ping_outstanding = true;
                    // RFC 7143 §11.18: a ping is an immediate NOP-Out with a
                    // valid ITT and TTT 0xffffffff; CmdSN is not advanced.
                    let _ = c.tx.send(Pdu::NopOut(NopOut {
                        immediate: true,
                        lun: 0,
                        itt,
                        ttt: RESERVED_TAG,
                        cmd_sn,
                        exp_stat_sn: StatSn::new(0),
                        data: Bytes::new(),
                    }));
                }
                // MC/S: a connection left out when its path was down.
                self.maybe_readd(&mut st, now);
                for (&itt, t) in st.tasks.iter_mut() {
                    if !t.aborting && now > t.deadline {
                        t.aborting = true;
                        to_abort.push((itt, t.cmd_sn));
                    }
                }
                // Commands that never got into the CmdSN window are bounded
                // by the command timeout too.
                if let Some(since) = st.window_closed_since {
                    if now.duration_since(since) > self.cfg.command_timeout {
                        st.window_closed_since = None;
                        let why = format!(
                            "the target kept the command window closed (CmdSN {}, MaxCmdSN {}) for {:?}",
                            st.window.cmd_sn(),
                            st.window.max_cmd_sn(),
                            self.cfg.command_timeout
                        );
                        tracing::warn!(%why, queued = st.queue.len(), "failing queued commands");
                        for p in st.queue.drain(..) {
                            let _ = p.reply.send(Err(Error::Timeout(why.clone())));
                        }
                        if st.tasks.is_empty() {
                            self.idle.notify_waiters();
                        }
                    }
                }
            }
        }
        if let Some((epoch, why)) = failed {
            self.conn_failed(epoch, why);
            return;
        }
        for (itt, cmd_sn) in to_abort {
            let me = self.clone();
            tokio::spawn(async move { me.abort_timed_out(itt, cmd_sn).await });
        }
    }

    /// A command exceeded the command timeout: ABORT TASK, then fail it;
    /// without an answer to the abort, recover the session.
    pub(super) async fn abort_timed_out(self: Arc<Self>, itt: u32, cmd_sn: CmdSn) {
        let me = self;
        tracing::warn!(
            itt,
            cmd_sn = cmd_sn.get(),
            "command timed out, sending ABORT TASK"
        );
        let epoch = lock(&me.st).epoch;
        let r = me
            .clone()
            .task_management(TmfFunction::ABORT_TASK, None, Some(itt))
            .await;
        let escalate = matches!(r, Err(Error::Timeout(_)));
        let why = match r {
            Ok((r, _)) => format!(
                "command timed out after {:?}; aborted ({:?})",
                me.cfg.command_timeout, r.response
            ),
            Err(e) => format!(
                "command timed out after {:?}; abort failed: {e}",
                me.cfg.command_timeout
            ),
        };
        {
            let mut st = lock(&me.st);
            // The same task (not a later one that reused the ITT).
            let same = st
                .tasks
                .get(&itt)
                .is_some_and(|t| t.cmd_sn == cmd_sn && t.aborting);
            if same {
                me.finish(&mut st, itt, Err(Error::Timeout(why)));
            }
        }
        if escalate {
            // Task management did not answer either: at
            // ErrorRecoveryLevel 0 the only recovery left is session
            // recovery (RFC 7143 §7.1.5).
            me.conn_failed(epoch, "ABORT TASK was not answered".into());
        }
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
