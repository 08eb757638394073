//! SPEC section 9, NBD beyond plain TCP: TLS (`[nbd.tls]`, required on
//! every connection once configured), the Unix socket (`unix`), and the
//! `frontend` label of the request metrics (`frontend`). Real clients:
//! `qemu-io` with `tls-creds-x509`, `nbdinfo` with `nbds://` URIs, and a
//! hand-written client for exact options. Certificates are made per test
//! by `openssl`. A missing tool fails the test loudly.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::util::*;

mod frontend;
mod unix;

/// Runs a client and returns its output; a client that is not installed
/// fails the test loudly.
pub(super) use crate::util::client_output as client;

/// Whether a client succeeded: exit status 0 and no `failed` in its
/// output (qemu-io reports a failed command that way).
pub(super) fn succeeded(out: &Output) -> bool {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success() && !text.contains("failed")
}

/// Runs a client that must succeed; returns its stdout.
#[track_caller]
pub(super) fn client_ok(program: &str, args: &[&str]) -> String {
    let out = client(program, args);
    assert!(
        succeeded(&out),
        "`{program} {}` failed ({}):\n{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-io` over TLS to export `vm` at `addr`, trusting the CA in `dir`,
/// with one `-c` per command.
fn qemu_io_tls(addr: SocketAddr, dir: &Path, commands: &[&str]) -> Output {
    let object = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=client",
        dir.display()
    );
    let image = format!(
        "driver=nbd,server.type=inet,server.host={},server.port={},export=vm,tls-creds=tls0",
        addr.ip(),
        addr.port()
    );
    let mut args = vec!["--object", &object, "--image-opts"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(&image);
    client("qemu-io", &args)
}

/// The TLS files under `SANDBOX/tls`, and a config that serves NBD with
/// them on a free port (paths relative to the config file).
fn tls_sandbox() -> (Sandbox, TlsDirs, String) {
    let sandbox = Sandbox::new();
    let dirs = tls_dirs(&sandbox.file("tls"));
    let config = format!(
        "[nbd]\nlisten = \"127.0.0.1:0\"\n\n[nbd.tls]\ncert = \"tls/server/server-cert.pem\"\nkey = \"tls/server/server-key.pem\"\n\n{}",
        abc_volume("16MiB", "")
    );
    (sandbox, dirs, config)
}

#[track_caller]
fn assert_output_failed(out: &Output, what: &str) {
    assert!(
        !succeeded(out),
        "{what} should fail:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// qemu-io writes and reads back 1 MiB over TLS; HTTP reads the same
/// bytes; nbdinfo (libnbd) attaches with `nbds://` and sees TLS.
#[test]
fn qemu_io_and_nbdinfo_attach_over_tls() {
    let (sandbox, dirs, config) = tls_sandbox();
    let server = sandbox.serve(&config);
    let addr = server.nbd_addr();

    let out = qemu_io_tls(
        addr,
        &dirs.client,
        &["write -P 0x3c 0 1M", "read -P 0x3c 0 1M"],
    );
    assert!(
        succeeded(&out),
        "qemu-io over TLS:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_bytes(
        &server.read_volume("vm", 0, MIB),
        0x3c,
        "the TLS write read over HTTP",
    );
    for f in ABC {
        assert_all_bytes(&server.read_file_at(f, 0, MIB as usize), 0x3c, f);
    }

    let uri = format!(
        "nbds://{addr}/vm?tls-certificates={}",
        dirs.client.display()
    );
    let info: Value = serde_json::from_str(&client_ok("nbdinfo", &["--json", &uri]))
        .expect("nbdinfo --json prints JSON");
    assert_eq!(info["TLS"], true, "{info}");
    assert_eq!(info["exports"][0]["export-name"], "vm", "{info}");
    assert_eq!(info["exports"][0]["export-size"], 16 * MIB, "{info}");
}

/// Before STARTTLS a TLS server answers nothing but STARTTLS and ABORT:
/// plaintext qemu-io and nbdinfo fail and write nothing; on a raw socket
/// `NBD_OPT_GO` and `NBD_OPT_LIST` get `NBD_REP_ERR_TLS_REQD` and the
/// connection then still accepts `NBD_OPT_STARTTLS`; `NBD_OPT_EXPORT_NAME`,
/// which cannot be refused, closes the connection.
#[test]
fn plaintext_gets_tls_required() {
    let (sandbox, _dirs, config) = tls_sandbox();
    let server = sandbox.serve(&config);
    let addr = server.nbd_addr();
    let snap = server.snapshot(&ABC);

    let out = client(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0x55 0 64k",
            &format!("nbd://{addr}/vm"),
        ],
    );
    assert_output_failed(&out, "plaintext qemu-io against a TLS server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TLS"),
        "qemu-io says TLS is required: {stderr}"
    );
    let out = client("nbdinfo", &[&format!("nbd://{addr}/vm")]);
    assert_output_failed(&out, "plaintext nbdinfo against a TLS server");

    let connect = || {
        NbdHandshake::greet(nbd_tcp(addr).expect("connect to the NBD port"))
            .expect("the NBD greeting")
    };
    let mut wire = connect();
    assert_eq!(
        wire.ask(opt::GO, &go_data("vm")).expect("a reply to GO"),
        rep::ERR_TLS_REQD,
        "NBD_OPT_GO before STARTTLS"
    );
    assert_eq!(
        wire.ask(opt::LIST, &[]).expect("a reply to LIST"),
        rep::ERR_TLS_REQD,
        "NBD_OPT_LIST before STARTTLS"
    );
    assert_eq!(
        wire.ask(opt::STARTTLS, &[]).expect("a reply to STARTTLS"),
        rep::ACK,
        "STARTTLS after refusals"
    );
    drop(wire);

    let mut wire = connect();
    wire.send_option(opt::EXPORT_NAME, b"vm")
        .expect("send NBD_OPT_EXPORT_NAME");
    assert!(
        wire.closed_by_server(),
        "NBD_OPT_EXPORT_NAME before TLS closes the connection"
    );

    server.assert_unchanged(&snap, "after plaintext clients");
    assert_all_bytes(&server.read_volume("vm", 0, 64 * KIB), 0, "the volume");
}

/// A client that trusts another CA cannot attach, and nothing is written.
#[test]
fn a_client_trusting_another_ca_fails_and_writes_nothing() {
    let (sandbox, dirs, config) = tls_sandbox();
    let server = sandbox.serve(&config);
    let addr = server.nbd_addr();
    let snap = server.snapshot(&ABC);

    let out = qemu_io_tls(addr, &dirs.stranger, &["write -P 0x77 0 64k"]);
    assert_output_failed(&out, "qemu-io trusting another CA");
    let uri = format!(
        "nbds://{addr}/vm?tls-certificates={}",
        dirs.stranger.display()
    );
    let out = client("nbdinfo", &[&uri]);
    assert_output_failed(&out, "nbdinfo trusting another CA");

    server.assert_unchanged(&snap, "after untrusting clients");
    assert_all_bytes(&server.read_volume("vm", 0, 64 * KIB), 0, "the volume");
    // The server is unharmed: a trusting client still works.
    let out = qemu_io_tls(addr, &dirs.client, &["read -P 0 0 64k"]);
    assert!(succeeded(&out), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Unreadable, malformed or mismatched TLS files refuse the start with one
/// line that names the file, before any child file is created.
#[test]
fn bad_tls_files_refuse_the_start_naming_the_file() {
    let sandbox = Sandbox::new();
    tls_dirs(&sandbox.file("tls"));
    std::fs::write(sandbox.file("tls/garbage.pem"), "not PEM at all\n").expect("write");
    let other_key = "tls/work/other-ca-key.pem";
    for (cert, key, named) in [
        (
            "tls/missing.pem",
            "tls/server/server-key.pem",
            vec!["tls/missing.pem"],
        ),
        (
            "tls/server/server-cert.pem",
            "tls/missing-key.pem",
            vec!["tls/missing-key.pem"],
        ),
        (
            "tls/garbage.pem",
            "tls/server/server-key.pem",
            vec!["tls/garbage.pem"],
        ),
        (
            "tls/server/server-cert.pem",
            "tls/garbage.pem",
            vec!["tls/garbage.pem"],
        ),
        (
            "tls/server/server-cert.pem",
            other_key,
            vec!["tls/server/server-cert.pem", other_key],
        ),
    ] {
        let config = format!(
            "[nbd]\nlisten = \"127.0.0.1:0\"\n\n[nbd.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n{}",
            abc_volume("1MiB", "")
        );
        let refused = sandbox.start_expecting_failure(&config);
        let line = refused.one_line();
        for file in named {
            let path = sandbox.file(file).display().to_string();
            assert!(line.contains(&path), "the refusal names {path}: {line}");
        }
        for f in ABC {
            assert!(
                !sandbox.file(f).exists(),
                "{f} was created by a refused start: {line}"
            );
        }
    }
}

/// `--nbd` on a non-loopback address obeys the same rule as `listen`:
/// refused without TLS or `allow_plaintext`.
#[test]
fn nbd_flag_beyond_loopback_needs_tls_or_allow_plaintext() {
    let sandbox = Sandbox::new();
    let config = sandbox.write_config(&abc_volume("1MiB", ""));
    let config = config.display().to_string();
    let refused = sandbox.run_expecting_failure(&[
        "--config",
        &config,
        "--listen",
        "127.0.0.1:0",
        "--nbd",
        "0.0.0.0:0",
    ]);
    let line = refused.one_line();
    assert!(
        line.contains("allow_plaintext") && line.contains("[nbd.tls]"),
        "the refusal says what to do: {line}"
    );
}
