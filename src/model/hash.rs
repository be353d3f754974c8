//! Hashing for the maps of IPs, MACs, ids and claim identities that the
//! store, the index and enrichment build by the million. Written here
//! rather than taken from a crate: it is twenty lines, and its finaliser is
//! tuned to these keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing (keys are IPs and MACs, not attacker-chosen
/// collisions worth SipHash: nothing here is keyed by a client).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // splitmix64's finaliser: the multiply-rotate state alone leaves the
        // low bits (the bucket index) depending on the last word's low bits.
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

pub type Fast = BuildHasherDefault<FastHasher>;

/// A map hashed with [`FastHasher`]: IPs and MACs here, and in the index
/// and recompute, the ids and claim identities (hundreds of bytes each)
/// that SipHash would spend most of a lookup on.
pub type FastMap<K, V> = HashMap<K, V, Fast>;
/// A set hashed with [`FastHasher`].
pub type FastSet<K> = std::collections::HashSet<K, Fast>;
