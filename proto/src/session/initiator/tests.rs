//! Unit tests of the initiator core against hand-built target PDUs (the
//! in-memory pair with the target core is `proto/tests/pair.rs`).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::pdu::{
    DataOut, LogoutReason, NopIn, Pdu, R2t, ScsiCommand, TaskMgmtRequest, RESERVED_TAG,
};
use crate::scsi::Status;
use crate::session::data_in::{build, status_only, Completion, DataInLimits, Residual};
use crate::session::stamp_target;

const SEC: Duration = Duration::from_secs(1);

fn config() -> InitiatorConfig {
    InitiatorConfig {
        immediate_data: true,
        initial_r2t: false,
        first_burst_length: 4096,
        max_burst_length: 8192,
        nop_interval: 5 * SEC,
        nop_timeout: 10 * SEC,
        command_timeout: 60 * SEC,
        response_timeout: 10 * SEC,
    }
}

/// A session with `conns` connections (MaxRecvDataSegmentLength 1024)
/// and the window [10, 10 + depth - 1].
fn session(conns: u16, depth: u32, now: Instant) -> InitiatorSession<u64> {
    let mut s = InitiatorSession::new(config(), CmdSn::new(10));
    for cid in 0..conns {
        let p = ConnParams {
            cid,
            exp_stat_sn: StatSn::new(100),
            max_send_data_segment_length: 1024,
        };
        s.add_connection(p, now);
    }
    s.reset_window(CmdSn::new(10), CmdSn::new(10 + depth - 1), now);
    s
}

fn read(len: u32, ctx: u64) -> Command<u64> {
    Command {
        lun: 1,
        cdb: Bytes::from_static(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
        data: Data::Read {
            len,
            buf: Vec::new(),
        },
        ctx,
    }
}

fn write(data: Bytes, ctx: u64) -> Command<u64> {
    Command {
        lun: 1,
        cdb: Bytes::from_static(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
        data: Data::Write(data),
        ctx,
    }
}

fn drain(s: &mut InitiatorSession<u64>) -> Vec<Transmit> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn commands(t: &[Transmit]) -> Vec<&ScsiCommand> {
    t.iter()
        .filter_map(|t| match &t.pdu {
            Pdu::ScsiCommand(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// A target PDU stamped with StatSN `*stat_sn` and the window.
fn stamped(mut p: Pdu, stat_sn: &mut StatSn, window: (u32, u32)) -> Pdu {
    let w = (CmdSn::new(window.0), CmdSn::new(window.1));
    stamp_target(&mut p, stat_sn, w);
    p
}

fn completed(s: &mut InitiatorSession<u64>) -> Vec<(u64, Result<Response, CommandError>)> {
    std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            Event::Completed { ctx, result, .. } => Some((ctx, result)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_window_gates_issuing_and_a_response_opens_it() {
    let now = Instant::now();
    let mut s = session(1, 2, now);
    for i in 0..3 {
        s.submit(read(512, i), now);
    }
    let sent = drain(&mut s);
    let cmds = commands(&sent);
    assert_eq!(cmds.len(), 2, "MaxCmdSN 11 admits CmdSN 10 and 11");
    assert_eq!((cmds[0].cmd_sn.get(), cmds[1].cmd_sn.get()), (10, 11));
    assert!(cmds.iter().all(|c| c.exp_stat_sn == StatSn::new(100)));
    assert_eq!(s.queued_count(), 1);
    // GOOD status for the first, the window opening by one.
    let mut sn = StatSn::new(100);
    let r = status_only(cmds[0].itt, Status::GOOD, None, Residual::default());
    let r = stamped(Pdu::ScsiResponse(r), &mut sn, (11, 12));
    s.handle_pdu(ConnId(0), r, now).unwrap();
    let done = completed(&mut s);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, 0);
    assert_eq!(done[0].1.as_ref().unwrap().status, 0);
    let sent = drain(&mut s);
    let cmds = commands(&sent);
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].cmd_sn, CmdSn::new(12));
    assert_eq!(
        cmds[0].exp_stat_sn,
        StatSn::new(101),
        "ExpStatSN follows the response"
    );
}

#[test]
fn a_write_sends_immediate_unsolicited_and_solicited_data() {
    let now = Instant::now();
    let mut s = session(1, 8, now);
    let data = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
    s.submit(write(data.clone(), 7), now);
    let sent = drain(&mut s);
    let Pdu::ScsiCommand(c) = &sent[0].pdu else {
        panic!("{sent:?}")
    };
    // Immediate data up to the target's MRDSL, unsolicited up to FirstBurst.
    assert_eq!((c.data.len(), c.final_), (1024, false));
    let outs: Vec<&DataOut> = sent[1..]
        .iter()
        .map(|t| match &t.pdu {
            Pdu::DataOut(d) => d,
            p => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(outs.len(), 3);
    assert_eq!(outs[0].buffer_offset, 1024);
    assert!(outs[2].final_ && outs[2].ttt == RESERVED_TAG);
    assert_eq!(outs.iter().map(|d| d.data.len()).sum::<usize>(), 3072);
    // R2T for the rest (MaxBurstLength 8192 allows it in one).
    let mut sn = StatSn::new(100);
    let r2t = R2t {
        lun: 1,
        itt: c.itt,
        ttt: 0x55,
        stat_sn: StatSn::new(0),
        exp_cmd_sn: CmdSn::new(0),
        max_cmd_sn: CmdSn::new(0),
        r2t_sn: R2tSn::new(0),
        buffer_offset: 4096,
        desired_data_transfer_length: 5904,
        data: Bytes::new(),
    };
    s.handle_pdu(ConnId(0), stamped(Pdu::R2t(r2t), &mut sn, (11, 18)), now)
        .unwrap();
    let sent = drain(&mut s);
    assert_eq!(sent.len(), 6, "5904 bytes in PDUs of 1024");
    for (i, t) in sent.iter().enumerate() {
        let Pdu::DataOut(d) = &t.pdu else { panic!() };
        assert_eq!((d.ttt, d.data_sn.get()), (0x55, i as u32));
        let off = d.buffer_offset as usize;
        assert_eq!(&d.data[..], &data[off..off + d.data.len()]);
        assert_eq!(d.final_, i == 5);
    }
}

#[test]
fn data_in_is_reassembled_with_status_in_the_last_pdu() {
    let now = Instant::now();
    let mut s = session(1, 8, now);
    s.submit(read(5000, 3), now);
    let sent = drain(&mut s);
    let itt = commands(&sent)[0].itt;
    let data = Bytes::from((0..5000u32).map(|i| (i * 3) as u8).collect::<Vec<_>>());
    let c = Completion {
        itt,
        lun: 1,
        status: Status::GOOD,
        sense: None,
        data_in: data.clone(),
        residual: Residual::default(),
    };
    let limits = DataInLimits {
        max_send_data_segment_length: 1000,
        max_burst_length: 2000,
    };
    let mut sn = StatSn::new(100);
    for p in build(&c, limits) {
        s.handle_pdu(ConnId(0), stamped(p, &mut sn, (11, 18)), now)
            .unwrap();
    }
    let done = completed(&mut s);
    assert_eq!(done.len(), 1);
    let r = done[0].1.as_ref().unwrap();
    assert_eq!(&r.data[..], &data[..]);
    assert!(
        matches!(r.data, ReadData::Buffer(_)),
        "five PDUs: reassembled"
    );
    assert_eq!(s.exp_stat_sn(ConnId(0)), Some(StatSn::new(101)));
}

/// One Data-In carrying all the data from offset 0 is handed over as
/// received (the same memory, not a copy), with status in it or in a SCSI
/// Response of its own; the caller's buffer comes back unused.
#[test]
fn a_single_data_in_is_handed_over_uncopied() {
    for (sense, len) in [
        (None, 5000u32),
        (Some(Bytes::from_static(&[0x70, 0, 1, 0, 0, 0, 0, 0])), 5000),
        (None, 4000),
    ] {
        let now = Instant::now();
        let mut s = session(1, 8, now);
        s.submit(read(5000, 3), now);
        let itt = commands(&drain(&mut s))[0].itt;
        let data = Bytes::from((0..len).map(|i| (i * 7) as u8).collect::<Vec<_>>());
        let c = Completion {
            itt,
            lun: 1,
            status: if sense.is_some() {
                Status::CHECK_CONDITION
            } else {
                Status::GOOD
            },
            sense: sense.clone(),
            data_in: data.clone(),
            residual: Residual::default(),
        };
        let limits = DataInLimits {
            max_send_data_segment_length: 8192,
            max_burst_length: 8192,
        };
        let mut sn = StatSn::new(100);
        let mut received = None;
        for p in build(&c, limits) {
            if let Pdu::DataIn(d) = &p {
                assert!(received.is_none(), "one Data-In");
                received = Some(d.data.as_ptr());
            }
            s.handle_pdu(ConnId(0), stamped(p, &mut sn, (11, 18)), now)
                .unwrap();
        }
        let done = completed(&mut s);
        let r = done[0].1.as_ref().unwrap();
        assert_eq!(&r.data[..], &data[..]);
        match &r.data {
            ReadData::Received { data, spare } => {
                assert_eq!(data.as_ptr(), received.unwrap(), "not copied");
                assert!(spare.is_empty());
            }
            other => panic!("copied: {other:?}"),
        }
    }
}

#[test]
fn data_in_on_another_connection_breaks_allegiance() {
    let now = Instant::now();
    let mut s = session(2, 8, now);
    s.submit(read(512, 0), now);
    let sent = drain(&mut s);
    let (conn, itt) = (sent[0].conn, commands(&sent)[0].itt);
    let other = ConnId(1 - conn.0);
    let c = Completion {
        itt,
        lun: 1,
        status: Status::GOOD,
        sense: None,
        data_in: Bytes::from(vec![1u8; 512]),
        residual: Residual::default(),
    };
    let limits = DataInLimits {
        max_send_data_segment_length: 8192,
        max_burst_length: 8192,
    };
    let p = build(&c, limits).remove(0);
    let e = s.handle_pdu(other, p, now).unwrap_err();
    assert!(matches!(e, ConnError::WrongConnection { .. }), "{e}");
}

#[test]
fn idle_connections_are_pinged_and_a_silent_one_fails() {
    let now = Instant::now();
    let mut s = session(1, 8, now);
    assert_eq!(s.poll_timeout(), Some(now + 5 * SEC));
    s.handle_timeout(now + 5 * SEC);
    let sent = drain(&mut s);
    let Pdu::NopOut(n) = &sent[0].pdu else {
        panic!("{sent:?}")
    };
    assert!(n.immediate && n.ttt == RESERVED_TAG && n.itt != RESERVED_TAG);
    assert_eq!(s.poll_timeout(), Some(now + 15 * SEC));
    // Answered: the next ping comes after another idle interval.
    let mut sn = StatSn::new(100);
    let answer = NopIn {
        lun: 0,
        itt: n.itt,
        ttt: RESERVED_TAG,
        stat_sn: StatSn::new(0),
        exp_cmd_sn: CmdSn::new(0),
        max_cmd_sn: CmdSn::new(0),
        data: Bytes::new(),
    };
    let t1 = now + 6 * SEC;
    s.handle_pdu(
        ConnId(0),
        stamped(Pdu::NopIn(answer), &mut sn, (10, 17)),
        t1,
    )
    .unwrap();
    assert_eq!(s.poll_timeout(), Some(t1 + 5 * SEC));
    s.handle_timeout(t1 + 5 * SEC);
    assert_eq!(drain(&mut s).len(), 1);
    s.handle_timeout(t1 + 15 * SEC);
    let e = s.poll_event();
    assert!(
        matches!(
            e,
            Some(Event::Failed {
                error: ConnError::PingTimeout { .. },
                ..
            })
        ),
        "{e:?}"
    );
}

#[test]
fn a_timed_out_command_is_aborted_then_failed() {
    let now = Instant::now();
    let mut s = session(1, 8, now);
    s.submit(read(512, 9), now);
    let itt = commands(&drain(&mut s))[0].itt;
    let t = now + 60 * SEC;
    // Keep the connection busy so that no ping interferes.
    s.handle_pdu(ConnId(0), nop_in_unsolicited(), t).unwrap();
    s.handle_timeout(t);
    let sent = drain(&mut s);
    let tmf: Vec<&TaskMgmtRequest> = sent
        .iter()
        .filter_map(|t| match &t.pdu {
            Pdu::TaskMgmtRequest(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(tmf.len(), 1);
    assert_eq!(
        (tmf[0].referenced_task_tag, tmf[0].ref_cmd_sn.get()),
        (itt, 10)
    );
    // No answer: the command fails and so does the connection.
    s.handle_pdu(ConnId(0), nop_in_unsolicited(), t + 10 * SEC)
        .unwrap();
    s.handle_timeout(t + 10 * SEC);
    let events: Vec<Event<u64>> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(matches!(
        &events[0],
        Event::Completed {
            ctx: 9,
            result: Err(CommandError::TimedOut {
                abort: Err(ControlError::Timeout),
                ..
            }),
            ..
        }
    ));
    assert!(matches!(
        &events[1],
        Event::Failed {
            error: ConnError::AbortUnanswered,
            ..
        }
    ));
}

fn nop_in_unsolicited() -> Pdu {
    Pdu::NopIn(NopIn {
        lun: 0,
        itt: RESERVED_TAG,
        ttt: RESERVED_TAG,
        stat_sn: StatSn::new(100),
        exp_cmd_sn: CmdSn::new(10),
        max_cmd_sn: CmdSn::new(17),
        data: Bytes::new(),
    })
}

#[test]
fn recovery_requeues_unanswered_commands_in_order() {
    let now = Instant::now();
    let mut s = session(2, 3, now);
    for i in 0..5 {
        s.submit(read(512, i), now);
    }
    drain(&mut s);
    assert_eq!((s.issued_count(), s.queued_count()), (3, 2));
    s.logout(LogoutReason::CLOSE_SESSION, now).unwrap();
    s.requeue_all();
    assert!(matches!(
        s.poll_event(),
        Some(Event::Logout {
            result: Err(ControlError::Lost),
            ..
        })
    ));
    assert_eq!((s.issued_count(), s.queued_count()), (0, 5));
    let p = ConnParams {
        cid: 0,
        exp_stat_sn: StatSn::new(1),
        max_send_data_segment_length: 8192,
    };
    s.add_connection(p, now);
    s.reset_window(CmdSn::new(50), CmdSn::new(60), now);
    let sent = drain(&mut s);
    let cmds = commands(&sent);
    assert_eq!(cmds.len(), 5);
    assert!(cmds.iter().zip(50..).all(|(c, sn)| c.cmd_sn.get() == sn));
    let (issued, queued) = s.take_all();
    assert_eq!(issued, vec![0, 1, 2, 3, 4]);
    assert!(queued.is_empty());
}

#[test]
fn the_window_closed_too_long_fails_queued_commands() {
    let now = Instant::now();
    let mut s = session(1, 1, now);
    s.submit(read(512, 0), now);
    s.submit(read(512, 1), now);
    drain(&mut s);
    let t = now + 60 * SEC;
    s.handle_pdu(ConnId(0), nop_in_unsolicited_window(10, 10), t)
        .unwrap();
    s.handle_timeout(t);
    let done = completed(&mut s);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, 1);
    assert!(matches!(done[0].1, Err(CommandError::WindowClosed { .. })));
}

fn nop_in_unsolicited_window(exp: u32, max: u32) -> Pdu {
    let Pdu::NopIn(mut n) = nop_in_unsolicited() else {
        unreachable!()
    };
    (n.exp_cmd_sn, n.max_cmd_sn) = (CmdSn::new(exp), CmdSn::new(max));
    Pdu::NopIn(n)
}

mod hostile {
    //! Whatever a target sends (random Data-In, R2T, responses for the
    //! tasks in flight, on any connection), the core never panics, never
    //! holds more than the caller's expected length, and its counts stay
    //! consistent.
    use super::*;
    use crate::pdu::{DataIn, ScsiResponse};
    use crate::serial::{DataSn, R2tSn};
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Input {
        DataIn(u32, u32, u32, u16, bool, bool),
        R2t(u32, u32, u32, u32, u32),
        Response(u32, u8, u32, u16),
        Tick(u16),
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (
                1u32..6,
                0u32..4,
                0u32..20_000,
                0u16..5000,
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(a, b, c, d, e, f)| Input::DataIn(a, b, c, d, e, f)),
            (1u32..6, 0u32..4, 0u32..20_000, 0u32..20_000, 0u32..3)
                .prop_map(|(a, b, c, d, e)| Input::R2t(a, b, c, d, e)),
            (1u32..6, 0u8..2, 0u32..4, 0u16..40)
                .prop_map(|(a, b, c, d)| Input::Response(a, b, c, d)),
            (0u16..120).prop_map(Input::Tick),
        ]
    }

    fn pdu(i: &Input) -> Option<Pdu> {
        Some(match *i {
            Input::DataIn(itt, sn, off, len, f, s) => Pdu::DataIn(DataIn {
                final_: f,
                ack: false,
                overflow: false,
                underflow: false,
                status: s.then_some(0),
                lun: 1,
                itt,
                ttt: RESERVED_TAG,
                stat_sn: StatSn::new(100),
                exp_cmd_sn: CmdSn::new(10),
                max_cmd_sn: CmdSn::new(20),
                data_sn: DataSn::new(sn),
                buffer_offset: off,
                residual_count: 0,
                data: Bytes::from(vec![7u8; usize::from(len)]),
            }),
            Input::R2t(itt, sn, off, len, ttt) => Pdu::R2t(R2t {
                lun: 1,
                itt,
                ttt,
                stat_sn: StatSn::new(100),
                exp_cmd_sn: CmdSn::new(10),
                max_cmd_sn: CmdSn::new(20),
                r2t_sn: R2tSn::new(sn),
                buffer_offset: off,
                desired_data_transfer_length: len,
                data: Bytes::new(),
            }),
            Input::Response(itt, response, exp_data_sn, sense) => {
                let mut r = status_only(itt, Status::GOOD, None, Residual::default());
                r.response = response;
                r.exp_data_sn = DataSn::new(exp_data_sn);
                r.stat_sn = StatSn::new(100 + itt);
                r.data = ScsiResponse::sense_segment(&vec![0x70; usize::from(sense)]);
                Pdu::ScsiResponse(r)
            }
            Input::Tick(_) => return None,
        })
    }

    proptest! {
        #[test]
        fn arbitrary_target_pdus_never_break_the_core(
            inputs in prop::collection::vec((input(), 0usize..2), 1..60),
        ) {
            let now = Instant::now();
            let mut s = session(2, 8, now);
            for i in 0..5u64 {
                let cmd = if i % 2 == 0 {
                    read(4096 * (i as u32 + 1), i)
                } else {
                    write(Bytes::from(vec![1u8; 3000 * i as usize]), i)
                };
                s.submit(cmd, now);
            }
            let mut t = now;
            let mut ended = 0;
            for (i, conn) in &inputs {
                match pdu(i) {
                    Some(p) => {
                        let _ = s.handle_pdu(ConnId(*conn), p, t);
                    }
                    None => {
                        if let Input::Tick(secs) = i {
                            t += Duration::from_secs(u64::from(*secs));
                        }
                        s.handle_timeout(t);
                    }
                }
                drain(&mut s);
                while let Some(e) = s.poll_event() {
                    if let Event::Completed { ctx, result, .. } = e {
                        ended += 1;
                        if let Ok(r) = result {
                            // Never more than the caller asked for.
                            prop_assert!(r.data.len() <= 4096 * (ctx as usize + 1));
                        }
                    }
                }
            }
            prop_assert_eq!(ended + s.issued_count() + s.queued_count(), 5);
        }
    }
}
