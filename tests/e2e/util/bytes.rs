//! Byte buffers: deterministic patterns, flipped copies, and assertions that
//! say where two large buffers differ instead of printing megabytes.

use super::Rng;

/// Deterministic pseudo-random bytes (splitmix64), different for each seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every bit of `bytes` flipped.
pub fn flipped(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| !b).collect()
}

/// The first offset where `a` and `b` differ (a length difference counts).
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// `assert_eq!` for large buffers: says where they differ instead of
/// printing megabytes.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    if let Some(at) = first_diff(actual, expected) {
        panic!(
            "{what}: differs at byte {at} (actual {} bytes, expected {} bytes; \
             actual {:02x?}, expected {:02x?} from there)",
            actual.len(),
            expected.len(),
            &actual[at.min(actual.len())..(at + 16).min(actual.len())],
            &expected[at.min(expected.len())..(at + 16).min(expected.len())],
        );
    }
}

/// Asserts that every byte of `actual` is `byte`.
#[track_caller]
pub fn assert_all_bytes(actual: &[u8], byte: u8, what: &str) {
    if let Some(at) = actual.iter().position(|b| *b != byte) {
        panic!(
            "{what}: expected every one of {} bytes to be {byte:#04x}, byte {at} is {:#04x}",
            actual.len(),
            actual[at]
        );
    }
}
