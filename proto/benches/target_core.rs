//! The target's sans-IO connection core (`proto::session::target`), one
//! command at a time as the shell drives it: admit a SCSI Command, take
//! the Execute event, complete it, drain every PDU to send (RFC 7143
//! §11.3, §11.4, §11.7). READs of 4 KiB and 128 KiB (one Data-In with
//! status at the initiator's MaxRecvDataSegmentLength of 256 KiB; 16
//! Data-In at 8 KiB), and 4 KiB / 128 KiB WRITEs whose data all comes as
//! immediate data.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod hot;

fn core(c: &mut Criterion) {
    let mut g = c.benchmark_group("target_core");
    g.throughput(Throughput::Elements(1));
    for (name, len, mrdsl) in [
        ("read_4k", 4 << 10, 256 << 10),
        ("read_128k", 128 << 10, 256 << 10),
        ("read_128k_mrdsl_8k", 128 << 10, 8 << 10),
    ] {
        let data = hot::payload(len);
        let mut core = hot::Core::new(mrdsl);
        g.bench_function(name, |b| b.iter(|| core.read(&data)));
    }
    for (name, len) in [
        ("write_4k_immediate", 4 << 10),
        ("write_128k_immediate", 128 << 10),
    ] {
        let data = hot::payload(len);
        let mut core = hot::Core::new(256 << 10);
        g.bench_function(name, |b| b.iter(|| core.write_immediate(&data)));
    }
    g.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
