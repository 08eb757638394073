//! Review of the requests every child answers up front (refusals, reads
//! answered on the caller's thread) and of the resync copies kept among
//! their child's unflushed ranges. The first test failed before its fix:
//! a copy that began after a failed flush was counted was marked stale
//! again by the next flush, so every failure re-did the resync since.

use super::*;

/// Fails one flush of `c` through the volume (a and b flush, so the
/// volume's flush meets its threshold).
fn fail_a_flush_of(v: &Volume, c: &Mem) {
    c.fail_flush.store(true, Ordering::SeqCst);
    v.flush().expect("a and b flushed");
    c.fail_flush.store(false, Ordering::SeqCst);
}

#[test]
fn a_resync_copy_begun_after_a_counted_failed_flush_stays_fresh() {
    let s = setup(options(2), 3, 16 * B);
    let c = s.mems[2].clone();
    s.volume
        .write(0, Bytes::from(vec![9u8; 4 * B]))
        .expect("write");
    s.volume.flush().expect("flush");
    c.poke(0, &[0u8; 4 * B]);
    s.volume
        .mark_stale("c", std::slice::from_ref(&(0..4 * B as u64)))
        .expect("mark c");
    // Counted before the copy begins: the copy cannot be lost with it.
    fail_a_flush_of(&s.volume, &c);
    let step = s.volume.resync_step(1 << 20, 0);
    assert!(matches!(step, ResyncStep::Copied { .. }), "{step:?}");
    assert_eq!(s.volume.stale_bytes(), vec![0, 0, 0]);
    s.volume.flush().expect("flush");
    assert_eq!(
        s.volume.stale_bytes(),
        vec![0, 0, 0],
        "the copy was written and flushed after the failed flush was counted"
    );
    assert_eq!(&c.snapshot()[..4 * B], &[9u8; 4 * B][..]);
}
