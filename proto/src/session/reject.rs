//! What an initiator does with a Reject and with a transport CRC failure
//! (RFC 7143 §7.3, §7.8, §11.17.1, §11.4.7.2), so that both ends agree on
//! which PDUs are lost and who recovers them.
//!
//! * A Reject of a SCSI Command PDU means the command was discarded and
//!   its CmdSN left as a gap. §7.3: "Upon receiving the Reject, the
//!   initiator MUST plug the CmdSN gap in order to continue to use the
//!   session. The gap may be plugged either by transmitting a command PDU
//!   with the same CmdSN or by aborting the task". For a data digest error
//!   the command is sent again, unchanged (same ITT, CmdSN, flags, CDB and
//!   data, on the same connection: §7.2.1 "Usage of Retry"); §7.8: "the
//!   immediate data is implicitly recovered when the task is retried,
//!   followed by the entire data transfer for the task". Any other reason
//!   (the command itself is wrong) fails the command, and the gap is
//!   plugged with ABORT TASK (RefCmdSN, §11.5.1).
//! * A Reject of any other PDU of a task (a Data-Out, say) does not end the
//!   task: §7.3 "Targets MUST NOT implicitly terminate an active task by
//!   sending a Reject PDU ... the initiator can eventually expect a
//!   response". The initiator waits for it (bounded by its command
//!   timeout). For a Data-Out with a bad digest that response is CHECK
//!   CONDITION, ABORTED COMMAND, PROTOCOL SERVICE CRC ERROR (47h/05h,
//!   §11.4.7.2), after which the command may be issued again as a new one
//!   ([`is_protocol_crc_error`]).

use crate::pdu::{Opcode, Reject, RejectReason};
use crate::scsi::sense::{Asc, Sense, SenseKey};
use crate::scsi::Status;

/// How many times one command is sent again after a transport CRC failure
/// before the initiator gives up on it (and, for a CmdSN gap it cannot
/// plug, fails the connection so that session recovery clears the gap).
pub const MAX_CRC_RETRIES: u32 = 3;

/// The initiator's answer to a Reject ([`on_reject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectAction {
    /// Send the command with this ITT again, unchanged (same CmdSN).
    RetryCommand { itt: u32 },
    /// The command with this ITT was discarded for a reason a retry would
    /// not cure: fail it.
    FailCommand { itt: u32 },
    /// A PDU of a running task was rejected: the target still ends the
    /// task with a response; wait for it.
    AwaitResponse { itt: u32 },
    /// Not about a task (a NOP-Out, Text, Logout or an unreadable header):
    /// nothing to do here but log it.
    Other,
}

/// Decide what a Reject means for the task it names (module docs).
pub fn on_reject(r: &Reject) -> RejectAction {
    let (Some(op), Some(itt)) = (r.rejected_opcode(), r.rejected_itt()) else {
        return RejectAction::Other;
    };
    match op {
        Opcode::SCSI_COMMAND if r.reason == RejectReason::DATA_DIGEST_ERROR => {
            RejectAction::RetryCommand { itt }
        }
        Opcode::SCSI_COMMAND => RejectAction::FailCommand { itt },
        Opcode::DATA_OUT => RejectAction::AwaitResponse { itt },
        _ => RejectAction::Other,
    }
}

/// Whether a command ended with CHECK CONDITION, ABORTED COMMAND,
/// PROTOCOL SERVICE CRC ERROR: its data was lost to a digest error and
/// nothing was written, so it may be issued again (RFC 7143 §7.8).
pub fn is_protocol_crc_error(status: u8, sense: Option<&Sense>) -> bool {
    status == Status::CHECK_CONDITION.0
        && sense.is_some_and(|s| {
            s.key == SenseKey::ABORTED_COMMAND && s.asc == Asc::PROTOCOL_SERVICE_CRC_ERROR
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{DataOut, DigestConfig, NopOut, Pdu, ScsiCommand, TaskAttr};
    use crate::serial::{CmdSn, DataSn, SerialNumber, StatSn};
    use bytes::Bytes;

    fn reject_of(pdu: Pdu, reason: RejectReason) -> Reject {
        Reject {
            reason,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            data_sn_or_r2t_sn: SerialNumber::new(0),
            data: pdu.encode(DigestConfig::NONE).header,
        }
    }

    fn command(itt: u32) -> Pdu {
        Pdu::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: true,
            read: false,
            write: true,
            attr: TaskAttr::SIMPLE,
            lun: 0,
            itt,
            expected_data_transfer_length: 512,
            cmd_sn: CmdSn::new(9),
            exp_stat_sn: StatSn::new(0),
            cdb: Bytes::from_static(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            bidi_read_length: None,
            data: Bytes::from_static(&[1; 512]),
        })
    }

    #[test]
    fn command_with_bad_data_is_retried_other_rejects_fail_it() {
        let r = reject_of(command(0x42), RejectReason::DATA_DIGEST_ERROR);
        assert_eq!(on_reject(&r), RejectAction::RetryCommand { itt: 0x42 });
        let r = reject_of(command(0x42), RejectReason::PROTOCOL_ERROR);
        assert_eq!(on_reject(&r), RejectAction::FailCommand { itt: 0x42 });
    }

    #[test]
    fn data_out_reject_waits_for_the_response() {
        let d = Pdu::DataOut(DataOut {
            final_: true,
            lun: 0,
            itt: 0x43,
            ttt: 5,
            exp_stat_sn: StatSn::new(0),
            data_sn: DataSn::new(0),
            buffer_offset: 0,
            data: Bytes::from_static(b"x"),
        });
        let r = reject_of(d, RejectReason::DATA_DIGEST_ERROR);
        assert_eq!(on_reject(&r), RejectAction::AwaitResponse { itt: 0x43 });
    }

    #[test]
    fn other_rejects_are_only_logged() {
        let n = Pdu::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: 7,
            ttt: crate::pdu::RESERVED_TAG,
            cmd_sn: CmdSn::new(0),
            exp_stat_sn: StatSn::new(0),
            data: Bytes::from_static(b"ping"),
        });
        let r = reject_of(n, RejectReason::DATA_DIGEST_ERROR);
        assert_eq!(on_reject(&r), RejectAction::Other);
        let mut empty = reject_of(command(1), RejectReason::DATA_DIGEST_ERROR);
        empty.data = Bytes::new();
        assert_eq!(on_reject(&empty), RejectAction::Other);
    }

    #[test]
    fn crc_error_is_recognised_only_with_its_sense() {
        let crc = Sense::new(SenseKey::ABORTED_COMMAND, Asc::PROTOCOL_SERVICE_CRC_ERROR);
        assert!(is_protocol_crc_error(0x02, Some(&crc)));
        assert!(!is_protocol_crc_error(0x00, Some(&crc)));
        assert!(!is_protocol_crc_error(0x02, None));
        let phase = Sense::new(SenseKey::ABORTED_COMMAND, Asc::DATA_PHASE_ERROR);
        assert!(!is_protocol_crc_error(0x02, Some(&phase)));
    }
}
