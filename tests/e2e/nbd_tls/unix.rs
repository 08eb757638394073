//! SPEC section 9: NBD on a Unix socket (`[nbd] socket`), beside or
//! instead of TCP: the stdout line, real clients, the socket's life (a
//! stale one replaced, a live one or a non-socket path refused, removed
//! at shutdown).

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client_ok;
use crate::util::*;

/// The config: NBD on `nbd.sock` beside the config file only.
fn unix_config() -> String {
    format!(
        "[nbd]\nsocket = \"nbd.sock\"\n\n{}",
        abc_volume("16MiB", "")
    )
}

/// Waits for the line `nbd listening on nbd+unix:///?socket=PATH` in the
/// stdout of the server's run `run`, and checks that no TCP NBD line came.
#[track_caller]
fn wait_for_socket_line(server: &Server, run: u32, socket: &Path) {
    let log = server.file(&format!("logs/server-{run}.stdout.log"));
    let line = format!("nbd listening on nbd+unix:///?socket={}", socket.display());
    wait_until(&format!("`{line}` on stdout"), || {
        fs::read_to_string(&log).is_ok_and(|out| out.lines().any(|l| l == line))
    });
    let out = fs::read_to_string(&log).expect("read the stdout log");
    assert!(
        !out.contains("nbd://"),
        "no TCP listener was configured:\n{out}"
    );
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// qemu-io writes and reads back over the socket, HTTP reads the same
/// bytes, nbdinfo attaches; the socket is removed at shutdown.
#[test]
fn qemu_io_and_nbdinfo_over_a_unix_socket() {
    let mut server = Sandbox::new().serve(&unix_config());
    let socket = server.file("nbd.sock");
    wait_for_socket_line(&server, 1, &socket);
    let uri = format!("nbd+unix:///vm?socket={}", socket.display());

    client_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x5a 1M 1M",
            "-c",
            "read -P 0x5a 1M 1M",
            &uri,
        ],
    );
    assert_all_bytes(
        &server.read_volume("vm", MIB, MIB),
        0x5a,
        "the NBD write read over HTTP",
    );
    server.write_volume("vm", 0, &vec![0xc3; 4096]);
    client_ok("qemu-io", &["-f", "raw", "-c", "read -P 0xc3 0 4k", &uri]);

    let info: Value = serde_json::from_str(&client_ok("nbdinfo", &["--json", &uri]))
        .expect("nbdinfo --json prints JSON");
    assert_eq!(info["TLS"], false, "{info}");
    assert_eq!(info["exports"][0]["export-size"], 16 * MIB, "{info}");

    assert!(is_socket(&socket), "the socket exists while serving");
    let status = server.stop();
    assert!(status.success(), "the server stops cleanly: {status}");
    assert!(!socket.exists(), "the socket is removed at shutdown");
}

/// A socket left by a server that died is replaced on the next start.
#[test]
fn a_stale_socket_is_replaced() {
    let mut server = Sandbox::new().serve(&unix_config());
    let socket = server.file("nbd.sock");
    wait_for_socket_line(&server, 1, &socket);
    server.kill();
    assert!(is_socket(&socket), "a killed server leaves its socket");

    server.restart();
    wait_for_socket_line(&server, 2, &socket);
    let uri = format!("nbd+unix:///vm?socket={}", socket.display());
    assert_eq!(
        client_ok("nbdinfo", &["--size", &uri]).trim(),
        (16 * MIB).to_string()
    );
}

/// A socket a live server listens on, and a path that is not a socket,
/// refuse the start with one line naming the path, and are left as they
/// were; no child file is created.
#[test]
fn a_live_socket_or_a_non_socket_path_refuses_the_start() {
    let sandbox = Sandbox::new();
    let socket = sandbox.file("nbd.sock");

    let live = UnixListener::bind(&socket).expect("listen on the socket");
    let line = sandbox
        .start_expecting_failure(&unix_config())
        .one_line()
        .to_owned();
    assert!(
        line.contains(&socket.display().to_string()) && line.contains("running server"),
        "the refusal names the path and why: {line}"
    );
    assert!(is_socket(&socket), "the live socket is left alone");
    drop(live);
    fs::remove_file(&socket).expect("remove the test's socket");

    fs::write(&socket, "precious").expect("write a regular file");
    let line = sandbox
        .start_expecting_failure(&unix_config())
        .one_line()
        .to_owned();
    assert!(
        line.contains(&socket.display().to_string()) && line.contains("not a socket"),
        "the refusal names the path and why: {line}"
    );
    assert_eq!(
        fs::read_to_string(&socket).expect("read the file"),
        "precious",
        "the file is left as it was"
    );
    for f in ABC {
        assert!(
            !sandbox.file(f).exists(),
            "{f} was created by a refused start"
        );
    }
}

/// A new connection to the socket and when it was made, if it gets the
/// server's greeting (one beyond the cap is closed before it).
fn greeted(socket: &Path) -> Option<(std::os::unix::net::UnixStream, Instant)> {
    let started = Instant::now();
    let mut s = nbd_unix(socket).expect("connect to the NBD socket");
    read_greeting(&mut s).is_ok().then_some((s, started))
}

/// TCP and the socket share one `max_connections`, and a handshake on the
/// socket has the same deadline (`header_timeout`) as on TCP.
#[test]
fn the_socket_shares_the_connection_cap_and_the_handshake_deadline() {
    let server = Sandbox::new().serve(&format!(
        "max_connections = 2\nheader_timeout = \"1s\"\n\n[nbd]\nlisten = \"127.0.0.1:0\"\nsocket = \"nbd.sock\"\n\n{}",
        abc_volume("1MiB", "")
    ));
    let socket = server.file("nbd.sock");
    let tcp = NbdHandshake::greet(nbd_tcp(server.nbd_addr()).expect("connect to the NBD port"))
        .expect("the NBD greeting on TCP")
        .go("vm")
        .expect("NBD_OPT_GO on TCP");
    let mut unix = NbdHandshake::greet(nbd_unix(&socket).expect("connect to the NBD socket"))
        .expect("the NBD greeting on the socket")
        .go("vm")
        .expect("NBD_OPT_GO on the socket");
    assert!(
        greeted(&socket).is_none(),
        "a third connection is beyond the cap of 2"
    );
    unix.write(0, &[7; 512])
        .expect("an NBD write on the socket");
    assert_eq!(
        unix.read(0, 512).expect("an NBD read on the socket"),
        vec![7; 512],
        "the socket's client"
    );

    assert!(
        tcp.disconnect().expect("send NBD_CMD_DISC"),
        "the server closes after NBD_CMD_DISC"
    );
    let mut idle = None;
    wait_until("a slot freed by the TCP client to serve the socket", || {
        idle = greeted(&socket);
        idle.is_some()
    });
    // It says nothing: the handshake deadline closes it.
    let (mut idle, started) = idle.expect("a connection got the greeting");
    assert!(closed_by_peer(&mut idle), "an idle handshake is closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}, header_timeout is 1s"
    );
}
