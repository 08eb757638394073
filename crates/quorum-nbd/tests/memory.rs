//! The memory a connection fills with a write's payload is the budget's
//! to give: a write refused for lack of room in the budget reads its
//! payload without keeping it. One test alone in its binary, so that the
//! process's peak resident memory (`VmHWM`) is this test's.

mod common;

use std::sync::atomic::Ordering;

use common::{Disk, WRITE_TIMEOUT, reply, send, send_payload, serve};
use quorum_nbd::proto::{cmd, errno};

/// A field of `/proc/self/status` in bytes (`VmHWM`: the peak resident
/// memory).
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kib| kib << 10)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status:\n{status}"))
}

/// Three writes of 32 MiB into a budget of 1 MiB are refused (`EIO`), the
/// process's peak resident memory grows by far less than one of them, and
/// the next request is served.
#[tokio::test(flavor = "current_thread")]
async fn a_write_refused_for_the_budget_fills_no_memory_with_its_payload() {
    let disk = Disk::new(1 << 20);
    let (mut c, _task) = serve(&disk, WRITE_TIMEOUT);
    // Warm up: the connection's buffers exist before the peak is read.
    send(&mut c, cmd::WRITE, 0, 0, 512).await;
    send_payload(&mut c, 0x11, 512).await;
    assert_eq!(reply(&mut c).await, (0, 0), "a write that fits");

    let length = 32 << 20;
    let before = proc_status_bytes("VmHWM");
    for cookie in 1..=3 {
        send(&mut c, cmd::WRITE, cookie, 0, length as u32).await;
        send_payload(&mut c, 0xab, length).await;
        assert_eq!(reply(&mut c).await, (errno::EIO, cookie), "no room");
    }
    let grown = proc_status_bytes("VmHWM") - before;
    assert!(
        grown < 8 << 20,
        "the peak resident memory grew by {} KiB for payloads the budget refused",
        grown >> 10
    );
    assert_eq!(
        disk.writes.load(Ordering::SeqCst),
        1,
        "nothing more written"
    );

    send(&mut c, cmd::WRITE, 4, 4096, 512).await;
    send_payload(&mut c, 0xcd, 512).await;
    assert_eq!(reply(&mut c).await, (0, 4), "a write that fits");
    assert_eq!(disk.budget.held(), 0, "every permit given back");
}
