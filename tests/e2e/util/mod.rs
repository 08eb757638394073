//! The harness of the end-to-end tests.
//!
//! Every test gets a [`Sandbox`]: a fresh temporary directory that holds the
//! config file, the child files, the server's `data_dir` and its logs. A
//! [`Server`] is the real `quorum-server` binary (`CARGO_BIN_EXE_quorum-server`)
//! started in a sandbox with `--listen 127.0.0.1:0`: the harness reads the
//! `listening on http://ADDR` line from its stdout, polls `/healthz` until a
//! deadline, and kills the process when the `Server` is dropped. A start that
//! fails panics with the command line and the captured stderr; a test that
//! panics while a server runs prints the tail of the server's stderr.
//!
//! The server runs with its current directory set to `SANDBOX/cwd`, while the
//! config file sits in `SANDBOX/config.toml`: relative child URIs and the
//! default `data_dir` must follow the config file, so every test checks that
//! on the side.
//!
//! Logs go to `SANDBOX/logs/`. Set `QUORUM_E2E_KEEP=1` to keep the sandbox of
//! a failed test (its path is printed).
//!
//! All traffic goes to 127.0.0.1 and every wait is bounded by a deadline.
//!
//! One `impl Server` spread over files, one job each:
//!
//! - [`sandbox`]: the directory, its files, and starting a server in it;
//! - [`server`]: the process: start, stop, signals, kill and restart;
//! - [`http`]: requests through `reqwest` and the answer, [`Resp`];
//! - [`raw`]: requests written by hand on a socket, for hostile tests, and
//!   answers parsed by `httparse`;
//! - [`metrics`]: `/metrics` parsed by `prometheus-parse`, a sample looked
//!   up by its name and labels;
//! - [`nbd`]: a small blocking NBD client on TCP or a Unix socket, and
//!   its wire messages one by one for exact and hostile tests;
//! - [`ports`]: the addresses a process listens on, a port that refuses,
//!   and the lock on the fixed default port;
//! - [`events`]: `/v1/events` and checks of the events of SPEC section 6;
//! - [`clients`]: real block clients (`qemu-io` over NBD);
//! - [`certs`]: X.509 files for NBD over TLS (`openssl`);
//! - [`config`], [`bytes`], [`rng`]: config snippets, byte buffers and the
//!   tests' one random generator;
//! - [`bad_configs`]: the configs a start refuses, for the start-up tests
//!   and `quorum-server check`;
//! - [`tools`]: external tools (promtool, the venv's validators) found or
//!   failed loudly, and run with a deadline.
//!
//! Tests `use crate::util::*;`: everything public is re-exported here.

use std::thread;
use std::time::{Duration, Instant};

mod bad_configs;
mod bytes;
mod certs;
mod clients;
mod config;
mod events;
mod http;
mod metrics;
mod nbd;
mod ports;
mod raw;
mod rng;
mod sandbox;
mod server;
mod tools;

pub use self::bad_configs::*;
pub use self::bytes::*;
pub use self::certs::*;
pub use self::clients::*;
pub use self::config::*;
pub use self::events::*;
pub use self::http::*;
pub use self::metrics::*;
pub use self::nbd::*;
pub use self::ports::*;
pub use self::raw::*;
pub use self::rng::*;
pub use self::sandbox::*;
pub use self::server::*;
pub use self::tools::*;

/// The server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_quorum-server");

/// The binary to run: [`BIN`], or `QUORUM_E2E_BIN` when set (to run the
/// suite against another build, e.g. a release binary).
pub fn bin() -> String {
    std::env::var("QUORUM_E2E_BIN").unwrap_or_else(|_| BIN.to_string())
}
/// How long a server may take to print its address and answer `/healthz`.
pub const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// How long a background effect (a repair) may take to show.
pub const EFFECT_DEADLINE: Duration = Duration::from_secs(10);
/// Timeout of one HTTP request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The embedded default's address (SPEC section 2).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8700";

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
/// The vote block (SPEC section 5).
pub const BLOCK: u64 = 4 * KIB;

/// The child files of the usual three-child volume.
pub const ABC: [&str; 3] = ["a.img", "b.img", "c.img"];

/// Polls `cond` until it holds or [`EFFECT_DEADLINE`] passes.
#[track_caller]
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_within(what, EFFECT_DEADLINE, cond);
}

/// Polls `cond` until it holds or `limit` passes.
#[track_caller]
pub fn wait_until_within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}
