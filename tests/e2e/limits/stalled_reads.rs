//! Streamed reads whose clients never read hold no thread, gate or
//! range, and are dropped after `body_timeout`.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use super::{DATA, child_roots, open_fds, queued_bytes, status_of};
use crate::membership::add;
use crate::util::*;

/// 100 whole-volume GETs (256 MiB) whose clients never read: they hold no
/// thread (the server's thread count comes back while they stall), 4 KiB
/// reads keep a p99 under 100 ms, a PUT inside the stalled reads' first
/// piece and a child's addition go through at once, and after
/// `body_timeout` the stalled GETs are dropped (the server lets go of
/// their connections).
///
/// The checks are independent, so all are made and reported together.
#[test]
fn stalled_whole_volume_reads_hold_no_thread_gate_or_range() {
    let body_timeout = Duration::from_secs(20);
    let sandbox = Sandbox::new();
    let config = format!(
        "{}body_timeout = \"20s\"\n{}",
        child_roots(&sandbox),
        abc_volume("256MiB", "")
    );
    let server = sandbox.serve(&config);
    let threads_before = status_of(&server, "Threads");
    let fds_before = open_fds(&server);

    let request = request_head(&server, "GET", DATA, &[]);
    let stalled: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("GET {i}: cannot connect: {e}"));
            s.set_write_timeout(Some(Duration::from_secs(5)))
                .expect("set a write timeout");
            s.write_all(&request)
                .unwrap_or_else(|e| panic!("GET {i}: cannot send: {e}"));
            s.set_nonblocking(true).expect("make a socket non-blocking");
            s
        })
        .collect();
    let stalled_at = Instant::now();
    // Their answers start (peeked at, never read), bounded; the server may
    // also let some wait for buffer room (SPEC 12), so at least one must
    // stream for the attack to be in place.
    let mut streaming = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while streaming < stalled.len() && Instant::now() < until {
        thread::sleep(Duration::from_millis(50));
        streaming = stalled
            .iter()
            .filter(|s| {
                let mut head = [0u8; 1024];
                s.peek(&mut head).is_ok_and(|n| {
                    parse_response_head(&head[..n])
                        .is_ok_and(|h| h.is_some_and(|h| h.status == 200))
                })
            })
            .count();
    }
    assert!(
        streaming >= 1,
        "none of the 100 whole-volume GETs got its answer started: the attack is not in place"
    );
    // The server has filled the sockets and blocks: the bytes queued on
    // the connections (sent, not yet taken) stop growing.
    let mut queued = queued_bytes(server.port());
    let mut steady = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while steady < 3 && Instant::now() < until {
        thread::sleep(Duration::from_millis(100));
        let now = queued_bytes(server.port());
        steady = if now == queued { steady + 1 } else { 0 };
        queued = now;
    }
    assert!(
        steady == 3,
        "the stalled GETs' queued bytes kept changing for 10 s (last {queued})"
    );
    let mut problems = Vec::new();

    let fds = open_fds(&server);
    assert!(
        fds >= fds_before + 100,
        "the server holds {fds} descriptors, {fds_before} before the 100 GETs: the attack is not in place"
    );
    let burst = status_of(&server, "Threads");

    let mut rng = Rng(123);
    let mut took: Vec<Duration> = (0..200)
        .map(|_| {
            let at = rng.below(256 * MIB / BLOCK) * BLOCK;
            let t = Instant::now();
            server.read_volume("vm", at, BLOCK);
            t.elapsed()
        })
        .collect();
    took.sort();
    let p99 = took[197];
    if p99 >= Duration::from_millis(100) {
        problems.push(format!(
            "4 KiB reads beside the stalled GETs: p99 {p99:?} (max {:?})",
            took[199]
        ));
    }

    // The PUT and the addition at the same time, so that neither hides
    // the other's wait.
    let data = pattern(124, BLOCK as usize);
    let (put, added) = thread::scope(|s| {
        let put = s.spawn(|| {
            let t = Instant::now();
            let r = server.put(&format!("{DATA}?offset={BLOCK}"), data.clone());
            (r, t.elapsed())
        });
        let t = Instant::now();
        let added = add(&server, "d", "d.img");
        let added = (added, t.elapsed());
        (put.join().expect("the PUT"), added)
    });
    if put.0.status != 204 || put.1 > Duration::from_secs(5) {
        problems.push(format!(
            "a 4 KiB PUT inside the stalled reads' first piece: {} after {:?}",
            put.0.status, put.1
        ));
    }
    if added.0.status != 201 || added.1 > Duration::from_secs(5) {
        problems.push(format!(
            "adding a child beside the stalled GETs: {} {} after {:?}",
            added.0.status,
            added.0.preview(),
            added.1
        ));
    }

    // The threads the stalled GETs hold. Starting them may have started
    // blocking-pool threads that then idle until the pool lets them go
    // (tokio: 10 s unused), so this is the least count seen while the GETs
    // are still stalled, not the count just after they started.
    let mut held = status_of(&server, "Threads");
    while held >= threads_before + 50
        && stalled_at.elapsed() + Duration::from_secs(1) < body_timeout
    {
        thread::sleep(Duration::from_millis(200));
        held = held.min(status_of(&server, "Threads"));
    }
    if held >= threads_before + 50 {
        problems.push(format!(
            "the server's threads grew from {threads_before} to {burst} with 100 stalled GETs, \
             and were still {held} or more {:?} after they stalled",
            stalled_at.elapsed()
        ));
    }

    // Dropped after body_timeout: their descriptors go.
    let deadline = stalled_at + body_timeout + Duration::from_secs(5);
    let mut left = open_fds(&server);
    while left > fds_before + 10 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        left = open_fds(&server);
    }
    if left > fds_before + 10 {
        problems.push(format!(
            "{:?} after the GETs stalled the server still holds {left} descriptors ({fds_before} before them)",
            stalled_at.elapsed()
        ));
    }
    drop(stalled);
    eprintln!(
        "100 stalled GETs ({streaming} streaming): threads {threads_before} -> {burst} -> {held}, fds {fds_before} -> {fds} -> {left} after {:?}, p99 {p99:?}",
        stalled_at.elapsed()
    );
    assert!(
        problems.is_empty(),
        "with 100 stalled whole-volume GETs:\n- {}",
        problems.join("\n- ")
    );
    assert_bytes_eq(&server.read_volume("vm", BLOCK, BLOCK), &data, "the PUT");
}
