//! Issue 12: the limits of SPEC section 12 under attack. Each test is one
//! attack, written against the contract of the limits rather than against
//! how they are built:
//!
//! - `max_buffered_bytes` (default 512 MiB): many large PUTs at once, and
//!   many uploads that stall just before their end, keep the server's peak
//!   resident memory under the budget + 128 MiB; a request without room
//!   waits at most `body_timeout` and then gets 503 `busy`.
//! - `header_timeout` and `max_connections`: thousands of half-sent request
//!   heads are closed after the timeout while normal clients are served; a
//!   connection beyond the limit is closed at once.
//! - Streamed reads: whole-volume GETs whose clients never read hold no
//!   thread, no membership gate and no range against writers, and are
//!   dropped after `body_timeout`.
//! - Scrubs: one per volume at a time (409 `conflict`), finished jobs
//!   pruned to the last 100.
//! - `Transfer-Encoding` other than exactly `chunked`: 501, nothing written.
//! - Tokens compared exactly.
//! - Child names obey the volume-name rule, at run time and in the config.
//!
//! Memory is the server's own, from `/proc/PID/status` (`VmRSS` now,
//! `VmHWM` the peak); a watch kills the server the moment it goes past the
//! bound, so that a server without the limit fails the test at once instead
//! of taking the machine's memory. Every loop is bounded in count and in
//! time, every socket has a timeout, all traffic is on 127.0.0.1.
//!
//! One file per concern: [`buffers`], [`connections`], [`stalled_reads`],
//! [`scrubs`], [`headers`] and [`child_names`] hold the tests; [`procfs`]
//! and [`hand_made`] the helpers they share with `limits_more`.

mod buffers;
mod child_names;
mod connections;
mod hand_made;
mod headers;
mod procfs;
mod scrubs;
mod stalled_reads;

pub(crate) use self::hand_made::{Outcome, assert_served, exchange, send_request};
pub(crate) use self::procfs::{
    accept_queue, assert_peak_within, mib, open_fds, queued_bytes, status_of, watch_rss,
};
use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";

/// 1 MiB volume `vm` on a/b/c that all hold the same pattern (any write
/// shows), with `head` before the volume table.
pub(crate) fn patterned_server(head: &str) -> Server {
    let sandbox = Sandbox::new();
    let data = pattern(120, MIB as usize);
    for f in ABC {
        sandbox.write_file_at(f, 0, &data);
    }
    sandbox.serve(&format!("{head}\n{}", abc_volume("1MiB", "")))
}

/// The `child_roots` line that lets run-time file children live in the
/// sandbox (where relative child uris resolve).
pub(crate) fn child_roots(sandbox: &Sandbox) -> String {
    let root = sandbox.file("config.toml");
    let root = root.parent().expect("the sandbox directory");
    format!("child_roots = [\"{}\"]\n", root.display())
}
