//! `max_buffered_bytes`: many large PUTs at once, and many uploads that
//! stall before their end, stay within the budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{DATA, Outcome, assert_peak_within, exchange, mib, send_request, watch_rss};
use crate::util::*;

/// The default of `max_buffered_bytes` (SPEC 12).
const BUFFER_BUDGET: u64 = 512 * MIB;
/// What the server may hold beyond the buffer budget (code, stacks, caches).
const RSS_SLACK: u64 = 128 * MIB;
/// The size of each large upload: the default `max_request_bytes`.
const UPLOAD: u64 = 64 * MIB;
/// How many large uploads run at once.
const UPLOADS: u64 = 64;

/// Fills `buf`, the body bytes at `at` of upload `id`, with 4 KiB blocks
/// that say whose and which they are: `id + 1` and the block's index
/// (little-endian u64s), then `filler`. `at` and `buf.len()` are multiples
/// of 4 KiB.
fn tag_blocks(id: u64, at: u64, buf: &mut [u8], filler: &[u8]) {
    assert!(at % BLOCK == 0 && buf.len() as u64 % BLOCK == 0);
    for (j, block) in buf.chunks_mut(BLOCK as usize).enumerate() {
        block[..8].copy_from_slice(&(id + 1).to_le_bytes());
        block[8..16].copy_from_slice(&(at / BLOCK + j as u64).to_le_bytes());
        block[16..].copy_from_slice(&filler[16..]);
    }
}

/// The `(upload id, block index)` a tagged block carries; `None` for a
/// block no upload wrote (all zero). Panics on a block that is neither.
#[track_caller]
fn read_tag(block: &[u8], filler: &[u8], what: &str) -> Option<(u64, u64)> {
    if block.iter().all(|b| *b == 0) {
        return None;
    }
    let word =
        |r: std::ops::Range<usize>| u64::from_le_bytes(block[r].try_into().expect("8 bytes"));
    assert!(
        block[16..] == filler[16..] && word(0..8) >= 1,
        "{what}: a block that no upload wrote whole (torn or foreign): {:02x?}",
        &block[..32]
    );
    Some((word(0..8) - 1, word(8..16)))
}

/// 64 concurrent PUTs of 64 MiB (4 GiB in all) with the default budget of
/// 512 MiB: each answers 204 or 503 `busy`, at least one 204; the server's
/// peak memory stays under the budget + 128 MiB; every 204 wrote its data
/// whole and no refused upload wrote anything (checked on a sample of
/// blocks: each half of the volume holds one acknowledged upload, whole).
#[test]
fn many_large_puts_at_once_stay_within_the_buffer_budget() {
    let config = format!("body_timeout = \"20s\"\n{}", abc_volume("128MiB", ""));
    let server = Sandbox::new().serve(&config);
    let filler = pattern(121, BLOCK as usize);
    let limit = BUFFER_BUDGET + RSS_SLACK;
    let progress = AtomicU64::new(0);
    let started = Instant::now();
    let (outcomes, peak) = watch_rss(&server, limit, || {
        thread::scope(|s| {
            let uploads: Vec<_> = (0..UPLOADS)
                .map(|id| {
                    let (server, filler, progress) = (&server, &filler, &progress);
                    s.spawn(move || {
                        let offset = (id % 2) * UPLOAD;
                        let head = request_head(
                            server,
                            "PUT",
                            &format!("{DATA}?offset={offset}"),
                            &[("Content-Length", &UPLOAD.to_string())],
                        );
                        let fill = |at: u64, buf: &mut [u8]| tag_blocks(id, at, buf, filler);
                        send_request(
                            server.addr(),
                            &head,
                            UPLOAD,
                            &fill,
                            progress,
                            Duration::from_secs(45),
                        )
                    })
                })
                .collect();
            uploads
                .into_iter()
                .map(|u| u.join().expect("an upload thread"))
                .collect::<Vec<Outcome>>()
        })
    });
    eprintln!(
        "{UPLOADS} PUTs of 64 MiB: {:?}, peak {} MiB, {} MiB sent",
        started.elapsed(),
        mib(peak.bytes),
        mib(progress.load(Ordering::Relaxed))
    );
    assert_peak_within(&peak, limit, "concurrent 64 MiB PUTs");

    let mut acked = [Vec::new(), Vec::new()];
    for (id, o) in outcomes.iter().enumerate() {
        let id = id as u64;
        if o.status == Some(204) {
            acked[(id % 2) as usize].push(id);
        } else {
            assert!(
                o.is(503, "busy"),
                "upload {id}: expected 204 or 503 busy, got {}",
                o.summary()
            );
        }
    }
    let total = acked[0].len() + acked[1].len();
    eprintln!("{total} of {UPLOADS} uploads answered 204, the others 503 busy");
    assert!(total >= 1, "no upload answered 204");

    // Overlapping writes are ordered and whole (SPEC 5): each half holds
    // the whole of one acknowledged upload, or zeros if none was.
    for (half, ids) in acked.iter().enumerate() {
        let base = half as u64 * UPLOAD;
        let mut winner = None;
        for j in 0..16u64 {
            let block = j * (UPLOAD / BLOCK / 16) + (j * 37) % 1024;
            let what = format!("half {half}, block {block}");
            let data = server.read_volume("vm", base + block * BLOCK, BLOCK);
            match read_tag(&data, &filler, &what) {
                None => assert!(
                    ids.is_empty(),
                    "{what} is zero, but uploads {ids:?} answered 204 there"
                ),
                Some((id, index)) => {
                    assert!(
                        ids.contains(&id),
                        "{what} holds upload {id}, which answered {} (acknowledged here: {ids:?})",
                        outcomes
                            .get(id as usize)
                            .map_or("nothing (no such upload)".into(), Outcome::summary)
                    );
                    assert_eq!(index, block, "{what}: upload {id}'s data is misplaced");
                    assert!(
                        winner.is_none_or(|w| w == id),
                        "{what}: holds upload {id}, another block of the half holds {winner:?}"
                    );
                    winner = Some(id);
                }
            }
        }
    }
}

/// 64 uploads that announce 64 MiB, send 63 MiB and stall: the server's
/// peak memory stays under the budget + 128 MiB; meanwhile a small PUT and
/// a 4 KiB read are served within `body_timeout`; the stalled uploads are
/// answered (408 `timeout` or 503 `busy`) or closed after `body_timeout`
/// and write nothing.
#[test]
fn stalled_uploads_stay_within_the_budget_and_time_out() {
    let timeout = Duration::from_secs(5);
    let config = format!("body_timeout = \"5s\"\n{}", abc_volume("128MiB", ""));
    let server = Sandbox::new().serve(&config);
    let limit = BUFFER_BUDGET + RSS_SLACK;
    let progress = AtomicU64::new(0);
    let small = pattern(122, BLOCK as usize);
    let small_at = 2 * UPLOAD - 2 * BLOCK;
    let started = Instant::now();
    let ((stalled, put, read), peak) = watch_rss(&server, limit, || {
        thread::scope(|s| {
            let uploads: Vec<_> = (0..UPLOADS)
                .map(|id| {
                    let (server, progress) = (&server, &progress);
                    s.spawn(move || {
                        let head = request_head(
                            server,
                            "PUT",
                            &format!("{DATA}?offset={}", (id % 2) * UPLOAD),
                            &[("Content-Length", &UPLOAD.to_string())],
                        );
                        send_request(
                            server.addr(),
                            &head,
                            UPLOAD - MIB,
                            &|_, buf| buf.fill(0x5a),
                            progress,
                            2 * timeout + Duration::from_secs(3),
                        )
                    })
                })
                .collect();
            // Until the server takes no more (bounded well below the timeout).
            let mut last = 0;
            let settle = Instant::now();
            while settle.elapsed() < Duration::from_secs(3) {
                thread::sleep(Duration::from_millis(300));
                let now = progress.load(Ordering::Relaxed);
                if now == last && now > 0 {
                    break;
                }
                last = now;
            }
            let mut put_request = request_head(
                &server,
                "PUT",
                &format!("{DATA}?offset={small_at}"),
                &[("Content-Length", &BLOCK.to_string())],
            );
            put_request.extend_from_slice(&small);
            let read_request = request_head(&server, "GET", DATA, &[("Range", "bytes=0-4095")]);
            let server = &server;
            let put =
                s.spawn(move || exchange(server, &put_request, timeout + Duration::from_secs(3)));
            let read = exchange(server, &read_request, timeout + Duration::from_secs(3));
            let put = put.join().expect("the small PUT");
            let stalled: Vec<Outcome> = uploads
                .into_iter()
                .map(|u| u.join().expect("an upload thread"))
                .collect();
            (stalled, put, read)
        })
    });
    eprintln!(
        "{UPLOADS} stalled uploads: {:?}, peak {} MiB, {} MiB taken; small PUT {}, read {}",
        started.elapsed(),
        mib(peak.bytes),
        mib(progress.load(Ordering::Relaxed)),
        put.summary(),
        read.summary()
    );
    assert_peak_within(&peak, limit, "stalled 64 MiB uploads");

    let served_within = timeout + Duration::from_secs(1);
    assert_eq!(put.status, Some(204), "the small PUT: {}", put.summary());
    assert!(
        put.took < served_within,
        "the small PUT took {:?}",
        put.took
    );
    assert_eq!(read.status, Some(206), "the 4 KiB read: {}", read.summary());
    assert!(
        read.took < served_within,
        "the 4 KiB read took {:?}",
        read.took
    );
    assert_all_bytes(&read.body, 0, "the 4 KiB read");

    for (id, o) in stalled.iter().enumerate() {
        let answered = o.is(408, "timeout") || o.is(503, "busy");
        assert!(
            answered || (o.closed && o.status.is_none()),
            "stalled upload {id}: expected 408 timeout, 503 busy or a close, got {}",
            o.summary()
        );
    }
    // Nothing of theirs was written; the small PUT was.
    for at in [0, MIB, UPLOAD - BLOCK, UPLOAD, UPLOAD + 17 * MIB] {
        assert_all_bytes(
            &server.read_volume("vm", at, BLOCK),
            0,
            &format!("the volume at {at} after the stalled uploads"),
        );
    }
    assert_bytes_eq(
        &server.read_volume("vm", small_at, BLOCK),
        &small,
        "the small PUT",
    );
}
