//! Scheduled scrubs (`scrub_interval`, issue 16 item 9): a scrub starts by
//! itself once the last one is older than the interval, repairs, and moves
//! `quorum_last_scrub_timestamp_seconds`; the time of the last scrub
//! survives a restart.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::util::*;

const LAST: &str = r#"quorum_last_scrub_timestamp_seconds{volume="vm"}"#;
const INTERVAL: &str = r#"quorum_scrub_interval_seconds{volume="vm"}"#;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// The scrubs of vm that completed.
fn completed_scrubs(server: &Server) -> Vec<Value> {
    let jobs = server.get("/v1/volumes/vm/jobs").json();
    jobs.as_array()
        .expect("a list of jobs")
        .iter()
        .filter(|j| j["kind"] == "scrub" && j["state"] == "completed")
        .cloned()
        .collect()
}

#[test]
fn a_scheduled_scrub_starts_by_itself_repairs_and_moves_the_metric() {
    let started = now();
    let server = Sandbox::new().serve(&abc_volume("1MiB", "scrub_interval = \"2s\""));
    assert_eq!(server.metric(INTERVAL), 2.0);
    // No scrub yet: the metric says when the schedule began.
    let since = server.metric(LAST);
    assert!(since >= started - 1.0 && since <= now(), "{since}");
    let shown = server.get("/v1/volumes/vm").json();
    assert_eq!(shown["scrub_interval_seconds"], 2.0, "{shown}");
    assert_eq!(shown["last_scrub"], Value::Null, "{shown}");
    assert!(shown["next_scrub"].is_string(), "{shown}");

    let data = pattern(4, 64 * 1024);
    server.write_volume("vm", 0, &data);
    server.corrupt_file("c.img", 20_000, 100);

    // A scheduled scrub finds c's bad bytes and rewrites them (if the
    // first ran before the corruption, the next one does).
    wait_until_within(
        "a scheduled scrub to repair c.img",
        Duration::from_secs(20),
        || server.read_file_at("c.img", 0, data.len()) == data,
    );
    wait_until("the metric to advance", || server.metric(LAST) > since);
    let events = server.all_events();
    let started = named(&events, "JOB_STARTED");
    assert!(!started.is_empty(), "{events:?}");
    for e in &started {
        assert_eq!(e["data"]["kind"], "scrub", "{e}");
        assert_eq!(e["data"]["repair"], true, "scheduled scrubs repair: {e}");
    }
    let repaired = named(&events, "JOB_COMPLETED")
        .into_iter()
        .any(|e| e["data"]["mismatches"]["c"] == 100 && data_u64(e, "bytes_repaired") == 100);
    assert!(repaired, "no scrub repaired c's 100 bytes: {events:?}");
    assert!(server.get("/v1/volumes/vm").json()["last_scrub"].is_string());

    // And again, one interval after the last.
    let first = server.metric(LAST);
    wait_until_within("a later scheduled scrub", Duration::from_secs(20), || {
        server.metric(LAST) >= first + 1.5
    });
    assert!(completed_scrubs(&server).len() >= 2);
}

#[test]
fn the_last_scrub_survives_a_restart() {
    let mut server = Sandbox::new().serve(&abc_volume("1MiB", "scrub_interval = \"1h\""));
    assert_eq!(server.metric(INTERVAL), 3600.0);
    let since = server.metric(LAST);
    server.stop();
    server.restart();
    assert_eq!(server.metric(LAST), since, "the schedule's start survives");

    // A scrub started through the API counts as the last one too.
    server
        .send(
            server
                .request(reqwest::Method::POST, "/v1/volumes/vm/scrub")
                .body(r#"{"repair": false}"#),
        )
        .expect_status(202);
    wait_until("the scrub to count as the last", || {
        server.metric(LAST) > since
    });
    let last = server.metric(LAST);
    server.stop();
    server.restart();
    assert_eq!(server.metric(LAST), last, "the last scrub survives");
    // An hour has not passed: no scrub starts by itself.
    std::thread::sleep(Duration::from_millis(500));
    let jobs = server.get("/v1/volumes/vm/jobs").json();
    let scrubs: Vec<&Value> = jobs
        .as_array()
        .expect("a list of jobs")
        .iter()
        .filter(|j| j["kind"] == "scrub")
        .collect();
    assert_eq!(scrubs.len(), 1, "{jobs}");
    assert_eq!(scrubs[0]["state"], "completed", "{jobs}");
}
