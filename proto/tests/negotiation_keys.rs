//! Table-wide negotiation properties (RFC 7143 §6.2, §13): whatever the
//! two sides want, the responder's answer is admissible to the originator,
//! respects the key's result function, and both sides end with the same
//! parameters.

use proptest::prelude::*;
use proto::login::{Digest, OperationalConfig, SessionType};
use proto::text::keys::{self, lookup, parse_bool, parse_number, KeyType, KEYS};
use proto::text::negotiate::{accept_response, answer_offer, Negotiator, Role};
use proto::text::{encode_kv, parse_kv};

/// A legal value for a negotiated key, from a seed.
fn legal_value(k: &keys::KeyDef, seed: u64) -> String {
    match k.ty {
        KeyType::BoolAnd | KeyType::BoolOr => keys::bool_str(seed.is_multiple_of(2)).to_string(),
        KeyType::NumMin | KeyType::NumMax => {
            let (lo, hi) = k.range.unwrap();
            (lo + seed % (hi - lo + 1)).to_string()
        }
        KeyType::List => {
            // A non-empty subset of the legal values, in a seed-dependent order.
            let mut v: Vec<&str> = k.values.to_vec();
            let r = (seed as usize) % v.len();
            v.rotate_left(r);
            let n = 1 + (seed as usize / 7) % v.len();
            v[..n].join(",")
        }
        _ => unreachable!(),
    }
}

fn negotiated_keys() -> Vec<&'static keys::KeyDef> {
    KEYS.iter()
        .filter(|k| {
            matches!(
                k.ty,
                KeyType::BoolAnd
                    | KeyType::BoolOr
                    | KeyType::NumMin
                    | KeyType::NumMax
                    | KeyType::List
            )
        })
        .collect()
}

proptest! {
    #[test]
    fn answers_are_admissible_and_follow_the_result_function(idx in 0usize..64, a in any::<u64>(), b in any::<u64>()) {
        let ks = negotiated_keys();
        let k = ks[idx % ks.len()];
        let offer = legal_value(k, a);
        let local = legal_value(k, b);
        let answer = answer_offer(k, &offer, &local);
        match k.ty {
            KeyType::List => {
                // Either a value both lists contain, or Reject when they share none.
                let shared: Vec<&str> = offer.split(',').filter(|v| local.split(',').any(|l| l == *v)).collect();
                if shared.is_empty() {
                    prop_assert_eq!(answer.as_str(), "Reject");
                } else {
                    prop_assert_eq!(answer.as_str(), shared[0]);
                }
            }
            KeyType::BoolAnd => prop_assert_eq!(
                parse_bool(&answer), Some(parse_bool(&offer).unwrap() && parse_bool(&local).unwrap())),
            KeyType::BoolOr => prop_assert_eq!(
                parse_bool(&answer), Some(parse_bool(&offer).unwrap() || parse_bool(&local).unwrap())),
            KeyType::NumMin => prop_assert_eq!(
                parse_number(&answer), Some(parse_number(&offer).unwrap().min(parse_number(&local).unwrap()))),
            KeyType::NumMax => prop_assert_eq!(
                parse_number(&answer), Some(parse_number(&offer).unwrap().max(parse_number(&local).unwrap()))),
            _ => unreachable!(),
        }
        let accepted = accept_response(k, &offer, &answer);
        prop_assert!(accepted.is_ok(), "{}: offer {} answer {} -> {:?}", k.name, offer, answer, accepted);
    }

    #[test]
    fn out_of_range_offers_are_rejected(idx in 0usize..64, above in 1u64..1_000_000) {
        let ks: Vec<_> = negotiated_keys().into_iter().filter(|k| k.range.is_some()).collect();
        let k = ks[idx % ks.len()];
        let (lo, hi) = k.range.unwrap();
        let local = lo.to_string();
        prop_assert_eq!(answer_offer(k, &(hi + above).to_string(), &local), "Reject");
        if lo > 0 {
            prop_assert_eq!(answer_offer(k, &(lo - 1).to_string(), &local), "Reject");
        }
        // And an originator refuses such an answer.
        prop_assert!(accept_response(k, &hi.to_string(), &(hi + above).to_string()).is_err());
    }

    #[test]
    fn both_roles_agree_for_any_configs(
        i_burst in 512u32..=16_777_215, t_burst in 512u32..=16_777_215,
        i_first in 512u32..=16_777_215, t_first in 512u32..=16_777_215,
        i_mrdsl in 512u32..=16_777_215, t_mrdsl in 512u32..=16_777_215,
        bools in any::<[bool; 8]>(), erl in 0u8..=2, i_dig in 0usize..3, t_dig in 0usize..3,
    ) {
        let digests = [vec![Digest::None], vec![Digest::Crc32c], vec![Digest::Crc32c, Digest::None]];
        let icfg = OperationalConfig {
            max_burst_length: i_burst, first_burst_length: i_first, max_recv_data_segment_length: i_mrdsl,
            initial_r2t: bools[0], immediate_data: bools[1], data_pdu_in_order: bools[2], data_sequence_in_order: bools[3],
            error_recovery_level: erl, header_digest: digests[i_dig].clone(), data_digest: digests[t_dig].clone(),
            ..OperationalConfig::default()
        };
        let tcfg = OperationalConfig {
            max_burst_length: t_burst, first_burst_length: t_first, max_recv_data_segment_length: t_mrdsl,
            initial_r2t: bools[4], immediate_data: bools[5], data_pdu_in_order: bools[6], data_sequence_in_order: bools[7],
            header_digest: digests[t_dig].clone(), data_digest: digests[i_dig].clone(),
            ..OperationalConfig::default()
        };
        let mut i = Negotiator::new(Role::Initiator, icfg, SessionType::Normal, true);
        let mut t = Negotiator::new(Role::Target, tcfg, SessionType::Normal, true);
        // Through the wire format.
        let offers = parse_kv(&encode_kv(&i.operational_offers())).unwrap();
        let mut p = t.process(&offers).unwrap();
        p.answers.extend(t.unsolicited_offers());
        let back = i.process(&parse_kv(&encode_kv(&p.answers)).unwrap()).unwrap();
        t.process(&back.answers).unwrap();
        prop_assert!(!i.has_pending() && !t.has_pending());
        let (is, ts) = (i.session_params(), t.session_params());
        prop_assert_eq!(&is, &ts);
        prop_assert!(is.first_burst_length <= is.max_burst_length);
        prop_assert!(is.max_burst_length <= i_burst.min(t_burst));
        prop_assert_eq!(is.initial_r2t, bools[0] || bools[4]);
        prop_assert_eq!(is.immediate_data, bools[1] && bools[5]);
        prop_assert_eq!(is.data_pdu_in_order, bools[2] || bools[6]);
        let (ic, tc) = (i.connection_params(), t.connection_params());
        prop_assert_eq!(ic.max_send_data_segment_length, t_mrdsl);
        prop_assert_eq!(tc.max_send_data_segment_length, i_mrdsl);
        prop_assert_eq!(ic.header_digest, tc.header_digest);
        prop_assert_eq!(ic.data_digest, tc.data_digest);
    }

    #[test]
    fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_kv(&data);
    }

    #[test]
    fn negotiator_never_panics_on_garbage(pairs in proptest::collection::vec(("[A-Za-z#_-]{1,20}", "[ -~]{0,20}"), 0..20)) {
        let mut n = Negotiator::new(Role::Target, OperationalConfig::default(), SessionType::Normal, true);
        let _ = n.process(&pairs);
        let _ = n.session_params();
    }
}

#[test]
fn digest_lists_without_overlap_are_rejected() {
    let hd = lookup(keys::HEADER_DIGEST).unwrap();
    assert_eq!(answer_offer(hd, "CRC32C", "None"), "Reject");
    // A Reject leaves the key at its default (None) on both sides.
    let mut i = Negotiator::new(
        Role::Initiator,
        OperationalConfig::default().with_digests_required(),
        SessionType::Normal,
        true,
    );
    let mut t = Negotiator::new(
        Role::Target,
        OperationalConfig {
            header_digest: vec![Digest::None],
            data_digest: vec![Digest::None],
            ..OperationalConfig::default()
        },
        SessionType::Normal,
        true,
    );
    let p = t.process(&i.operational_offers()).unwrap();
    assert!(p
        .answers
        .contains(&("HeaderDigest".to_string(), "Reject".to_string())));
    i.process(&p.answers).unwrap();
    assert!(!i.connection_params().header_digest);
    assert!(!t.connection_params().header_digest);
}
