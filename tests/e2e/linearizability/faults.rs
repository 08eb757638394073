//! What the full linearizability run does to the volume besides the
//! clients' I/O: the faults of its config ([`full_config`]), children
//! added and removed under load ([`membership_loop`]) and scrubs with
//! repair ([`scrub_loop`]).

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::workload::{BLOCK_BYTES, Shared};
use crate::util::*;

/// The volume: 4 MiB, so that a read can span several 1 MiB pieces.
pub const VOLUME_BLOCKS: u64 = 1024;
/// Small operations fall on this window, so that blocks see contention.
pub const HOT: std::ops::Range<u64> = 448..512;
/// Child a fails every write here: a range it never holds fresh.
const A_BROKEN: std::ops::Range<u64> = 456..458;
fn fault_lines(op: &str, first_block: u64, blocks: u64, what: &[&str]) -> String {
    let offset = format!("offset = {}", first_block * BLOCK_BYTES);
    let length = format!("length = {}", blocks * BLOCK_BYTES);
    let mut lines = vec![offset.as_str(), length.as_str()];
    lines.extend_from_slice(what);
    fault(op, &lines)
}

/// The config of the full test: `a` fails writes (always on [`A_BROKEN`],
/// once each on scattered blocks, some twice), `b` is slow (1 ms on every
/// call, 8 ms on reads of part of the hot window) and fails a few writes
/// where `a` fails too, `c` returns corrupt reads once on a few hot blocks;
/// `rewrite_corrupted` repairs those. The faulty rules cannot be changed
/// while the server runs, so "on and off" is the rules that fire once
/// (each the first time a write or a resync reaches its block) beside one
/// range that always fails.
pub fn full_config() -> String {
    let mut a = fault_lines(
        "write",
        A_BROKEN.start,
        A_BROKEN.end - A_BROKEN.start,
        &["error = \"EIO\""],
    );
    for k in 0..48u64 {
        let block = (k * 97 + 13) % VOLUME_BLOCKS;
        let copies = if k % 3 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            a.push_str(&fault_lines(
                "write",
                block,
                1,
                &["error = \"EIO\"", "once = true"],
            ));
        }
    }
    for k in 0..12u64 {
        let block = HOT.start + 16 + (k * 5) % 48;
        a.push_str(&fault_lines(
            "write",
            block,
            1,
            &["error = \"EIO\"", "once = true"],
        ));
    }
    // b fails writes once where a fails too: those writes fail (503) with
    // only c holding them, "may or may not have happened".
    let mut b = fault("any", &["latency = \"1ms\""]);
    for _ in 0..3 {
        b.push_str(&fault_lines(
            "write",
            A_BROKEN.start,
            1,
            &["error = \"EIO\"", "once = true"],
        ));
    }
    for k in 0..4u64 {
        b.push_str(&fault_lines(
            "write",
            HOT.start + 16 + (k * 5) % 48,
            1,
            &["error = \"EIO\"", "once = true"],
        ));
    }
    b.push_str(&fault_lines(
        "read",
        HOT.start + 32,
        16,
        &["latency = \"8ms\""],
    ));
    let mut c = String::new();
    for k in 0..8u64 {
        c.push_str(&fault_lines(
            "read",
            HOT.start + 20 + 4 * k,
            1,
            &["corrupt = true", "once = true"],
        ));
    }
    format!(
        "max_request_bytes = \"4MiB\"\nchild_roots = [\".\"]\n{}",
        volume(
            "vm",
            "4MiB",
            2,
            "rewrite_corrupted = true",
            &[
                child_with("a", &a),
                child_with("b", &b),
                child_with("c", &c)
            ],
        )
    )
}

fn children(server: &Server) -> Vec<Value> {
    server.get("/v1/volumes/vm").json()["children"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits (pacing, not synchronizing) until the clients have done `ops`
/// operations or stopped; false when they stopped first.
fn wait_for_ops(shared: &Shared, ops: usize) -> bool {
    while shared.ops.load(Ordering::Relaxed) < ops {
        if shared.done() {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Retries a membership change while the server answers 503 `busy`
/// (bounded); returns the last answer's status and body.
fn membership(shared: &Shared, what: &str, send: impl Fn() -> Resp) -> u16 {
    for attempt in 1..=40 {
        let r = send();
        if r.status == 503 && attempt < 40 && !shared.done() {
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        shared.note(format!(
            "{what}: {} {} (attempt {attempt})",
            r.status,
            r.preview()
        ));
        return r.status;
    }
    0
}

/// Adds child d under load, waits for it to sync, removes it; twice.
pub fn membership_loop(shared: &Shared) -> usize {
    let server = &shared.server;
    let mut changes = 0;
    let target = shared.plan.target_ops;
    for (round, at) in [target / 5, target / 2].into_iter().enumerate() {
        if !wait_for_ops(shared, at) {
            break;
        }
        let name = format!("d{round}");
        let body = json!({ "name": name, "uri": format!("{name}.img"), "options": {} }).to_string();
        let added = membership(shared, &format!("add {name}"), || {
            server.send(
                server
                    .request(Method::POST, "/v1/volumes/vm/children")
                    .body(body.clone()),
            )
        });
        assert_eq!(added, 201, "adding {name} under load failed");
        changes += 1;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let state = children(server)
                .iter()
                .find(|c| c["name"] == name.as_str())
                .map(|c| c["state"].clone());
            if state.as_ref().is_some_and(|s| s == "healthy") {
                shared.note(format!("{name} is healthy"));
                break;
            }
            if Instant::now() > deadline || shared.done() {
                shared.note(format!("{name} not healthy in time: {state:?}"));
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let removed = membership(shared, &format!("remove {name}"), || {
            server.send(server.request(Method::DELETE, &format!("/v1/volumes/vm/children/{name}")))
        });
        if removed == 204 {
            changes += 1;
        }
    }
    changes
}

/// Scrubs with repair, one after the other, a pause between them.
pub fn scrub_loop(shared: &Shared) -> usize {
    let server = &shared.server;
    let mut done = 0;
    while !shared.done() {
        thread::sleep(Duration::from_millis(1500));
        if shared.done() {
            break;
        }
        let r = server.send(
            server
                .request(Method::POST, "/v1/volumes/vm/scrub")
                .body(r#"{"repair": true}"#),
        );
        if r.status != 202 {
            shared.note(format!("scrub refused: {} {}", r.status, r.preview()));
            continue;
        }
        let id = r.json()["id"].as_u64().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let end = loop {
            let jobs = server.get("/v1/volumes/vm/jobs").json();
            let job = jobs
                .as_array()
                .and_then(|js| js.iter().find(|j| j["id"] == id && j["kind"] == "scrub"))
                .cloned()
                .unwrap_or(Value::Null);
            if job["state"] != "running" || Instant::now() > deadline {
                break job;
            }
            thread::sleep(Duration::from_millis(50));
        };
        shared.note(format!("scrub {id} (repair): {end}"));
        done += 1;
    }
    done
}
