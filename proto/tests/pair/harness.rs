//! The pair: an initiator core (`proto::session::initiator`) and one
//! target core per connection (`proto::session::target::TargetConn`, all
//! sharing one `LocalSession`: one CmdSN window for the session, MC/S)
//! wired to each other in memory. Every PDU goes through the wire format
//! (encode, then decode). Time is a base `Instant` plus what the test
//! advances; the cores never read a clock. The device is a `Vec<u8>` of
//! 512-byte blocks answering READ(10) and WRITE(10).
//!
//! Each connection is two FIFO queues (TCP keeps order within a
//! connection); the test chooses which queue delivers next, so PDUs of
//! different connections can be reordered at will, and may take PDUs out
//! of a queue (loss).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proto::pdu::{DigestConfig, Pdu, TaskMgmtResponse, TmfFunction, TmfResponse};
use proto::scsi::Status;
use proto::serial::{CmdSn, StatSn};
use proto::session::initiator::{
    Command, CommandError, ConnError, ConnId, ConnParams, Data, Event, InitiatorConfig,
    InitiatorSession, Response,
};
use proto::session::target::{self, ConnConfig, LocalSession, Outcome, TargetConn};
use proto::session::{DataInLimits, WriteLimits};

pub const BLOCK: usize = 512;

/// Negotiated values of the pair (the same on every connection).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub first_burst: u32,
    pub max_burst: u32,
    pub max_r2t: u32,
    /// The target's MaxRecvDataSegmentLength (immediate data, Data-Out).
    pub target_mrdsl: u32,
    /// The initiator's MaxRecvDataSegmentLength (Data-In).
    pub initiator_mrdsl: u32,
    /// The target's queue depth (CmdSN window).
    pub depth: u32,
    pub conns: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            immediate_data: true,
            initial_r2t: false,
            first_burst: 8192,
            max_burst: 16384,
            max_r2t: 1,
            target_mrdsl: 4096,
            initiator_mrdsl: 4096,
            depth: 16,
            conns: 1,
        }
    }
}

pub const FIRST_CMD_SN: u32 = 0xffff_fff0;

/// Where a PDU travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToTarget,
    ToInitiator,
}

pub struct Pair {
    pub now: Instant,
    pub ini: InitiatorSession<u64>,
    pub session: Rc<LocalSession>,
    pub tgt: Vec<TargetConn<Rc<LocalSession>>>,
    pub to_tgt: Vec<VecDeque<Pdu>>,
    pub to_ini: Vec<VecDeque<Pdu>>,
    pub disk: Vec<u8>,
    /// Commands the device holds instead of answering (conn, command).
    pub hold: bool,
    pub held: Vec<(usize, target::Command)>,
    pub done: HashMap<u64, Result<Response, CommandError>>,
    pub tmf: Vec<Result<TaskMgmtResponse, proto::session::initiator::ControlError>>,
    pub logouts: Vec<Result<proto::pdu::LogoutResponse, proto::session::initiator::ControlError>>,
    pub failed: Vec<ConnError>,
    pub closed: Vec<(usize, target::CloseReason)>,
    /// Every PDU the target received, by connection.
    pub seen_by_target: Vec<Vec<Pdu>>,
    next_id: u64,
}

impl Pair {
    pub fn new(l: Limits, blocks: usize) -> Pair {
        Pair::with_timers(l, blocks, None)
    }

    /// `target_nop`: the target's own ping interval.
    pub fn with_timers(l: Limits, blocks: usize, target_nop: Option<Duration>) -> Pair {
        let now = Instant::now();
        let config = InitiatorConfig {
            immediate_data: l.immediate_data,
            initial_r2t: l.initial_r2t,
            first_burst_length: l.first_burst,
            max_burst_length: l.max_burst,
            nop_interval: Duration::from_secs(5),
            nop_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
        };
        let first = CmdSn::new(FIRST_CMD_SN);
        let mut ini = InitiatorSession::new(config, first);
        let session = Rc::new(LocalSession::new(first, l.depth));
        let mut tgt = Vec::new();
        for cid in 0..l.conns {
            let stat_sn = StatSn::new(1000 * (cid as u32 + 1));
            let c = ConnConfig {
                write: WriteLimits {
                    immediate_data: l.immediate_data,
                    initial_r2t: l.initial_r2t,
                    first_burst_length: l.first_burst,
                    max_burst_length: l.max_burst,
                    max_outstanding_r2t: l.max_r2t,
                    max_recv_data_segment_length: l.target_mrdsl,
                },
                data_in: DataInLimits {
                    max_send_data_segment_length: l.initiator_mrdsl,
                    max_burst_length: l.max_burst,
                },
                discovery: false,
                cid: cid as u16,
                first_stat_sn: stat_sn,
                nop_interval: target_nop,
                nop_timeout: Duration::from_secs(10),
                max_write_buffer: 1 << 24,
            };
            tgt.push(TargetConn::new(session.clone(), c, now));
            let p = ConnParams {
                cid: cid as u16,
                exp_stat_sn: stat_sn,
                max_send_data_segment_length: l.target_mrdsl,
            };
            ini.add_connection(p, now);
        }
        ini.reset_window(first, first.wrapping_add(l.depth - 1), now);
        Pair {
            now,
            ini,
            session,
            tgt,
            to_tgt: vec![VecDeque::new(); l.conns],
            to_ini: vec![VecDeque::new(); l.conns],
            disk: (0..blocks * BLOCK).map(|i| (i * 7 + 3) as u8).collect(),
            hold: false,
            held: Vec::new(),
            done: HashMap::new(),
            tmf: Vec::new(),
            logouts: Vec::new(),
            failed: Vec::new(),
            closed: Vec::new(),
            seen_by_target: vec![Vec::new(); l.conns],
            next_id: 0,
        }
    }

    /// Submit READ(10) of `blocks` at `lba`; returns the command's id.
    pub fn read(&mut self, lba: u32, blocks: u16) -> u64 {
        let len = u32::from(blocks) * BLOCK as u32;
        let buf = Vec::new();
        self.submit(cdb(0x28, lba, blocks), Data::Read { len, buf })
    }

    /// Submit WRITE(10) of `data` at `lba`.
    pub fn write(&mut self, lba: u32, data: Bytes) -> u64 {
        let blocks = (data.len() / BLOCK) as u16;
        self.submit(cdb(0x2a, lba, blocks), Data::Write(data))
    }

    fn submit(&mut self, cdb: Bytes, data: Data) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let cmd = Command {
            lun: 0,
            cdb,
            data,
            ctx: id,
        };
        self.ini.submit(cmd, self.now);
        self.flush();
        id
    }

    /// Advance the clock and run both sides' timers.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.ini.handle_timeout(self.now);
        for t in self.tgt.iter_mut() {
            t.handle_timeout(self.now);
        }
        self.flush();
    }

    /// Move what the cores produced into the queues and act on events,
    /// without delivering anything.
    pub fn flush(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.ini.poll_transmit() {
                self.to_tgt[t.conn.0].push_back(wire(t.pdu));
                moved = true;
            }
            for i in 0..self.tgt.len() {
                self.target_events(i);
                for p in self.tgt[i].poll_transmit_all() {
                    self.to_ini[i].push_back(wire(p));
                    moved = true;
                }
            }
            self.initiator_events();
            if !moved {
                return;
            }
        }
    }

    fn initiator_events(&mut self) {
        while let Some(e) = self.ini.poll_event() {
            match e {
                Event::Completed { ctx, result, .. } => {
                    assert!(self.done.insert(ctx, result).is_none(), "{ctx} twice");
                }
                Event::Tmf { result, .. } => self.tmf.push(result),
                Event::Logout { result, .. } => self.logouts.push(result),
                Event::Failed { error, .. } => self.failed.push(error),
                Event::Async { .. } => {}
            }
        }
    }

    /// The test target's shell: the device, TMF and Logout answers.
    fn target_events(&mut self, i: usize) {
        while let Some(e) = self.tgt[i].poll_event() {
            match e {
                target::Event::Execute(c) if self.hold => self.held.push((i, c)),
                target::Event::Execute(c) => self.execute(i, c),
                target::Event::TaskManagement(r) => {
                    let response = self.tmf_answer(&r);
                    self.tgt[i].tmf_response(TaskMgmtResponse {
                        response,
                        itt: r.itt,
                        stat_sn: StatSn::new(0),
                        exp_cmd_sn: CmdSn::new(0),
                        max_cmd_sn: CmdSn::new(0),
                        data: Bytes::new(),
                    });
                }
                target::Event::Logout(l) => self.tgt[i].logout_response(l.itt, l.decide_own()),
                target::Event::Closed(why) => self.closed.push((i, why)),
                target::Event::Text { itt, .. } => self.tgt[i].text_reject(itt),
                target::Event::TaskFailed { .. } => {}
            }
        }
    }

    /// ABORT TASK only (RFC 7143 §11.5.1): abort the task if it exists,
    /// else consider its CmdSN received.
    fn tmf_answer(&mut self, r: &proto::pdu::TaskMgmtRequest) -> TmfResponse {
        if r.function != TmfFunction::ABORT_TASK {
            return TmfResponse::TMF_NOT_SUPPORTED;
        }
        if self.session.abort(r.referenced_task_tag) {
            return TmfResponse::FUNCTION_COMPLETE;
        }
        let (rc, c) = (r.ref_cmd_sn, r.cmd_sn);
        if self.session.consider_received(rc, c) {
            TmfResponse::FUNCTION_COMPLETE
        } else {
            TmfResponse::TASK_DOES_NOT_EXIST
        }
    }

    /// Run a held command (in the order held).
    pub fn release_held(&mut self) {
        for (i, c) in std::mem::take(&mut self.held) {
            self.execute(i, c);
        }
        self.flush();
    }

    fn execute(&mut self, i: usize, c: target::Command) {
        let lba = u32::from_be_bytes([c.cdb[2], c.cdb[3], c.cdb[4], c.cdb[5]]) as usize;
        let blocks = u16::from_be_bytes([c.cdb[7], c.cdb[8]]) as usize;
        let range = lba * BLOCK..(lba + blocks) * BLOCK;
        assert!(range.end <= self.disk.len(), "test I/O beyond the disk");
        let mut outcome = Outcome {
            status: Status::GOOD,
            sense: None,
            data_in: Bytes::new(),
            data_out_spdtl: 0,
        };
        match c.cdb[0] {
            0x28 => outcome.data_in = Bytes::copy_from_slice(&self.disk[range]),
            0x2a => {
                assert_eq!(c.data_out.len(), range.len(), "write data whole");
                self.disk[range.clone()].copy_from_slice(&c.data_out);
                outcome.data_out_spdtl = range.len() as u32;
            }
            op => panic!("opcode {op:#x}"),
        }
        self.tgt[i].complete(c.itt, outcome);
    }

    /// Deliver the next PDU of one queue: `pick` chooses among the
    /// non-empty queues (modulo their number). False when all are empty.
    pub fn step(&mut self, pick: usize) -> bool {
        let mut ready: Vec<(Dir, usize)> = Vec::new();
        for c in 0..self.to_tgt.len() {
            if !self.to_tgt[c].is_empty() {
                ready.push((Dir::ToTarget, c));
            }
            if !self.to_ini[c].is_empty() {
                ready.push((Dir::ToInitiator, c));
            }
        }
        if ready.is_empty() {
            return false;
        }
        let (dir, c) = ready[pick % ready.len()];
        self.deliver(dir, c);
        true
    }

    /// Deliver the first PDU queued on connection `c` in direction `dir`.
    pub fn deliver(&mut self, dir: Dir, c: usize) {
        let now = self.now;
        match dir {
            Dir::ToTarget => {
                let Some(p) = self.to_tgt[c].pop_front() else {
                    return;
                };
                self.seen_by_target[c].push(p.clone());
                self.tgt[c].handle_pdu(p, now);
            }
            Dir::ToInitiator => {
                let Some(p) = self.to_ini[c].pop_front() else {
                    return;
                };
                if let Err(e) = self.ini.handle_pdu(ConnId(c), p, now) {
                    self.failed.push(e);
                }
            }
        }
        self.flush();
    }

    /// Deliver everything, queues taken in turn.
    pub fn run(&mut self) {
        let mut k = 0;
        while self.step(k) {
            k += 1;
        }
    }

    /// Deliver everything in the order `picks` gives (then in turn).
    pub fn run_with(&mut self, picks: &[usize]) {
        let mut k = 0;
        while self.step(picks.get(k).copied().unwrap_or(k)) {
            k += 1;
        }
    }

    /// The result of command `id`, which must have completed.
    pub fn result(&self, id: u64) -> &Result<Response, CommandError> {
        self.done
            .get(&id)
            .unwrap_or_else(|| panic!("command {id} did not complete"))
    }

    /// The data of read `id`, which must have ended GOOD.
    pub fn data(&self, id: u64) -> &[u8] {
        let r = self.result(id).as_ref().expect("command failed");
        assert_eq!(r.status, Status::GOOD.0);
        &r.data
    }

    /// The target's PDUs of one kind seen on connection `c`.
    pub fn count_seen(&self, c: usize, f: impl Fn(&Pdu) -> bool) -> usize {
        self.seen_by_target[c].iter().filter(|p| f(p)).count()
    }
}

/// READ(10)/WRITE(10) CDB.
pub fn cdb(op: u8, lba: u32, blocks: u16) -> Bytes {
    let mut c = [0u8; 10];
    c[0] = op;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    Bytes::copy_from_slice(&c)
}

/// A PDU as the other end decodes it.
fn wire(p: Pdu) -> Pdu {
    let e = p.encode(DigestConfig::NONE);
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&e.header);
    frame.extend_from_slice(&e.data);
    frame.extend_from_slice(&e.trailer);
    // (The CDB comes back padded to 16 bytes; everything else as sent.)
    Pdu::decode(frame.freeze(), DigestConfig::NONE).expect("decodes")
}

/// Deterministic data for a write.
pub fn pattern(seed: u64, len: usize) -> Bytes {
    (0..len)
        .map(|i| (seed as usize).wrapping_mul(131).wrapping_add(i * 29) as u8)
        .collect::<Vec<u8>>()
        .into()
}
