//! Scrubs: one per volume at a time, finished jobs pruned to the last
//! 100.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use super::{Outcome, exchange};
use crate::util::*;

/// The jobs of volume `vol`.
#[track_caller]
fn jobs(server: &Server, vol: &str) -> Vec<Value> {
    let list = server.get(&format!("/v1/volumes/{vol}/jobs")).json();
    list.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("the jobs of {vol} are not a list: {list}"))
}

fn scrubs(jobs: &[Value]) -> Vec<&Value> {
    jobs.iter().filter(|j| j["kind"] == "scrub").collect()
}

/// 300 `POST scrub` at once on one volume start exactly one job: one 202,
/// 299 409 `conflict`; the job list holds one scrub.
#[test]
fn concurrent_scrub_requests_start_one_job() {
    // 4 MiB at 1 MiB/s: the scrub runs for seconds, longer than the storm.
    let config = format!("scrub_rate = \"1MiB\"\n{}", abc_volume("4MiB", ""));
    let server = Sandbox::new().serve(&config);
    let body = b"{\"repair\": false}";
    let mut request = request_head(
        &server,
        "POST",
        "/v1/volumes/vm/scrub",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &body.len().to_string()),
        ],
    );
    request.extend_from_slice(body);

    let barrier = Barrier::new(300);
    let started = Instant::now();
    let outcomes: Vec<Outcome> = thread::scope(|s| {
        let threads: Vec<_> = (0..300)
            .map(|_| {
                let (barrier, request, server) = (&barrier, &request, &server);
                s.spawn(move || {
                    barrier.wait();
                    exchange(server, request, Duration::from_secs(20))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a scrub request thread"))
            .collect()
    });
    let accepted = outcomes.iter().filter(|o| o.status == Some(202)).count();
    let conflicts = outcomes.iter().filter(|o| o.is(409, "conflict")).count();
    let others: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status != Some(202) && !o.is(409, "conflict"))
        .map(Outcome::summary)
        .collect();
    eprintln!(
        "300 scrub requests in {:?}: {accepted} 202, {conflicts} 409",
        started.elapsed()
    );
    let list = jobs(&server, "vm");
    assert!(
        accepted == 1 && conflicts == 299,
        "300 concurrent scrub requests: {accepted} answered 202, {conflicts} 409 conflict, \
         others: {others:?}; {} scrubs listed",
        scrubs(&list).len()
    );
    let listed = scrubs(&list);
    assert_eq!(listed.len(), 1, "the job list: {list:?}");
    assert_eq!(listed[0]["state"], "running", "{list:?}");
    let id = listed[0]["id"].as_u64().expect("a job id");
    server
        .send(server.request(Method::DELETE, &format!("/v1/volumes/vm/jobs/{id}")))
        .expect_status(204);
}

/// Over 100 scrubs run one after the other (each waited for): the job list
/// never holds more than 100 finished jobs, and keeps the newest.
#[test]
fn finished_jobs_are_pruned_to_the_last_100() {
    let server = Sandbox::new().serve(&abc_volume("64KiB", ""));
    let body = "{\"repair\": false}";
    let mut newest = 0;
    let mut most = 0;
    for n in 0..105 {
        let r = server.send(
            server
                .request(Method::POST, "/v1/volumes/vm/scrub")
                .body(body),
        );
        r.expect_status(202);
        let id = r.json()["id"].as_u64().expect("a job id");
        assert!(id > newest, "scrub {n}: id {id} after {newest}");
        newest = id;
        let mut list = Vec::new();
        wait_until(&format!("scrub {id} to end"), || {
            list = jobs(&server, "vm");
            scrubs(&list)
                .iter()
                .any(|j| j["id"] == id && j["state"] != "running")
        });
        let finished = scrubs(&list)
            .iter()
            .filter(|j| j["state"] != "running")
            .count();
        most = most.max(finished);
        assert!(
            finished <= 100,
            "after {} scrubs the job list holds {finished} finished scrubs",
            n + 1
        );
    }
    let list = jobs(&server, "vm");
    let ids: Vec<u64> = scrubs(&list)
        .iter()
        .filter_map(|j| j["id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 100, "after 105 scrubs: {ids:?}");
    assert!(
        ids.contains(&newest),
        "the newest scrub {newest} is gone: {ids:?}"
    );
    assert_eq!(most, 100);
}
