//! Scrubs: the whole volume through the vote in the background, reporting
//! every lost vote, repairing on request, never "repairing" a block that
//! has no majority; jobs that can be listed, cancelled and resumed.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::util::*;

const SIZE: u64 = 4 * MIB;

pub fn scrub(server: &Server, repair: bool) -> u64 {
    let body = format!("{{\"repair\": {repair}}}");
    let r = server.send(
        server
            .request(Method::POST, "/v1/volumes/vm/scrub")
            .body(body),
    );
    r.expect_status(202);
    let job = r.json();
    assert_eq!(job["kind"], "scrub");
    assert_eq!(job["repair"], repair);
    job["id"].as_u64().expect("a job id")
}

fn job(server: &Server, id: u64) -> Value {
    let list = server.get("/v1/volumes/vm/jobs").json();
    list.as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["id"] == id && j["kind"] == "scrub"))
        .cloned()
        .unwrap_or_else(|| panic!("no job {id} in {list}"))
}

pub fn wait_done(server: &Server, id: u64) -> Value {
    let mut last = Value::Null;
    wait_until(&format!("scrub {id} to end"), || {
        last = job(server, id);
        last["state"] != "running"
    });
    last
}

/// The blocks named by the lost-vote reports of `child` among `events`
/// (folded ones by each of their ranges).
fn reported_blocks(events: &[Value], child: &str) -> BTreeSet<u64> {
    reports_for(events, child)
        .iter()
        .filter(|e| e["data"].get("error").is_none())
        .flat_map(|e| report_ranges(e))
        .flat_map(|(o, b)| o / BLOCK..(o + b).div_ceil(BLOCK))
        .collect()
}

#[test]
fn a_scrub_finds_exactly_the_bad_blocks_and_repairs_them() {
    let server = Sandbox::new().serve(&abc_volume("4MiB", ""));
    server.write_volume("vm", 0, &pattern(5, SIZE as usize));
    let b_blocks: BTreeSet<u64> = [3, 4, 17, 200, 513, 1000].into();
    let c_blocks: BTreeSet<u64> = [0, 18, 201, 777, 1023].into();
    for &blk in &b_blocks {
        server.corrupt_file("b.img", blk * BLOCK, BLOCK as usize);
    }
    for &blk in &c_blocks {
        server.corrupt_file("c.img", blk * BLOCK, BLOCK as usize);
    }
    let before = server.snapshot(&ABC);
    let id = scrub(&server, false);
    let done = wait_done(&server, id);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["bytes_done"], SIZE);
    assert_eq!(
        done["mismatches"]["b"],
        b_blocks.len() as u64 * BLOCK,
        "{done}"
    );
    assert_eq!(
        done["mismatches"]["c"],
        c_blocks.len() as u64 * BLOCK,
        "{done}"
    );
    assert!(done["mismatches"].get("a").is_none(), "{done}");
    assert_eq!(done["bytes_repaired"], 0);
    // The reports within a second of a child's first are folded into one
    // event at the end of that second.
    let mut events = Vec::new();
    wait_until("the folded reports of the scrub", || {
        events = server.all_events();
        reported_blocks(&events, "b") == b_blocks && reported_blocks(&events, "c") == c_blocks
    });
    assert_eq!(reported_blocks(&events, "b"), b_blocks);
    assert_eq!(reported_blocks(&events, "c"), c_blocks);
    assert!(reported_blocks(&events, "a").is_empty());
    let completed = named(&events, "JOB_COMPLETED");
    assert_eq!(completed.len(), 1);
    assert_eq!(
        completed[0]["data"]["mismatches"]["b"],
        b_blocks.len() as u64 * BLOCK
    );
    assert_eq!(named(&events, "JOB_STARTED").len(), 1);
    server.assert_unchanged(&before, "a scrub without repair");

    let id = scrub(&server, true);
    let done = wait_done(&server, id);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        done["bytes_repaired"],
        (b_blocks.len() + c_blocks.len()) as u64 * BLOCK
    );
    let a = server.read_file("a.img");
    assert!(
        a == server.read_file("b.img") && a == server.read_file("c.img"),
        "children differ after a repair"
    );
}

#[test]
fn a_block_bad_on_two_children_is_unrecoverable_and_left_alone() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    server.write_volume("vm", 0, &pattern(6, MIB as usize));
    server.corrupt_file("a.img", 5 * BLOCK, 100);
    server.corrupt_file("b.img", 5 * BLOCK + 50, 100);
    server.corrupt_file("c.img", 9 * BLOCK, 10);
    let a_before = server.read_file_at("a.img", 5 * BLOCK, BLOCK as usize);
    let b_before = server.read_file_at("b.img", 5 * BLOCK, BLOCK as usize);
    let id = scrub(&server, true);
    let done = wait_done(&server, id);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        done["unrecoverable"],
        serde_json::json!([{ "offset": 5 * BLOCK, "bytes": BLOCK }]),
        "{done}"
    );
    assert_eq!(
        server.read_file_at("a.img", 5 * BLOCK, BLOCK as usize),
        a_before,
        "a was 'repaired' with a guess"
    );
    assert_eq!(
        server.read_file_at("b.img", 5 * BLOCK, BLOCK as usize),
        b_before,
        "b was 'repaired' with a guess"
    );
    // The recoverable block elsewhere was repaired.
    assert_eq!(
        server.read_file_at("c.img", 9 * BLOCK, 10),
        server.read_file_at("a.img", 9 * BLOCK, 10)
    );
}

/// A job's `bytes_done`; panics if it is missing or not a number.
#[track_caller]
fn bytes_done(job: &Value) -> u64 {
    job["bytes_done"]
        .as_u64()
        .unwrap_or_else(|| panic!("a job without bytes_done: {job}"))
}

#[test]
fn jobs_can_be_cancelled_and_resume_after_a_restart() {
    let config = format!("scrub_rate = \"1MiB\"\n{}", abc_volume("8MiB", ""));
    let mut server = Sandbox::new().serve(&config);
    let id = scrub(&server, false);
    server
        .send(server.request(Method::DELETE, &format!("/v1/volumes/vm/jobs/{id}")))
        .expect_status(204);
    let done = wait_done(&server, id);
    assert_eq!(done["state"], "cancelled", "{done}");
    assert!(bytes_done(&done) < 8 * MIB, "{done}");
    server
        .send(server.request(Method::DELETE, &format!("/v1/volumes/vm/jobs/{id}")))
        .expect_error(409, "conflict");
    server
        .send(server.request(Method::DELETE, "/v1/volumes/vm/jobs/99"))
        .expect_error(404, "no_such_job");
    server
        .send(server.request(Method::DELETE, "/v1/volumes/vm/jobs/0"))
        .expect_error(409, "conflict");
    let bad = server.send(
        server
            .request(Method::POST, "/v1/volumes/vm/scrub")
            .body("{\"repair\": \"yes\"}"),
    );
    bad.expect_error(400, "bad_request");

    // A running scrub survives a restart and goes on from its checkpoint.
    let id = scrub(&server, false);
    wait_until("some progress", || bytes_done(&job(&server, id)) >= 2 * MIB);
    let exit = server.stop();
    assert!(exit.success());
    server.restart();
    let resumed = job(&server, id);
    assert_eq!(resumed["state"], "running", "{resumed}");
    assert!(
        bytes_done(&resumed) >= 2 * MIB,
        "it started over: {resumed}"
    );
    let list = server.get("/v1/volumes/vm/jobs").json();
    assert_eq!(list[0]["kind"], "resync", "{list}");
}
