//! Test data.

/// `len` pseudo-random bytes (xorshift from `seed`): data that is neither
/// zero nor compressible, the same for the same seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
