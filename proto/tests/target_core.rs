//! The target's connection core (`proto::session::target`) driven without
//! sockets: hand-built initiator PDUs (Data-Out split with
//! `proto::session::data_out`), a deterministic clock (a base `Instant`
//! plus offsets; the core never reads a clock) and a device that answers
//! from a pattern, so every byte moved can be checked.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proto::pdu::{
    DataIn, LogoutReason, LogoutRequest, LogoutResponseCode, NopOut, Pdu, RejectReason,
    ScsiCommand, ScsiResponse, TaskAttr, TaskMgmtRequest, TmfFunction, RESERVED_TAG,
};
use proto::scsi::Status;
use proto::serial::{CmdSn, DataSn, StatSn};
use proto::session::data_out::{data_out_pdus, DataOutTarget};
use proto::session::target::{
    CloseReason, ConnConfig, Event, LocalSession, Outcome, TargetConn, TaskError,
};
use proto::session::{
    DataInLimits, IssueWindow, ReadProgress, UnsolicitedLimits, UnsolicitedPlan, WriteLimits,
};

/// Negotiated values of one test connection.
#[derive(Debug, Clone, Copy)]
struct Params {
    immediate_data: bool,
    initial_r2t: bool,
    first_burst: u32,
    max_burst: u32,
    max_r2t: u32,
    /// Target's MaxRecvDataSegmentLength (Data-Out, immediate data).
    target_mrdsl: u32,
    /// Initiator's MaxRecvDataSegmentLength (Data-In).
    initiator_mrdsl: u32,
    depth: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            immediate_data: true,
            initial_r2t: false,
            first_burst: 4096,
            max_burst: 8192,
            max_r2t: 2,
            target_mrdsl: 1024,
            initiator_mrdsl: 2048,
            depth: 8,
        }
    }
}

fn config(p: Params) -> ConnConfig {
    ConnConfig {
        write: WriteLimits {
            immediate_data: p.immediate_data,
            initial_r2t: p.initial_r2t,
            first_burst_length: p.first_burst,
            max_burst_length: p.max_burst,
            max_outstanding_r2t: p.max_r2t,
            max_recv_data_segment_length: p.target_mrdsl,
        },
        data_in: DataInLimits {
            max_send_data_segment_length: p.initiator_mrdsl,
            max_burst_length: p.max_burst,
        },
        discovery: false,
        cid: 1,
        first_stat_sn: StatSn::new(100),
        nop_interval: None,
        nop_timeout: Duration::from_secs(2),
        max_write_buffer: 1 << 20,
    }
}

/// The byte at `i` of the data of command `itt`.
fn pattern(itt: u32, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(itt * 7) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn command(itt: u32, cmd_sn: u32, read: bool, write: bool, edtl: u32) -> ScsiCommand {
    ScsiCommand {
        immediate: false,
        final_: true,
        read,
        write,
        attr: TaskAttr::SIMPLE,
        lun: 0,
        itt,
        expected_data_transfer_length: edtl,
        cmd_sn: CmdSn::new(cmd_sn),
        exp_stat_sn: StatSn::new(0),
        cdb: Bytes::from_static(&[0u8; 16]),
        bidi_read_length: None,
        data: Bytes::new(),
    }
}

type Core = TargetConn<Rc<LocalSession>>;

fn core(p: Params, now: Instant) -> (Core, Rc<LocalSession>) {
    let s = Rc::new(LocalSession::new(CmdSn::new(1), p.depth));
    (TargetConn::new(s.clone(), config(p), now), s)
}

fn drain(c: &mut Core) -> Vec<Pdu> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn events(c: &mut Core) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn good(data_in: Bytes) -> Outcome {
    Outcome {
        status: Status::GOOD,
        sense: None,
        data_in,
        data_out_spdtl: 0,
    }
}

/// One write or read as the initiator sees it.
struct Task {
    write: bool,
    len: u32,
    progress: ReadProgress,
    buf: Vec<u8>,
    status: Option<u8>,
    r2t_sn: proto::serial::R2tSn,
}

/// A minimal initiator for the tests: issues commands inside the window it
/// learns from the responses, answers R2Ts, reassembles Data-In, checks
/// StatSN order.
struct Initiator {
    p: Params,
    window: IssueWindow,
    exp_stat_sn: StatSn,
    tasks: HashMap<u32, Task>,
    /// PDUs to deliver, per ITT (a sequence stays in order; the test
    /// interleaves the queues).
    queues: HashMap<u32, VecDeque<Pdu>>,
}

impl Initiator {
    fn new(p: Params) -> Self {
        let mut window = IssueWindow::new(CmdSn::new(1));
        window.reset(CmdSn::new(1), CmdSn::new(p.depth));
        Initiator {
            p,
            window,
            exp_stat_sn: StatSn::new(100),
            tasks: HashMap::new(),
            queues: HashMap::new(),
        }
    }

    /// Queue command `itt` if the window has room.
    fn issue(&mut self, itt: u32, write: bool, len: u32) -> bool {
        let Some(sn) = self.window.take() else {
            return false;
        };
        let mut c = command(itt, sn.get(), !write, write, len);
        let mut q = VecDeque::new();
        if write {
            let data = pattern(itt, len as usize);
            let plan = UnsolicitedPlan::new(
                len,
                UnsolicitedLimits {
                    immediate_data: self.p.immediate_data,
                    initial_r2t: self.p.initial_r2t,
                    first_burst_length: self.p.first_burst,
                    max_send_data_segment_length: self.p.target_mrdsl,
                },
            );
            c.data = data.slice(..plan.immediate as usize);
            c.final_ = !plan.data_out_follows();
            q.push_back(Pdu::ScsiCommand(c));
            let to = DataOutTarget {
                lun: 0,
                itt,
                ttt: RESERVED_TAG,
            };
            let mrdsl = self.p.target_mrdsl;
            q.extend(data_out_pdus(&data, to, plan.immediate, plan.end, mrdsl).map(Pdu::DataOut));
        } else {
            q.push_back(Pdu::ScsiCommand(c));
        }
        self.queues.insert(itt, q);
        self.tasks.insert(
            itt,
            Task {
                write,
                len,
                progress: ReadProgress::new(len as usize),
                buf: vec![0; len as usize],
                status: None,
                r2t_sn: proto::serial::R2tSn::new(0),
            },
        );
        true
    }

    fn stat_sn(&mut self, stat_sn: StatSn, exp: CmdSn, max: CmdSn) {
        assert_eq!(stat_sn, self.exp_stat_sn, "StatSN out of order");
        self.exp_stat_sn = self.exp_stat_sn.successor();
        self.window.update(exp, max);
    }

    /// One PDU from the target.
    fn receive(&mut self, pdu: Pdu) {
        match pdu {
            Pdu::R2t(r) => {
                self.window.update(r.exp_cmd_sn, r.max_cmd_sn);
                let t = self.tasks.get_mut(&r.itt).expect("R2T for a known task");
                assert!(t.write);
                proto::session::data_out::check_r2t(&r, t.len, self.p.max_burst, &mut t.r2t_sn)
                    .expect("valid R2T");
                let data = pattern(r.itt, t.len as usize);
                let to = DataOutTarget {
                    lun: 0,
                    itt: r.itt,
                    ttt: r.ttt,
                };
                let end = r.buffer_offset + r.desired_data_transfer_length;
                let pdus = data_out_pdus(&data, to, r.buffer_offset, end, self.p.target_mrdsl);
                let q = self.queues.entry(r.itt).or_default();
                q.extend(pdus.map(Pdu::DataOut));
            }
            Pdu::DataIn(d) => self.data_in(d),
            Pdu::ScsiResponse(r) => self.response(r),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn data_in(&mut self, d: DataIn) {
        assert!(d.data.len() <= self.p.initiator_mrdsl as usize);
        let t = self
            .tasks
            .get_mut(&d.itt)
            .expect("Data-In for a known task");
        let range = t.progress.on_data_in(&d).expect("Data-In in order");
        t.buf[range].copy_from_slice(&d.data);
        if let Some(s) = d.status {
            t.progress.finish(None).expect("whole data");
            t.status = Some(s);
            self.stat_sn(d.stat_sn, d.exp_cmd_sn, d.max_cmd_sn);
        } else {
            self.window.update(d.exp_cmd_sn, d.max_cmd_sn);
        }
    }

    fn response(&mut self, r: ScsiResponse) {
        self.stat_sn(r.stat_sn, r.exp_cmd_sn, r.max_cmd_sn);
        let t = self
            .tasks
            .get_mut(&r.itt)
            .expect("response for a known task");
        t.progress.finish(Some(r.exp_data_sn)).expect("whole data");
        t.status = Some(r.status);
    }
}

/// Execute an `Execute` event on the pattern device: a write must bring
/// exactly its pattern, a read returns it.
fn run_command(cmd: &proto::session::target::Command) -> Outcome {
    if cmd.write {
        assert_eq!(
            cmd.data_out,
            pattern(cmd.itt, cmd.edtl as usize),
            "write data"
        );
        Outcome {
            data_out_spdtl: cmd.edtl,
            ..good(Bytes::new())
        }
    } else {
        good(pattern(cmd.itt, cmd.edtl as usize))
    }
}

#[test]
fn window_admits_out_of_order_and_ignores_duplicates() {
    let now = Instant::now();
    let (mut c, s) = core(Params::default(), now);
    // CmdSN 3 before 1 and 2: admitted, ExpCmdSN stays 1.
    c.handle_pdu(Pdu::ScsiCommand(command(30, 3, true, false, 512)), now);
    c.handle_pdu(Pdu::ScsiCommand(command(10, 1, true, false, 512)), now);
    // A duplicate CmdSN (same or lower) is ignored.
    c.handle_pdu(Pdu::ScsiCommand(command(11, 1, true, false, 512)), now);
    // Beyond MaxCmdSN (1 + depth - 1 = 8): ignored.
    c.handle_pdu(Pdu::ScsiCommand(command(90, 9, true, false, 512)), now);
    // Immediate: takes no slot.
    let mut imm = command(50, 2, true, false, 512);
    imm.immediate = true;
    c.handle_pdu(Pdu::ScsiCommand(imm), now);
    let ev = events(&mut c);
    let itts: Vec<u32> = ev
        .iter()
        .map(|e| match e {
            Event::Execute(cmd) => cmd.itt,
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(itts, vec![30, 10, 50]);
    assert_eq!(s.in_flight(), 2);
    c.complete(30, good(pattern(30, 512)));
    let out = drain(&mut c);
    let Pdu::DataIn(d) = &out[0] else {
        panic!("{out:?}")
    };
    // ExpCmdSN 2 (CmdSN 2 not yet received); MaxCmdSN = ExpCmdSN + free
    // slots - 1 = 2 + 7 - 1.
    assert_eq!(
        (d.stat_sn.get(), d.exp_cmd_sn.get(), d.max_cmd_sn.get()),
        (100, 2, 8)
    );
    assert_eq!(d.status, Some(0));
    // CmdSN 2 arrives: ExpCmdSN jumps over 3.
    c.handle_pdu(Pdu::ScsiCommand(command(20, 2, true, false, 512)), now);
    c.complete(10, good(pattern(10, 512)));
    let Pdu::DataIn(d) = &drain(&mut c)[0] else {
        panic!()
    };
    assert_eq!(
        (d.stat_sn.get(), d.exp_cmd_sn.get(), d.max_cmd_sn.get()),
        (101, 4, 10)
    );
    // The same ITT while it is active: Reject "task in progress".
    c.handle_pdu(Pdu::ScsiCommand(command(20, 4, true, false, 512)), now);
    let Pdu::Reject(r) = &drain(&mut c)[0] else {
        panic!()
    };
    assert_eq!(r.reason, RejectReason::TASK_IN_PROGRESS);
    // The refused command's slot was given back.
    assert_eq!(s.in_flight(), 1);
}

#[test]
fn write_with_immediate_unsolicited_and_r2t_bursts() {
    let p = Params {
        first_burst: 4096,
        max_burst: 3000,
        max_r2t: 2,
        target_mrdsl: 1024,
        ..Params::default()
    };
    let now = Instant::now();
    let (mut c, _s) = core(p, now);
    let mut ini = Initiator::new(p);
    assert!(ini.issue(7, true, 20_000));
    let mut q = ini.queues.remove(&7).unwrap();
    // Command (1024 immediate) + 3 unsolicited Data-Out up to FirstBurst.
    assert_eq!(q.len(), 4);
    for pdu in q.drain(..) {
        c.handle_pdu(pdu, now);
    }
    let out = drain(&mut c);
    let offsets: Vec<(u32, u32, u32)> = out
        .iter()
        .map(|p| match p {
            Pdu::R2t(r) => (
                r.r2t_sn.get(),
                r.buffer_offset,
                r.desired_data_transfer_length,
            ),
            p => panic!("{p:?}"),
        })
        .collect();
    // MaxOutstandingR2T 2, bursts of MaxBurstLength after FirstBurstLength.
    assert_eq!(offsets, vec![(0, 4096, 3000), (1, 7096, 3000)]);
    let second_ttt = match &out[1] {
        Pdu::R2t(r) => r.ttt,
        _ => unreachable!(),
    };
    out.into_iter().for_each(|p| ini.receive(p));
    // Answer them out of order: the second R2T's data first.
    let q = ini.queues.remove(&7).unwrap();
    let (mut pending, first): (VecDeque<Pdu>, VecDeque<Pdu>) = q
        .into_iter()
        .partition(|p| matches!(p, Pdu::DataOut(d) if d.ttt == second_ttt));
    pending.extend(first);
    let mut seen_r2ts = 2;
    while let Some(pdu) = pending.pop_front() {
        c.handle_pdu(pdu, now);
        for p in drain(&mut c) {
            seen_r2ts += 1;
            ini.receive(p);
        }
        pending.extend(ini.queues.remove(&7).unwrap_or_default());
    }
    // 4096 + 6 bursts of 3000 = 22096 > 20000: 6 R2Ts in all.
    assert_eq!(seen_r2ts, 6);
    let ev = events(&mut c);
    let [Event::Execute(cmd)] = &ev[..] else {
        panic!("{ev:?}")
    };
    let outcome = run_command(cmd);
    c.complete(7, outcome);
    drain(&mut c).into_iter().for_each(|p| ini.receive(p));
    assert_eq!(ini.tasks[&7].status, Some(0));
}

#[test]
fn data_in_is_cut_by_mrdsl_and_max_burst_with_status_in_the_last() {
    let p = Params {
        initiator_mrdsl: 1000,
        max_burst: 2500,
        ..Params::default()
    };
    let now = Instant::now();
    let (mut c, _s) = core(p, now);
    c.handle_pdu(Pdu::ScsiCommand(command(1, 1, true, false, 6000)), now);
    assert!(matches!(events(&mut c)[..], [Event::Execute(_)]));
    // The device returns more than EDTL: cut, overflow residual.
    c.complete(1, good(pattern(1, 6500)));
    let out = drain(&mut c);
    let shape: Vec<(u32, u32, usize, bool, bool)> = out
        .iter()
        .map(|p| match p {
            Pdu::DataIn(d) => (
                d.data_sn.get(),
                d.buffer_offset,
                d.data.len(),
                d.final_,
                d.status.is_some(),
            ),
            p => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, 0, 1000, false, false),
            (1, 1000, 1000, false, false),
            (2, 2000, 500, true, false),
            (3, 2500, 1000, false, false),
            (4, 3500, 1000, false, false),
            (5, 4500, 500, true, false),
            (6, 5000, 1000, true, true),
        ]
    );
    let Pdu::DataIn(last) = &out[6] else { panic!() };
    assert!(last.overflow);
    assert_eq!(last.residual_count, 500);
    assert_eq!(last.stat_sn, StatSn::new(100));
}

#[test]
fn data_out_errors_fail_only_their_task() {
    let p = Params {
        initial_r2t: true,
        immediate_data: false,
        ..Params::default()
    };
    let now = Instant::now();
    let (mut c, s) = core(p, now);
    let mut w = command(5, 1, false, true, 4096);
    w.final_ = true;
    c.handle_pdu(Pdu::ScsiCommand(w), now);
    let Pdu::R2t(r) = &drain(&mut c)[0] else {
        panic!()
    };
    // DataSN 1 where 0 was expected.
    let bad = proto::pdu::DataOut {
        final_: false,
        lun: 0,
        itt: 5,
        ttt: r.ttt,
        exp_stat_sn: StatSn::new(0),
        data_sn: DataSn::new(1),
        buffer_offset: 0,
        data: Bytes::from(vec![0u8; 1024]),
    };
    c.handle_pdu(Pdu::DataOut(bad.clone()), now);
    let ev = events(&mut c);
    assert!(matches!(
        &ev[..],
        [Event::TaskFailed {
            itt: 5,
            error: TaskError::DataOut(_)
        }]
    ));
    let Pdu::ScsiResponse(resp) = &drain(&mut c)[0] else {
        panic!()
    };
    assert_eq!(resp.status, Status::CHECK_CONDITION.0);
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.task_count(), 0);
    // Later Data-Out for the failed task is discarded silently.
    c.handle_pdu(Pdu::DataOut(bad), now);
    assert!(drain(&mut c).is_empty());
    // Unsolicited data although InitialR2T=Yes fails at once.
    let mut w = command(6, 2, false, true, 4096);
    w.final_ = false;
    c.handle_pdu(Pdu::ScsiCommand(w), now);
    assert!(matches!(
        &events(&mut c)[..],
        [Event::TaskFailed { itt: 6, .. }]
    ));
    // The connection goes on.
    c.handle_pdu(Pdu::ScsiCommand(command(7, 3, true, false, 512)), now);
    assert!(matches!(&events(&mut c)[..], [Event::Execute(_)]));
}

#[test]
fn aborted_tasks_get_no_response() {
    let now = Instant::now();
    let (mut c, s) = core(Params::default(), now);
    c.handle_pdu(Pdu::ScsiCommand(command(1, 1, true, false, 512)), now);
    assert!(s.abort(1));
    c.complete(1, good(pattern(1, 512)));
    assert!(drain(&mut c).is_empty());
    assert_eq!(s.in_flight(), 0);
    assert_eq!(c.task_count(), 0);
}

fn nop_out(itt: u32, ttt: u32, cmd_sn: u32) -> NopOut {
    NopOut {
        immediate: true,
        lun: 0,
        itt,
        ttt,
        cmd_sn: CmdSn::new(cmd_sn),
        exp_stat_sn: StatSn::new(0),
        data: Bytes::from_static(b"ping data"),
    }
}

#[test]
fn nop_out_is_answered_and_pings_time_out() {
    let p = Params::default();
    let t0 = Instant::now();
    let s = Rc::new(LocalSession::new(CmdSn::new(1), 4));
    let mut cfg = config(p);
    cfg.nop_interval = Some(Duration::from_secs(5));
    let mut c = TargetConn::new(s, cfg, t0);
    // The initiator pings: echo ITT and data, consume a StatSN.
    c.handle_pdu(Pdu::NopOut(nop_out(9, RESERVED_TAG, 1)), t0);
    let Pdu::NopIn(n) = &drain(&mut c)[0] else {
        panic!()
    };
    assert_eq!((n.itt, n.ttt, n.stat_sn.get()), (9, RESERVED_TAG, 100));
    assert_eq!(&n.data[..], b"ping data");
    // Silence for NopInInterval: we ping with a TTT; no StatSN taken.
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    c.handle_timeout(t0 + Duration::from_secs(4));
    assert!(drain(&mut c).is_empty());
    let t1 = t0 + Duration::from_secs(5);
    c.handle_timeout(t1);
    let Pdu::NopIn(ping) = &drain(&mut c)[0] else {
        panic!()
    };
    assert_eq!(ping.itt, RESERVED_TAG);
    assert_eq!(ping.stat_sn, StatSn::new(101), "carries the next StatSN");
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(2)));
    // Answered: the timer goes back to the interval.
    let t2 = t1 + Duration::from_secs(1);
    c.handle_pdu(Pdu::NopOut(nop_out(RESERVED_TAG, ping.ttt, 2)), t2);
    assert!(drain(&mut c).is_empty(), "an answer needs no answer");
    assert_eq!(c.poll_timeout(), Some(t2 + Duration::from_secs(5)));
    // Next ping is not answered: the connection closes.
    let t3 = t2 + Duration::from_secs(5);
    c.handle_timeout(t3);
    assert_eq!(drain(&mut c).len(), 1);
    c.handle_timeout(t3 + Duration::from_millis(1999));
    assert!(events(&mut c).is_empty());
    c.handle_timeout(t3 + Duration::from_secs(2));
    assert!(matches!(
        &events(&mut c)[..],
        [Event::Closed(CloseReason::PingTimeout(_))]
    ));
    assert_eq!(c.poll_timeout(), None);
}

/// A connection ending with requests unanswered (a TMF still running in
/// the shell, a Logout) gives their window slots back to the session.
#[test]
fn release_held_frees_the_slots_of_unanswered_requests() {
    let now = Instant::now();
    let (mut c, s) = core(Params::default(), now);
    c.handle_pdu(
        Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: false,
            function: TmfFunction::ABORT_TASK,
            lun: 0,
            itt: 4,
            referenced_task_tag: 9,
            cmd_sn: CmdSn::new(1),
            exp_stat_sn: StatSn::new(0),
            ref_cmd_sn: CmdSn::new(1),
            exp_data_sn: DataSn::new(0),
            data: Bytes::new(),
        }),
        now,
    );
    c.handle_pdu(
        Pdu::LogoutRequest(LogoutRequest {
            immediate: false,
            reason_code: LogoutReason::CLOSE_CONNECTION,
            itt: 5,
            cid: 1,
            cmd_sn: CmdSn::new(2),
            exp_stat_sn: StatSn::new(0),
            data: Bytes::new(),
        }),
        now,
    );
    assert_eq!(events(&mut c).len(), 2);
    assert_eq!(s.in_flight(), 2, "both held until answered");
    c.release_held();
    assert_eq!(s.in_flight(), 0);
    c.release_held();
    assert_eq!(s.in_flight(), 0, "released once");
}

#[test]
fn logout_answers_then_closes() {
    let now = Instant::now();
    let (mut c, s) = core(Params::default(), now);
    c.handle_pdu(
        Pdu::LogoutRequest(LogoutRequest {
            immediate: false,
            reason_code: LogoutReason::CLOSE_CONNECTION,
            itt: 3,
            cid: 1,
            cmd_sn: CmdSn::new(1),
            exp_stat_sn: StatSn::new(0),
            data: Bytes::new(),
        }),
        now,
    );
    assert_eq!(s.in_flight(), 1);
    let ev = events(&mut c);
    let [Event::Logout(l)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert!(l.own);
    c.logout_response(3, l.decide_own());
    let Pdu::LogoutResponse(r) = &drain(&mut c)[0] else {
        panic!()
    };
    assert_eq!(r.response, LogoutResponseCode::CLOSED_SUCCESSFULLY);
    assert_eq!(
        (
            r.itt,
            r.stat_sn.get(),
            r.exp_cmd_sn.get(),
            r.max_cmd_sn.get()
        ),
        (3, 100, 2, 9)
    );
    assert!(matches!(
        &events(&mut c)[..],
        [Event::Closed(CloseReason::LoggedOut)]
    ));
    // Nothing is taken after close.
    c.handle_pdu(Pdu::ScsiCommand(command(4, 2, true, false, 512)), now);
    assert!(events(&mut c).is_empty());
}

#[test]
fn text_request_joined_then_answered_in_pieces() {
    let p = Params {
        initiator_mrdsl: 512,
        ..Params::default()
    };
    let now = Instant::now();
    let (mut c, s) = core(p, now);
    let mut t = proto::pdu::TextRequest {
        immediate: false,
        final_: false,
        continue_: true,
        lun: 0,
        itt: 8,
        ttt: RESERVED_TAG,
        cmd_sn: CmdSn::new(1),
        exp_stat_sn: StatSn::new(0),
        data: Bytes::from_static(b"SendTar"),
    };
    c.handle_pdu(Pdu::TextRequest(t.clone()), now);
    let Pdu::TextResponse(r) = &drain(&mut c)[0] else {
        panic!()
    };
    assert!(!r.final_ && r.data.is_empty());
    t.continue_ = false;
    t.final_ = true;
    t.cmd_sn = CmdSn::new(2);
    t.data = Bytes::from_static(b"gets=All\0");
    c.handle_pdu(Pdu::TextRequest(t.clone()), now);
    let ev = events(&mut c);
    let [Event::Text { itt: 8, keys, .. }] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(keys[0].0, "SendTargets");
    assert_eq!(s.in_flight(), 1, "held until answered");
    c.text_response(8, Bytes::from(vec![b'a'; 1200]));
    assert_eq!(s.in_flight(), 0);
    let Pdu::TextResponse(r1) = &drain(&mut c)[0] else {
        panic!()
    };
    assert!(r1.continue_ && r1.ttt != RESERVED_TAG && r1.data.len() == 512);
    // Continue with the TTT.
    t.cmd_sn = CmdSn::new(3);
    t.data = Bytes::new();
    t.ttt = r1.ttt;
    c.handle_pdu(Pdu::TextRequest(t.clone()), now);
    c.handle_pdu(
        Pdu::TextRequest(proto::pdu::TextRequest {
            cmd_sn: CmdSn::new(4),
            ..t.clone()
        }),
        now,
    );
    let out = drain(&mut c);
    let lens: Vec<(usize, bool)> = out
        .iter()
        .map(|p| match p {
            Pdu::TextResponse(r) => (r.data.len(), r.final_),
            p => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(lens, vec![(512, false), (176, true)]);
}

#[derive(Debug, Clone)]
struct Mix {
    p: Params,
    /// (write, length) of each command.
    cmds: Vec<(bool, u32)>,
    /// Drives every random choice of the run.
    seed: u64,
}

fn mix() -> impl Strategy<Value = Mix> {
    (
        any::<bool>(),
        any::<bool>(),
        1u32..=32,
        1u32..=32,
        1u32..=4,
        1u32..=16,
        1u32..=16,
        1u32..=8,
    )
        .prop_flat_map(|(imm, ir2t, fb, mb, r2t, tm, im, depth)| {
            let max_burst = mb * 512;
            let p = Params {
                immediate_data: imm,
                initial_r2t: ir2t,
                first_burst: (fb * 512).min(max_burst),
                max_burst,
                max_r2t: r2t,
                target_mrdsl: tm * 512,
                initiator_mrdsl: im * 512,
                depth,
            };
            let cmds = prop::collection::vec((any::<bool>(), 1u32..40_000), 1..24);
            (Just(p), cmds, any::<u64>())
        })
        .prop_map(|(p, cmds, seed)| Mix { p, cmds, seed })
}

/// A small deterministic generator for the run's choices.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// Run a command mix to the end: PDUs of different tasks interleaved at
/// random (commands may arrive out of CmdSN order), completions in random
/// order. Every command must end GOOD with the right data.
fn run_mix(m: &Mix) {
    let now = Instant::now();
    let (mut c, s) = core(m.p, now);
    let mut ini = Initiator::new(m.p);
    let mut rng = Rng(m.seed);
    let mut next = 0usize;
    let mut executing: Vec<proto::session::target::Command> = Vec::new();
    for _round in 0..100_000 {
        while next < m.cmds.len() {
            let (write, len) = m.cmds[next];
            if !ini.issue(next as u32 + 1, write, len) {
                break;
            }
            next += 1;
        }
        let ready: Vec<u32> = ini
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(i, _)| *i)
            .collect();
        if ready.is_empty() && executing.is_empty() {
            break;
        }
        // Deliver a PDU or complete a command, at random.
        if !ready.is_empty() && (executing.is_empty() || rng.below(3) > 0) {
            let mut ready = ready;
            ready.sort_unstable();
            let itt = ready[rng.below(ready.len())];
            let pdu = ini.queues.get_mut(&itt).unwrap().pop_front().unwrap();
            c.handle_pdu(pdu, now);
        } else {
            let cmd = executing.swap_remove(rng.below(executing.len()));
            let outcome = run_command(&cmd);
            c.complete(cmd.itt, outcome);
        }
        while let Some(e) = c.poll_event() {
            match e {
                Event::Execute(cmd) => executing.push(cmd),
                e => panic!("unexpected {e:?}"),
            }
        }
        while let Some(pdu) = c.poll_transmit() {
            ini.receive(pdu);
        }
    }
    assert_eq!(next, m.cmds.len(), "every command was issued");
    for (itt, t) in &ini.tasks {
        assert_eq!(t.status, Some(0), "ITT {itt} ended GOOD");
        if !t.write {
            assert_eq!(t.buf, pattern(*itt, t.len as usize), "read data ITT {itt}");
        }
    }
    assert_eq!(s.task_count(), 0);
    assert_eq!(s.in_flight(), 0);
    assert_eq!(c.task_count(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_command_mixes_complete_with_the_right_data(m in mix()) {
        run_mix(&m);
    }
}

/// A Data-Out whose data digest fails, as the decoder reports it.
fn corrupted(d: proto::pdu::DataOut) -> proto::pdu::DecodeError {
    use proto::pdu::{decode_frame, DecodeLimits, DigestConfig};
    let enc = Pdu::DataOut(d).encode(DigestConfig::BOTH).to_bytes();
    let mut bad = bytes::BytesMut::from(&enc[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0x40; // the data digest
    let limits = DecodeLimits {
        max_data_segment_length: 65536,
        digests: DigestConfig::BOTH,
    };
    decode_frame(&mut bad, &limits).unwrap_err()
}

#[test]
fn data_digest_error_on_data_out_ends_the_write_when_its_sequences_end() {
    let p = Params {
        immediate_data: false,
        initial_r2t: true,
        max_r2t: 2,
        max_burst: 2048,
        target_mrdsl: 1024,
        ..Params::default()
    };
    let now = Instant::now();
    let (mut c, s) = core(p, now);
    let mut w = command(5, 1, false, true, 4096);
    w.final_ = true;
    c.handle_pdu(Pdu::ScsiCommand(w), now);
    let r2ts: Vec<u32> = drain(&mut c)
        .iter()
        .map(|p| match p {
            Pdu::R2t(r) => r.ttt,
            p => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(r2ts.len(), 2);
    let data = pattern(5, 4096);
    let seq = |ttt: u32, from: u32| -> Vec<proto::pdu::DataOut> {
        let to = DataOutTarget {
            lun: 0,
            itt: 5,
            ttt,
        };
        data_out_pdus(&data, to, from, from + 2048, 1024).collect()
    };
    let (a, b) = (seq(r2ts[0], 0), seq(r2ts[1], 2048));
    // The first PDU of the first sequence fails its digest: Reject, and
    // the task waits for both sequences to end.
    c.handle_decode_error(&corrupted(a[0].clone()), now);
    let Pdu::Reject(rej) = &drain(&mut c)[0] else {
        panic!()
    };
    assert_eq!(rej.reason, RejectReason::DATA_DIGEST_ERROR);
    c.handle_pdu(Pdu::DataOut(a[1].clone()), now);
    c.handle_pdu(Pdu::DataOut(b[0].clone()), now);
    assert!(drain(&mut c).is_empty(), "sequence 2 still open");
    c.handle_pdu(Pdu::DataOut(b[1].clone()), now);
    let ev = events(&mut c);
    assert!(
        matches!(
            &ev[..],
            [Event::TaskFailed {
                itt: 5,
                error: TaskError::DataDigest
            }]
        ),
        "{ev:?}"
    );
    let Pdu::ScsiResponse(resp) = &drain(&mut c)[0] else {
        panic!()
    };
    assert_eq!(resp.status, Status::CHECK_CONDITION.0);
    // Fixed-format sense: key ABORTED COMMAND (0Bh), ASC/ASCQ 47h/05h.
    let sense = &resp.data[2..];
    assert_eq!((sense[2] & 0x0f, sense[12], sense[13]), (0x0b, 0x47, 0x05));
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn poll_transmit_all_gives_what_poll_transmit_gives() {
    let p = Params {
        initiator_mrdsl: 512,
        ..Params::default()
    };
    let now = Instant::now();
    let run = |all: bool| {
        let (mut c, _s) = core(p, now);
        for itt in 1..=3 {
            c.handle_pdu(Pdu::ScsiCommand(command(itt, itt, true, false, 2000)), now);
            c.complete(itt, good(pattern(itt, 2000)));
        }
        c.handle_pdu(Pdu::NopOut(nop_out(9, RESERVED_TAG, 4)), now);
        if all {
            c.poll_transmit_all()
        } else {
            drain(&mut c)
        }
    };
    let (one_by_one, all) = (run(false), run(true));
    assert_eq!(one_by_one.len(), 13);
    assert_eq!(format!("{one_by_one:?}"), format!("{all:?}"));
}
