//! SPEC 11, error policy: `on_quorum_failure = "suspend"`. A 2-of-3 volume
//! whose two remote children (real block servers) stop answering holds a
//! writer's request instead of failing it, and every request after it;
//! once the children are back, `POST .../resume` retries them in order and
//! the write lands; with no resume, `suspend_timeout` fails them.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::remote::{block_server, remote_child};
use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";

/// Two block servers and a front volume vm of a local file and the two
/// remote volumes, threshold 2, that suspends for `timeout`.
fn suspending(timeout: &str) -> (Vec<Server>, Server) {
    let blocks: Vec<Server> = (0..2).map(|_| block_server("1MiB", "")).collect();
    let children = [
        child("a"),
        remote_child("r1", &blocks[0], "blk", ""),
        remote_child("r2", &blocks[1], "blk", ""),
    ];
    let options = format!("on_quorum_failure = \"suspend\"\nsuspend_timeout = \"{timeout}\"");
    let front = Sandbox::new().serve(&with_nbd(&volume("vm", "1MiB", 2, &options, &children)));
    (blocks, front)
}

fn volume_json(front: &Server) -> Value {
    front.get("/v1/volumes/vm").json()
}

/// Waits until vm is suspended with `held` requests held.
#[track_caller]
fn wait_suspended(front: &Server, held: u64) {
    let mut seen = Value::Null;
    wait_until(&format!("vm suspended with {held} requests held"), || {
        seen = volume_json(front);
        seen["state"] == "suspended" && seen["suspension"]["held"] == held
    });
    assert_eq!(seen["on_quorum_failure"], "suspend", "{seen}");
    assert!(
        seen["suspension"]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("children succeeded, 2 needed")),
        "{seen}"
    );
}

/// The `VOLUME_*` events of the front, oldest first.
fn volume_events(front: &Server) -> Vec<Value> {
    front
        .all_events()
        .into_iter()
        .filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|n| n.starts_with("VOLUME_"))
        })
        .collect()
}

/// Resumes vm, as an operator would, until `through` says the held
/// requests completed; returns how many resumes it took. Resumed while a
/// child's breaker still refuses it (it was unreachable a moment ago), the
/// retry fails again and the volume suspends again with the same request
/// first in line.
#[track_caller]
fn resume_until_through(front: &Server, through: impl Fn() -> bool) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resumes = 0;
    while !through() {
        assert!(
            Instant::now() < deadline,
            "the held requests did not complete after {resumes} resumes: {}",
            volume_json(front)
        );
        if volume_json(front)["state"] == "suspended" {
            let r = front.post("/v1/volumes/vm/resume");
            if r.status == 200 {
                resumes += 1;
                assert!(r.json()["held"].as_u64().is_some_and(|h| h >= 1), "{r:?}");
            }
        }
        thread::sleep(Duration::from_millis(500));
    }
    resumes
}

#[test]
fn a_held_write_completes_after_the_children_return_and_a_resume() {
    let (mut blocks, front) = suspending("60s");
    front.write_volume("vm", 0, &pattern(1, 64 * 1024));
    assert_eq!(volume_json(&front)["state"], "running");
    front
        .post("/v1/volumes/vm/resume")
        .expect_error(409, "conflict");

    for b in &mut blocks {
        b.stop();
    }
    let data = pattern(2, 4096);
    thread::scope(|s| {
        let writer = s.spawn(|| front.put(&format!("{DATA}?offset=8192"), data.clone()));
        wait_suspended(&front, 1);
        // Every later request is held too, behind the write.
        let reader = s.spawn(|| front.get_range(DATA, "bytes=8192-12287"));
        wait_suspended(&front, 2);
        let suspended = volume_events(&front);
        assert_eq!(suspended.len(), 1, "{suspended:?}");
        let event = &suspended[0];
        assert_eq!(event["event"], "VOLUME_SUSPENDED");
        assert_eq!(event["data"]["op"], "write");
        assert_eq!(data_u64(event, "offset"), 8192);
        assert_eq!(data_u64(event, "bytes"), 4096);
        assert!(
            event["data"]["cause"]
                .as_str()
                .is_some_and(|c| c.contains("\"r1\"") && c.contains("\"r2\"")),
            "the cause names the failed children: {event}"
        );
        assert_eq!(front.metric(r#"quorum_volume_suspended{volume="vm"}"#), 1.0);
        thread::sleep(Duration::from_millis(500));
        assert!(
            !writer.is_finished() && !reader.is_finished(),
            "held requests stay held"
        );

        for b in &mut blocks {
            b.restart();
        }
        let resumes = resume_until_through(&front, || writer.is_finished() && reader.is_finished());
        eprintln!("the held requests completed after {resumes} resume(s)");
        writer.join().expect("the writer").expect_status(204);
        let read = reader.join().expect("the reader");
        read.expect_status(206);
        assert_bytes_eq(&read.body, &data, "the held read, retried after the write");
    });
    assert_bytes_eq(&front.read_volume("vm", 8192, 4096), &data, "read back");
    let state = volume_json(&front);
    assert_eq!(state["state"], "running", "{state}");
    assert_eq!(state["suspension"], Value::Null);
    assert_eq!(front.metric(r#"quorum_volume_suspended{volume="vm"}"#), 0.0);
    let events = volume_events(&front);
    let resumed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "VOLUME_RESUMED")
        .collect();
    assert!(!resumed.is_empty(), "{events:?}");
    for e in &resumed {
        assert_eq!(e["data"]["by"], "operator", "{e}");
    }
    assert_eq!(data_u64(resumed[0], "held"), 2);
    // The children that missed nothing of it once back hold the write, or
    // get it from the resync.
    for b in &blocks {
        wait_until("the block servers to hold the write", || {
            b.read_file_at("disk.img", 8192, 4096) == data
        });
    }
}

#[test]
fn held_requests_fail_at_the_suspend_timeout() {
    let (mut blocks, front) = suspending("3s");
    front.write_volume("vm", 0, &pattern(1, 64 * 1024));
    for b in &mut blocks {
        b.stop();
    }
    let (write, read, took) = thread::scope(|s| {
        let started = Instant::now();
        let writer = s.spawn(|| front.put(&format!("{DATA}?offset=8192"), pattern(3, 4096)));
        wait_suspended(&front, 1);
        let reader = s.spawn(|| front.get_range(DATA, "bytes=0-4095"));
        wait_suspended(&front, 2);
        let write = writer.join().expect("the writer");
        let took = started.elapsed();
        (write, reader.join().expect("the reader"), took)
    });
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "the held write failed after {took:?}, not at the 3 s timeout"
    );
    // The write fails with its own error; the read, which never ran, with
    // one that names the suspension's cause.
    let message = write.expect_error(503, "quorum_failure");
    assert!(
        message.contains("write of 4096 bytes at 8192 failed"),
        "{message}"
    );
    let message = read.expect_error(503, "quorum_failure");
    assert!(
        message.contains("suspend_timeout (3s)") && message.contains("write of 4096 bytes at 8192"),
        "{message}"
    );
    let events = volume_events(&front);
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(names, ["VOLUME_SUSPENDED", "VOLUME_RESUMED"], "{events:?}");
    assert_eq!(events[1]["data"]["by"], "timeout");
    assert_eq!(data_u64(&events[1], "held"), 2);
    let state = volume_json(&front);
    assert_eq!(state["state"], "running", "{state}");
    assert_eq!(front.metric(r#"quorum_volume_suspended{volume="vm"}"#), 0.0);
}

/// SIGTERM while requests are held: they fail at once (a 503, not a
/// connection cut 30 s later), the write that ran with its own error, the
/// read that never ran with one that says the server is shutting down; and
/// the server stops within its usual deadline instead of waiting for a
/// resume that cannot come.
#[test]
fn sigterm_fails_the_held_requests_and_stops_at_once() {
    let (mut blocks, mut front) = suspending("60s");
    front.write_volume("vm", 0, &pattern(1, 64 * 1024));
    for b in &mut blocks {
        b.stop();
    }
    let held = |request: reqwest::blocking::RequestBuilder| {
        thread::spawn(move || {
            let answer = request.send().expect("an answer, not a cut connection");
            let status = answer.status().as_u16();
            (status, answer.text().unwrap_or_default())
        })
    };
    let client = http_client(Duration::from_secs(60));
    let writer = held(
        client
            .put(front.url(&format!("{DATA}?offset=8192")))
            .body(pattern(4, 4096)),
    );
    wait_suspended(&front, 1);
    let reader = held(client.get(front.url(DATA)).header("Range", "bytes=0-4095"));
    wait_suspended(&front, 2);
    let started = Instant::now();
    let status = front.stop();
    let took = started.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "the stop took {took:?}");
    let (code, body) = writer.join().expect("the writer");
    assert_eq!(
        (code, error_code(body.as_bytes()).as_str()),
        (503, "quorum_failure"),
        "{body}"
    );
    assert!(
        body.contains("write of 4096 bytes at 8192 failed"),
        "{body}"
    );
    let (code, body) = reader.join().expect("the reader");
    assert_eq!(
        (code, error_code(body.as_bytes()).as_str()),
        (503, "quorum_failure"),
        "{body}"
    );
    assert!(body.contains("shutting down"), "{body}");
}

/// A suspended volume holds every request until a resume, so `/readyz`
/// says it is not ready, even once its children are back and healthy.
#[test]
fn a_suspended_volume_is_not_ready() {
    let (mut blocks, front) = suspending("60s");
    front.write_volume("vm", 0, &pattern(1, 64 * 1024));
    front.get("/readyz").expect_status(200);
    for b in &mut blocks {
        b.stop();
    }
    let url = front.url(&format!("{DATA}?offset=8192"));
    let writer = thread::spawn(move || {
        http_client(Duration::from_secs(60))
            .put(url)
            .body(pattern(5, 4096))
            .send()
            .map(|r| r.status().as_u16())
    });
    wait_suspended(&front, 1);
    for b in &mut blocks {
        b.restart();
    }
    // A scrub (scheduled, or an operator's) reads every child: they serve
    // again while the volume stays suspended (scrubs are tried until the
    // children's breakers let them through; the held write that reached a
    // alone leaves it damaged there, which serves).
    wait_until_within("every child serving again", Duration::from_secs(20), || {
        let v = volume_json(&front);
        let healthy = v["children"].as_array().is_some_and(|c| {
            c.iter()
                .all(|c| c["state"] == "healthy" || c["state"] == "damaged")
        });
        if !healthy {
            front.send(
                front
                    .request(reqwest::Method::POST, "/v1/volumes/vm/scrub")
                    .body("{}"),
            );
            thread::sleep(Duration::from_millis(200));
        }
        healthy
    });
    assert_eq!(volume_json(&front)["state"], "suspended");
    let ready = front.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.text());
    let body = ready.json();
    assert_eq!(body["volumes"][0]["ready"], false, "{body}");
    assert_eq!(body["volumes"][0]["state"], "suspended", "{body}");
    front.post("/v1/volumes/vm/resume").expect_status(200);
    assert_eq!(writer.join().expect("the writer").ok(), Some(204));
    front.get("/readyz").expect_status(200);
}

/// NBD requests take the same path as HTTP's (the engine starts them
/// without a blocking thread): a write held while the children are gone,
/// and a read behind it on another connection, complete after the resume.
#[test]
fn held_nbd_requests_complete_after_a_resume() {
    let (mut blocks, front) = suspending("60s");
    let mut writer = NbdClient::connect(front.nbd_addr(), "vm").expect("an NBD connection");
    let mut reader = NbdClient::connect(front.nbd_addr(), "vm").expect("an NBD connection");
    writer.write(0, &pattern(1, 8192)).expect("a write before");
    for b in &mut blocks {
        b.stop();
    }
    let data = pattern(3, 4096);
    thread::scope(|s| {
        let write = s.spawn(|| writer.write(4096, &data));
        wait_suspended(&front, 1);
        let read = s.spawn(|| reader.read(4096, 4096));
        wait_suspended(&front, 2);
        thread::sleep(Duration::from_millis(500));
        assert!(
            !write.is_finished() && !read.is_finished(),
            "held requests stay held"
        );
        for b in &mut blocks {
            b.restart();
        }
        let resumes = resume_until_through(&front, || write.is_finished() && read.is_finished());
        eprintln!("the held NBD requests completed after {resumes} resume(s)");
        write
            .join()
            .expect("the writer")
            .expect("the held NBD write");
        let got = read.join().expect("the reader").expect("the held NBD read");
        assert_bytes_eq(&got, &data, "the held NBD read, retried after the write");
    });
    assert_bytes_eq(
        &front.read_volume("vm", 4096, 4096),
        &data,
        "read back over HTTP",
    );
    let events = volume_events(&front);
    assert_eq!(events[0]["event"], "VOLUME_SUSPENDED", "{events:?}");
    assert_eq!(events[0]["data"]["op"], "write", "{events:?}");
    assert_eq!(data_u64(&events[0], "offset"), 4096);
    // Counted once each, as done, in the volume's statistics: the first
    // write, the held one; the held read and the read back.
    let stats = front.get("/v1/volumes/vm/stats").json();
    assert_eq!(stats["ops"]["write"]["ops"], 2, "{stats}");
    assert_eq!(stats["ops"]["write"]["failed_ops"], 0, "{stats}");
    assert_eq!(stats["ops"]["read"]["ops"], 2, "{stats}");
}
