//! Sense data for commands the transport fails itself, before or instead
//! of the device server (the Data-In/SCSI Response building is
//! `proto::session::data_in`). The format (fixed or descriptor) is chosen
//! where the response is built, from the LU's D_SENSE.

use proto::scsi::{Asc, Sense, SenseKey};

/// ILLEGAL REQUEST, INVALID FIELD IN CDB (SPC-5), for a command the
/// transport refuses before the device server sees it.
pub fn sense_invalid_field_in_cdb() -> Sense {
    Sense::new(SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB)
}

/// ABORTED COMMAND, DATA PHASE ERROR (4Bh/00h), for a write whose Data-Out
/// sequence broke the rules (DataSN, offsets, bursts).
pub fn sense_data_phase_error() -> Sense {
    Sense::new(SenseKey::ABORTED_COMMAND, Asc::DATA_PHASE_ERROR)
}

/// ABORTED COMMAND, PROTOCOL SERVICE CRC ERROR (47h/05h), for a write one
/// of whose Data-Out failed its data digest (RFC 7143 §7.8, §11.4.7.2).
/// Nothing was written; the initiator may retry the command.
pub fn sense_protocol_crc_error() -> Sense {
    Sense::new(SenseKey::ABORTED_COMMAND, Asc::PROTOCOL_SERVICE_CRC_ERROR)
}
