//! The bounds of a connection in transmission, on an in-memory pipe: a
//! write's payload takes budget only as its bytes arrive, and must arrive
//! within the payload timeout, or the connection ends and gives back all
//! it held.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Disk, reply, send, send_payload, serve};
use quorum_nbd::proto::cmd;
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
