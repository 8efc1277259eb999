//! Admission limits that keep one client from taking the target down or
//! guessing its way in (issue 10 item 5): caps checked at login, before a
//! session or connection is committed, and a per-source backoff after
//! failed authentications.
//!
//! Each refusal is a Login Response with the RFC 7143 §11.13.5 status
//! that says what happened:
//! - too many connections still in the login phase, too many sessions on
//!   a target, too many connections from one initiator: 0x0302 "out of
//!   resources" ("the target has insufficient session, connection, or
//!   other resources");
//! - a source in authentication backoff: 0x0301 "service unavailable"
//!   ("the target is currently not available ... try again later"), so a
//!   well-behaved initiator retries later rather than giving up for good.
//!
//! The backoff is per source IP address: one address guessing CHAP secrets
//! waits, every other initiator logs in at full speed. Nothing here logs a
//! secret or a CHAP response; the login code logs the source and the
//! counts only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Server-wide caps. `Default` gives generous values that a single host
/// does not reach in normal use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections in the login phase at once (each holds a socket, a
    /// buffer and a login timer).
    pub max_logins_in_progress: usize,
    /// Sessions (discovery sessions excluded) per target.
    pub max_sessions_per_target: usize,
    /// Connections of one initiator name, over all its sessions.
    pub max_connections_per_initiator: usize,
    /// Failed authentications from one address before the backoff starts
    /// (5: a few typos cost nothing; a guesser gets about one try a minute
    /// once the backoff has doubled to its cap).
    pub auth_failures_before_backoff: u32,
    /// First backoff; each further failure doubles it up to `auth_backoff_max`.
    pub auth_backoff_base: Duration,
    pub auth_backoff_max: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_logins_in_progress: 64,
            max_sessions_per_target: 1024,
            max_connections_per_initiator: 64,
            auth_failures_before_backoff: 5,
            auth_backoff_base: Duration::from_secs(1),
            auth_backoff_max: Duration::from_secs(60),
        }
    }
}

/// At most this many addresses are remembered; the oldest-expiring are
/// forgotten first, so a spray of source addresses cannot grow the table.
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    until: Option<Instant>,
    last: Instant,
}

/// Failed authentications per source address (sans clock: callers pass
/// `now`).
#[derive(Debug, Default)]
pub(crate) struct AuthBackoff {
    by_ip: HashMap<IpAddr, Failures>,
}

impl AuthBackoff {
    /// How long `ip` must still wait, if it is in backoff.
    pub(crate) fn remaining(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.by_ip.get(&ip)?.until?;
        (until > now).then(|| until - now)
    }

    /// Record a failed authentication; the backoff it starts, if any.
    pub(crate) fn failed(
        &mut self,
        ip: IpAddr,
        now: Instant,
        l: &ServerLimits,
    ) -> Option<Duration> {
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= MAX_TRACKED {
            self.evict(now);
        }
        let f = self.by_ip.entry(ip).or_insert(Failures {
            count: 0,
            until: None,
            last: now,
        });
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count < l.auth_failures_before_backoff.max(1) {
            return None;
        }
        let doublings = (f.count - l.auth_failures_before_backoff.max(1)).min(16);
        let wait = l
            .auth_backoff_base
            .saturating_mul(1 << doublings)
            .min(l.auth_backoff_max);
        f.until = Some(now + wait);
        Some(wait)
    }

    /// A successful authentication clears the address's record.
    pub(crate) fn succeeded(&mut self, ip: IpAddr) {
        self.by_ip.remove(&ip);
    }

    fn evict(&mut self, now: Instant) {
        // Expired backoffs first, then the least recently failing half.
        self.by_ip.retain(|_, f| f.until.is_some_and(|u| u > now));
        if self.by_ip.len() >= MAX_TRACKED {
            let mut lasts: Vec<Instant> = self.by_ip.values().map(|f| f.last).collect();
            lasts.sort_unstable();
            let cut = lasts[lasts.len() / 2];
            self.by_ip.retain(|_, f| f.last > cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_the_allowed_failures_doubles_and_caps() {
        let l = ServerLimits {
            auth_failures_before_backoff: 2,
            auth_backoff_base: Duration::from_millis(100),
            auth_backoff_max: Duration::from_millis(350),
            ..ServerLimits::default()
        };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        let mut bo = AuthBackoff::default();
        assert_eq!(bo.failed(a, t0, &l), None);
        assert_eq!(bo.remaining(a, t0), None);
        assert_eq!(bo.failed(a, t0, &l), Some(Duration::from_millis(100)));
        assert_eq!(bo.failed(a, t0, &l), Some(Duration::from_millis(200)));
        assert_eq!(bo.failed(a, t0, &l), Some(Duration::from_millis(350)));
        assert_eq!(bo.remaining(a, t0), Some(Duration::from_millis(350)));
        assert_eq!(bo.remaining(a, t0 + Duration::from_millis(400)), None);
        // Another address is not affected.
        assert_eq!(bo.remaining(b, t0), None);
        bo.succeeded(a);
        assert_eq!(bo.remaining(a, t0), None);
        assert_eq!(bo.failed(a, t0, &l), None, "count restarts after a success");
    }

    #[test]
    fn the_table_stays_bounded() {
        let l = ServerLimits::default();
        let t0 = Instant::now();
        let mut bo = AuthBackoff::default();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = IpAddr::from(i.to_be_bytes());
            bo.failed(ip, t0 + Duration::from_micros(i as u64), &l);
        }
        assert!(bo.by_ip.len() <= MAX_TRACKED);
    }
}
