//! Fuzz smoke test for CHAP (RFC 7143 §12.1.3, §9.2.1): the `chap_steps`
//! fuzz target's driver (`fuzz/drivers/chap.rs`) over deterministic
//! pseudo-random inputs in `cargo test`.

#[path = "../../fuzz/drivers/chap.rs"]
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
    fn input(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_exchanges_never_panic() {
    let mut rng = Rng(0xc4a9_5eed_0000_0001);
    let mut done = 0;
    for _ in 0..6_000 {
        let input = rng.input(400);
        done += usize::from(driver::run(&input));
    }
    // The plausible messages reach the success paths of both roles.
    assert!(done >= 100, "only {done} exchanges reached Done");
}

#[test]
fn binary_values_near_the_limits() {
    let mut rng = Rng(0xc4a9_5eed_0000_0002);
    let alphabet = b"0123456789abcdefABCDEFxXbB+/=g \0";
    for _ in 0..20_000 {
        let prefix = ["0x", "0X", "0b", "0B", "", "0", "x"][rng.below(7)];
        let len = [0, 1, 2, 3, 4, 31, 32, 33, 2047, 2048, 2049, 1366, 1367][rng.below(13)];
        let mut v = String::from(prefix);
        for _ in 0..len {
            // Mostly valid digits, sometimes anything from the alphabet.
            let c = if rng.below(16) == 0 {
                alphabet[rng.below(alphabet.len())]
            } else {
                alphabet[rng.below(16)]
            };
            v.push(c as char);
        }
        driver::binary(&v, [1, 16, 1024][rng.below(3)]);
    }
    for v in [
        "0", "255", "256", "0xff", "0x100", "-1", "+1", " 1", "00000001", "1e2",
    ] {
        driver::identifier(v);
    }
}
