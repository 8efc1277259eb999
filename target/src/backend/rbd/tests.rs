//! The RBD backend against a real cluster (`ISCSI_TEST_CEPH_CONF`, see
//! `scripts/ceph-mini.sh`); skipped with a message without one.

use super::*;
use std::process::Command;

fn conf() -> Option<String> {
    match std::env::var("ISCSI_TEST_CEPH_CONF") {
        Ok(c) if std::path::Path::new(&c).exists() => Some(c),
        _ => {
            eprintln!(
                "skipping: no Ceph cluster (scripts/ceph-mini.sh start, then set \
                 ISCSI_TEST_CEPH_CONF to its ceph.conf)"
            );
            None
        }
    }
}

fn rbd(conf: &str, args: &[&str]) -> bool {
    Command::new("timeout")
        .args(["60", "rbd", "-c", conf])
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// A fresh image, removed on drop.
struct Img {
    conf: String,
    spec: RbdSpec,
}

impl Img {
    fn new(conf: &str, tag: &str, size: &str) -> Img {
        let image = format!("ut-{tag}-{}", std::process::id());
        let name = format!("rbd/{image}");
        rbd(conf, &["rm", "--no-progress", &name]);
        assert!(rbd(conf, &["create", "--size", size, &name]));
        Img {
            conf: conf.into(),
            spec: RbdSpec {
                pool: "rbd".into(),
                image,
                conf: Some(conf.into()),
                timeout_secs: Some(10),
                ..Default::default()
            },
        }
    }
}

impl Img {
    /// Opens the image writable from a runtime (open blocks).
    async fn open_async(&self) -> RbdBackend {
        let spec = self.spec.clone();
        tokio::task::spawn_blocking(move || RbdBackend::open(&spec, false))
            .await
            .unwrap()
            .expect("open")
    }
}

impl Drop for Img {
    fn drop(&mut self) {
        rbd(
            &self.conf,
            &["rm", "--no-progress", &self.spec.display_name()],
        );
    }
}

#[test]
fn feature_names_follow_the_bits() {
    assert_eq!(
        feature_names(1 | 4 | 8 | 16 | 32),
        [
            "layering",
            "exclusive-lock",
            "object-map",
            "fast-diff",
            "deep-flatten"
        ]
    );
    assert!(feature_names(0).is_empty());
}

#[test]
fn sync_path_allocation_map_and_info() {
    let Some(c) = conf() else { return };
    let img = Img::new(&c, "sync", "16M");
    let b = RbdBackend::open(&img.spec, false).expect("open");
    assert_eq!(b.size(), 16 << 20);
    assert!(!b.unmap_reads_zero());
    assert_eq!(b.unmap_granularity(), 64 << 10);
    super::super::tests::exercise(&b, false);
    // Objects are 4 MiB: data written at 9 MiB allocates [8, 12) MiB.
    b.write_at(&[7u8; 4096], 9 << 20).unwrap();
    Backend::flush(&b).unwrap();
    assert_eq!(b.seek_data(4 << 20).unwrap(), Some(8 << 20));
    assert_eq!(b.seek_hole(8 << 20).unwrap(), 12 << 20);
    assert_eq!(b.seek_data(12 << 20).unwrap(), None);
    let info = b.info().unwrap();
    assert_eq!(info["lock"], "exclusive (held)");
    assert!(info["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "exclusive-lock"));
    assert!(b.read_at(&mut [0u8; 512], 16 << 20).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_path_compare_and_write_and_resize() {
    let Some(c) = conf() else { return };
    let img = Img::new(&c, "aio", "8M");
    let b = img.open_async().await;
    let a = b.aio().expect("rbd has an async path");
    // Many writes in flight at once.
    let futs: Vec<_> = (0..64u64)
        .map(|i| a.write(i * 8192, Bytes::from(vec![i as u8; 8192])))
        .collect();
    for f in futs {
        f.await.unwrap();
    }
    let got = a.read(8192 * 5, 8192).await.unwrap();
    assert!(got.iter().all(|&x| x == 5));
    // COMPARE AND WRITE: equal -> written; differing -> offset of the first
    // differing byte, nothing written.
    let old = Bytes::from(vec![3u8; 512]);
    let new = Bytes::from(vec![9u8; 512]);
    assert_eq!(
        a.compare_and_write(3 * 8192, old.clone(), new.clone())
            .await
            .unwrap(),
        None
    );
    let mut cmp = vec![9u8; 512];
    cmp[100] = 0;
    let r = a
        .compare_and_write(3 * 8192, Bytes::from(cmp), Bytes::from(vec![1u8; 512]))
        .await
        .unwrap();
    assert_eq!(r, Some(100));
    assert!(a.read(3 * 8192, 512).await.unwrap().iter().all(|&x| x == 9));
    // Write zeroes, write same, discard.
    a.write_zeroes(0, 8192).await.unwrap();
    assert!(a.read(0, 8192).await.unwrap().iter().all(|&x| x == 0));
    a.write_same(8192, 4096, Bytes::from(vec![0xEEu8; 512]))
        .await
        .unwrap();
    assert!(a.read(8192, 4096).await.unwrap().iter().all(|&x| x == 0xEE));
    a.discard(4 << 20, 4 << 20).await.unwrap();
    a.flush().await.unwrap();
    // A resize by the rbd CLI reaches the backend through the watch.
    let name = img.spec.display_name();
    let c2 = c.clone();
    assert!(
        tokio::task::spawn_blocking(move || rbd(&c2, &["resize", "--size", "12M", &name]))
            .await
            .unwrap()
    );
    let t0 = std::time::Instant::now();
    while b.size() != 12 << 20 && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.size(), 12 << 20);
    drop(b);
}

/// Sequential streams started together are merged into one librbd
/// operation (`merge`), and every command still gets exactly its own
/// bytes: adjacent writes and reads of mixed sizes, across an object
/// boundary, checked against the unmerged synchronous path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_streams_give_each_command_its_own_bytes() {
    let Some(c) = conf() else { return };
    let img = Img::new(&c, "merge", "16M");
    let b = img.open_async().await;
    let a = b.aio().expect("rbd has an async path");
    let sizes = [4096usize, 65536, 512, 131072, 8192, 262144, 1024, 32768];
    // A stream from 3 MiB + 512, over the 4 MiB object boundary; its
    // first write starts the stream, the rest continue it.
    let start = (3 << 20) + 512u64;
    let mut expect = Vec::new();
    let mut writes = Vec::new();
    let mut off = start;
    for i in 0..24 {
        let len = sizes[i % sizes.len()];
        let data: Vec<u8> = (0..len)
            .map(|j| (j as u8) ^ (i as u8).wrapping_mul(37))
            .collect();
        expect.extend_from_slice(&data);
        writes.push(a.write(off, Bytes::from(data)));
        off += len as u64;
    }
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    let total = expect.len();
    // Read back with other splits, all in flight together.
    let mut reads = Vec::new();
    let (mut at, mut i) = (0usize, 0usize);
    while at < total {
        let len = sizes[(i * 3 + 1) % sizes.len()].min(total - at);
        reads.push((at, a.read(start + at as u64, len)));
        at += len;
        i += 1;
    }
    let (ats, futs): (Vec<_>, Vec<_>) = reads.into_iter().unzip();
    for (at, got) in ats.into_iter().zip(futures::future::join_all(futs).await) {
        let got = got.unwrap();
        assert_eq!(&got[..], &expect[at..at + got.len()], "read at +{at}");
    }
    assert!(
        b.queue.merged() >= 20,
        "merged {} requests",
        b.queue.merged()
    );
    // The synchronous path (never merged) sees the same bytes.
    let b2 = std::sync::Arc::new(b);
    let b3 = b2.clone();
    let all = tokio::task::spawn_blocking(move || {
        let mut v = vec![0u8; total];
        b3.read_at(&mut v, start).map(|_| v)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(all == expect);
}

/// Queued requests are not overtaken: a write that continues a stream is
/// queued, and a later write overlapping it in the same batch, which is no
/// stream, goes behind it instead of straight to librbd, so the later
/// write's bytes win (RADOS keeps one client's order per object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_writes_keep_their_arrival_order() {
    let Some(c) = conf() else { return };
    let img = Img::new(&c, "order", "8M");
    let b = img.open_async().await;
    let a = b.aio().expect("rbd has an async path");
    let k = 4096u64;
    a.write(0, Bytes::from(vec![1u8; 4096])).await.unwrap();
    // Continues the stream that ended at 4 KiB: queued.
    let first = a.write(k, Bytes::from(vec![0xAAu8; 8192]));
    // Overlaps it on [4 KiB, 8 KiB) and starts where no stream ended.
    let second = a.write(0, Bytes::from(vec![0xBBu8; 8192]));
    let (r1, r2) = futures::join!(first, second);
    r1.unwrap();
    r2.unwrap();
    let got = a.read(0, 12288).await.unwrap();
    assert!(
        got[..8192].iter().all(|&x| x == 0xBB),
        "the later write wins"
    );
    assert!(got[8192..].iter().all(|&x| x == 0xAA));
    // Nor does an operation that is never merged: write-zeroes over a
    // queued write lands after it.
    a.write(12288, Bytes::from(vec![2u8; 4096])).await.unwrap();
    let queued = a.write(16384, Bytes::from(vec![0xCCu8; 8192]));
    let zero = a.write_zeroes(16384, 4096);
    let (r1, r2) = futures::join!(queued, zero);
    r1.unwrap();
    r2.unwrap();
    let got = a.read(16384, 8192).await.unwrap();
    assert!(
        got[..4096].iter().all(|&x| x == 0),
        "write-zeroes came last"
    );
    assert!(got[4096..].iter().all(|&x| x == 0xCC));
}

/// Reads land in buffers that are never zeroed first: librbd must fill
/// every byte, holes included. Freed read buffers holding data are reused
/// by the allocator for the next reads, so a byte librbd left alone would
/// show the old data here instead of zeros.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fill_their_whole_buffer() {
    let Some(c) = conf() else { return };
    let img = Img::new(&c, "fill", "8M");
    let b = img.open_async().await;
    let a = b.aio().expect("rbd has an async path");
    const LEN: usize = 128 << 10;
    a.write(0, Bytes::from(vec![0x5Au8; LEN])).await.unwrap();
    for round in 0..8u64 {
        let data = a.read(0, LEN).await.unwrap();
        assert!(data.iter().all(|&x| x == 0x5A), "round {round}: data");
        drop(data);
        // Never written: [4, 8) MiB is a hole in an object that does not exist.
        let hole = a.read((4 << 20) + round * LEN as u64, LEN).await.unwrap();
        assert_eq!(hole.len(), LEN);
        assert!(hole.iter().all(|&x| x == 0), "round {round}: hole");
    }
    let mut buf = vec![0xFFu8; LEN];
    let b2 = tokio::task::spawn_blocking(move || b.read_at(&mut buf, 6 << 20).map(|_| buf))
        .await
        .unwrap()
        .unwrap();
    assert!(b2.iter().all(|&x| x == 0));
}

/// Reads are slices of librbd's own buffers (`ffi::zc`): a read inside
/// one object is served without a copy; one across an object boundary
/// (two OSD replies, two segments) is copied, and counted. A result may
/// outlive the image and the cluster handle that read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_slices_of_librbd_buffers_and_outlive_the_image() {
    let Some(c) = conf() else { return };
    let img = Img::new(&c, "zc", "8M");
    let b = img.open_async().await;
    let a = b.aio().expect("rbd has an async path");
    const K: u64 = 128 << 10;
    let edge = 4u64 << 20; // the object boundary
    let data: Vec<u8> = (0..2 * K as usize).map(|i| (i * 7 % 251) as u8).collect();
    a.write(edge - K, Bytes::from(data.clone())).await.unwrap();
    let (z0, c0) = b.image.read_stats();
    let inside = a.read(edge - K, K as usize).await.unwrap();
    let (z1, c1) = b.image.read_stats();
    assert_eq!((z1 - z0, c1 - c0), (1, 0), "inside one object: a slice");
    let across = a.read(edge - 4096, 8192).await.unwrap();
    let (z2, c2) = b.image.read_stats();
    assert_eq!((z2 - z1, c2 - c1), (0, 1), "across objects: a copy");
    assert_eq!(&across[..], &data[K as usize - 4096..K as usize + 4096]);
    drop(b);
    assert_eq!(&inside[..], &data[..K as usize], "after the image closed");
}
