//! Data-Out received vs. Data-Out the CDB asks for: one rule for every
//! data-out command (SAM-5 §5.4.3 "Data-Out Buffer Size"; RFC 7143
//! §11.4.5.1 residuals).
//!
//! The iSCSI initiator states how many bytes it sends (Expected Data
//! Transfer Length, EDTL); the CDB states how many the command needs
//! (SPDTL). When they differ the transport reports the residual (the
//! connection code computes it from the same two numbers); this module
//! decides what the device server does with the bytes it got.
//!
//! The rule: **every byte the initiator sends either reaches the medium or
//! the command ends in CHECK CONDITION having written nothing.** GOOD never
//! stands for data that was dropped.
//!
//! - EDTL = SPDTL: the command runs as sent.
//! - EDTL > SPDTL (underflow): the command runs on the first SPDTL bytes;
//!   the rest was never part of the command (SAM-5: the device server
//!   transfers what the command needs, RFC 7143 §11.4.5.1 reports the
//!   difference as a residual underflow). libiscsi's Write10Residuals
//!   checks exactly this: EDTL of two blocks for a one-block WRITE writes
//!   one block.
//! - EDTL < SPDTL (overflow) on a WRITE or WRITE AND VERIFY and EDTL a
//!   whole number of logical blocks: the command runs on the blocks
//!   received, with GOOD and a residual overflow. Every byte sent lands,
//!   and the residual tells the initiator what did not (RFC 7143
//!   §11.4.5.1). libiscsi's Write*Residuals require GOOD here (EDTL of one
//!   block for a two-block WRITE; EDTL 0, where nothing was sent and
//!   nothing is written).
//! - any other overflow: CHECK CONDITION, ILLEGAL REQUEST, INVALID FIELD IN
//!   COMMAND INFORMATION UNIT (0Eh/03h), nothing written. This covers a
//!   WRITE ending inside a block (EDTL 200 for a 512-byte block: a logical
//!   block is the unit of a write, SBC-4 §4.4, and a partial block can be
//!   neither written as a block nor dropped without losing data) and every
//!   command whose data-out is one indivisible unit: COMPARE AND WRITE,
//!   WRITE SAME, VERIFY with BYTCHK, ORWRITE, WRITE ATOMIC, and the
//!   parameter lists of UNMAP, PERSISTENT RESERVE OUT, MODE SELECT, SANITIZE
//!   and EXTENDED COPY. libiscsi's residual tests accept this answer for
//!   the partial-block WRITE (and check the overflow residual that comes
//!   with it).
//!
//! One exception, from the CDB rather than the transport: COMPARE AND
//! WRITE's one-byte NUMBER OF LOGICAL BLOCKS cannot say 256, so zero blocks
//! with Data-Out is an initiator that meant 256 blocks; the field is what is
//! wrong: INVALID FIELD IN CDB (SBC-4 §5.3; libiscsi CompareAndWrite.Simple
//! expects exactly this).
//!
//! Writing the partial block instead (what tgtd does) was rejected: the
//! block backend uses O_DIRECT, where a 200-byte write is not possible
//! without a read-modify-write that would make the block half old, half new.

use proto::scsi::cdb::Command;

/// What the device server does with a command's Data-Out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataOutPlan {
    /// Run the command on the first `len` bytes of the Data-Out buffer
    /// (all of them, or the CDB's SPDTL when more arrived).
    Run { len: u64 },
    /// Run the WRITE / WRITE AND VERIFY with its transfer length cut to the
    /// `blocks` whole logical blocks received.
    Shorten { blocks: u32 },
    /// Refuse with INVALID FIELD IN COMMAND INFORMATION UNIT; write nothing.
    Refuse,
    /// Refuse with INVALID FIELD IN CDB at this byte; write nothing.
    InvalidCdb { byte: u16 },
}

/// The one rule above, for `cmd` on a logical unit of `block_size` bytes
/// that received `received` bytes of Data-Out (at most EDTL).
pub(crate) fn plan(cmd: &Command, block_size: u32, received: u64) -> DataOutPlan {
    let needed = cmd.data_out_length(block_size);
    if needed == 0 && received > 0 && matches!(cmd, Command::CompareAndWrite { .. }) {
        return DataOutPlan::InvalidCdb { byte: 13 };
    }
    if received >= needed {
        return DataOutPlan::Run { len: needed };
    }
    let bs = u64::from(block_size.max(1));
    match cmd {
        Command::Write { .. } | Command::WriteAndVerify { .. } if received.is_multiple_of(bs) => {
            // received < needed = blocks * bs, so this fits in u32.
            let blocks = u32::try_from(received / bs).unwrap_or(u32::MAX);
            DataOutPlan::Shorten { blocks }
        }
        _ => DataOutPlan::Refuse,
    }
}

/// `cmd` with its transfer length set to `blocks` (for
/// [`DataOutPlan::Shorten`]); other commands unchanged.
pub(crate) fn shorten(mut cmd: Command, blocks: u32) -> Command {
    if let Command::Write { rw, .. } | Command::WriteAndVerify { rw, .. } = &mut cmd {
        rw.blocks = blocks;
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::scsi::cdb;

    fn parse(c: &[u8]) -> Command {
        Command::parse(c).expect("valid CDB")
    }

    #[test]
    fn exact_and_underflow_run_on_what_the_cdb_needs() {
        let w10 = parse(cdb::write10(0, 1, false).as_bytes());
        assert_eq!(plan(&w10, 512, 512), DataOutPlan::Run { len: 512 });
        assert_eq!(plan(&w10, 512, 10000), DataOutPlan::Run { len: 512 });
        // Data-Out sent with a command that takes none: ignored.
        let tur = parse(cdb::test_unit_ready().as_bytes());
        assert_eq!(plan(&tur, 512, 100), DataOutPlan::Run { len: 0 });
        // WRITE SAME with more than one block: the first block is used.
        let ws = parse(&[0x93, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0]);
        assert_eq!(plan(&ws, 4096, 8192), DataOutPlan::Run { len: 4096 });
        // COMPARE AND WRITE of 0 blocks: no data is fine, data means the
        // initiator wanted 256 blocks the CDB cannot express.
        let caw0 = parse(&[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(plan(&caw0, 512, 0), DataOutPlan::Run { len: 0 });
        assert_eq!(
            plan(&caw0, 512, 2 * 256 * 512),
            DataOutPlan::InvalidCdb { byte: 13 }
        );
    }

    #[test]
    fn whole_blocks_of_a_write_are_written() {
        let w10 = parse(cdb::write10(0, 2, false).as_bytes());
        assert_eq!(plan(&w10, 512, 512), DataOutPlan::Shorten { blocks: 1 });
        assert_eq!(plan(&w10, 512, 0), DataOutPlan::Shorten { blocks: 0 });
        // WRITE(6) with TRANSFER LENGTH 0 is 256 blocks.
        let w6 = parse(&[0x0a, 0, 0, 0, 0, 0]);
        assert_eq!(plan(&w6, 512, 3 * 512), DataOutPlan::Shorten { blocks: 3 });
        let wv12 = parse(&[0xae, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0]);
        assert_eq!(
            plan(&wv12, 4096, 2 * 4096),
            DataOutPlan::Shorten { blocks: 2 }
        );
        let Command::Write { rw, .. } = shorten(w10, 1) else {
            panic!("still a WRITE")
        };
        assert_eq!(rw.blocks, 1);
    }

    #[test]
    fn partial_blocks_and_indivisible_data_out_are_refused() {
        // The example of issue 10: WRITE(10) of one block, EDTL 200.
        let w10 = parse(cdb::write10(0, 1, false).as_bytes());
        assert_eq!(plan(&w10, 512, 200), DataOutPlan::Refuse);
        let w16 = parse(&[0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0]);
        assert_eq!(plan(&w16, 512, 512 + 5), DataOutPlan::Refuse);
        let refused: &[&[u8]] = &[
            // COMPARE AND WRITE, 1 block: needs 2 blocks.
            &[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            // WRITE SAME(10), 1 block of data.
            &[0x41, 0, 0, 0, 0, 0, 0, 0, 8, 0],
            // UNMAP, 24-byte parameter list.
            &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
            // PERSISTENT RESERVE OUT REGISTER, 24 bytes.
            &[0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0],
            // MODE SELECT(6), 12 bytes.
            &[0x15, 0x10, 0, 0, 12, 0],
            // MODE SELECT(10), 12 bytes.
            &[0x55, 0x10, 0, 0, 0, 0, 0, 0, 12, 0],
            // EXTENDED COPY, 64 bytes.
            &[0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0],
        ];
        for c in refused {
            let cmd = parse(c);
            let needed = cmd.data_out_length(512);
            assert!(needed > 0, "{cmd:?}");
            assert_eq!(plan(&cmd, 512, 0), DataOutPlan::Refuse, "{cmd:?}");
            assert_eq!(plan(&cmd, 512, needed - 1), DataOutPlan::Refuse, "{cmd:?}");
            // A whole block short of a multi-block list is still refused:
            // only WRITE / WRITE AND VERIFY run on a prefix.
            if needed > 512 {
                assert_eq!(plan(&cmd, 512, 512), DataOutPlan::Refuse, "{cmd:?}");
            }
        }
    }
}
