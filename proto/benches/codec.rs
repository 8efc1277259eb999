//! PDU encode and decode on the data path (RFC 7143 §11): a SCSI Command
//! (header only), a SCSI Response (header only), and Data-In with 8 KiB and
//! 256 KiB of data, without digests and with CRC32C header and data
//! digests. Encoding does not copy the data segment, so without digests
//! its cost does not grow with the data; with digests it is the CRC.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use proto::pdu::{decode_frame, DecodeLimits, Pdu};

mod hot;

fn pdus() -> Vec<(&'static str, Pdu)> {
    vec![
        (
            "scsi_command",
            hot::scsi_command(1, 1, false, 4096, bytes::Bytes::new()).into(),
        ),
        ("scsi_response", hot::scsi_response().into()),
        ("data_in_8k", hot::data_in(hot::payload(8 << 10)).into()),
        ("data_in_256k", hot::data_in(hot::payload(256 << 10)).into()),
    ]
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (dname, digests) in hot::DIGESTS {
        for (name, pdu) in pdus() {
            g.throughput(Throughput::Bytes(pdu.encode(digests).len() as u64));
            g.bench_function(format!("{name}/{dname}"), |b| {
                b.iter(|| std::hint::black_box(&pdu).encode(digests))
            });
        }
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (dname, digests) in hot::DIGESTS {
        let limits = DecodeLimits {
            max_data_segment_length: 1 << 20,
            digests,
        };
        for (name, pdu) in pdus() {
            let frame = hot::frame(&pdu, digests);
            g.throughput(Throughput::Bytes(frame.len() as u64));
            // A whole frame already in memory (no copy: the data segment
            // is a slice of the frame).
            g.bench_function(format!("{name}/{dname}"), |b| {
                b.iter(|| Pdu::decode(frame.clone(), digests).expect("valid frame"))
            });
            // The stream decoder over a receive buffer, as the shells use
            // it (the buffer's fill is not timed).
            g.bench_function(format!("{name}/{dname}/stream"), |b| {
                b.iter_batched_ref(
                    || bytes::BytesMut::from(&frame[..]),
                    |buf| decode_frame(buf, &limits).expect("valid frame"),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
