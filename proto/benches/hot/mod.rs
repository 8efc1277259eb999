//! The hot paths measured by the criterion benches (`proto/benches/*.rs`)
//! and counted in instructions by `proto/examples/hotpath.rs` under
//! callgrind (`scripts/bench-callgrind.sh`), shared so that both measure
//! the same work.
//!
//! * PDUs as they cross the wire on the data path: a READ(16) SCSI Command
//!   (header only, RFC 7143 §11.3), a Data-In with data (§11.7), a SCSI
//!   Response (§11.4), each encoded and decoded with and without CRC32C
//!   digests (§11.1, §13.1).
//! * The target's sans-IO connection core (`proto::session::target`): one
//!   command admitted (`handle_pdu`), handed to the device server
//!   (`poll_event`), completed (`complete`) and its answer drained
//!   (`poll_transmit`), as the target's shell does per command.

// Each bench binary uses a part of this module.
#![allow(dead_code)]

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::pdu::{DataIn, DigestConfig, Pdu, ScsiCommand, ScsiResponse, TaskAttr};
use proto::scsi::Status;
use proto::serial::{CmdSn, DataSn, StatSn};
use proto::session::target::{ConnConfig, Event, LocalSession, Outcome, TargetConn};
use proto::session::{DataInLimits, WriteLimits};

/// A READ(16) or WRITE(16) CDB of `len` bytes at LBA 0 (512-byte blocks).
fn cdb16(write: bool, len: u32) -> Bytes {
    let mut c = [0u8; 16];
    c[0] = if write { 0x8a } else { 0x88 };
    c[10..14].copy_from_slice(&(len / 512).to_be_bytes());
    Bytes::copy_from_slice(&c)
}

/// A SCSI Command for `len` bytes; a write carries `immediate` as its
/// immediate data.
pub fn scsi_command(itt: u32, cmd_sn: u32, write: bool, len: u32, immediate: Bytes) -> ScsiCommand {
    ScsiCommand {
        immediate: false,
        final_: true,
        read: !write,
        write,
        attr: TaskAttr::SIMPLE,
        lun: 0,
        itt,
        expected_data_transfer_length: len,
        cmd_sn: CmdSn::new(cmd_sn),
        exp_stat_sn: StatSn::new(1),
        cdb: cdb16(write, len),
        bidi_read_length: None,
        data: immediate,
    }
}

/// A final Data-In with status (phase collapse, §11.7.4) carrying `data`.
pub fn data_in(data: Bytes) -> DataIn {
    DataIn {
        final_: true,
        ack: false,
        overflow: false,
        underflow: false,
        status: Some(0),
        lun: 0,
        itt: 7,
        ttt: proto::pdu::RESERVED_TAG,
        stat_sn: StatSn::new(10),
        exp_cmd_sn: CmdSn::new(11),
        max_cmd_sn: CmdSn::new(42),
        data_sn: DataSn::new(0),
        buffer_offset: 0,
        residual_count: 0,
        data,
    }
}

/// A GOOD SCSI Response without sense (header only).
pub fn scsi_response() -> ScsiResponse {
    proto::session::data_in::status_only(7, Status::GOOD, None, Default::default())
}

/// `len` bytes of a fixed pattern.
pub fn payload(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31) as u8).collect::<Vec<u8>>().into()
}

/// Encoded PDU as one frame, for the decoders.
pub fn frame(pdu: &Pdu, digests: DigestConfig) -> Bytes {
    pdu.encode(digests).to_bytes()
}

/// Digest settings by name, for bench ids.
pub const DIGESTS: [(&str, DigestConfig); 2] =
    [("none", DigestConfig::NONE), ("crc32c", DigestConfig::BOTH)];

/// One target connection in the full-feature phase, driven as the shell
/// drives it: a session window of 128 commands, the negotiated values our
/// initiator offers (MaxRecvDataSegmentLength 256 KiB both ways, immediate
/// data on, FirstBurstLength 256 KiB, MaxBurstLength 1 MiB), no pings.
pub struct Core {
    conn: TargetConn<Rc<LocalSession>>,
    now: Instant,
    itt: u32,
    cmd_sn: u32,
}

impl Core {
    /// A connection whose Data-In segments are at most `mrdsl` bytes (the
    /// initiator's MaxRecvDataSegmentLength).
    pub fn new(mrdsl: u32) -> Core {
        let now = Instant::now();
        let config = ConnConfig {
            write: WriteLimits {
                immediate_data: true,
                initial_r2t: false,
                first_burst_length: 256 << 10,
                max_burst_length: 1 << 20,
                max_outstanding_r2t: 1,
                max_recv_data_segment_length: 256 << 10,
            },
            data_in: DataInLimits {
                max_send_data_segment_length: mrdsl,
                max_burst_length: 1 << 20,
            },
            discovery: false,
            cid: 1,
            first_stat_sn: StatSn::new(1),
            nop_interval: None,
            nop_timeout: Duration::from_secs(30),
            max_write_buffer: 64 << 20,
        };
        let session = Rc::new(LocalSession::new(CmdSn::new(1), 128));
        Core {
            conn: TargetConn::new(session, config, now),
            now,
            itt: 0,
            cmd_sn: 1,
        }
    }

    /// One READ of `data.len()` bytes: admit, execute (the device answers
    /// with `data`), complete, drain. Returns the PDUs sent.
    pub fn read(&mut self, data: &Bytes) -> usize {
        let c = scsi_command(
            self.itt,
            self.cmd_sn,
            false,
            data.len() as u32,
            Bytes::new(),
        );
        self.run(c, data.clone())
    }

    /// One WRITE whose data all comes as immediate data.
    pub fn write_immediate(&mut self, data: &Bytes) -> usize {
        let c = scsi_command(self.itt, self.cmd_sn, true, data.len() as u32, data.clone());
        self.run(c, Bytes::new())
    }

    fn run(&mut self, c: ScsiCommand, data_in: Bytes) -> usize {
        self.itt = self.itt.wrapping_add(1);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        let write = c.write;
        self.conn.handle_pdu(Pdu::ScsiCommand(c), self.now);
        let cmd = match self.conn.poll_event() {
            Some(Event::Execute(cmd)) => cmd,
            other => panic!("expected a command to execute, got {other:?}"),
        };
        let outcome = Outcome {
            status: Status::GOOD,
            sense: None,
            data_in,
            data_out_spdtl: if write { cmd.edtl } else { 0 },
        };
        std::hint::black_box(&cmd.data_out);
        self.conn.complete(cmd.itt, outcome);
        let mut n = 0;
        while let Some(pdu) = self.conn.poll_transmit() {
            std::hint::black_box(&pdu);
            n += 1;
        }
        n
    }
}
