//! InitiatorChap and TargetChap driven against each other, plus hand-made
//! peers for the failure cases (RFC 7143 §12.1.3, §9.2.1).

use chap::keys::*;
use chap::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

const I_USER: &str = "iqn.2024-01.rs.iscsi:initiator:test";
const I_SECRET: &[u8] = b"initiator-secret-16";
const T_USER: &str = "iqn.2024-01.rs.iscsi:target:test";
const T_SECRET: &[u8] = b"target-secret-value";

fn kv(k: &str, v: impl Into<String>) -> KeyValue {
    (k.to_string(), v.into())
}

fn get<'a>(keys: &'a [KeyValue], k: &str) -> Option<&'a str> {
    keys.iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

fn lookup_one(user: &'static str, secret: &'static [u8]) -> SecretLookup {
    Box::new(move |u: &str| (u == user).then(|| secret.to_vec()))
}

fn initiator(mutual: bool) -> InitiatorChap {
    let m = mutual.then(|| Credentials::new(T_USER, T_SECRET));
    InitiatorChap::new(Credentials::new(I_USER, I_SECRET), m)
        .unwrap()
        .with_rng(StdRng::seed_from_u64(1))
}

fn target(mutual: bool) -> TargetChap {
    let m = mutual.then(|| Credentials::new(T_USER, T_SECRET));
    TargetChap::new(lookup_one(I_USER, I_SECRET), m, Algorithm::ALL.to_vec(), 32)
        .unwrap()
        .with_rng(StdRng::seed_from_u64(2))
}

#[derive(Debug)]
enum Side {
    Initiator,
    Target,
}

/// Run the exchange the way the login state machine would; returns every
/// message (initiator's first) or who failed and why.
fn drive(
    i: &mut dyn Authenticator,
    t: &mut dyn Authenticator,
) -> Result<Vec<Vec<KeyValue>>, (Side, AuthFailure)> {
    let mut transcript = Vec::new();
    let mut to_target = match i.step(&[]) {
        AuthStep::Continue(k) => k,
        other => panic!("initiator must open with Continue, got {other:?}"),
    };
    let (mut i_done, mut t_done) = (false, false);
    for _ in 0..5 {
        transcript.push(to_target.clone());
        let to_init = match t.step(&to_target) {
            AuthStep::Continue(k) => k,
            AuthStep::Done(k) => {
                t_done = true;
                k
            }
            AuthStep::Failed(f) => return Err((Side::Target, f)),
        };
        if i_done && t_done {
            return Ok(transcript);
        }
        transcript.push(to_init.clone());
        to_target = match i.step(&to_init) {
            AuthStep::Continue(k) => k,
            AuthStep::Done(k) => {
                i_done = true;
                k
            }
            AuthStep::Failed(f) => return Err((Side::Initiator, f)),
        };
        if i_done && t_done {
            return Ok(transcript);
        }
    }
    panic!("exchange did not finish: {transcript:?}");
}

#[test]
fn one_way_every_algorithm() {
    for alg in Algorithm::ALL {
        let mut i = initiator(false)
            .with_algorithm_preference(vec![alg])
            .unwrap();
        let mut t = target(false);
        let tr = drive(&mut i, &mut t).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(tr.len(), 3, "A / A,I,C / N,R");
        assert_eq!(get(&tr[0], CHAP_A), Some(alg.code().to_string().as_str()));
        assert_eq!(get(&tr[1], CHAP_A), Some(alg.code().to_string().as_str()));
        let c = decode_binary(get(&tr[1], CHAP_C).unwrap(), 1024).unwrap();
        assert!(c.len() >= 32 && c.len() >= alg.digest_len());
        assert_eq!(get(&tr[2], CHAP_N), Some(I_USER));
        let r = decode_binary(get(&tr[2], CHAP_R).unwrap(), 1024).unwrap();
        assert_eq!(r.len(), alg.digest_len());
        let id = parse_identifier(get(&tr[1], CHAP_I).unwrap()).unwrap();
        assert_eq!(r, response(alg, id, I_SECRET, &c));
        assert!(
            get(&tr[2], CHAP_C).is_none(),
            "no mutual challenge in one-way CHAP"
        );
        assert_eq!(t.authenticated_user(), Some(I_USER));
    }
}

#[test]
fn mutual_every_algorithm() {
    for alg in Algorithm::ALL {
        let mut i = initiator(true)
            .with_algorithm_preference(vec![alg])
            .unwrap();
        let mut t = target(true);
        let tr = drive(&mut i, &mut t).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(tr.len(), 4, "A / A,I,C / N,R,I,C / N,R");
        let ic = decode_binary(get(&tr[2], CHAP_C).unwrap(), 1024).unwrap();
        let ii = parse_identifier(get(&tr[2], CHAP_I).unwrap()).unwrap();
        assert_ne!(Some(get(&tr[2], CHAP_C).unwrap()), get(&tr[1], CHAP_C));
        assert_eq!(get(&tr[3], CHAP_N), Some(T_USER));
        let tr_r = decode_binary(get(&tr[3], CHAP_R).unwrap(), 1024).unwrap();
        assert_eq!(tr_r, response(alg, ii, T_SECRET, &ic));
        // A further empty step on either side stays done.
        assert_eq!(i.step(&[]), AuthStep::Done(vec![]));
        assert_eq!(t.step(&[]), AuthStep::Done(vec![]));
    }
}

#[test]
fn default_offer_and_choice() {
    let mut i = initiator(true);
    let mut t = target(true);
    let tr = drive(&mut i, &mut t).unwrap();
    assert_eq!(get(&tr[0], CHAP_A), Some("8,6,5,7"));
    assert_eq!(
        get(&tr[1], CHAP_A),
        Some("8"),
        "first acceptable value of the initiator's list"
    );

    // A target restricted to MD5 (like tgt) or to SHA-256 still agrees.
    for (only, code) in [
        (Algorithm::Md5, "5"),
        (Algorithm::Sha256, "7"),
        (Algorithm::Sha1, "6"),
    ] {
        let mut i = initiator(false);
        let mut t = TargetChap::new(lookup_one(I_USER, I_SECRET), None, vec![only], 16).unwrap();
        let tr = drive(&mut i, &mut t).unwrap();
        assert_eq!(get(&tr[1], CHAP_A), Some(code));
    }
}

/// Mimics how tgt (usr/iscsi/chap.c) answers an offer: the first of "5"/"7"
/// in the initiator's order, where it means SHA-1 by "7".
#[test]
fn default_offer_makes_tgt_pick_md5() {
    let mut i = initiator(false);
    let AuthStep::Continue(keys) = i.step(&[]) else {
        panic!()
    };
    let offer = get(&keys, CHAP_A).unwrap();
    let tgt_pick = offer.split(',').find(|v| *v == "5" || *v == "7");
    assert_eq!(tgt_pick, Some("5"));
}

#[test]
fn wrong_secret_and_unknown_user_fail_alike() {
    let mut i = InitiatorChap::new(
        Credentials::new(I_USER, b"wrong-secret-value".to_vec()),
        None,
    )
    .unwrap();
    let (side, f1) = drive(&mut i, &mut target(false)).unwrap_err();
    assert!(matches!(side, Side::Target));
    let mut i = InitiatorChap::new(Credentials::new("nobody", I_SECRET), None).unwrap();
    let (_, f2) = drive(&mut i, &mut target(false)).unwrap_err();
    assert!(matches!(f1, AuthFailure::AuthenticationFailed(_)), "{f1:?}");
    assert_eq!(
        f1, f2,
        "unknown user and wrong secret must be indistinguishable"
    );
}

#[test]
fn target_fails_mutual_with_wrong_secret_or_name() {
    for (name, secret) in [
        (T_USER, b"other-target-secret".as_slice()),
        ("someone-else", T_SECRET),
    ] {
        let mut i = initiator(true);
        let mut t = TargetChap::new(
            lookup_one(I_USER, I_SECRET),
            Some(Credentials::new(name, secret)),
            Algorithm::ALL.to_vec(),
            32,
        )
        .unwrap();
        let (side, f) = drive(&mut i, &mut t).unwrap_err();
        assert!(matches!(side, Side::Initiator));
        assert!(matches!(f, AuthFailure::AuthenticationFailed(_)), "{f:?}");
        // Once failed, stays failed.
        assert!(matches!(i.step(&[]), AuthStep::Failed(_)));
    }
}

#[test]
fn mutual_requested_without_target_credentials() {
    let (side, f) = drive(&mut initiator(true), &mut target(false)).unwrap_err();
    assert!(matches!(side, Side::Target));
    assert!(matches!(f, AuthFailure::AuthenticationFailed(m) if m.contains("mutual")));
}

/// Play the initiator by hand against a TargetChap.
fn target_challenge(t: &mut TargetChap, alg: Algorithm) -> (u8, Vec<u8>, String) {
    let AuthStep::Continue(keys) = t.step(&[kv(CHAP_A, alg.code().to_string())]) else {
        panic!("target must answer CHAP_A with Continue")
    };
    let id = parse_identifier(get(&keys, CHAP_I).unwrap()).unwrap();
    let enc = get(&keys, CHAP_C).unwrap().to_string();
    (id, decode_binary(&enc, 1024).unwrap(), enc)
}

#[test]
fn target_rejects_reflected_challenge() {
    let mut t = target(true);
    let (id, c, enc) = target_challenge(&mut t, Algorithm::Md5);
    let r = response(Algorithm::Md5, id, I_SECRET, &c);
    let step = t.step(&[
        kv(CHAP_N, I_USER),
        kv(CHAP_R, encode_binary(&r)),
        kv(CHAP_I, "9"),
        kv(CHAP_C, enc.clone()),
    ]);
    assert!(
        matches!(step, AuthStep::Failed(AuthFailure::Protocol(ref m)) if m.contains("reflected")),
        "{step:?}"
    );

    // Same bytes in another encoding are still a reflection.
    let mut t = target(true);
    let (id, c, _) = target_challenge(&mut t, Algorithm::Md5);
    let r = response(Algorithm::Md5, id, I_SECRET, &c);
    let step = t.step(&[
        kv(CHAP_N, I_USER),
        kv(CHAP_R, encode_base64(&r)),
        kv(CHAP_I, "9"),
        kv(CHAP_C, encode_base64(&c)),
    ]);
    assert!(
        matches!(step, AuthStep::Failed(AuthFailure::Protocol(_))),
        "{step:?}"
    );
}

#[test]
fn target_accepts_base64_and_answers_mutual() {
    let mut t = target(true);
    let (id, c, _) = target_challenge(&mut t, Algorithm::Sha256);
    let r = response(Algorithm::Sha256, id, I_SECRET, &c);
    let my_c = [0x55u8; 20];
    let step = t.step(&[
        kv(CHAP_N, I_USER),
        kv(CHAP_R, encode_base64(&r)),
        kv(CHAP_I, "200"),
        kv(CHAP_C, encode_base64(&my_c)),
    ]);
    let AuthStep::Done(keys) = step else {
        panic!("{step:?}")
    };
    assert_eq!(get(&keys, CHAP_N), Some(T_USER));
    let tr = decode_binary(get(&keys, CHAP_R).unwrap(), 1024).unwrap();
    assert_eq!(tr, response(Algorithm::Sha256, 200, T_SECRET, &my_c));
    assert!(
        get(&keys, CHAP_R).unwrap().starts_with("0x"),
        "we always emit hex"
    );
}

#[test]
fn target_rejects_same_secret_both_directions() {
    let mut t = TargetChap::new(
        lookup_one(I_USER, I_SECRET),
        Some(Credentials::new(T_USER, I_SECRET)),
        Algorithm::ALL.to_vec(),
        32,
    )
    .unwrap();
    let (id, c, _) = target_challenge(&mut t, Algorithm::Md5);
    let r = response(Algorithm::Md5, id, I_SECRET, &c);
    let step = t.step(&[kv(CHAP_N, I_USER), kv(CHAP_R, encode_binary(&r))]);
    assert!(
        matches!(step, AuthStep::Failed(AuthFailure::AuthenticationFailed(ref m)) if m.contains("same")),
        "{step:?}"
    );
}

#[test]
fn initiator_refuses_same_secret_both_directions() {
    let r = InitiatorChap::new(
        Credentials::new(I_USER, I_SECRET),
        Some(Credentials::new(T_USER, I_SECRET)),
    );
    assert_eq!(r.unwrap_err(), ChapError::SameSecretBothDirections);

    // And a target that answers with the initiator's own secret is refused.
    let mut i = initiator(true)
        .with_algorithm_preference(vec![Algorithm::Md5])
        .unwrap();
    i.step(&[]);
    let AuthStep::Continue(keys) = i.step(&[
        kv(CHAP_A, "5"),
        kv(CHAP_I, "1"),
        kv(CHAP_C, encode_binary(&[1u8; 16])),
    ]) else {
        panic!()
    };
    let ii = parse_identifier(get(&keys, CHAP_I).unwrap()).unwrap();
    let ic = decode_binary(get(&keys, CHAP_C).unwrap(), 1024).unwrap();
    let step = i.step(&[
        kv(CHAP_N, T_USER),
        kv(
            CHAP_R,
            encode_binary(&response(Algorithm::Md5, ii, I_SECRET, &ic)),
        ),
    ]);
    assert!(
        matches!(step, AuthStep::Failed(AuthFailure::AuthenticationFailed(ref m)) if m.contains("own secret")),
        "{step:?}"
    );
}

#[test]
fn unsupported_algorithm() {
    // The target accepts nothing the initiator offers.
    let mut i = initiator(false)
        .with_algorithm_preference(vec![Algorithm::Sha1])
        .unwrap();
    let mut t =
        TargetChap::new(lookup_one(I_USER, I_SECRET), None, vec![Algorithm::Md5], 16).unwrap();
    let (side, f) = drive(&mut i, &mut t).unwrap_err();
    assert!(matches!(side, Side::Target));
    assert!(
        matches!(f, AuthFailure::Protocol(ref m) if m.contains("no acceptable")),
        "{f:?}"
    );

    // Unknown values in the list are skipped, not fatal.
    let mut t = target(false);
    let step = t.step(&[kv(CHAP_A, "129,x,,5")]);
    let AuthStep::Continue(keys) = step else {
        panic!("{step:?}")
    };
    assert_eq!(get(&keys, CHAP_A), Some("5"));

    // The target answers with something we did not offer, or rejects.
    for answer in ["7", "5,8", "Reject", "abc"] {
        let mut i = initiator(false)
            .with_algorithm_preference(vec![Algorithm::Md5])
            .unwrap();
        i.step(&[]);
        let step = i.step(&[kv(CHAP_A, answer), kv(CHAP_I, "1"), kv(CHAP_C, "0x0102")]);
        assert!(
            matches!(step, AuthStep::Failed(AuthFailure::Protocol(_))),
            "{answer}: {step:?}"
        );
    }
}

#[test]
fn short_secrets() {
    let short = b"short".to_vec();
    assert!(matches!(
        InitiatorChap::new(Credentials::new(I_USER, short.clone()), None),
        Err(ChapError::SecretTooShort { len: 5, min: 12 })
    ));
    assert!(matches!(
        TargetChap::new(
            lookup_one(I_USER, I_SECRET),
            Some(Credentials::new(T_USER, short.clone())),
            Algorithm::ALL.to_vec(),
            16
        ),
        Err(ChapError::SecretTooShort { .. })
    ));
    // Allowed explicitly on both sides, it works.
    let mut i = InitiatorChap::with_policy(
        Credentials::new(I_USER, short.clone()),
        None,
        SecretPolicy::AllowShort,
    )
    .unwrap();
    let mut t = TargetChap::with_policy(
        lookup_one(I_USER, b"short"),
        None,
        Algorithm::ALL.to_vec(),
        16,
        SecretPolicy::AllowShort,
    )
    .unwrap();
    drive(&mut i, &mut t).unwrap();
    // A strict target refuses a short secret from its own account database.
    let mut i = InitiatorChap::with_policy(
        Credentials::new(I_USER, short),
        None,
        SecretPolicy::AllowShort,
    )
    .unwrap();
    let mut t = TargetChap::new(
        lookup_one(I_USER, b"short"),
        None,
        Algorithm::ALL.to_vec(),
        16,
    )
    .unwrap();
    let (_, f) = drive(&mut i, &mut t).unwrap_err();
    assert!(
        matches!(f, AuthFailure::AuthenticationFailed(ref m) if m.contains("policy")),
        "{f:?}"
    );
}

#[test]
fn bad_configuration() {
    assert!(matches!(
        TargetChap::new(lookup_one(I_USER, I_SECRET), None, vec![], 16),
        Err(ChapError::NoAlgorithms)
    ));
    for len in [0, 15, 1025] {
        assert!(matches!(
            TargetChap::new(
                lookup_one(I_USER, I_SECRET),
                None,
                Algorithm::ALL.to_vec(),
                len
            ),
            Err(ChapError::ChallengeLength { .. })
        ));
        assert!(initiator(true).with_challenge_len(len).is_err());
    }
    assert!(matches!(
        initiator(false).with_algorithm_preference(vec![]),
        Err(ChapError::NoAlgorithms)
    ));
    let i = initiator(false)
        .with_algorithm_preference(vec![Algorithm::Md5, Algorithm::Md5, Algorithm::Sha1])
        .unwrap();
    assert_eq!(i.algorithm_preference(), &[Algorithm::Md5, Algorithm::Sha1]);
    assert!(matches!(
        InitiatorChap::new(Credentials::new("", I_SECRET), None),
        Err(ChapError::EmptyUser)
    ));
}

#[test]
fn malformed_values_from_target() {
    let cases: Vec<Vec<KeyValue>> = vec![
        vec![kv(CHAP_A, "5"), kv(CHAP_I, "1"), kv(CHAP_C, "0xzz")],
        vec![kv(CHAP_A, "5"), kv(CHAP_I, "1"), kv(CHAP_C, "0b@@@@")],
        vec![kv(CHAP_A, "5"), kv(CHAP_I, "1"), kv(CHAP_C, "1234")],
        vec![kv(CHAP_A, "5"), kv(CHAP_I, "1"), kv(CHAP_C, "0x")],
        vec![
            kv(CHAP_A, "5"),
            kv(CHAP_I, "1"),
            kv(CHAP_C, encode_binary(&[0u8; 1025])),
        ],
        vec![kv(CHAP_A, "5"), kv(CHAP_I, "256"), kv(CHAP_C, "0x01")],
        vec![kv(CHAP_A, "5"), kv(CHAP_C, "0x01")],
        vec![kv(CHAP_A, "5"), kv(CHAP_I, "1")],
        vec![kv(CHAP_I, "1"), kv(CHAP_C, "0x01")],
        vec![
            kv(CHAP_A, "5"),
            kv(CHAP_I, "1"),
            kv(CHAP_C, "0x01"),
            kv(CHAP_C, "0x02"),
        ],
    ];
    for keys in cases {
        let mut i = initiator(false)
            .with_algorithm_preference(vec![Algorithm::Md5])
            .unwrap();
        i.step(&[]);
        let step = i.step(&keys);
        assert!(
            matches!(step, AuthStep::Failed(AuthFailure::Protocol(_))),
            "{keys:?}: {step:?}"
        );
    }
    // Maximum-size challenge is fine.
    let mut i = initiator(false)
        .with_algorithm_preference(vec![Algorithm::Md5])
        .unwrap();
    i.step(&[]);
    let step = i.step(&[
        kv(CHAP_A, "5"),
        kv(CHAP_I, "1"),
        kv(CHAP_C, encode_base64(&[3u8; 1024])),
    ]);
    assert!(matches!(step, AuthStep::Done(_)), "{step:?}");
}

#[test]
fn malformed_values_from_initiator() {
    let bad_r: Vec<Vec<KeyValue>> = vec![
        vec![kv(CHAP_N, I_USER), kv(CHAP_R, "0xnothex")],
        vec![kv(CHAP_N, I_USER), kv(CHAP_R, "0b*")],
        vec![kv(CHAP_N, I_USER), kv(CHAP_R, "deadbeef")],
        vec![kv(CHAP_N, I_USER)],
        vec![kv(CHAP_R, "0x00")],
        vec![kv(CHAP_N, ""), kv(CHAP_R, "0x00")],
        vec![kv(CHAP_N, I_USER), kv(CHAP_R, encode_binary(&[0u8; 1025]))],
    ];
    for keys in bad_r {
        let mut t = target(true);
        target_challenge(&mut t, Algorithm::Md5);
        let step = t.step(&keys);
        assert!(
            matches!(step, AuthStep::Failed(AuthFailure::Protocol(_))),
            "{keys:?}: {step:?}"
        );
    }
    // A valid response with a broken mutual challenge.
    for extra in [
        vec![kv(CHAP_I, "1")],
        vec![kv(CHAP_C, "0x0102")],
        vec![kv(CHAP_I, "x"), kv(CHAP_C, "0x0102")],
        vec![kv(CHAP_I, "1"), kv(CHAP_C, "0xq")],
    ] {
        let mut t = target(true);
        let (id, c, _) = target_challenge(&mut t, Algorithm::Md5);
        let mut keys = vec![
            kv(CHAP_N, I_USER),
            kv(
                CHAP_R,
                encode_binary(&response(Algorithm::Md5, id, I_SECRET, &c)),
            ),
        ];
        keys.extend(extra);
        let step = t.step(&keys);
        assert!(
            matches!(step, AuthStep::Failed(AuthFailure::Protocol(_))),
            "{keys:?}: {step:?}"
        );
    }
    // Truncated response of the right encoding is an authentication failure.
    let mut t = target(false);
    let (id, c, _) = target_challenge(&mut t, Algorithm::Sha256);
    let r = response(Algorithm::Sha256, id, I_SECRET, &c);
    let step = t.step(&[kv(CHAP_N, I_USER), kv(CHAP_R, encode_binary(&r[..16]))]);
    assert!(
        matches!(step, AuthStep::Failed(AuthFailure::AuthenticationFailed(_))),
        "{step:?}"
    );
}

#[test]
fn challenges_are_fresh() {
    // With the OS RNG, two targets never send the same challenge.
    let mk = || {
        TargetChap::new(
            lookup_one(I_USER, I_SECRET),
            None,
            Algorithm::ALL.to_vec(),
            16,
        )
        .unwrap()
    };
    let (_, c1, _) = target_challenge(&mut mk(), Algorithm::Md5);
    let (_, c2, _) = target_challenge(&mut mk(), Algorithm::Md5);
    assert_ne!(c1, c2);
    assert_eq!(c1.len(), 16);
    // Challenge is at least the digest length even when configured shorter.
    let (_, c3, _) = target_challenge(&mut mk(), Algorithm::Sha3_256);
    assert_eq!(c3.len(), 32);
}

#[test]
fn debug_output_has_no_secrets() {
    let i = initiator(true);
    let t = target(true);
    for s in [format!("{i:?}"), format!("{t:?}")] {
        assert!(!s.contains("secret-"), "{s}");
    }
}
