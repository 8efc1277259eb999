//! Fuzz smoke test for the SCSI parsers (CDBs, sense data, REPORT LUNS,
//! VPD pages, INQUIRY, READ CAPACITY(16), GET LBA STATUS, mode parameters,
//! UNMAP): the `scsi_parse` fuzz target's driver (`fuzz/drivers/scsi.rs`)
//! run over deterministic pseudo-random inputs in `cargo test`; likewise the
//! control channel's (`control_parse`, `fuzz/drivers/control.rs`).

#[path = "../../fuzz/drivers/scsi.rs"]
mod driver;

#[path = "../../fuzz/drivers/control.rs"]
mod control_driver;

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// A buffer that is mostly zero with a few random bytes: gets past
/// reserved-bit checks and length fields far more often than pure noise.
fn sparse(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    for _ in 0..rng.below(6) {
        if len > 0 {
            let i = rng.below(len);
            b[i] = rng.byte();
        }
    }
    b
}

#[test]
fn every_parser_on_random_and_sparse_inputs() {
    let mut rng = Rng(0x5eed_0f5c_5150_0001);
    for round in 0..60_000 {
        let len = rng.below(300);
        let mut input = if round % 2 == 0 {
            (0..len).map(|_| rng.byte()).collect()
        } else {
            sparse(&mut rng, len)
        };
        if input.len() > 1 && rng.below(2) == 0 {
            // Small plausible length fields (bytes 2..4 of the payload).
            for i in 2..input.len().min(5) {
                input[i] = if i == 4 { rng.below(64) as u8 } else { 0 };
            }
        }
        if let Some(first) = input.first_mut() {
            *first = (round % usize::from(driver::PARSERS)) as u8 | (rng.byte() & 0x80);
        }
        driver::run(&input);
    }
}

#[test]
fn cdbs_with_every_opcode() {
    // Every opcode and (for service-action opcodes) every service action,
    // with zero and random bodies of every length up to 17.
    let mut rng = Rng(0x0cdb_0cdb_0cdb_0cdb);
    let mut parsed = 0;
    for op in 0..=255u8 {
        for len in 0..=17usize {
            for sa in 0..32u8 {
                let mut b = sparse(&mut rng, len.max(1));
                b[0] = op;
                if len > 1 {
                    b[1] = (b[1] & 0xE0) | sa;
                }
                if proto::scsi::Command::parse(&b).is_ok() {
                    parsed += 1;
                }
                driver::cdb(&b);
            }
        }
    }
    // The zero-heavy bodies really reach the decoders.
    assert!(parsed > 800, "only {parsed} CDBs parsed");
}

#[test]
fn sense_in_both_formats() {
    let mut rng = Rng(0x5e45_e000_0000_0072);
    let mut ok = 0;
    for _ in 0..40_000 {
        let len = rng.below(64);
        let mut b: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        if let Some(f) = b.first_mut() {
            *f = [0x70, 0x71, 0x72, 0x73, 0xF0, 0xF1][rng.below(6)];
        }
        if len > 7 {
            b[7] = rng.below(len) as u8;
        }
        if proto::scsi::Sense::parse(&b).is_ok() {
            ok += 1;
        }
        driver::sense(&b);
    }
    assert!(ok > 30_000, "only {ok} sense buffers parsed");
}

/// A valid vendor CDB followed by SET data, with one byte maybe mutated.
fn shaped_command(rng: &mut Rng) -> Vec<u8> {
    use proto::scsi::CtlCommand;
    let alphabet = b"abcz09_.";
    let name: String = (0..1 + rng.below(11))
        .map(|_| alphabet[rng.below(alphabet.len())] as char)
        .collect();
    let cmd = match rng.below(3) {
        0 => CtlCommand::List {
            alloc_len: rng.below(65536) as u32,
        },
        1 => CtlCommand::Get {
            name,
            alloc_len: rng.below(65536) as u32,
        },
        _ => CtlCommand::Set {
            name,
            value: "x".repeat(1 + rng.below(20)),
        },
    };
    let mut out = vec![0u8];
    out.extend_from_slice(&cmd.encode().expect("valid command"));
    out.extend_from_slice(&cmd.data_out().unwrap_or_default());
    if rng.below(2) == 0 {
        let i = 1 + rng.below(out.len() - 1);
        out[i] = rng.next() as u8;
    }
    out
}

#[test]
fn control_parsers_on_random_and_shaped_inputs() {
    let mut rng = Rng(0xc7c7_0001_2345_6789);
    let mut decoded = 0;
    for round in 0..50_000 {
        let len = rng.below(80);
        let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if round % 8 == 0 {
            input = shaped_command(&mut rng);
        } else if input.len() > 5 && round % 2 == 0 {
            // A plausible list / page header.
            input[1..5].copy_from_slice(&[0, 0xC7, 0, rng.below(40) as u8]);
            input[5] = 1;
        }
        if let Some(first) = input.first_mut() {
            *first = (round % usize::from(control_driver::PARSERS)) as u8;
        }
        if input.first() == Some(&0) && proto::scsi::CtlCommand::decode(&input[1..]).is_ok() {
            decoded += 1;
        }
        control_driver::run(&input);
    }
    assert!(decoded > 1000, "only {decoded} shaped inputs decoded");
}
