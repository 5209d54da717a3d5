//! A blocked Bloom filter: each key sets 8 bits inside one 512-bit block (one cache line), so a
//! lookup costs one memory access. About 10 bits per key give roughly 1% false positives. The
//! hash of a key is fixed (no per-process seed), so the filter's bits, which are stored, are the
//! same on every machine that inserted the same keys.

/// Bits per block, and keys' bits set in one block.
const BLOCK_WORDS: usize = 8;
const PROBES: u32 = 8;

/// A block of 512 bits.
pub type Block = [u64; BLOCK_WORDS];

/// Bytes per stored block.
pub const BLOCK_BYTES: usize = BLOCK_WORDS * 8;

/// A Bloom filter of a fixed number of blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bloom {
    blocks: Vec<Block>,
}

/// Where a key's bits go: its block, and the bits within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub block: usize,
    pub bits: Block,
}

impl Bloom {
    /// An empty filter of `blocks` blocks.
    pub fn new(blocks: usize) -> Bloom {
        Bloom {
            blocks: vec![[0; BLOCK_WORDS]; blocks.max(1)],
        }
    }

    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The block and bits of a key's hash, for a filter of `blocks` blocks.
    pub fn probe(hash: u64, blocks: usize) -> Probe {
        let block = ((u128::from(hash) * blocks as u128) >> 64) as usize;
        let mut bits = [0u64; BLOCK_WORDS];
        let mut h = mix(hash);
        for _ in 0..PROBES {
            let bit = (h & 511) as usize;
            bits[bit / 64] |= 1 << (bit % 64);
            h >>= 9;
        }
        Probe { block, bits }
    }

    pub fn insert(&mut self, probe: Probe) {
        let block = &mut self.blocks[probe.block];
        for (word, bits) in block.iter_mut().zip(probe.bits) {
            *word |= bits;
        }
    }

    pub fn may_contain(&self, probe: Probe) -> bool {
        let block = &self.blocks[probe.block];
        block
            .iter()
            .zip(probe.bits)
            .all(|(word, bits)| word & bits == bits)
    }

    /// The blocks `[first, first + count)` as stored bytes (little-endian words).
    pub fn chunk_bytes(&self, first: usize, count: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(count * BLOCK_BYTES);
        for block in &self.blocks[first..(first + count).min(self.blocks.len())] {
            for word in block {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
        out
    }

    /// ORs stored bytes into the blocks from `first` on; `false` when they do not fit.
    pub fn load_chunk(&mut self, first: usize, bytes: &[u8]) -> bool {
        if bytes.len() % BLOCK_BYTES != 0 || first + bytes.len() / BLOCK_BYTES > self.blocks.len() {
            return false;
        }
        for (block, stored) in self.blocks[first..]
            .iter_mut()
            .zip(bytes.chunks_exact(BLOCK_BYTES))
        {
            for (word, bytes) in block.iter_mut().zip(stored.chunks_exact(8)) {
                *word |= u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
            }
        }
        true
    }
}

/// The hash of a UUID index key (organization index, UUID), salted by which index it is in.
pub fn key_hash(salt: u8, org: u32, uuid: &[u8; 16]) -> u64 {
    let a = u64::from_le_bytes(uuid[..8].try_into().expect("8 bytes"));
    let b = u64::from_le_bytes(uuid[8..].try_into().expect("8 bytes"));
    mix(a ^ mix(b ^ (u64::from(org) << 8 | u64::from(salt))))
}

/// A 64-bit finalizer (splitmix64's): every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        // 10 bits per key.
        let keys = 50_000u64;
        let mut bloom = Bloom::new((keys * 10 / 512) as usize);
        let uuid = |n: u64| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&n.to_be_bytes());
            bytes
        };
        for n in 0..keys {
            bloom.insert(Bloom::probe(key_hash(1, 7, &uuid(n)), bloom.blocks()));
        }
        for n in 0..keys {
            assert!(bloom.may_contain(Bloom::probe(key_hash(1, 7, &uuid(n)), bloom.blocks())));
        }
        let false_positives = (keys..keys * 3)
            .filter(|n| bloom.may_contain(Bloom::probe(key_hash(1, 7, &uuid(*n)), bloom.blocks())))
            .count();
        let rate = false_positives as f64 / (2 * keys) as f64;
        assert!(rate < 0.03, "false positive rate {rate}");
        // Another organization's same UUID is another key.
        let other = (0..keys)
            .filter(|n| bloom.may_contain(Bloom::probe(key_hash(1, 8, &uuid(*n)), bloom.blocks())))
            .count();
        assert!((other as f64 / keys as f64) < 0.03);

        // Stored and loaded back, chunk by chunk, it is the same filter.
        let mut loaded = Bloom::new(bloom.blocks());
        for first in (0..bloom.blocks()).step_by(64) {
            assert!(loaded.load_chunk(first, &bloom.chunk_bytes(first, 64)));
        }
        assert_eq!(loaded, bloom);
        assert!(!loaded.load_chunk(bloom.blocks(), &[0; 64]));
    }
}
