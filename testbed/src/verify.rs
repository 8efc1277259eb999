//! Deterministic data patterns and a write/read verifier.
//!
//! Block content is a pure function of `(seed, lba, generation)`: a reader
//! that knows which generation of each block was last written can check any
//! block without keeping copies of the data. Each block starts with a
//! 32-byte header (`magic, seed, lba, generation`, little-endian u64s) so a
//! misdirected or stale block can be identified ([`Pattern::identify`]);
//! the rest is a SplitMix64 stream keyed by the same triple.
//!
//! [`Verifier`] tracks writes at any byte offset and length (not only whole
//! blocks): every write gets a fresh generation and the expected content of
//! a byte at offset `o` written in generation `g` is byte `o % block_size`
//! of block `(o / block_size, g)`.

use std::collections::BTreeMap;
use std::fmt;

const MAGIC: u64 = 0x7465_7374_6265_6421; // "testbed!"
const HEADER: usize = 32;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic block pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    seed: u64,
    block_size: usize,
}

impl Pattern {
    /// `block_size` must be at least 32 (room for the header).
    pub fn new(seed: u64, block_size: usize) -> Self {
        assert!(block_size >= HEADER, "block size must be >= {HEADER}");
        Pattern { seed, block_size }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Fill `buf` (one block) with the content of `(lba, generation)`.
    pub fn fill_block(&self, lba: u64, generation: u64, buf: &mut [u8]) {
        assert_eq!(buf.len(), self.block_size);
        for (i, v) in [MAGIC, self.seed, lba, generation].into_iter().enumerate() {
            buf[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        let mut state = self.seed ^ lba.rotate_left(17) ^ generation.rotate_left(41) ^ MAGIC;
        for chunk in buf[HEADER..].chunks_mut(8) {
            let r = splitmix64(&mut state).to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    /// The content of `(lba, generation)`.
    pub fn block(&self, lba: u64, generation: u64) -> Vec<u8> {
        let mut b = vec![0u8; self.block_size];
        self.fill_block(lba, generation, &mut b);
        b
    }

    /// If `block` is a complete, intact pattern block of this seed, which
    /// `(lba, generation)` is it?
    pub fn identify(&self, block: &[u8]) -> Option<(u64, u64)> {
        if block.len() != self.block_size {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&block[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        if word(0) != MAGIC || word(1) != self.seed {
            return None;
        }
        let (lba, generation) = (word(2), word(3));
        (self.block(lba, generation) == block).then_some((lba, generation))
    }
}

/// What a never-written byte must read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritten {
    /// Zero (a fresh sparse file or memory LUN).
    Zero,
    /// Anything (pre-existing content).
    Any,
}

/// A read that does not match what was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Device byte offset of the first differing byte.
    pub offset: u64,
    pub expected: u8,
    pub actual: u8,
    /// Generation expected there (`None`: never written).
    pub expected_generation: Option<u64>,
    /// What the block actually holds, if it is an intact pattern block.
    pub found: Option<(u64, u64)>,
    /// Number of differing bytes in the read.
    pub differing: usize,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "data mismatch at byte {}: expected {:#04x} (generation {:?}), read {:#04x}; {} bytes differ",
            self.offset, self.expected, self.expected_generation, self.actual, self.differing
        )?;
        if let Some((lba, g)) = self.found {
            write!(f, "; the block holds lba {lba} generation {g}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Mismatch {}

/// Generation meaning "as never written" (see [`Unwritten`]).
const NEVER: u64 = u64::MAX;
/// Generation meaning "anything" (a discarded range: NBD_CMD_TRIM and
/// SCSI UNMAP leave the content unspecified unless the device says more).
const ANY: u64 = u64::MAX - 1;

/// How the blocks of a read compare with the record ([`Verifier::audit`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Audit {
    /// Whole blocks looked at.
    pub blocks: u64,
    /// Blocks that hold an acceptable content.
    pub ok: u64,
    /// Blocks that hold an intact pattern block of the wrong generation or
    /// LBA (a lost write or a misdirected one).
    pub stale: u64,
    /// Blocks that match no acceptable content and are no intact pattern
    /// block either (a torn or corrupted block).
    pub torn: u64,
    /// Device byte offset of the first bad block, if any.
    pub first_bad: Option<u64>,
}

impl Audit {
    pub fn is_clean(&self) -> bool {
        self.stale == 0 && self.torn == 0
    }

    /// Add another audit's counts.
    pub fn merge(&mut self, o: &Audit) {
        self.blocks += o.blocks;
        self.ok += o.ok;
        self.stale += o.stale;
        self.torn += o.torn;
        self.first_bad = self.first_bad.or(o.first_bad);
    }
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} blocks: {} ok, {} stale, {} torn",
            self.blocks, self.ok, self.stale, self.torn
        )?;
        if let Some(o) = self.first_bad {
            write!(f, " (first bad block at byte {o})")?;
        }
        Ok(())
    }
}

/// Records writes (any offset/length) and checks reads against them.
///
/// A write whose outcome is unknown (in flight when a connection was cut,
/// never acknowledged) is recorded with [`Verifier::write_uncertain`]: until
/// it is overwritten, either the old or the new content is accepted there.
#[derive(Debug, Clone)]
pub struct Verifier {
    pattern: Pattern,
    size: u64,
    unwritten: Unwritten,
    /// Non-overlapping extents: start → (end exclusive, acceptable
    /// generations, most recent last). Generation 0 means zeros, NEVER
    /// means "as never written".
    extents: BTreeMap<u64, (u64, Vec<u64>)>,
    next_generation: u64,
}

/// One piece of a range: `[start, end)` with its acceptable generations
/// (`None`: a gap, never written).
type Piece = (u64, u64, Option<Vec<u64>>);

impl Verifier {
    /// A device of `size` bytes, seeded pattern with `block_size` blocks.
    pub fn new(seed: u64, block_size: usize, size: u64, unwritten: Unwritten) -> Self {
        Verifier {
            pattern: Pattern::new(seed, block_size),
            size,
            unwritten,
            extents: BTreeMap::new(),
            next_generation: 1,
        }
    }

    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Expected bytes for `[offset, offset+len)` in `generation`.
    fn generation_bytes(&self, offset: u64, len: usize, generation: u64) -> Vec<Option<u8>> {
        match generation {
            0 => vec![Some(0); len],
            ANY => vec![None; len],
            NEVER => match self.unwritten {
                Unwritten::Zero => vec![Some(0); len],
                Unwritten::Any => vec![None; len],
            },
            g => {
                let mut out = Vec::with_capacity(len);
                self.pattern_bytes(offset, len, g, &mut out);
                out.into_iter().map(Some).collect()
            }
        }
    }

    /// Pattern bytes for `[offset, offset+len)` written in `generation`.
    fn pattern_bytes(&self, offset: u64, len: usize, generation: u64, out: &mut Vec<u8>) {
        let bs = self.pattern.block_size as u64;
        let mut o = offset;
        let end = offset + len as u64;
        let mut block = vec![0u8; self.pattern.block_size];
        while o < end {
            let lba = o / bs;
            self.pattern.fill_block(lba, generation, &mut block);
            let from = (o % bs) as usize;
            let to = ((end - lba * bs).min(bs)) as usize;
            out.extend_from_slice(&block[from..to]);
            o = lba * bs + to as u64;
        }
    }

    fn check_range(&self, offset: u64, len: usize) -> u64 {
        let end = offset.checked_add(len as u64).expect("offset overflow");
        assert!(
            end <= self.size,
            "range [{offset}, {end}) beyond device size {}",
            self.size
        );
        end
    }

    /// Record an acknowledged write of `len` bytes at `offset` and return
    /// the data to write. Panics if the range is outside the device.
    pub fn write(&mut self, offset: u64, len: usize) -> Vec<u8> {
        let end = self.check_range(offset, len);
        let generation = self.next_generation;
        self.next_generation += 1;
        let mut data = Vec::with_capacity(len);
        self.pattern_bytes(offset, len, generation, &mut data);
        self.update(offset, end, |_| vec![generation]);
        data
    }

    /// Record a write that may or may not have reached the device (for
    /// example in flight when the connection was cut) and return its data.
    /// Until overwritten, reads there may return the previous content or
    /// this one.
    pub fn write_uncertain(&mut self, offset: u64, len: usize) -> Vec<u8> {
        let end = self.check_range(offset, len);
        let generation = self.next_generation;
        self.next_generation += 1;
        let mut data = Vec::with_capacity(len);
        self.pattern_bytes(offset, len, generation, &mut data);
        self.update(offset, end, |old| {
            let mut gens = old.map(<[u64]>::to_vec).unwrap_or_else(|| vec![NEVER]);
            gens.push(generation);
            gens
        });
        data
    }

    /// Record that `[offset, offset+len)` now reads as zeros (UNMAP, WRITE
    /// SAME with zeros, or a trimmed NBD range).
    pub fn zeroed(&mut self, offset: u64, len: usize) {
        let end = self.check_range(offset, len);
        self.update(offset, end, |_| vec![0]);
    }

    /// Record that `[offset, offset+len)` was discarded (NBD TRIM, SCSI
    /// UNMAP without LBPRZ): until written again any content is accepted.
    pub fn discarded(&mut self, offset: u64, len: usize) {
        let end = self.check_range(offset, len);
        self.update(offset, end, |_| vec![ANY]);
    }

    /// Classify each whole block of a read at `offset` (block-aligned) as
    /// acceptable, stale (an intact pattern block that should not be there:
    /// a lost or misdirected write) or torn (anything else that does not
    /// match). Bytes past the last whole block are not looked at.
    pub fn audit(&self, offset: u64, data: &[u8]) -> Audit {
        let bs = self.pattern.block_size;
        let mut a = Audit::default();
        for (i, block) in data.chunks_exact(bs).enumerate() {
            let at = offset + (i * bs) as u64;
            a.blocks += 1;
            if self.check(at, block).is_ok() {
                a.ok += 1;
                continue;
            }
            a.first_bad.get_or_insert(at);
            match self.pattern.identify(block) {
                Some(_) => a.stale += 1,
                None => a.torn += 1,
            }
        }
        a
    }

    /// Split `[start, end)` into pieces along existing extents and gaps.
    fn pieces(&self, start: u64, end: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut o = start;
        while o < end {
            let covering = self
                .extents
                .range(..=o)
                .next_back()
                .filter(|(_, (e, _))| o < *e);
            match covering {
                Some((_, (e, g))) => {
                    let stop = (*e).min(end);
                    out.push((o, stop, Some(g.clone())));
                    o = stop;
                }
                None => {
                    let next = self
                        .extents
                        .range(o..)
                        .next()
                        .map(|(&s, _)| s)
                        .unwrap_or(end);
                    let stop = next.min(end);
                    out.push((o, stop, None));
                    o = stop;
                }
            }
        }
        out
    }

    /// Replace the generations of every byte in `[start, end)` with
    /// `f(old generations)`.
    fn update(&mut self, start: u64, end: u64, f: impl Fn(Option<&[u64]>) -> Vec<u64>) {
        if start >= end {
            return;
        }
        let pieces = self.pieces(start, end);
        // Trim an extent that starts before `start` and overlaps.
        if let Some((&s, (e, g))) = self.extents.range(..start).next_back() {
            let (e, g) = (*e, g.clone());
            if e > start {
                self.extents.insert(s, (start, g.clone()));
                if e > end {
                    self.extents.insert(end, (e, g));
                }
            }
        }
        // Remove extents starting inside the range, keeping any tail.
        let inside: Vec<u64> = self.extents.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            if let Some((e, g)) = self.extents.remove(&s) {
                if e > end {
                    self.extents.insert(end, (e, g));
                }
            }
        }
        for (s, e, old) in pieces {
            self.extents.insert(s, (e, f(old.as_deref())));
        }
    }

    /// The most recent generation written at byte `offset` (`Some(0)`:
    /// zeroed, `None`: never written).
    pub fn generation_at(&self, offset: u64) -> Option<u64> {
        let (_, (e, g)) = self.extents.range(..=offset).next_back()?;
        if offset < *e {
            g.last().copied().filter(|g| *g != NEVER && *g != ANY)
        } else {
            None
        }
    }

    /// Expected content of `[offset, offset+len)`; `None` per byte where it
    /// is unconstrained ([`Unwritten::Any`]) or uncertain.
    pub fn expected(&self, offset: u64, len: usize) -> Vec<Option<u8>> {
        let mut out = Vec::with_capacity(len);
        for (s, e, gens) in self.pieces(offset, offset + len as u64) {
            let n = (e - s) as usize;
            match gens.as_deref() {
                None => out.extend(self.generation_bytes(s, n, NEVER)),
                Some([g]) => out.extend(self.generation_bytes(s, n, *g)),
                Some(_) => out.resize(out.len() + n, None),
            }
        }
        out
    }

    /// Check data read at `offset` against the record.
    pub fn check(&self, offset: u64, data: &[u8]) -> Result<(), Mismatch> {
        let mut first = None;
        let mut differing = 0;
        for (s, e, gens) in self.pieces(offset, offset + data.len() as u64) {
            let n = (e - s) as usize;
            let gens = gens.unwrap_or_else(|| vec![NEVER]);
            let candidates: Vec<Vec<Option<u8>>> = gens
                .iter()
                .map(|g| self.generation_bytes(s, n, *g))
                .collect();
            let base = (s - offset) as usize;
            for i in 0..n {
                let actual = data[base + i];
                let ok = candidates.iter().any(|c| c[i].is_none_or(|b| b == actual));
                if !ok {
                    differing += 1;
                    // Report against the most recent acceptable content.
                    let expected = candidates.last().and_then(|c| c[i]).unwrap_or(0);
                    first.get_or_insert((base + i, expected, actual));
                }
            }
        }
        let Some((i, e, a)) = first else {
            return Ok(());
        };
        let at = offset + i as u64;
        let bs = self.pattern.block_size as u64;
        // If the read covers the whole block around the mismatch, say what it holds.
        let lba = at / bs;
        let found = (lba * bs >= offset && (lba + 1) * bs <= offset + data.len() as u64)
            .then(|| {
                let s = (lba * bs - offset) as usize;
                self.pattern.identify(&data[s..s + bs as usize])
            })
            .flatten();
        Err(Mismatch {
            offset: at,
            expected: e,
            actual: a,
            expected_generation: self.generation_at(at),
            found,
            differing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_distinct() {
        let p = Pattern::new(42, 512);
        assert_eq!(p.block(3, 1), p.block(3, 1));
        assert_ne!(p.block(3, 1), p.block(3, 2));
        assert_ne!(p.block(3, 1), p.block(4, 1));
        assert_ne!(p.block(3, 1), Pattern::new(43, 512).block(3, 1));
        assert_eq!(p.identify(&p.block(7, 9)), Some((7, 9)));
        let mut b = p.block(7, 9);
        b[300] ^= 1;
        assert_eq!(p.identify(&b), None);
        assert_eq!(
            Pattern::new(1, 40).block(0, 0).len(),
            40,
            "partial last word"
        );
    }

    #[test]
    fn aligned_and_unaligned_writes() {
        let mut v = Verifier::new(1, 512, 64 * 1024, Unwritten::Zero);
        let a = v.write(0, 4096);
        assert!(v.check(0, &a).is_ok());
        let b = v.write(1000, 100);
        // The overwritten middle now has generation 2, the rest generation 1.
        let mut expect = a.clone();
        expect[1000..1100].copy_from_slice(&b);
        assert!(v.check(0, &expect).is_ok());
        assert!(
            v.check(0, &a).is_err(),
            "old data in the overwritten range must fail"
        );
        assert_eq!(v.generation_at(999), Some(1));
        assert_eq!(v.generation_at(1000), Some(2));
        assert_eq!(v.generation_at(1100), Some(1));
        assert_eq!(v.generation_at(5000), None);
        // Unwritten area reads as zeros.
        assert!(v.check(8192, &[0u8; 100]).is_ok());
        let err = v.check(8192, &[0, 0, 1]).unwrap_err();
        assert_eq!(err.offset, 8194);
        assert_eq!(err.expected_generation, None);
        // Zeroed range.
        v.zeroed(0, 512);
        assert!(v.check(0, &[0u8; 512]).is_ok());
        assert_eq!(v.generation_at(0), Some(0));
        assert_eq!(v.check(512, &expect[512..4096]), Ok(()));
    }

    #[test]
    fn mismatch_identifies_stale_block() {
        let mut v = Verifier::new(5, 512, 8192, Unwritten::Any);
        let old = v.write(512, 512);
        let _new = v.write(512, 512);
        let err = v.check(512, &old).unwrap_err();
        assert_eq!(
            err.found,
            Some((1, 1)),
            "the read returned generation 1 of lba 1"
        );
        assert_eq!(err.expected_generation, Some(2));
        assert!(err.to_string().contains("generation 1"), "{err}");
        // Unwritten::Any accepts anything outside writes.
        assert!(v.check(4096, &[0xaa; 512]).is_ok());
    }

    #[test]
    fn uncertain_writes_accept_old_or_new() {
        let mut v = Verifier::new(3, 512, 8192, Unwritten::Zero);
        let old = v.write(0, 1024);
        let new = v.write_uncertain(512, 1024);
        // Either outcome passes.
        let mut landed = old.clone();
        landed.truncate(512);
        landed.extend_from_slice(&new);
        assert!(v.check(0, &landed).is_ok());
        let mut not_landed = old.clone();
        not_landed.extend_from_slice(&[0u8; 512]);
        assert!(v.check(0, &not_landed).is_ok());
        // Something else does not.
        let mut garbage = landed.clone();
        garbage[700] ^= 0x10;
        let err = v.check(0, &garbage).unwrap_err();
        assert_eq!(err.offset, 700);
        assert_eq!(err.expected_generation, Some(2));
        assert_eq!(v.expected(512, 1024), vec![None; 1024]);
        // An acknowledged overwrite removes the uncertainty.
        let sure = v.write(512, 1024);
        assert!(v.check(512, &sure).is_ok());
        assert!(v.check(512, &new).is_err());
    }

    #[test]
    fn discard_and_audit() {
        let mut v = Verifier::new(4, 512, 8192, Unwritten::Zero);
        let old = v.write(0, 2048);
        let new = v.write(0, 1024);
        v.discarded(1024, 512);
        // Block 0-1 new, block 2 anything, block 3 old.
        let mut disk = new.clone();
        disk.extend_from_slice(&[0x5a; 512]);
        disk.extend_from_slice(&old[1536..2048]);
        let a = v.audit(0, &disk);
        assert_eq!((a.blocks, a.ok, a.stale, a.torn), (4, 4, 0, 0), "{a}");
        assert!(a.is_clean());
        // A lost write: block 0 still holds the old generation (stale); a
        // torn block: half new, half old.
        let mut bad = disk.clone();
        bad[..512].copy_from_slice(&old[..512]);
        bad[512 + 256..1024].copy_from_slice(&old[512 + 256..1024]);
        let a = v.audit(0, &bad);
        assert_eq!((a.ok, a.stale, a.torn), (2, 1, 1), "{a}");
        assert_eq!(a.first_bad, Some(0));
        assert!(!a.is_clean());
        // Writing again ends the discard's freedom.
        let w = v.write(1024, 512);
        assert!(v.check(1024, &w).is_ok());
        assert!(v.check(1024, &[0x5a; 512]).is_err());
    }

    #[test]
    fn random_writes_against_a_model() {
        // Compare the extent bookkeeping with a plain byte-array model.
        let size = 10_000u64;
        let mut v = Verifier::new(9, 64, size, Unwritten::Zero);
        let mut model = vec![0u8; size as usize];
        let mut s = 12345u64;
        for _ in 0..300 {
            let off = splitmix64(&mut s) % size;
            let len = (splitmix64(&mut s) % 700).min(size - off) as usize;
            if matches!(splitmix64(&mut s) % 5, 0) {
                v.zeroed(off, len);
                model[off as usize..off as usize + len].fill(0);
            } else {
                let d = v.write(off, len);
                model[off as usize..off as usize + len].copy_from_slice(&d);
            }
            assert!(v.check(0, &model).is_ok());
        }
        let exp: Vec<u8> = v
            .expected(0, size as usize)
            .into_iter()
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(exp, model);
    }
}
