//! Hostile bytes on a raw socket, in the handshake and in transmission:
//! each is answered with an error or a clean disconnect, the refused
//! requests write nothing, the server's memory stays bounded, it stays up
//! and the next client works. And the guard against plaintext NBD beyond
//! loopback.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{qemu_io, url, with_nbd};
use crate::util::*;

/// The volume of the hostile test: 64 MiB, so that 64 writes of 1 MiB
/// each have their own MiB.
const HOSTILE_SIZE: u64 = 64 * MIB;
/// The most the server's resident memory may reach while served hostile
/// input (its peak, `VmHWM`): the pipelined writes alone bring 64 MiB.
const RSS_BOUND: u64 = 256 * MIB;

#[track_caller]
fn connect(addr: SocketAddr) -> TcpStream {
    nbd_tcp(addr).expect("connect to the NBD port")
}

/// Greets and enters transmission on `vm` with NBD_OPT_GO (simple
/// replies).
#[track_caller]
fn transmission(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    greet(&mut s).expect("the greeting");
    let (size, _) = go(&mut s, "vm").expect("NBD_OPT_GO on vm");
    assert_eq!(size, HOSTILE_SIZE);
    s
}

#[track_caller]
fn send(s: &mut TcpStream, kind: u16, cookie: u64, offset: u64, length: u32, payload: &[u8]) {
    request(s, kind, cookie, offset, length, payload).expect("send a request");
}

#[track_caller]
fn reply(s: &mut TcpStream) -> (u32, u64) {
    simple_reply(s).expect("a simple reply")
}

/// Asserts that the server closes the connection (EOF, or a reset)
/// before the socket's read timeout.
#[track_caller]
fn assert_closed(s: &mut TcpStream, what: &str) {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: the connection stayed open")
            }
            Err(_) => return,
        }
    }
}

/// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`).
#[track_caller]
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("the server (pid {pid}) is gone: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kib| kib * KIB)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

/// Hostile bytes in the handshake and in transmission are answered with an
/// error or a clean disconnect and write nothing; 64 pipelined writes of
/// 1 MiB from a client that leaves without reading a reply land whole or
/// not at all, alike on every child; the server stays up, within
/// [`RSS_BOUND`], and the next client works.
#[test]
fn hostile_input_is_answered_or_dropped() {
    let server = Sandbox::new().serve(&with_nbd(&abc_volume("64MiB", "")));
    let addr = server.nbd_addr();
    let snap = server.snapshot(&ABC);

    // Garbage instead of the client flags and options.
    let mut s = connect(addr);
    read_greeting(&mut s).expect("the greeting");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send garbage");
    assert_closed(&mut s, "garbage during the handshake");

    // An option claiming 4 GiB - 1 of data.
    let mut s = connect(addr);
    greet(&mut s).expect("the greeting");
    let mut b = Vec::new();
    b.extend(OPT_MAGIC.to_be_bytes());
    b.extend(99u32.to_be_bytes());
    b.extend(u32::MAX.to_be_bytes());
    s.write_all(&b).expect("send a huge option");
    assert_closed(&mut s, "an option of 4 GiB - 1");

    // An unknown option is refused, and the connection stays usable.
    let mut s = connect(addr);
    greet(&mut s).expect("the greeting");
    send_option(&mut s, 99, b"whatever").expect("send an option");
    let (option, kind, _) = option_reply(&mut s).expect("a reply");
    assert_eq!((option, kind), (99, rep::ERR_UNSUP), "NBD_REP_ERR_UNSUP");
    send_option(&mut s, opt::LIST, b"").expect("send LIST");
    let (_, kind, data) = option_reply(&mut s).expect("a reply");
    assert_eq!(kind, rep::SERVER, "NBD_REP_SERVER after the refusal");
    assert_eq!(&data[4..], b"vm");
    assert_eq!(
        option_reply(&mut s).expect("a reply").1,
        rep::ACK,
        "NBD_REP_ACK ends the list"
    );
    send_option(&mut s, opt::ABORT, b"").expect("send ABORT");
    assert_eq!(
        option_reply(&mut s).expect("a reply").1,
        rep::ACK,
        "NBD_OPT_ABORT is acknowledged"
    );

    // Transmission: refusals answered, the connection kept.
    let size = HOSTILE_SIZE;
    let mut s = transmission(addr);
    send(&mut s, 99, 1, 0, 0, &[]);
    assert_eq!(reply(&mut s), (errno::EINVAL, 1), "unknown command");
    send(&mut s, cmd::READ, 2, size - 512, 1024, &[]);
    assert_eq!(reply(&mut s), (errno::EINVAL, 2), "a read past the end");
    send(&mut s, cmd::READ, 3, u64::MAX - 511, 1024, &[]);
    assert_eq!(
        reply(&mut s),
        (errno::EINVAL, 3),
        "offset + length overflows"
    );
    send(&mut s, cmd::READ, 4, 0, u32::MAX, &[]);
    assert_eq!(reply(&mut s), (errno::EOVERFLOW, 4), "a read of 4 GiB - 1");
    send(&mut s, cmd::WRITE, 5, size - 512, 4096, &[0xee; 4096]);
    assert_eq!(reply(&mut s), (errno::ENOSPC, 5), "a write past the end");
    send(&mut s, cmd::WRITE_ZEROES, 6, size, 1, &[]);
    assert_eq!(reply(&mut s), (errno::ENOSPC, 6), "zeroes past the end");
    send(&mut s, cmd::WRITE, 7, u64::MAX - 4095, 4096, &[0xee; 4096]);
    assert_eq!(
        reply(&mut s),
        (errno::ENOSPC, 7),
        "a write whose end overflows"
    );
    send(&mut s, cmd::READ, 8, 0, 512, &[]);
    assert_eq!(reply(&mut s), (0, 8), "a good read after the refusals");
    let mut data = vec![0xffu8; 512];
    s.read_exact(&mut data).expect("the read's data");
    assert_all_bytes(&data, 0, "the good read");
    // Bad magic: the stream cannot be followed, the server hangs up.
    s.write_all(&[0xde; 28]).expect("send bad magic");
    assert_closed(&mut s, "bad magic");

    // A write larger than the maximum: answered, then closed.
    let mut s = transmission(addr);
    send(&mut s, cmd::WRITE, 9, 0, u32::MAX, &[0xee; 4096]);
    assert_eq!(reply(&mut s), (errno::EOVERFLOW, 9), "a write of 4 GiB - 1");
    assert_closed(&mut s, "a write of 4 GiB - 1");

    // A truncated header, then gone.
    let mut s = transmission(addr);
    s.write_all(&REQUEST_MAGIC.to_be_bytes()[..3])
        .expect("a truncated header");
    drop(s);
    // Reads in flight, then gone.
    let mut s = transmission(addr);
    for cookie in 0..16 {
        send(&mut s, cmd::READ, cookie, 0, 1 << 20, &[]);
    }
    drop(s);
    server.assert_unchanged(&snap, "after the refused requests");

    // 64 pipelined writes of 1 MiB, value i + 1 on MiB i, then gone
    // without reading one reply.
    let mut s = transmission(addr);
    for i in 0..64u64 {
        send(
            &mut s,
            cmd::WRITE,
            100 + i,
            i * MIB,
            MIB as u32,
            &vec![i as u8 + 1; MIB as usize],
        );
    }
    drop(s);
    // The writes in flight complete after the client has gone: wait until
    // the count of writes holds still.
    let series = r#"quorum_requests_total{volume="vm",op="write"}"#;
    let mut last = -1.0;
    wait_until_within(
        "the pipelined writes to settle",
        Duration::from_secs(30),
        || {
            std::thread::sleep(Duration::from_millis(300));
            let now = server.metric_if_any(series).unwrap_or(0.0);
            let settled = now == last;
            last = now;
            settled
        },
    );
    let (a, b, c) = (
        server.read_file("a.img"),
        server.read_file("b.img"),
        server.read_file("c.img"),
    );
    assert_bytes_eq(&b, &a, "b.img against a.img after the pipelined writes");
    assert_bytes_eq(&c, &a, "c.img against a.img after the pipelined writes");
    let mut landed = 0;
    for (i, mib) in a.chunks(MIB as usize).enumerate() {
        let value = i as u8 + 1;
        if mib.iter().all(|&x| x == value) {
            landed += 1;
        } else {
            assert_all_bytes(mib, 0, &format!("MiB {i}: neither its write nor untouched"));
        }
    }
    assert_eq!(
        f64::from(landed),
        last,
        "the writes counted are the writes landed"
    );
    println!("{landed} of 64 pipelined writes landed");
    // The client's send buffer (4 MiB at most here) and the server's
    // receive buffer (up to 32 MiB) are all a reset can drop.
    assert!(landed >= 24, "only {landed} of 64 pipelined writes landed");

    // Alive, bounded, serving.
    let pid = server.pid();
    let peak = proc_status_bytes(pid, "VmHWM");
    let rss = proc_status_bytes(pid, "VmRSS");
    println!("server RSS {} MiB, peak {} MiB", rss / MIB, peak / MIB);
    assert!(
        peak < RSS_BOUND,
        "the server's peak RSS reached {} MiB (bound {} MiB)",
        peak / MIB,
        RSS_BOUND / MIB
    );
    server.get("/healthz").expect_status(200);
    qemu_io(
        &url(&server, "vm"),
        &["write -P 0x5c 67043328 64k", "read -P 0x5c 67043328 64k"],
    );
}

/// A non-loopback NBD listen is refused at start without
/// `allow_plaintext` (NBD has no authentication, TLS comes later).
#[test]
fn nbd_beyond_loopback_needs_allow_plaintext() {
    let sandbox = Sandbox::new();
    let refused = sandbox.start_expecting_failure(&format!(
        "[nbd]\nlisten = \"0.0.0.0:0\"\n\n{}",
        abc_volume("1MiB", "")
    ));
    let line = refused.one_line();
    assert!(
        line.contains("allow_plaintext"),
        "the refusal says what to do: {line}"
    );
}

/// NBD write headers that declare 32 MiB and send nothing hold none of
/// `max_buffered_bytes`: HTTP and NBD requests are served meanwhile at
/// once, and the silent connections are closed after `body_timeout`.
#[test]
fn write_headers_without_payload_hold_no_budget_and_are_closed() {
    let server = Sandbox::new().serve(&with_nbd(&format!(
        "max_request_bytes = \"1MiB\"\nmax_buffered_bytes = \"64MiB\"\nbody_timeout = \"3s\"\n\n{}",
        abc_volume("64MiB", "")
    )));
    let addr = server.nbd_addr();
    let mut silent: Vec<TcpStream> = (0..2u64)
        .map(|i| {
            let mut s = transmission(addr);
            let length = 32 * MIB as u32;
            send(&mut s, cmd::WRITE, i, i * 32 * MIB, length, &[]);
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let started = std::time::Instant::now();
    server.write_volume("vm", 0, &[0x42; 65_536]);
    let mut s = transmission(addr);
    send(&mut s, cmd::READ, 1, 0, 65_536, &[]);
    assert_eq!(
        reply(&mut s),
        (0, 1),
        "an NBD read beside the silent writes"
    );
    let mut data = vec![0u8; 65_536];
    s.read_exact(&mut data).expect("the read's data");
    assert_all_bytes(&data, 0x42, "the HTTP write read over NBD");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "served after {took:?}: the silent writes held the budget"
    );

    let started = std::time::Instant::now();
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("a read timeout");
        assert_closed(s, "a write whose payload never came");
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "closed after {waited:?}, body_timeout is 3s"
    );
    for f in ABC {
        assert_all_bytes(
            &server.read_file_at(f, 65_536, (HOSTILE_SIZE - 65_536) as usize),
            0,
            &format!("{f}: nothing of the silent writes"),
        );
    }
}

/// NBD advertises requests of up to 32 MiB, so `max_buffered_bytes` below
/// that refuses the start when NBD is served, by `[nbd]` or by `--nbd`
/// (such requests could only ever fail with EIO after `body_timeout`).
#[test]
fn nbd_needs_max_buffered_bytes_of_32_mib() {
    let sandbox = Sandbox::new();
    let small = format!(
        "max_request_bytes = \"1MiB\"\nmax_buffered_bytes = \"16MiB\"\n\n{}",
        abc_volume("1MiB", "")
    );
    let line = sandbox
        .start_expecting_failure(&with_nbd(&small))
        .one_line()
        .to_owned();
    assert!(
        line.contains("max_buffered_bytes") && line.contains("32MiB"),
        "the refusal names max_buffered_bytes and its least value: {line}"
    );
    let config = sandbox.write_config(&small).display().to_string();
    let refused = sandbox.run_expecting_failure(&[
        "--config",
        &config,
        "--listen",
        "127.0.0.1:0",
        "--nbd",
        "127.0.0.1:0",
    ]);
    let line = refused.one_line();
    assert!(
        line.contains("max_buffered_bytes") && line.contains("32MiB"),
        "--nbd is refused alike: {line}"
    );
    for f in ABC {
        assert!(
            !sandbox.file(f).exists(),
            "{f} was created by a refused start"
        );
    }
}

/// A connection that pipelines the largest reads and takes none of its
/// replies holds at most its share of `max_buffered_bytes` (two requests
/// of 32 MiB): another connection is served at once. Without the share,
/// four such reads took all 128 MiB until `body_timeout`.
#[test]
fn a_connection_that_takes_no_replies_holds_only_its_share_of_the_budget() {
    let server = Sandbox::new().serve(&with_nbd(&format!(
        "max_buffered_bytes = \"128MiB\"\nbody_timeout = \"20s\"\n\n{}",
        abc_volume("64MiB", "")
    )));
    let addr = server.nbd_addr();
    server.write_volume("vm", 0, &[0x5a; 65_536]);
    let mut greedy = transmission(addr);
    let length = 32 * MIB as u32;
    for i in 0..8u64 {
        send(&mut greedy, cmd::READ, i, (i % 2) * 32 * MIB, length, &[]);
    }
    std::thread::sleep(Duration::from_millis(500));

    let started = std::time::Instant::now();
    let mut s = transmission(addr);
    send(&mut s, cmd::READ, 100, 0, 65_536, &[]);
    assert_eq!(reply(&mut s), (0, 100), "a read beside the greedy one");
    let mut data = vec![0u8; 65_536];
    s.read_exact(&mut data).expect("the read's data");
    assert_all_bytes(&data, 0x5a, "the read's data");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "served after {took:?}: the greedy connection held the budget"
    );
    // The greedy connection still gets every reply once it reads them.
    greedy
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let mut cookies = Vec::new();
    for _ in 0..8 {
        let (errno, cookie) = reply(&mut greedy);
        assert_eq!(errno, 0, "read {cookie}");
        let mut data = vec![0u8; length as usize];
        greedy.read_exact(&mut data).expect("a greedy read's data");
        cookies.push(cookie);
    }
    cookies.sort_unstable();
    assert_eq!(cookies, (0..8).collect::<Vec<u64>>());
}
