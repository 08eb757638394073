//! Issue 8: reliability and hostile input. A server killed under a write
//! load, a torn event log, many clients on overlapping blocks, slow and
//! failing children, hostile HTTP input, and secrets. `RELIABILITY.md` at
//! the repository root maps every fault to its test (here or elsewhere).
//!
//! Every loop is bounded in count and in time; all traffic is on 127.0.0.1.

mod children;
mod clients;
mod crash;
mod hostile_http;
mod secrets;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::Value;

use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";
const EIO: &str = "Input/output error";

// ---------------------------------------------------------------------------
// Helpers of this module
// ---------------------------------------------------------------------------

/// An HTTP client of our own, for threads that must survive the server's
/// death (the harness panics on a failed request).
fn client() -> Client {
    http_client(Duration::from_secs(20))
}
