//! Damage is state, kept by the server (issue 16, item 1): a replica whose
//! bytes were corrupted and outvoted is `damaged` in the API, in
//! `/metrics` and in the events, with the exact range listed, across a
//! restart and a crash, until a scrub with repair or a client write makes
//! it good again.

use serde_json::{Value, json};

use crate::scrub::{scrub, wait_done};
use crate::util::*;

/// The 100 bytes corrupted on child c: 1 MiB + 1000.
const AT: u64 = 1_049_576;
const LEN: u64 = 100;
/// The vote block that holds them.
const BLOCK_AT: u64 = AT - AT % BLOCK;

/// The volume vm (a, b, c; 4 MiB) with data on its first 2 MiB and c's
/// file corrupted for `LEN` bytes at `AT`, read once over HTTP.
fn server_with_damage() -> (Server, Vec<u8>) {
    let server = Sandbox::new().serve(&abc_volume("4MiB", ""));
    let data = pattern(16, 2 * MIB as usize);
    server.write_volume("vm", 0, &data);
    server.corrupt_file("c.img", AT, LEN as usize);
    let got = server.read_volume("vm", BLOCK_AT, BLOCK);
    assert_bytes_eq(
        &got,
        &data[BLOCK_AT as usize..(BLOCK_AT + BLOCK) as usize],
        "the read with c corrupted",
    );
    (server, data)
}

/// Child `name` of vm as `GET /v1/volumes` lists it.
#[track_caller]
fn listed(server: &Server, name: &str) -> Value {
    let list = server.get("/v1/volumes");
    list.expect_status(200);
    let v = list.json();
    v.as_array()
        .and_then(|vols| vols.iter().find(|v| v["name"] == "vm"))
        .and_then(|vm| vm["children"].as_array())
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no child {name} of vm in GET /v1/volumes: {v}"))
}

/// `GET .../children/c/damage`.
#[track_caller]
fn damage_of(server: &Server, child: &str) -> Value {
    let r = server.get(&format!("/v1/volumes/vm/children/{child}/damage"));
    r.expect_status(200);
    r.json()
}

/// What the server says of c in the API and `/metrics`: its state and
/// damaged bytes, which must agree.
#[track_caller]
fn assert_child(server: &Server, child: &str, state: &str, damaged: u64) {
    let c = listed(server, child);
    assert_eq!(c["state"], state, "child {child}: {c}");
    assert_eq!(c["damaged_bytes"], damaged, "child {child}: {c}");
    let metrics = server.metrics();
    let series = |name: &str, extra: &str| {
        let s = format!(r#"{name}{{volume="vm",child="{child}"{extra}}}"#);
        metrics
            .get(&s)
            .unwrap_or_else(|| panic!("no {s} in /metrics"))
    };
    assert_eq!(
        series("quorum_child_damaged_bytes", ""),
        damaged as f64,
        "the gauge of {child}"
    );
    for other in ["healthy", "failed", "stale", "syncing", "damaged"] {
        let want = if other == state { 1.0 } else { 0.0 };
        assert_eq!(
            series("quorum_child_state", &format!(r#",state="{other}""#)),
            want,
            "quorum_child_state of {child}, state {other}"
        );
    }
    assert_eq!(
        series("quorum_child_healthy", ""),
        if state == "healthy" { 1.0 } else { 0.0 },
        "quorum_child_healthy of {child}"
    );
}

/// The CHILD_STATE_CHANGE events about `child`, as (from, to).
fn state_changes(server: &Server, child: &str) -> Vec<(String, String)> {
    named(&server.all_events(), "CHILD_STATE_CHANGE")
        .iter()
        .filter(|e| e["data"]["node-name"] == child)
        .map(|e| {
            let word = |k: &str| e["data"][k].as_str().unwrap_or("?").to_owned();
            (word("from"), word("to"))
        })
        .collect()
}

fn change(from: &str, to: &str) -> (String, String) {
    (from.to_owned(), to.to_owned())
}

#[test]
fn a_corrupt_range_is_damage_until_a_scrub_repairs_it() {
    let (mut server, data) = server_with_damage();
    assert_child(&server, "c", "damaged", LEN);
    assert_child(&server, "a", "healthy", 0);
    assert_child(&server, "b", "healthy", 0);
    let exact = json!({
        "child": "c",
        "damaged_bytes": LEN,
        "ranges": [{ "offset": AT, "length": LEN }],
        "truncated": false,
    });
    assert_eq!(damage_of(&server, "c"), exact);
    assert_eq!(
        damage_of(&server, "a"),
        json!({ "child": "a", "damaged_bytes": 0, "ranges": [], "truncated": false })
    );
    server
        .get("/v1/volumes/vm/children/zz/damage")
        .expect_error(404, "no_such_child");
    server
        .get("/v1/volumes/nope/children/c/damage")
        .expect_error(404, "no_such_volume");

    // The report comes first, then the state change it caused.
    let events = server.all_events();
    let report = reports_for(&events, "c");
    assert_eq!(report.len(), 1, "{events:?}");
    assert_eq!(
        (data_u64(report[0], "offset"), data_u64(report[0], "bytes")),
        (AT, LEN)
    );
    let changes = named(&events, "CHILD_STATE_CHANGE");
    assert_eq!(changes.len(), 1, "{events:?}");
    assert!(event_id(changes[0]) > event_id(report[0]), "{events:?}");
    assert_eq!(state_changes(&server, "c"), [change("healthy", "damaged")]);

    // A damaged child still serves: /readyz counts it, and says so.
    let ready = server.get("/readyz");
    ready.expect_status(200);
    let vm = &ready.json()["volumes"][0];
    assert_eq!(vm["serving_children"], 3, "{vm}");
    assert_eq!(vm["damaged_children"], 1, "{vm}");
    assert_eq!(vm["healthy_children"], 2, "{vm}");

    // The states the API knows (every one the metrics label), and what
    // each means.
    let states = server.get("/v1/child-states");
    states.expect_status(200);
    let state = |name: &str, serves: bool, needs_operator: bool| json!({ "state": name, "serves": serves, "needs_operator": needs_operator });
    assert_eq!(
        states.json(),
        json!([
            state("healthy", true, false),
            state("failed", false, true),
            state("stale", false, false),
            state("syncing", false, false),
            state("damaged", true, true),
        ])
    );

    // A clean restart keeps it.
    assert!(server.stop().success(), "a clean stop");
    server.restart();
    assert_child(&server, "c", "damaged", LEN);
    assert_eq!(damage_of(&server, "c"), exact);
    // So does a crash after a flush (the write-intent regions are clean:
    // nothing is reconciled on the way back).
    server.post("/v1/volumes/vm/flush").expect_status(204);
    server.kill();
    server.restart();
    assert_child(&server, "c", "damaged", LEN);
    assert_eq!(damage_of(&server, "c"), exact);

    // A scrub without repair finds it again and keeps it; one with repair
    // clears it.
    let done = wait_done(&server, scrub(&server, false));
    assert_eq!(done["mismatches"]["c"], LEN, "{done}");
    assert_eq!(damage_of(&server, "c"), exact);
    let done = wait_done(&server, scrub(&server, true));
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["bytes_repaired"], LEN, "{done}");
    assert_child(&server, "c", "healthy", 0);
    assert_eq!(
        damage_of(&server, "c"),
        json!({ "child": "c", "damaged_bytes": 0, "ranges": [], "truncated": false })
    );
    assert_eq!(
        state_changes(&server, "c"),
        [change("healthy", "damaged"), change("damaged", "healthy")]
    );
    assert_eq!(
        server.read_file_at("c.img", AT, LEN as usize),
        data[AT as usize..(AT + LEN) as usize],
        "the scrub repaired c's file"
    );
}

#[test]
fn a_client_write_over_the_range_clears_the_damage() {
    let (server, _) = server_with_damage();
    assert_child(&server, "c", "damaged", LEN);
    // A write over part of it clears that part.
    server.write_volume("vm", AT, &pattern(17, 60));
    let left = damage_of(&server, "c");
    assert_eq!(
        left["ranges"],
        json!([{ "offset": AT + 60, "length": LEN - 60 }]),
        "{left}"
    );
    assert_child(&server, "c", "damaged", LEN - 60);
    // Write-zeroes over the rest clears it all.
    server
        .post(&format!(
            "/v1/volumes/vm/write-zeroes?offset={BLOCK_AT}&length={BLOCK}"
        ))
        .expect_status(204);
    assert_child(&server, "c", "healthy", 0);
    assert_eq!(
        state_changes(&server, "c"),
        [change("healthy", "damaged"), change("damaged", "healthy")]
    );
    assert_all_bytes(
        &server.read_volume("vm", BLOCK_AT, BLOCK),
        0,
        "the zeroed block",
    );
    assert_child(&server, "c", "healthy", 0);
}

/// A remote child whose range is damaged is down when the server restarts:
/// the volume starts without it, and when it comes back its damage is
/// still known (the journal kept it while its storage could not be
/// opened), listed with the exact range until a scrub repairs it.
#[test]
fn the_damage_of_a_child_down_at_a_restart_is_kept() {
    use crate::remote::{block_server, remote_child};
    let mut blocks: Vec<Server> = (0..3).map(|_| block_server("4MiB", "")).collect();
    let children: Vec<String> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| remote_child(&format!("r{i}"), b, "blk", ""))
        .collect();
    let mut front = Sandbox::new().serve(&volume("vm", "4MiB", 2, "", &children));
    let data = pattern(17, 2 * MIB as usize);
    front.write_volume("vm", 0, &data);
    blocks[0].corrupt_file("disk.img", AT, LEN as usize);
    front.read_volume("vm", BLOCK_AT, BLOCK);
    let damaged = json!([{ "offset": AT, "length": LEN }]);
    assert_eq!(damage_of(&front, "r0")["ranges"], damaged);
    assert!(front.stop().success());

    blocks[0].kill();
    front.restart();
    assert_eq!(listed(&front, "r0")["state"], "failed");
    blocks[0].restart();
    wait_until_within(
        "r0 to be opened again",
        std::time::Duration::from_secs(60),
        || listed(&front, "r0")["backend"] != "unopened",
    );
    let r0 = listed(&front, "r0");
    assert_eq!(r0["state"], "damaged", "{r0}");
    assert_eq!(r0["damaged_bytes"], LEN, "{r0}");
    assert_eq!(damage_of(&front, "r0")["ranges"], damaged);
    let job = scrub(&front, true);
    assert_eq!(wait_done(&front, job)["state"], "completed");
    assert_child(&front, "r0", "healthy", 0);
    assert_bytes_eq(
        &blocks[0].read_file_at("disk.img", BLOCK_AT, BLOCK as usize),
        &data[BLOCK_AT as usize..(BLOCK_AT + BLOCK) as usize],
        "r0 repaired",
    );
}
