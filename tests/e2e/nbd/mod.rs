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

use crate::util::*;
use crate::util::{client_output as output, nbd_url as url, run_client as run};

/// The size of the usual test volume.
const SIZE: u64 = 16 * MIB;

/// Three file children of 16 MiB, threshold 2, served over NBD on a free
/// port too.
fn nbd_config() -> String {
    with_nbd(&abc_volume("16MiB", ""))
}

/// What to do about a missing client.
fn install_hint() -> &'static str {
    "install it with scripts/install-test-deps (Debian: qemu-utils, libnbd-bin, fio)"
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
