//! CHAP on untrusted key/value lists (shared by the `chap_steps` fuzz target
//! and `chap/tests/fuzz_smoke.rs`).
//!
//! The first byte picks: `decode_binary` / `parse_identifier` on arbitrary
//! strings, or a `TargetChap` / `InitiatorChap` fed up to six arbitrary key
//! lists, some of them carrying the *correct* answer (computed here from the
//! known secrets and the challenge the authenticator just sent) so the
//! success paths run too. Asserts: no panic; decoded values respect the
//! length bound and round-trip; after `Failed` every step fails; an
//! authenticator says `Done` only if it was given the correct response.

#[path = "input.rs"]
mod input;

use chap::keys::{CHAP_A, CHAP_C, CHAP_I, CHAP_N, CHAP_R};
use chap::{
    decode_binary, encode_base64, encode_binary, parse_identifier, response, Algorithm, AuthStep,
    Authenticator, Credentials, InitiatorChap, KeyValue, TargetChap,
};
use input::Input;
use rand::rngs::StdRng;
use rand::SeedableRng;

const I_USER: &str = "iqn.2024-01.org.example:initiator";
const I_SECRET: &[u8] = b"initiator-secret-16";
const T_USER: &str = "iqn.2024-01.org.example:target";
const T_SECRET: &[u8] = b"target-secret-value";

/// Returns whether an authenticator reached `Done`.
pub fn run(data: &[u8]) -> bool {
    let mut inp = Input::new(data);
    match inp.below(4) {
        0 => {
            let max = [0, 1, 16, 1024, 4096][inp.below(5)];
            binary(&String::from_utf8_lossy(inp.bytes(4096)), max);
            false
        }
        1 => {
            identifier(&String::from_utf8_lossy(inp.bytes(32)));
            false
        }
        2 => target(&mut inp),
        _ => initiator(&mut inp),
    }
}

pub fn binary(value: &str, max: usize) {
    if let Ok(v) = decode_binary(value, max) {
        assert!(
            !v.is_empty() && v.len() <= max,
            "{} bytes, max {max}",
            v.len()
        );
        assert_eq!(decode_binary(&encode_binary(&v), max).as_ref(), Ok(&v));
        assert_eq!(decode_binary(&encode_base64(&v), max).as_ref(), Ok(&v));
    }
}

pub fn identifier(value: &str) {
    if let Ok(n) = parse_identifier(value) {
        assert_eq!(parse_identifier(&n.to_string()), Ok(n));
    }
}

fn get<'a>(keys: &'a [KeyValue], k: &str) -> Option<&'a str> {
    keys.iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

fn kv(k: &str, v: impl Into<String>) -> KeyValue {
    (k.to_string(), v.into())
}

/// The (algorithm, identifier, challenge) an authenticator just sent.
fn sent_challenge(keys: &[KeyValue], alg: Option<Algorithm>) -> Option<(Algorithm, u8, Vec<u8>)> {
    let alg = alg.or_else(|| Algorithm::parse(get(keys, CHAP_A)?))?;
    let id = parse_identifier(get(keys, CHAP_I)?).ok()?;
    let c = decode_binary(get(keys, CHAP_C)?, 1024).ok()?;
    Some((alg, id, c))
}

/// A CHAP value that is sometimes valid, sometimes garbage.
fn value(inp: &mut Input) -> String {
    match inp.below(8) {
        0 => encode_binary(inp.bytes(40)),
        1 => encode_base64(inp.bytes(40)),
        2 => inp.below(300).to_string(),
        3 => [
            "5", "6", "7", "8", "5,7", "8,6,5,7", "Reject", "None", "0x", "0b====",
        ][inp.below(10)]
        .to_string(),
        4 => format!("0x{}", "ab".repeat(inp.below(1100))),
        5 => I_USER.to_string(),
        6 => T_USER.to_string(),
        _ => String::from_utf8_lossy(inp.bytes(40)).into_owned(),
    }
}

/// Random CHAP keys (sometimes duplicated, sometimes unknown).
fn random_keys(inp: &mut Input) -> Vec<KeyValue> {
    (0..inp.below(6))
        .map(|_| {
            let k = [
                CHAP_A,
                CHAP_I,
                CHAP_C,
                CHAP_N,
                CHAP_R,
                "CHAP_X",
                "AuthMethod",
            ][inp.below(7)];
            kv(k, value(inp))
        })
        .collect()
}

/// Checks the "failed stays failed" rule; returns whether it failed.
fn failed(step: &AuthStep, was_failed: &mut bool) -> bool {
    if *was_failed {
        assert!(
            matches!(step, AuthStep::Failed(_)),
            "step after failure: {step:?}"
        );
    }
    if matches!(step, AuthStep::Failed(_)) {
        *was_failed = true;
    }
    *was_failed
}

fn target(inp: &mut Input) -> bool {
    let mutual = inp.bool();
    let algs: Vec<Algorithm> = Algorithm::ALL
        .iter()
        .copied()
        .filter(|_| inp.bool())
        .collect();
    let algs = if algs.is_empty() {
        vec![Algorithm::Md5]
    } else {
        algs
    };
    let lookup: chap::SecretLookup = Box::new(|u: &str| (u == I_USER).then(|| I_SECRET.to_vec()));
    let mut t = TargetChap::new(
        lookup,
        mutual.then(|| Credentials::new(T_USER, T_SECRET)),
        algs,
        16 + inp.below(64),
    )
    .expect("valid configuration")
    .with_rng(StdRng::seed_from_u64(inp.u32().into()));
    let mut last_out: Vec<KeyValue> = Vec::new();
    let mut was_failed = false;
    let mut proved = false;
    let mut done = false;
    for _ in 0..6 {
        let mut keys = random_keys(inp);
        if inp.below(3) != 0 {
            // A plausible message for where we think the exchange is.
            match sent_challenge(&last_out, None) {
                None => keys.insert(0, kv(CHAP_A, value(inp))),
                Some((alg, id, c)) => {
                    let secret = if inp.one_in(4) { T_SECRET } else { I_SECRET };
                    let user = if inp.one_in(4) { T_USER } else { I_USER };
                    let right = secret == I_SECRET && user == I_USER;
                    let r = response(alg, id, secret, &c);
                    let mut msg = vec![kv(CHAP_N, user), kv(CHAP_R, encode_binary(&r))];
                    if inp.bool() {
                        msg.push(kv(CHAP_I, inp.u8().to_string()));
                        let ch = if inp.one_in(4) {
                            c.clone()
                        } else {
                            inp.bytes(64).to_vec()
                        };
                        msg.push(kv(CHAP_C, encode_binary(&ch)));
                    }
                    // Extra random keys only if they cannot shadow ours.
                    keys.retain(|(k, _)| !msg.iter().any(|(m, _)| m == k));
                    msg.extend(keys);
                    keys = msg;
                    proved |= right;
                }
            }
        }
        let step = t.step(&keys);
        if failed(&step, &mut was_failed) {
            continue;
        }
        match step {
            AuthStep::Continue(out) => last_out = out,
            AuthStep::Done(_) => {
                assert!(proved, "target done without a correct CHAP_R");
                assert_eq!(t.authenticated_user(), Some(I_USER));
                last_out.clear();
                done = true;
            }
            AuthStep::Failed(_) => unreachable!(),
        }
    }
    done
}

fn initiator(inp: &mut Input) -> bool {
    let mutual = inp.bool();
    let mut i = InitiatorChap::new(
        Credentials::new(I_USER, I_SECRET),
        mutual.then(|| Credentials::new(T_USER, T_SECRET)),
    )
    .expect("valid configuration")
    .with_rng(StdRng::seed_from_u64(inp.u32().into()));
    if inp.bool() {
        let prefs: Vec<Algorithm> = (0..1 + inp.below(4))
            .map(|_| *inp.pick(&Algorithm::ALL))
            .collect();
        i = i.with_algorithm_preference(prefs).expect("non-empty");
    }
    let offered: Vec<Algorithm> = i.algorithm_preference().to_vec();
    let mut was_failed = false;
    let mut proved = false;
    let mut done = false;
    let mut chosen: Option<Algorithm> = None;
    let mut last_out: Vec<KeyValue> = Vec::new();
    let mut first = true;
    for _ in 0..6 {
        let mut keys = if first && inp.below(4) != 0 {
            Vec::new()
        } else {
            random_keys(inp)
        };
        first = false;
        if inp.below(3) != 0 {
            match sent_challenge(&last_out, chosen) {
                Some((alg, id, c)) => {
                    // Answer the initiator's mutual challenge.
                    let secret = if inp.one_in(4) { I_SECRET } else { T_SECRET };
                    let user = if inp.one_in(4) { I_USER } else { T_USER };
                    proved |= secret == T_SECRET && user == T_USER;
                    let r = response(alg, id, secret, &c);
                    keys = vec![kv(CHAP_N, user), kv(CHAP_R, encode_binary(&r))];
                }
                None if !last_out.is_empty() => {
                    // Send a challenge with one of the offered algorithms.
                    let alg = *inp.pick(&offered);
                    chosen = Some(alg);
                    let c = if inp.one_in(8) {
                        Vec::new()
                    } else {
                        inp.bytes(64).to_vec()
                    };
                    keys = vec![
                        kv(CHAP_A, alg.code().to_string()),
                        kv(CHAP_I, inp.u8().to_string()),
                        kv(CHAP_C, encode_binary(&c)),
                    ];
                }
                None => {}
            }
        }
        let step = i.step(&keys);
        if failed(&step, &mut was_failed) {
            continue;
        }
        match step {
            AuthStep::Continue(out) => last_out = out,
            AuthStep::Done(_) => {
                if mutual {
                    assert!(proved, "initiator done without the target's proof");
                }
                last_out.clear();
                done = true;
            }
            AuthStep::Failed(_) => unreachable!(),
        }
    }
    done
}
