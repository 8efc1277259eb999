//! Fuzz smoke test for the login state machines (RFC 7143 §6.3, §11.12,
//! §11.13): the `login_target` / `login_initiator` fuzz targets' driver
//! (`fuzz/drivers/login.rs`) over deterministic pseudo-random inputs in
//! `cargo test`. Every run must end (Complete or Fail) within the PDU bound.

#[path = "../../fuzz/drivers/login.rs"]
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
fn target_login_always_ends() {
    let mut rng = Rng(0x7a26_e710_9100_0001);
    let mut complete = 0;
    let mut longest = 0;
    for _ in 0..20_000 {
        let input = rng.input(600);
        let ended = driver::target(&input);
        complete += usize::from(ended.complete);
        longest = longest.max(ended.pdus);
    }
    // The biased inputs reach the end of the state machine, not just the
    // first-PDU checks.
    eprintln!("{complete} of 20000 logins completed, longest {longest} PDUs");
    assert!(complete >= 10, "only {complete} logins completed");
    assert!(longest > 2, "no login lasted more than {longest} PDUs");
}

#[test]
fn initiator_login_always_ends() {
    let mut rng = Rng(0x1217_1a70_9100_0002);
    let mut complete = 0;
    let mut longest = 0;
    for _ in 0..20_000 {
        let input = rng.input(600);
        let ended = driver::initiator(&input);
        complete += usize::from(ended.complete);
        longest = longest.max(ended.pdus);
    }
    eprintln!("{complete} of 20000 logins completed, longest {longest} PDUs");
    assert!(complete >= 100, "only {complete} logins completed");
    assert!(longest > 2, "no login lasted more than {longest} PDUs");
}

#[test]
fn empty_and_tiny_inputs() {
    for len in 0..4usize {
        for b in 0..=255u8 {
            let input = vec![b; len];
            driver::target(&input);
            driver::initiator(&input);
        }
    }
}
