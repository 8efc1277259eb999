//! SCSI helpers shared by the initiator and the target (SAM-5, SPC-5,
//! SBC-4), sans-IO: status codes, sense data, LUN encoding, CDB builders and
//! parsers, INQUIRY/VPD and mode page layouts.
//!
//! - [`cdb`]: `Command::parse` (target) and `Command::encode` (initiator),
//!   with one CDB usage mask per command that drives both the reserved-bit
//!   checks and REPORT SUPPORTED OPERATION CODES.
//! - [`sense`]: sense keys, ASC/ASCQ, fixed and descriptor sense data.
//! - [`lun`]: SAM-5 LUN addressing and REPORT LUNS data.
//! - [`inquiry`]: standard INQUIRY, VPD pages, READ CAPACITY, LBA status.
//! - [`mode`]: mode parameter header, block descriptors and pages.
//! - [`control`]: the control channel (tags in reserved CDB bits, the
//!   vendor switch command and VPD page), issue #12.

pub mod cdb;
pub mod control;
pub mod inquiry;
pub mod lun;
pub mod mode;
pub mod sense;

pub use cdb::{CdbError, CdbSize, Command, Opcode, Rw};
pub use control::{ControlError, ControlVpd, CtlCommand, Switch};
pub use lun::Lun;
pub use sense::{Asc, Sense, SenseKey};

use std::fmt;

/// SCSI status (SAM-5 §5.3.1, table 39). Open newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status(pub u8);

impl Status {
    pub const GOOD: Self = Self(0x00);
    pub const CHECK_CONDITION: Self = Self(0x02);
    pub const CONDITION_MET: Self = Self(0x04);
    pub const BUSY: Self = Self(0x08);
    pub const RESERVATION_CONFLICT: Self = Self(0x18);
    pub const TASK_SET_FULL: Self = Self(0x28);
    pub const ACA_ACTIVE: Self = Self(0x30);
    pub const TASK_ABORTED: Self = Self(0x40);

    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::GOOD => "GOOD",
            Self::CHECK_CONDITION => "CHECK CONDITION",
            Self::CONDITION_MET => "CONDITION MET",
            Self::BUSY => "BUSY",
            Self::RESERVATION_CONFLICT => "RESERVATION CONFLICT",
            Self::TASK_SET_FULL => "TASK SET FULL",
            Self::ACA_ACTIVE => "ACA ACTIVE",
            Self::TASK_ABORTED => "TASK ABORTED",
            _ => return None,
        })
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "Status({:#04x})", self.0),
        }
    }
}

/// Task attributes (SAM-5 §8.9), as carried in the iSCSI ATTR field.
pub mod task_attr {
    pub const UNTAGGED: u8 = 0;
    pub const SIMPLE: u8 = 1;
    pub const ORDERED: u8 = 2;
    pub const HEAD_OF_QUEUE: u8 = 3;
    pub const ACA: u8 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_and_unknowns() {
        assert_eq!(
            format!("{:?}", Status::RESERVATION_CONFLICT),
            "RESERVATION CONFLICT"
        );
        assert_eq!(format!("{:?}", Status(0x22)), "Status(0x22)");
        assert_eq!(Status::CHECK_CONDITION.0, 2);
    }
}
