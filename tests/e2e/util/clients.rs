//! Real block clients run against a server: `qemu-io` over NBD. A client
//! that is not installed fails the test loudly
//! (`scripts/install-test-deps` installs them).

use std::process::{Command, Output};

use super::Server;

/// `nbd://ADDR/EXPORT` of `server`'s NBD listener.
pub fn nbd_url(server: &Server, export: &str) -> String {
    format!("nbd://{}/{export}", server.nbd_addr())
}

/// Runs a client; panics with its command line and output unless it
/// succeeds (exit status, and no "failed" in what it printed: qemu-io
/// exits 0 after a failed command).
#[track_caller]
pub fn run_client(program: &str, args: &[&str]) -> String {
    let out = client_output(program, args);
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

/// Runs a client and returns what it did, whatever its status.
#[track_caller]
pub fn client_output(program: &str, args: &[&str]) -> Output {
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

/// The arguments of `qemu-io -f raw TARGET` with one `-c` per command.
pub fn qemu_io_args<'a>(target: &'a str, commands: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(target);
    args
}

/// `qemu-io -f raw TARGET` with one `-c` per command; every command must
/// succeed.
#[track_caller]
pub fn qemu_io(target: &str, commands: &[&str]) -> String {
    run_client("qemu-io", &qemu_io_args(target, commands))
}
