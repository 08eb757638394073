//! SPEC section 9 (issue 14): the volumes over NBD, driven by real clients
//! (`qemu-io`, `qemu-img`, `nbdinfo`, `nbdcopy`, fio's `nbd` engine), by
//! hostile bytes on a raw socket, and by the blocking client of
//! `util::nbd` for the linearizability check. A missing client fails the
//! test loudly: `scripts/install-test-deps` installs them.
//!
//! One file per concern:
//! - [`clients`]: qemu-io round trips with HTTP, qemu-img info, nbdinfo's
//!   description and list of the exports;
//! - [`maps`]: block status (`qemu-img map`, `nbdinfo --map`);
//! - [`votes`]: iotest 081's scenarios over NBD;
//! - [`round_trips`]: disk images in and out with `qemu-img convert` and
//!   `nbdcopy`;
//! - [`fio`]: fio's `nbd` engine, verified and over several connections;
//! - [`hostile`]: hostile bytes on a raw socket, and the plaintext guard;
//! - [`linearizability`]: NBD and HTTP clients on one volume under faults,
//!   the history checked.

mod clients;
mod fio;
mod hostile;
mod linearizability;
mod maps;
mod round_trips;
mod votes;

use std::process::{Command, Output};

use crate::util::*;

/// The size of the usual test volume.
const SIZE: u64 = 16 * MIB;

/// `config` with `[nbd]` on a free port of 127.0.0.1 (at the end, so
/// that the top-level keys of `config` stay top-level).
fn with_nbd(config: &str) -> String {
    format!("{config}\n[nbd]\nlisten = \"127.0.0.1:0\"\n")
}

/// Three file children of 16 MiB, threshold 2, served over NBD on a free
/// port too.
fn nbd_config() -> String {
    with_nbd(&abc_volume("16MiB", ""))
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

/// Runs a client and returns what it did, whatever its exit status.
#[track_caller]
fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {}", install_hint()))
}

/// What to do about a missing client.
fn install_hint() -> &'static str {
    "install it with scripts/install-test-deps (Debian: qemu-utils, libnbd-bin, fio)"
}

/// The arguments of `qemu-io -f raw` with one `-c` per command.
fn qemu_io_args<'a>(target: &'a str, commands: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(target);
    args
}

/// `qemu-io -f raw` with one `-c` per command; every command must succeed.
#[track_caller]
fn qemu_io(target: &str, commands: &[&str]) -> String {
    run("qemu-io", &qemu_io_args(target, commands))
}

/// One row of `nbdinfo --map`: offset, length, type (bit 0 hole, bit 1
/// zero).
type MapRow = (u64, u64, u32);

/// `nbdinfo --map URL`, parsed.
#[track_caller]
fn nbdinfo_map(target: &str) -> Vec<MapRow> {
    let map = run("nbdinfo", &["--map", target]);
    map.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
            match (n(0), n(1), n(2)) {
                (Some(a), Some(b), Some(c)) if c <= 3 => (a, b, c as u32),
                _ => panic!("nbdinfo --map printed {l:?}:\n{map}"),
            }
        })
        .collect()
}
