//! SPEC section 9 (issue 14): the volumes over NBD, driven by real clients
//! (`qemu-io`, `qemu-img`, `nbdinfo`, fio's `nbd` engine) and by hostile
//! bytes on a raw socket. A missing client fails the test loudly:
//! `scripts/install-test-deps` installs them.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const SIZE: u64 = 16 * MIB;

/// Three file children of 16 MiB, threshold 2, served over NBD on a free
/// port too.
fn nbd_config() -> String {
    format!(
        "[nbd]\nlisten = \"127.0.0.1:0\"\n\n{}",
        abc_volume("16MiB", "")
    )
}

fn url(server: &Server, export: &str) -> String {
    format!("nbd://{}/{export}", server.nbd_addr())
}

/// Runs a client; panics with its command line and output unless it
/// succeeds. A client that is not installed fails the test loudly.
#[track_caller]
fn run(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stdout.contains("failed") && !stderr.contains("failed"),
        "`{program} {}` failed ({}):\n{stdout}\n{stderr}",
        args.join(" "),
        out.status
    );
    stdout
}

#[track_caller]
fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}): install it with scripts/install-test-deps \
                 (Debian: qemu-utils, libnbd-bin, fio)"
            )
        })
}

/// `qemu-io -f raw` with one `-c` per command.
#[track_caller]
fn qemu_io(target: &str, commands: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(target);
    run("qemu-io", &args)
}

/// A pattern written with qemu-io reads back over HTTP and over NBD;
/// HTTP writes read back over NBD; write zeroes, discard and flush work;
/// the children stay identical; the metrics count the connection.
#[test]
fn qemu_io_round_trips_with_http() {
    let server = Sandbox::new().serve(&nbd_config());
    let vm = url(&server, "vm");

    qemu_io(
        &vm,
        &["write -P 0xab 4096 65536", "read -P 0xab 4096 65536"],
    );
    let back = server.read_volume("vm", 4096, 65536);
    assert_all_bytes(&back, 0xab, "the NBD write read over HTTP");

    server.write_volume("vm", MIB, &vec![0xcd; 65536]);
    qemu_io(&vm, &["read -P 0xcd 1M 64k", "read -P 0 0 4096"]);

    // Write zeroes (with and without a hole), discard and flush.
    qemu_io(
        &vm,
        &[
            "write -P 0x11 2M 1M",
            "write -z 2M 256k",
            "write -z -u 3M 64k",
            "discard 2560k 64k",
            "flush",
            "read -P 0 2M 256k",
            "read -P 0 2560k 64k",
            "read -P 0x11 2624k 64k",
        ],
    );
    assert_all_bytes(
        &server.read_volume("vm", 2 * MIB, 256 * KIB),
        0,
        "zeroes over HTTP",
    );
    for f in ABC {
        assert_all_bytes(
            &server.read_file_at(f, 2 * MIB, 256 * 1024),
            0,
            &format!("{f} after write -z"),
        );
        assert_all_bytes(
            &server.read_file_at(f, 4096, 65536),
            0xab,
            &format!("{f} after the NBD write"),
        );
    }

    // The empty export name selects the only volume.
    qemu_io(&url(&server, ""), &["read -P 0xab 4096 65536"]);

    let writes = server.metric(r#"quorum_requests_total{volume="vm",op="write"}"#);
    assert!(writes >= 3.0, "NBD writes are counted: {writes}");
    let mut connections = 1.0;
    for _ in 0..100 {
        connections = server.metric(r#"quorum_nbd_connections{volume="vm"}"#);
        if connections == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(connections, 0.0, "every NBD client has gone");
}

/// `qemu-img info` sees the size; `qemu-img map` (block status with
/// base:allocation) sees written ranges as data and the rest as zero.
#[test]
fn qemu_img_info_and_map() {
    let server = Sandbox::new().serve(&nbd_config());
    let vm = url(&server, "vm");
    qemu_io(&vm, &["write -P 0x5a 0 64k", "write -P 0x5a 8M 4k"]);

    let info: Value = serde_json::from_str(&run(
        "qemu-img",
        &["info", "--output=json", "-f", "raw", &vm],
    ))
    .expect("qemu-img info prints JSON");
    assert_eq!(info["virtual-size"], SIZE, "{info}");

    let map: Value = serde_json::from_str(&run(
        "qemu-img",
        &["map", "--output=json", "-f", "raw", &vm],
    ))
    .expect("qemu-img map prints JSON");
    let map = map.as_array().expect("a list of extents");
    let expect = [
        (0, 64 * KIB, true),
        (64 * KIB, 8 * MIB - 64 * KIB, false),
        (8 * MIB, 4 * KIB, true),
        (8 * MIB + 4 * KIB, SIZE - 8 * MIB - 4 * KIB, false),
    ];
    let got: Vec<(u64, u64, bool)> = map
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap_or(u64::MAX),
                e["length"].as_u64().unwrap_or(u64::MAX),
                e["data"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(got, expect, "qemu-img map: {map:?}");
    for e in map {
        assert_eq!(e["zero"], !e["data"].as_bool().unwrap_or(true), "{e}");
    }
}

/// iotest 081 over NBD: a corrupted child is outvoted on a qemu-io read
/// and reported with the exact range, as over HTTP.
#[test]
fn corrupt_child_is_outvoted_and_reported_over_nbd() {
    let server = Sandbox::new().serve(&nbd_config());
    let vm = url(&server, "vm");
    qemu_io(&vm, &["write -P 0x32 0 1M"]);
    assert!(server.all_events().is_empty(), "healthy writes, no events");

    server.write_file_at("c.img", 0, &vec![0x42; MIB as usize]);
    qemu_io(&vm, &["read -P 0x32 0 1M"]);

    let events = server.all_events();
    let reports = named(&events, "QUORUM_REPORT_BAD");
    assert_eq!(reports.len(), 1, "one report for child c: {events:?}");
    let ev = reports[0];
    check_report(ev, "vm", "c", "read", None);
    assert_eq!(data_u64(ev, "offset"), 0, "{ev}");
    assert_eq!(data_u64(ev, "bytes"), MIB, "{ev}");
}

/// `nbdinfo --json` describes the export as advertised; `nbdinfo --map`
/// shows written ranges as data and the rest as holes.
#[test]
fn nbdinfo_describes_and_maps_the_export() {
    let server = Sandbox::new().serve(&nbd_config());
    let vm = url(&server, "vm");
    qemu_io(&vm, &["write -P 0x77 1M 128k"]);

    let info: Value = serde_json::from_str(&run("nbdinfo", &["--json", &vm]))
        .expect("nbdinfo --json prints JSON");
    let export = &info["exports"][0];
    assert_eq!(export["export-name"], "vm", "{info}");
    assert_eq!(export["export-size"], SIZE, "{info}");
    for flag in [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_multi_conn",
        "can_cache",
    ] {
        assert_eq!(export[flag], true, "{flag}: {info}");
    }
    assert_eq!(export["is_read_only"], false, "{info}");
    assert_eq!(export["block_size_minimum"], 1, "{info}");
    assert_eq!(export["block_size_preferred"], 4096, "{info}");
    assert_eq!(export["block_size_maximum"], 32 * MIB, "{info}");
    assert_eq!(info["protocol"], "newstyle-fixed", "{info}");
    assert_eq!(info["TLS"], false, "{info}");
    let contexts = export["contexts"].to_string();
    assert!(contexts.contains("base:allocation"), "{info}");

    let list = run(
        "nbdinfo",
        &["--list", "--json", &format!("nbd://{}", server.nbd_addr())],
    );
    assert!(list.contains("\"vm\""), "nbdinfo --list: {list}");

    let map = run("nbdinfo", &["--map", &vm]);
    let rows: Vec<(u64, u64, u32)> = map
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
            match (n(0), n(1), n(2)) {
                (Some(a), Some(b), Some(c)) => (a, b, c as u32),
                _ => panic!("nbdinfo --map printed {l:?}"),
            }
        })
        .collect();
    assert_eq!(
        rows,
        [
            (0, MIB, 3),
            (MIB, 128 * KIB, 0),
            (MIB + 128 * KIB, SIZE - MIB - 128 * KIB, 3)
        ],
        "nbdinfo --map:\n{map}"
    );
}

/// fio's `nbd` engine: random writes at queue depth 32 (pipelined,
/// answered out of order) verified with crc32c; the children stay
/// identical.
#[test]
fn fio_nbd_engine_verifies() {
    let server = Sandbox::new().serve(&nbd_config());
    let uri = url(&server, "vm");
    let uri_arg = format!("--uri={uri}");
    run(
        "fio",
        &[
            "--name=nbd",
            "--ioengine=nbd",
            &uri_arg,
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--size=8M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
            "--output-format=terse",
        ],
    );
    let a = server.read_file("a.img");
    for f in ["b.img", "c.img"] {
        assert_bytes_eq(&server.read_file(f), &a, &format!("{f} against a.img"));
    }
}

// ---- hostile input on a raw socket ----

const OPT_MAGIC: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_MAGIC: u32 = 0x6744_6698;
const EINVAL: u32 = 22;
const ENOSPC: u32 = 28;
const EOVERFLOW: u32 = 75;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the NBD port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    s
}

#[track_caller]
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    s.read_exact(&mut b)
        .unwrap_or_else(|e| panic!("read {n} bytes from the server: {e}"));
    b
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

/// Reads the greeting and sends fixed newstyle with no zeroes.
fn greet(s: &mut TcpStream) {
    let hello = read_n(s, 18);
    assert_eq!(&hello[..8], b"NBDMAGIC");
    assert_eq!(be64(&hello[8..]), OPT_MAGIC);
    s.write_all(&3u32.to_be_bytes()).expect("client flags");
}

fn send_option(s: &mut TcpStream, option: u32, data: &[u8]) {
    let mut b = Vec::new();
    b.extend(OPT_MAGIC.to_be_bytes());
    b.extend(option.to_be_bytes());
    b.extend((data.len() as u32).to_be_bytes());
    b.extend(data);
    s.write_all(&b).expect("send an option");
}

/// One option reply: (option, type, data).
#[track_caller]
fn option_reply(s: &mut TcpStream) -> (u32, u32, Vec<u8>) {
    let h = read_n(s, 20);
    assert_eq!(be64(&h), REPLY_MAGIC, "option reply magic");
    let len = be32(&h[16..]) as usize;
    (be32(&h[8..]), be32(&h[12..]), read_n(s, len))
}

/// Greets and enters transmission on `vm` with NBD_OPT_GO (simple
/// replies).
fn transmission(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    greet(&mut s);
    let mut go = Vec::new();
    go.extend(2u32.to_be_bytes());
    go.extend(b"vm");
    go.extend(0u16.to_be_bytes());
    send_option(&mut s, 7, &go);
    loop {
        let (option, kind, _) = option_reply(&mut s);
        assert_eq!(option, 7);
        match kind {
            3 => continue,
            1 => return s,
            other => panic!("NBD_OPT_GO answered {other:#x}"),
        }
    }
}

fn request(s: &mut TcpStream, kind: u16, cookie: u64, offset: u64, length: u32, payload: &[u8]) {
    let mut b = Vec::new();
    b.extend(REQUEST_MAGIC.to_be_bytes());
    b.extend(0u16.to_be_bytes());
    b.extend(kind.to_be_bytes());
    b.extend(cookie.to_be_bytes());
    b.extend(offset.to_be_bytes());
    b.extend(length.to_be_bytes());
    b.extend(payload);
    s.write_all(&b).expect("send a request");
}

/// A simple reply: (errno, cookie).
#[track_caller]
fn simple_reply(s: &mut TcpStream) -> (u32, u64) {
    let h = read_n(s, 16);
    assert_eq!(be32(&h), SIMPLE_MAGIC, "simple reply magic");
    (be32(&h[4..]), be64(&h[8..]))
}

/// Asserts that the server closes the connection (EOF, or a reset).
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

/// Hostile bytes in the handshake and in transmission are answered with an
/// error or a clean disconnect; nothing is written, the server stays up
/// and the next client works.
#[test]
fn hostile_input_is_answered_or_dropped() {
    let server = Sandbox::new().serve(&nbd_config());
    let addr = server.nbd_addr();
    let snap = server.snapshot(&ABC);

    // Garbage instead of the client flags and options.
    let mut s = connect(addr);
    read_n(&mut s, 18);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send garbage");
    assert_closed(&mut s, "garbage during the handshake");

    // An option claiming 4 GiB of data.
    let mut s = connect(addr);
    greet(&mut s);
    let mut b = Vec::new();
    b.extend(OPT_MAGIC.to_be_bytes());
    b.extend(99u32.to_be_bytes());
    b.extend(u32::MAX.to_be_bytes());
    s.write_all(&b).expect("send a huge option");
    assert_closed(&mut s, "an option of 4 GiB");

    // An unknown option is refused, and the connection stays usable.
    let mut s = connect(addr);
    greet(&mut s);
    send_option(&mut s, 99, b"whatever");
    let (option, kind, _) = option_reply(&mut s);
    assert_eq!((option, kind), (99, (1 << 31) + 1), "NBD_REP_ERR_UNSUP");
    send_option(&mut s, 3, b"");
    let (_, kind, data) = option_reply(&mut s);
    assert_eq!(kind, 2, "NBD_REP_SERVER after the refusal");
    assert_eq!(&data[4..], b"vm");
    assert_eq!(option_reply(&mut s).1, 1, "NBD_REP_ACK ends the list");
    send_option(&mut s, 2, b"");
    assert_eq!(option_reply(&mut s).1, 1, "NBD_OPT_ABORT is acknowledged");

    // Transmission: refusals answered, the connection kept.
    let mut s = transmission(addr);
    request(&mut s, 99, 1, 0, 0, &[]);
    assert_eq!(simple_reply(&mut s), (EINVAL, 1), "unknown command");
    request(&mut s, 0, 2, SIZE - 512, 1024, &[]);
    assert_eq!(simple_reply(&mut s), (EINVAL, 2), "a read past the end");
    request(&mut s, 0, 3, u64::MAX - 511, 1024, &[]);
    assert_eq!(
        simple_reply(&mut s),
        (EINVAL, 3),
        "offset + length overflows"
    );
    request(&mut s, 0, 4, 0, u32::MAX, &[]);
    assert_eq!(simple_reply(&mut s), (EOVERFLOW, 4), "a 4 GiB read");
    request(&mut s, 1, 5, SIZE - 512, 4096, &[0xee; 4096]);
    assert_eq!(simple_reply(&mut s), (ENOSPC, 5), "a write past the end");
    request(&mut s, 6, 6, SIZE, 1, &[]);
    assert_eq!(simple_reply(&mut s), (ENOSPC, 6), "zeroes past the end");
    request(&mut s, 0, 7, 0, 512, &[]);
    assert_eq!(
        simple_reply(&mut s),
        (0, 7),
        "a good read after the refusals"
    );
    assert_eq!(read_n(&mut s, 512), vec![0; 512]);
    // Bad magic: the stream cannot be followed, the server hangs up.
    s.write_all(&[0xde; 28]).expect("send bad magic");
    assert_closed(&mut s, "bad magic");

    // A write larger than the maximum: answered, then closed.
    let mut s = transmission(addr);
    request(&mut s, 1, 8, 0, u32::MAX, &[0xee; 4096]);
    assert_eq!(simple_reply(&mut s), (EOVERFLOW, 8), "a 4 GiB write");
    assert_closed(&mut s, "a 4 GiB write");

    // A truncated header, and a client gone with requests in flight.
    let mut s = transmission(addr);
    s.write_all(&REQUEST_MAGIC.to_be_bytes())
        .expect("half a header");
    drop(s);
    let mut s = transmission(addr);
    for cookie in 0..16 {
        request(&mut s, 0, cookie, 0, 1 << 20, &[]);
    }
    drop(s);

    server.assert_unchanged(&snap, "after hostile NBD input");
    // The next client works.
    qemu_io(&url(&server, "vm"), &["read -P 0 0 64k"]);
    server.get("/healthz").expect_status(200);
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
