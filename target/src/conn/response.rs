//! Sense data for commands the transport fails itself, before or instead
//! of the device server (the Data-In/SCSI Response building is
//! `proto::session::data_in`).

use bytes::Bytes;
use proto::scsi::{Asc, Sense, SenseKey};

/// Fixed-format sense: ILLEGAL REQUEST, INVALID FIELD IN CDB (SPC-5).
pub fn sense_invalid_field_in_cdb() -> Bytes {
    Bytes::copy_from_slice(
        &Sense::new(SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB).encode_fixed(),
    )
}

/// Fixed-format sense: ABORTED COMMAND, DATA PHASE ERROR (4Bh/00h), for a
/// write whose Data-Out sequence broke the rules (DataSN, offsets, bursts).
pub fn sense_data_phase_error() -> Bytes {
    Bytes::copy_from_slice(
        &Sense::new(SenseKey::ABORTED_COMMAND, Asc::new(0x4b, 0x00)).encode_fixed(),
    )
}
