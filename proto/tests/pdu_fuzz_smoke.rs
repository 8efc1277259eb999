//! A fuzz smoke test that runs in `cargo test` (the real fuzz targets live
//! in `fuzz/`, outside the workspace): a few hundred thousand random and
//! mutated inputs through `decode_frame` with various limits and digest
//! settings. Asserts: no panic, errors consume nothing when fatal and exactly
//! one frame otherwise, and every decoded PDU re-encodes to a frame that
//! decodes back to the same PDU.

use bytes::{Bytes, BytesMut};
use proto::pdu::{decode_frame, DecodeLimits, DigestConfig, Pdu};

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
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let bytes = hex::decode(text.split_whitespace().collect::<String>()).unwrap();
        out.push(bytes);
    }
    out.sort();
    out
}

/// Runs one input through a decode loop and checks the invariants.
fn exercise(input: &[u8], limits: &DecodeLimits) -> usize {
    let mut buf = BytesMut::from(input);
    let mut decoded = 0;
    loop {
        let before = buf.len();
        match decode_frame(&mut buf, limits) {
            Ok(Some(pdu)) => {
                assert!(buf.len() < before);
                check_reencode(&pdu, limits.digests);
                decoded += 1;
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                return decoded;
            }
            Err(e) if e.is_fatal() => {
                assert_eq!(buf.len(), before, "fatal errors consume nothing");
                return decoded;
            }
            Err(e) => {
                assert!(buf.len() < before, "non-fatal errors consume the PDU");
                assert!(e.reject_reason().is_some());
                assert!(e.rejected_header().is_some_and(|h| h.len() >= 48));
            }
        }
    }
}

fn check_reencode(pdu: &Pdu, digests: DigestConfig) {
    let wire = pdu.encode(digests).to_bytes();
    let back = Pdu::decode(wire.clone(), digests).expect("re-encoded PDU decodes");
    assert_eq!(&back, pdu);
    assert_eq!(back.encode(digests).to_bytes(), wire);
}

fn limits_for(rng: &mut Rng) -> DecodeLimits {
    DecodeLimits {
        max_data_segment_length: [0, 1, 512, 8192, 1 << 24][rng.below(5)],
        digests: DigestConfig {
            header: rng.below(2) == 0,
            data: rng.below(2) == 0,
        },
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut input = Vec::with_capacity(256);
    for _ in 0..150_000 {
        input.clear();
        let len = rng.below(200);
        for _ in 0..len {
            input.push(rng.next() as u8);
        }
        // Make headers plausible half the time: small lengths, known opcodes.
        if len >= 8 && rng.below(2) == 0 {
            input[4] = (rng.below(3)) as u8;
            input[5] = 0;
            input[6] = 0;
            input[7] = rng.below(64) as u8;
        }
        let limits = limits_for(&mut rng);
        exercise(&input, &limits);
    }
}

#[test]
fn mutated_captures_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut decoded = 0;
    for _ in 0..100_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let start = rng.below(seed.len()) & !3;
        let end = (start + 48 + rng.below(600)).min(seed.len());
        let mut input = seed[start..end].to_vec();
        for _ in 0..1 + rng.below(4) {
            if input.is_empty() {
                break;
            }
            let i = rng.below(input.len());
            match rng.below(3) {
                0 => input[i] ^= 1 << rng.below(8),
                1 => input[i] = rng.next() as u8,
                _ => {
                    input.truncate(i);
                }
            }
        }
        let limits = limits_for(&mut rng);
        decoded += exercise(&input, &limits);
    }
    // The mutations leave most PDUs intact: the decoder really ran.
    assert!(decoded > 10_000, "only {decoded} PDUs decoded");
}

#[test]
fn whole_captures_with_any_digest_setting() {
    // Decoding real streams with the wrong digest setting must fail cleanly.
    for seed in seeds() {
        for (header, data) in [(false, false), (true, false), (false, true), (true, true)] {
            let limits = DecodeLimits {
                max_data_segment_length: 1 << 24,
                digests: DigestConfig { header, data },
            };
            exercise(&Bytes::from(seed.clone()), &limits);
        }
    }
}
