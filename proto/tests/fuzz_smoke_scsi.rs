//! Fuzz smoke test for the SCSI parsers (CDBs, sense data, REPORT LUNS,
//! VPD pages, INQUIRY, READ CAPACITY(16), GET LBA STATUS, mode parameters,
//! UNMAP): the `scsi_parse` fuzz target's driver (`fuzz/drivers/scsi.rs`)
//! run over deterministic pseudo-random inputs in `cargo test`.

#[path = "../../fuzz/drivers/scsi.rs"]
mod driver;

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
