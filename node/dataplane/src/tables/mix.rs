//! The mixing primitives of the worker-owned hash tables (flow table, NAT mappings):
//! a folded 64×64→128-bit multiply and splitmix64 to expand a seed into secrets.

/// `a * b` as 128 bits, its two halves xored: the multiply-mix the table hashes chain.
#[inline]
pub(crate) fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    #[allow(clippy::cast_possible_truncation)] // the two halves, on purpose
    let (lo, hi) = (r as u64, (r >> 64) as u64);
    lo ^ hi
}

/// The next output of splitmix64 from `state` (which advances).
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
