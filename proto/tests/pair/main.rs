//! The initiator core and the target core wired to each other in memory
//! (`harness.rs`), with a deterministic clock: the full-feature phase of
//! RFC 7143 end to end without sockets. Windows (§4.2.2.1), bursts
//! (§13.10-14), MC/S and allegiance (§4.2.1, §3.2.4.2), NOP pings and
//! timeouts (§11.18, §11.19), ABORT TASK (§11.5.1), Logout (§11.14), loss
//! and reordering of PDUs between connections; `prop.rs` mixes random
//! reads and writes under random limits and delivery orders.

mod harness;
mod prop;

use std::time::Duration;

use harness::{pattern, Dir, Limits, Pair, BLOCK, FIRST_CMD_SN};
use proto::pdu::{LogoutReason, LogoutResponseCode, Pdu, TmfFunction, TmfResponse};
use proto::session::initiator::{CommandError, ConnError, ControlError};
use proto::session::target::CloseReason;

fn is_command(p: &Pdu) -> bool {
    matches!(p, Pdu::ScsiCommand(_))
}

#[test]
fn a_write_then_a_read_of_the_same_blocks() {
    let mut p = Pair::new(Limits::default(), 64);
    let data = pattern(1, 20 * BLOCK);
    let w = p.write(3, data.clone());
    p.run();
    assert_eq!(p.data(w), b"");
    let r = p.read(3, 20);
    p.run();
    assert_eq!(p.data(r), &data[..]);
    assert_eq!(&p.disk[3 * BLOCK..23 * BLOCK], &data[..]);
    assert!(p.failed.is_empty());
}

#[test]
fn max_cmd_sn_closes_the_window_and_completions_open_it() {
    let l = Limits {
        depth: 2,
        ..Limits::default()
    };
    let mut p = Pair::new(l, 64);
    p.hold = true;
    let ids: Vec<u64> = (0..6).map(|i| p.read(i, 1)).collect();
    p.run();
    // Only two commands fit in the window; the rest wait in the queue.
    assert_eq!(p.count_seen(0, is_command), 2);
    assert_eq!((p.ini.issued_count(), p.ini.queued_count()), (2, 4));
    assert!(!p.ini.window().is_open());
    // Each completion opens one slot (MaxCmdSN moves with the response).
    for expect in [4, 6] {
        p.release_held();
        p.run();
        assert_eq!(p.count_seen(0, is_command), expect);
    }
    p.release_held();
    p.run();
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(p.data(id), &p.disk[i * BLOCK..(i + 1) * BLOCK]);
    }
    // The CmdSNs went through the serial wrap (FIRST_CMD_SN is near 2^32).
    let last = p.ini.window().cmd_sn().get();
    assert_eq!(last, FIRST_CMD_SN.wrapping_add(6));
}

#[test]
fn bursts_with_small_first_burst_max_burst_and_segments() {
    for (immediate_data, initial_r2t) in
        [(true, false), (false, false), (true, true), (false, true)]
    {
        let l = Limits {
            immediate_data,
            initial_r2t,
            first_burst: 1024,
            max_burst: 2048,
            max_r2t: 2,
            target_mrdsl: 512,
            initiator_mrdsl: 512,
            ..Limits::default()
        };
        let mut p = Pair::new(l, 128);
        let data = pattern(7, 40 * BLOCK);
        let w = p.write(10, data.clone());
        p.run();
        assert!(p.result(w).is_ok(), "{immediate_data} {initial_r2t}");
        assert_eq!(&p.disk[10 * BLOCK..50 * BLOCK], &data[..]);
        let outs: Vec<&Pdu> = p.seen_by_target[0]
            .iter()
            .filter(|x| matches!(x, Pdu::DataOut(_)))
            .collect();
        // Every Data-Out within the target's MaxRecvDataSegmentLength.
        assert!(outs.iter().all(|x| x.data().len() <= 512));
        let Pdu::ScsiCommand(c) = &p.seen_by_target[0][0] else {
            panic!()
        };
        assert_eq!(c.data.len(), if immediate_data { 512 } else { 0 });
        assert_eq!(
            c.final_, initial_r2t,
            "F=0 when unsolicited Data-Out follows"
        );
        let r = p.read(10, 40);
        p.run();
        assert_eq!(p.data(r), &data[..]);
        assert!(p.failed.is_empty());
    }
}

#[test]
fn two_connections_keep_allegiance_and_share_the_window() {
    let l = Limits {
        conns: 2,
        depth: 4,
        first_burst: 1024,
        max_burst: 4096,
        target_mrdsl: 1024,
        initiator_mrdsl: 1024,
        ..Limits::default()
    };
    let mut p = Pair::new(l, 256);
    let mut writes = Vec::new();
    for i in 0..8u32 {
        let data = pattern(u64::from(i), 16 * BLOCK);
        writes.push((i, p.write(i * 16, data.clone()), data));
    }
    // Connection 1 first, then connection 0: CmdSNs arrive out of order at
    // the session's window, which admits them ahead.
    p.run_with(&[1; 40]);
    assert!(p.failed.is_empty(), "{:?}", p.failed);
    for (i, id, data) in &writes {
        assert!(p.result(*id).is_ok());
        let at = *i as usize * 16 * BLOCK;
        assert_eq!(&p.disk[at..at + 16 * BLOCK], &data[..]);
    }
    // Both connections carried commands, and each task's Data-Out went on
    // the connection of its command.
    for c in 0..2 {
        assert!(p.count_seen(c, is_command) >= 2);
        let itts: Vec<u32> = p.seen_by_target[c]
            .iter()
            .filter_map(|x| match x {
                Pdu::ScsiCommand(s) => Some(s.itt),
                _ => None,
            })
            .collect();
        assert!(p.seen_by_target[c].iter().all(|x| match x {
            Pdu::DataOut(d) => itts.contains(&d.itt),
            _ => true,
        }));
    }
}

#[test]
fn a_response_on_the_wrong_connection_fails_it() {
    let l = Limits {
        conns: 2,
        ..Limits::default()
    };
    let mut p = Pair::new(l, 16);
    let r = p.read(0, 1);
    let c = (0..2).find(|&c| !p.to_tgt[c].is_empty()).unwrap();
    p.deliver(Dir::ToTarget, c);
    // Move the answer to the other connection's queue.
    let answer = p.to_ini[c].pop_front().expect("answered");
    p.to_ini[1 - c].push_back(answer);
    p.deliver(Dir::ToInitiator, 1 - c);
    assert!(matches!(
        p.failed.as_slice(),
        [ConnError::WrongConnection { .. }]
    ));
    assert!(!p.done.contains_key(&r));
}

#[test]
fn pings_both_ways_and_a_lost_ping_times_out() {
    let mut p = Pair::with_timers(Limits::default(), 16, Some(Duration::from_secs(3)));
    // Target pings first (3 s): the initiator answers it.
    p.advance(Duration::from_secs(3));
    let got = p.to_ini[0].front().cloned();
    assert!(matches!(got, Some(Pdu::NopIn(ref n)) if n.ttt != proto::pdu::RESERVED_TAG));
    p.run();
    assert!(matches!(p.to_tgt[0].len(), 0));
    assert!(p.seen_by_target[0]
        .iter()
        .any(|x| matches!(x, Pdu::NopOut(n) if n.itt == proto::pdu::RESERVED_TAG)));
    // Our ping (5 s idle) is answered: no failure.
    p.advance(Duration::from_secs(5));
    assert!(p.to_tgt[0]
        .iter()
        .any(|x| matches!(x, Pdu::NopOut(n) if n.itt != proto::pdu::RESERVED_TAG)));
    p.run();
    p.advance(Duration::from_secs(9));
    p.run();
    assert!(p.failed.is_empty() && p.closed.is_empty());
    // The next ping is lost: after the NOP timeout the connection fails.
    p.advance(Duration::from_secs(5));
    let lost = p.to_tgt[0].drain(..).count();
    assert!(lost >= 1);
    p.advance(Duration::from_secs(10));
    assert!(
        matches!(p.failed.as_slice(), [ConnError::PingTimeout { .. }]),
        "{:?}",
        p.failed
    );
}

#[test]
fn abort_task_ends_a_command_the_device_holds() {
    let mut p = Pair::new(Limits::default(), 16);
    p.hold = true;
    let r = p.read(2, 1);
    p.run();
    assert_eq!(p.held.len(), 1);
    let itt = p.held[0].1.itt;
    p.ini
        .task_management(TmfFunction::ABORT_TASK, None, Some(itt), p.now)
        .unwrap();
    p.flush();
    p.run();
    assert!(matches!(p.tmf.as_slice(), [Ok(t)] if t.response == TmfResponse::FUNCTION_COMPLETE));
    assert!(matches!(p.result(r), Err(CommandError::Aborted)));
    // The device finishing it later sends nothing (§4.2.3.3).
    p.release_held();
    p.run();
    assert!(p.to_ini[0].is_empty() && p.failed.is_empty());
    // The window slot came back: the session goes on.
    let r2 = p.read(3, 1);
    p.hold = false;
    p.run();
    assert_eq!(p.data(r2), &p.disk[3 * BLOCK..4 * BLOCK]);
}

#[test]
fn a_lost_command_times_out_and_its_cmd_sn_is_plugged() {
    let l = Limits {
        conns: 2,
        ..Limits::default()
    };
    let mut p = Pair::new(l, 16);
    let lost = p.read(0, 1);
    let c = (0..2).find(|&c| !p.to_tgt[c].is_empty()).unwrap();
    p.to_tgt[c].clear();
    // The next command (other connection) is admitted ahead of the gap.
    let next = p.read(1, 1);
    p.run();
    assert_eq!(p.data(next), &p.disk[BLOCK..2 * BLOCK]);
    assert!(!p.done.contains_key(&lost));
    // Command timeout: ABORT TASK with RefCmdSN; the target considers the
    // CmdSN received (§11.5.1) and the command fails with the abort's
    // answer.
    p.advance(Duration::from_secs(30));
    p.run();
    match p.result(lost) {
        Err(CommandError::TimedOut { abort, .. }) => {
            assert_eq!(*abort, Ok(TmfResponse::FUNCTION_COMPLETE))
        }
        other => panic!("{other:?}"),
    }
    // The gap is plugged: later commands flow.
    let after = p.read(2, 1);
    p.run();
    assert_eq!(p.data(after), &p.disk[2 * BLOCK..3 * BLOCK]);
    assert!(p.failed.is_empty());
}

#[test]
fn logout_closes_the_connection() {
    let mut p = Pair::new(Limits::default(), 16);
    let r = p.read(0, 1);
    p.run();
    assert!(p.result(r).is_ok());
    p.ini.logout(LogoutReason::CLOSE_SESSION, p.now).unwrap();
    p.flush();
    p.run();
    assert!(
        matches!(p.logouts.as_slice(), [Ok(l)] if l.response == LogoutResponseCode::CLOSED_SUCCESSFULLY)
    );
    assert!(matches!(p.closed.as_slice(), [(0, CloseReason::LoggedOut)]));
}

#[test]
fn an_unanswered_logout_times_out() {
    let mut p = Pair::new(Limits::default(), 16);
    p.ini.logout(LogoutReason::CLOSE_SESSION, p.now).unwrap();
    p.flush();
    p.to_tgt[0].clear();
    p.advance(Duration::from_secs(10));
    assert!(matches!(p.logouts.as_slice(), [Err(ControlError::Timeout)]));
}
