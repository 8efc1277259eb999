//! The hot paths of `proto/benches` without criterion, for counting
//! instructions: `hotpath WORKLOAD N` runs WORKLOAD N times and exits.
//! `scripts/bench-callgrind.sh` runs it under `valgrind --tool=callgrind`
//! with N and with 0 and prints (Ir(N) - Ir(0)) / N: instructions per
//! operation, the same on a busy machine as on a quiet one.
//!
//! Workloads: `read_4k`, `read_128k`, `read_128k_mrdsl_8k`,
//! `write_4k_immediate`, `write_128k_immediate` (the target core, one
//! command each, as in `benches/target_core.rs`); `encode_command`,
//! `decode_command`, `encode_data_in_8k`, `decode_data_in_8k` (no
//! digests), `decode_data_in_8k_crc` (CRC32C header and data digests);
//! `crc32c_8k`.

#[path = "../benches/hot/mod.rs"]
mod hot;

use proto::pdu::{DigestConfig, Pdu};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (Some(w), Some(n)) = (a.get(1), a.get(2).and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: hotpath WORKLOAD N (see the module docs)");
        std::process::exit(2);
    };
    let mut sink = 0usize;
    let mut core = |mrdsl: u32, len: usize, write: bool| {
        let data = hot::payload(len);
        let mut c = hot::Core::new(mrdsl);
        for _ in 0..n {
            sink += if write {
                c.write_immediate(&data)
            } else {
                c.read(&data)
            };
        }
    };
    let command: Pdu = hot::scsi_command(1, 1, false, 4096, bytes::Bytes::new()).into();
    let data_in: Pdu = hot::data_in(hot::payload(8 << 10)).into();
    let codec = |pdu: &Pdu, digests: DigestConfig, decode: bool| {
        let frame = hot::frame(pdu, digests);
        let mut s = 0;
        for _ in 0..n {
            s += if decode {
                Pdu::decode(frame.clone(), digests).map_or(0, |p| p.data().len())
            } else {
                pdu.encode(digests).len()
            };
        }
        s
    };
    match w.as_str() {
        "read_4k" => core(256 << 10, 4 << 10, false),
        "read_128k" => core(256 << 10, 128 << 10, false),
        "read_128k_mrdsl_8k" => core(8 << 10, 128 << 10, false),
        "write_4k_immediate" => core(256 << 10, 4 << 10, true),
        "write_128k_immediate" => core(256 << 10, 128 << 10, true),
        "encode_command" => sink = codec(&command, DigestConfig::NONE, false),
        "decode_command" => sink = codec(&command, DigestConfig::NONE, true),
        "encode_data_in_8k" => sink = codec(&data_in, DigestConfig::NONE, false),
        "decode_data_in_8k" => sink = codec(&data_in, DigestConfig::NONE, true),
        "decode_data_in_8k_crc" => sink = codec(&data_in, DigestConfig::BOTH, true),
        "crc32c_8k" => {
            let d = hot::payload(8 << 10);
            for _ in 0..n {
                sink ^= proto::digest::crc32c(std::hint::black_box(&d)) as usize;
            }
        }
        other => {
            eprintln!("unknown workload {other}");
            std::process::exit(2);
        }
    }
    std::hint::black_box(sink);
}
