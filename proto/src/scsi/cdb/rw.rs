//! The READ/WRITE-shaped command families (SBC-4 §5: READ, WRITE, VERIFY,
//! WRITE AND VERIFY), one table of operation codes by family and CDB size
//! that both the parser and the builder read.

use super::{CdbSize, Command, Opcode, Rw};

/// A family of commands that share the READ/WRITE layout.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum RwKind {
    Read,
    Write,
    Verify,
    WriteAndVerify,
}

/// Every READ/WRITE-shaped operation code with its family and size.
/// VERIFY and WRITE AND VERIFY have no 6-byte form.
const RW_TABLE: &[(Opcode, RwKind, CdbSize)] = {
    use CdbSize::*;
    use RwKind::*;
    &[
        (Opcode::READ_6, Read, Six),
        (Opcode::READ_10, Read, Ten),
        (Opcode::READ_12, Read, Twelve),
        (Opcode::READ_16, Read, Sixteen),
        (Opcode::WRITE_6, Write, Six),
        (Opcode::WRITE_10, Write, Ten),
        (Opcode::WRITE_12, Write, Twelve),
        (Opcode::WRITE_16, Write, Sixteen),
        (Opcode::VERIFY_10, Verify, Ten),
        (Opcode::VERIFY_12, Verify, Twelve),
        (Opcode::VERIFY_16, Verify, Sixteen),
        (Opcode::WRITE_AND_VERIFY_10, WriteAndVerify, Ten),
        (Opcode::WRITE_AND_VERIFY_12, WriteAndVerify, Twelve),
        (Opcode::WRITE_AND_VERIFY_16, WriteAndVerify, Sixteen),
    ]
};

impl RwKind {
    /// The family and size of a READ/WRITE-shaped operation code.
    pub(super) fn of(op: Opcode) -> Option<(RwKind, CdbSize)> {
        RW_TABLE
            .iter()
            .find(|(o, _, _)| *o == op)
            .map(|&(_, k, s)| (k, s))
    }

    /// The size this family is sent in when `size` is asked for (the
    /// verifying families have no 6-byte form: they use the 10-byte one).
    pub(super) fn size(self, size: CdbSize) -> CdbSize {
        match (self, size) {
            (RwKind::Verify | RwKind::WriteAndVerify, CdbSize::Six) => CdbSize::Ten,
            _ => size,
        }
    }

    /// The operation code of this family in `size` (after [`Self::size`]).
    pub(super) fn opcode(self, size: CdbSize) -> Opcode {
        let size = self.size(size);
        RW_TABLE
            .iter()
            .find(|(_, k, s)| *k == self && *s == size)
            .map(|&(o, _, _)| o)
            .expect("every family has every size in RW_TABLE after size()")
    }

    /// The command of this family; `bytchk` only matters for the
    /// verifying ones.
    pub(super) fn command(self, size: CdbSize, rw: Rw, bytchk: u8) -> Command {
        match self {
            RwKind::Read => Command::Read { size, rw },
            RwKind::Write => Command::Write { size, rw },
            RwKind::Verify => Command::Verify { size, rw, bytchk },
            RwKind::WriteAndVerify => Command::WriteAndVerify { size, rw, bytchk },
        }
    }
}
