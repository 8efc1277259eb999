//! Task tags: Initiator Task Tags (ITT) and Target Transfer Tags (TTT).
//!
//! RFC 7143 §11.2.1.8: the ITT is "an initiator task tag ... unique
//! session-wide"; 0xffffffff is reserved (used e.g. by unsolicited NOP-Ins
//! and ping answers, §11.18, §11.19). A TTT is chosen by the target; the
//! value 0xffffffff is reserved as well (§11.7.4, §11.8.2).

use crate::pdu::RESERVED_TAG;

/// Hands out tags in increasing order, never the reserved value and never
/// one that is still in use.
#[derive(Debug, Clone)]
pub struct TagAllocator {
    next: u32,
}

impl Default for TagAllocator {
    fn default() -> Self {
        TagAllocator::new(1)
    }
}

impl TagAllocator {
    /// Starts at `first` (or the value after it, if it is the reserved one).
    pub fn new(first: u32) -> Self {
        TagAllocator { next: first }
    }

    /// The next tag that is not reserved.
    pub fn allocate(&mut self) -> u32 {
        self.allocate_free(|_| false)
    }

    /// The next tag that is not reserved and for which `in_use` is false.
    /// With every tag in use (2^32 - 1 tasks) it gives up and returns the
    /// next non-reserved one.
    pub fn allocate_free(&mut self, in_use: impl Fn(u32) -> bool) -> u32 {
        let mut fallback = None;
        for _ in 0..=u32::MAX {
            let t = self.next;
            self.next = self.next.wrapping_add(1);
            if t == RESERVED_TAG {
                continue;
            }
            if !in_use(t) {
                return t;
            }
            fallback.get_or_insert(t);
            // In practice in-use tags are a small window: stop early.
            if self.next.wrapping_sub(fallback.unwrap_or(t)) > 1 << 20 {
                break;
            }
        }
        fallback.unwrap_or(0)
    }
}

/// A hasher for maps keyed by a tag (ITT, TTT), cheaper than SipHash.
///
/// Tags come from the peer, so they may be chosen to collide; that costs
/// at most a scan of the colliding entries, and a connection's table of
/// tags is bounded by the CmdSN window (plus the bounded immediate
/// commands), so the worst case stays small.
#[derive(Debug, Clone, Copy, Default)]
pub struct TagHasher(u64);

impl std::hash::Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits, which the map uses, depend on
        // every bit of the tag.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by task tags.
pub type TagMap<V> = std::collections::HashMap<u32, V, std::hash::BuildHasherDefault<TagHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_reserved_and_in_use() {
        let mut a = TagAllocator::new(RESERVED_TAG - 1);
        assert_eq!(a.allocate(), RESERVED_TAG - 1);
        assert_eq!(a.allocate(), 0, "the reserved tag is skipped");
        assert_eq!(a.allocate_free(|t| t == 1 || t == 2), 3);
        assert_eq!(a.allocate(), 4);
    }

    #[test]
    fn gives_up_when_everything_near_is_in_use() {
        let mut a = TagAllocator::new(1);
        assert_eq!(a.allocate_free(|_| true), 1);
    }
}
