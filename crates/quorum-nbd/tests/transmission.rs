//! The bounds of a connection in transmission, on an in-memory pipe: a
//! write's payload takes budget only as its bytes arrive, and must arrive
//! within the payload timeout, or the connection ends and gives back all
//! it held.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Disk, chunk, reply, send, send_flags, send_payload, serve, serve_structured};
use quorum_nbd::proto::{cflag, cmd, errno, reply as chunk_type};
use quorum_nbd::transmission::{BLOCK_STATUS_BYTES_PER_EXTENT, MAX_DESCRIPTORS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The payload timeout of these tests.
const PAYLOAD_TIMEOUT: Duration = Duration::from_millis(500);

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 2 s");
}

/// A write that declared 1 MiB and sent 1000 bytes of it holds about what
/// arrived, not the 1 MiB it declared: a client cannot take the server's
/// budget with headers alone.
#[tokio::test]
async fn a_write_payload_holds_the_budget_only_as_its_bytes_arrive() {
    let disk = Disk::new(64 << 20);
    let (mut c, task) = serve(&disk, Duration::from_secs(30));
    send(&mut c, cmd::WRITE, 1, 0, 1 << 20).await;
    send_payload(&mut c, 0x5a, 1000).await;
    eventually("the first bytes taken", || disk.budget.held() > 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = disk.budget.held();
    assert!(
        held <= 64 << 10,
        "a write with 1000 bytes of its payload sent holds {held} bytes"
    );
    send_payload(&mut c, 0x5a, (1 << 20) - 1000).await;
    assert_eq!(reply(&mut c).await, (0, 1), "the write, once whole");
    assert_eq!(disk.writes.load(Ordering::SeqCst), 1);
    assert!(
        disk.data.lock().expect("the disk")[..1 << 20]
            .iter()
            .all(|&b| b == 0x5a)
    );
    drop(c);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the connection ends with its client")
        .expect("the connection task")
        .expect("a clean end");
    assert_eq!(disk.budget.held(), 0, "every permit given back");
}

/// A write whose payload stops arriving ends the connection after the
/// payload timeout: it gives back what it held and writes nothing; the
/// replies in flight are still sent.
#[tokio::test]
async fn a_stalled_write_payload_ends_the_connection() {
    let disk = Disk::new(64 << 20);
    let (mut c, task) = serve(&disk, PAYLOAD_TIMEOUT);
    send(&mut c, cmd::READ, 1, 0, 4096).await;
    send(&mut c, cmd::WRITE, 2, 0, 32 << 20).await;
    send_payload(&mut c, 0x5a, 100 << 10).await;
    c.flush().await.expect("flush");
    let ended = tokio::time::timeout(PAYLOAD_TIMEOUT * 6, task)
        .await
        .expect("the stalled connection ends after the payload timeout")
        .expect("the connection task");
    assert!(ended.is_err(), "ended by the timeout: {ended:?}");
    assert_eq!(disk.budget.held(), 0, "every permit given back");
    assert_eq!(disk.writes.load(Ordering::SeqCst), 0, "nothing written");
    assert_eq!(
        reply(&mut c).await,
        (0, 1),
        "the read in flight is answered"
    );
    let mut data = vec![0xff; 4096];
    c.read_exact(&mut data).await.expect("the read's data");
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.expect("read to the end");
    assert!(
        rest.is_empty(),
        "nothing after the read's reply: {} bytes",
        rest.len()
    );
}

/// A write refused for its range has its payload skipped within the same
/// timeout: one that stops arriving ends the connection too.
#[tokio::test]
async fn a_stalled_refused_payload_ends_the_connection() {
    let disk = Disk::new(64 << 20);
    let (mut c, task) = serve(&disk, PAYLOAD_TIMEOUT);
    send(&mut c, cmd::WRITE, 1, u64::MAX - 10, 1 << 20).await;
    send_payload(&mut c, 0x5a, 1000).await;
    let ended = tokio::time::timeout(PAYLOAD_TIMEOUT * 6, task)
        .await
        .expect("the stalled connection ends after the payload timeout")
        .expect("the connection task");
    assert!(ended.is_err(), "ended by the timeout: {ended:?}");
    assert_eq!(disk.writes.load(Ordering::SeqCst), 0, "nothing written");
}

/// A block status request takes the memory of its answer from the budget
/// while the engine builds it (its limit of extents, one with `REQ_ONE`),
/// and gets `EIO` when the budget has no room for it.
#[tokio::test]
async fn block_status_takes_its_answer_from_the_budget() {
    let disk = Disk::new(64 << 20);
    let (mut c, _task) = serve_structured(&disk);
    let full = MAX_DESCRIPTORS as u64 * BLOCK_STATUS_BYTES_PER_EXTENT;
    for (flags, cookie, held) in [
        (0, 1, full),
        (cflag::REQ_ONE, 2, BLOCK_STATUS_BYTES_PER_EXTENT),
    ] {
        send_flags(&mut c, flags, cmd::BLOCK_STATUS, cookie, 0, 1 << 20).await;
        let (_, kind, answered, _) = chunk(&mut c).await;
        assert_eq!((kind, answered), (chunk_type::TYPE_BLOCK_STATUS, cookie));
        assert_eq!(
            disk.held_in_block_status.load(Ordering::SeqCst),
            held,
            "held while the block status of flags {flags:#x} ran"
        );
    }
    assert_eq!(disk.budget.held(), 0, "given back once sent");

    let small = Disk::new(full - 1);
    let (mut c, _task) = serve_structured(&small);
    send(&mut c, cmd::BLOCK_STATUS, 3, 0, 1 << 20).await;
    let (_, kind, answered, payload) = chunk(&mut c).await;
    assert_eq!((kind, answered), (chunk_type::TYPE_ERROR, 3));
    let value = u32::from_be_bytes(payload[..4].try_into().expect("an error value"));
    assert_eq!(value, errno::EIO, "no room for the answer");
}
