//! Checks `chap::response` and the binary encodings against vectors that
//! python3's hashlib/base64 computed (tests/gen_vectors.py → tests/vectors.txt).

use chap::{decode_binary, encode_base64, encode_binary, response, Algorithm, MAX_BINARY_LEN};

const VECTORS: &str = include_str!("vectors.txt");

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("vector file holds valid hex")
}

#[test]
fn chap_responses_match_python() {
    let mut per_alg = [0usize; 9];
    for line in VECTORS.lines().filter(|l| l.starts_with("chap ")) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 6, "{line}");
        let alg = Algorithm::from_code(f[1].parse().unwrap()).unwrap();
        let id: u8 = f[2].parse().unwrap();
        let (secret, challenge, want) = (unhex(f[3]), unhex(f[4]), unhex(f[5]));
        let got = response(alg, id, &secret, &challenge);
        assert_eq!(got, want, "{alg} id={id}");
        // And through the wire encodings.
        assert_eq!(
            decode_binary(&encode_binary(&got), MAX_BINARY_LEN).unwrap(),
            want
        );
        per_alg[alg.code() as usize] += 1;
    }
    for a in Algorithm::ALL {
        assert!(per_alg[a.code() as usize] >= 5, "too few vectors for {a}");
    }
}

#[test]
fn base64_matches_python() {
    let mut n = 0;
    for line in VECTORS.lines().filter(|l| l.starts_with("b64 ")) {
        let f: Vec<&str> = line.split(' ').collect();
        let data = unhex(f[1]);
        assert_eq!(encode_base64(&data), f[2]);
        assert_eq!(decode_binary(f[2], MAX_BINARY_LEN).unwrap(), data);
        n += 1;
    }
    assert!(n >= 10);
}

/// The committed file must be exactly what the generator prints. Skipped
/// (with a message) when python3 is not installed.
#[test]
fn vectors_file_is_reproducible() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gen_vectors.py");
    match std::process::Command::new("python3").arg(script).output() {
        Ok(out) if out.status.success() => {
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                VECTORS,
                "tests/vectors.txt differs from `python3 tests/gen_vectors.py` output"
            );
        }
        Ok(out) => panic!(
            "gen_vectors.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("SKIP: python3 not available ({e}); vectors.txt not regenerated"),
    }
}
