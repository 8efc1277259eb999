//! CRC32C (RFC 7143 §11.1, `proto::digest`) over a header (48 bytes), an
//! 8 KiB and a 256 KiB data segment; criterion reports the throughput.
//! The `crc32c` crate picks the SSE4.2 instruction at run time when the
//! CPU has it (printed first); without it, it falls back to tables at a
//! fraction of the speed.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod hot;

fn crc(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    eprintln!(
        "crc32c: SSE4.2 {}",
        if std::arch::is_x86_feature_detected!("sse4.2") {
            "available (hardware CRC32C)"
        } else {
            "missing (software tables)"
        }
    );
    let mut g = c.benchmark_group("crc32c");
    for (name, len) in [("48B", 48), ("8KiB", 8 << 10), ("256KiB", 256 << 10)] {
        let data = hot::payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| {
            b.iter(|| proto::digest::crc32c(std::hint::black_box(&data)))
        });
    }
    g.finish();
}

criterion_group!(benches, crc);
criterion_main!(benches);
