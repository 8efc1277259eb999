//! Random mixes of reads and writes of random sizes and offsets, under
//! random negotiated limits, with random interleaving of delivery across
//! two connections: every command completes, every read returns what a
//! model of the disk holds at that point, and the disk ends as the model.

use proptest::prelude::*;

use super::harness::{pattern, Limits, Pair, BLOCK};

const BLOCKS: u32 = 64;

#[derive(Debug, Clone)]
enum Op {
    Read { lba: u32, blocks: u16 },
    Write { lba: u32, blocks: u16, seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    (any::<bool>(), 0..BLOCKS, 1u16..24, any::<u64>()).prop_map(|(w, lba, n, seed)| {
        let blocks = n.min((BLOCKS - lba) as u16).max(1);
        let lba = lba.min(BLOCKS - u32::from(blocks));
        if w {
            Op::Write { lba, blocks, seed }
        } else {
            Op::Read { lba, blocks }
        }
    })
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        any::<bool>(),
        any::<bool>(),
        1u32..=16,
        1u32..=32,
        1u32..=3,
        1u32..=16,
        1u32..=16,
        1u32..=8,
    )
        .prop_map(|(imm, r2t, fb, mb, max_r2t, tm, im, depth)| {
            let max_burst = mb * 512;
            Limits {
                immediate_data: imm,
                initial_r2t: r2t,
                first_burst: (fb * 512).min(max_burst),
                max_burst,
                max_r2t,
                target_mrdsl: tm * 512,
                initiator_mrdsl: im * 512,
                depth,
                conns: 2,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_mixes_complete_with_the_right_data(
        l in limits(),
        batches in prop::collection::vec(prop::collection::vec(op(), 1..6), 1..6),
        picks in prop::collection::vec(0usize..4, 0..400),
    ) {
        let mut p = Pair::new(l, BLOCKS as usize);
        let mut model = p.disk.clone();
        let mut picks = picks.into_iter();
        for batch in batches {
            // A batch runs concurrently: its writes must not overlap
            // anything else in the batch for the expected data to be
            // defined; overlapping ops are dropped.
            let mut taken: Vec<(u32, u32)> = Vec::new();
            let mut reads = Vec::new();
            for o in batch {
                let (lba, n) = match &o {
                    Op::Read { lba, blocks } | Op::Write { lba, blocks, .. } => (*lba, u32::from(*blocks)),
                };
                if taken.iter().any(|&(a, m)| lba < a + m && a < lba + n) {
                    continue;
                }
                taken.push((lba, n));
                let range = lba as usize * BLOCK..(lba + n) as usize * BLOCK;
                match o {
                    Op::Read { lba, blocks } => {
                        let id = p.read(lba, blocks);
                        reads.push((id, model[range].to_vec()));
                    }
                    Op::Write { lba, blocks, seed } => {
                        let data = pattern(seed, usize::from(blocks) * BLOCK);
                        model[range].copy_from_slice(&data);
                        let id = p.write(lba, data);
                        reads.push((id, Vec::new()));
                    }
                }
            }
            let order: Vec<usize> = picks.by_ref().take(100).collect();
            p.run_with(&order);
            prop_assert!(p.failed.is_empty(), "{:?}", p.failed);
            for (id, want) in reads {
                prop_assert_eq!(p.data(id), &want[..], "command {}", id);
            }
        }
        prop_assert_eq!(&p.disk, &model);
        prop_assert_eq!(p.ini.issued_count() + p.ini.queued_count(), 0);
        prop_assert_eq!(p.session.task_count(), 0);
    }
}
