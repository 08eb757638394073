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

    wait_until_within(
        "a scheduled scrub to complete",
        Duration::from_secs(20),
        || !completed_scrubs(&server).is_empty(),
    );
    let started_events = named(&server.all_events(), "JOB_STARTED")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert!(!started_events.is_empty());
    assert_eq!(started_events[0]["data"]["kind"], "scrub");
    assert_eq!(
        started_events[0]["data"]["repair"], true,
        "scheduled scrubs repair"
    );
    // It found c's bad bytes and rewrote them.
    assert_bytes_eq(
        &server.read_file_at("c.img", 0, data.len()),
        &data,
        "c.img after the scheduled scrub",
    );
    let first = server.metric(LAST);
    assert!(
        first > since,
        "the metric did not advance: {since} then {first}"
    );
    assert!(server.get("/v1/volumes/vm").json()["last_scrub"].is_string());

    // And again, one interval after the last.
    wait_until_within("a second scheduled scrub", Duration::from_secs(20), || {
        completed_scrubs(&server).len() >= 2
    });
    let second = server.metric(LAST);
    assert!(second >= first + 1.5, "{first} then {second}");
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
    wait_until("the scrub to complete", || {
        completed_scrubs(&server).len() == 1
    });
    let last = server.metric(LAST);
    assert!(last > since, "{since} then {last}");
    server.stop();
    server.restart();
    assert_eq!(server.metric(LAST), last, "the last scrub survives");
    // An hour has not passed: no scrub starts by itself.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(completed_scrubs(&server).len(), 1);
    let jobs = server.get("/v1/volumes/vm/jobs").json();
    assert_eq!(
        jobs.as_array()
            .map(|j| j.iter().filter(|j| j["kind"] == "scrub").count()),
        Some(1),
        "{jobs}"
    );
}
