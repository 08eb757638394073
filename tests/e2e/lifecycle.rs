//! The live event stream (SSE) and a clean shutdown under load.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";

/// An open SSE stream read on a thread.
pub struct Sse {
    /// One message once the answer's head arrived: the server subscribed
    /// the stream to live events before it answered.
    pub connected: mpsc::Receiver<()>,
    /// The events, once `want` of them arrived or the stream ended.
    pub events: mpsc::Receiver<Vec<serde_json::Value>>,
}

impl Sse {
    /// Waits (bounded) until the stream is subscribed.
    #[track_caller]
    pub fn wait_connected(&self) {
        self.connected
            .recv_timeout(Duration::from_secs(10))
            .expect("the event stream answered within 10 s");
    }
}

/// Reads SSE `data:` lines from `url` on a thread until `want` of them
/// arrived or the stream ended; returns them as JSON.
fn collect_sse(url: String, headers: Vec<(&'static str, String)>, want: usize) -> Sse {
    collect_sse_until(url, headers, move |got| got.len() == want)
}

/// Reads SSE `data:` lines from `url` on a thread until `done` says the
/// events so far are enough, or the stream ended; returns them as JSON.
pub fn collect_sse_until(
    url: String,
    headers: Vec<(&'static str, String)>,
    done: impl Fn(&[serde_json::Value]) -> bool + Send + 'static,
) -> Sse {
    let (connected_tx, connected) = mpsc::channel();
    let (tx, events) = mpsc::channel();
    thread::spawn(move || {
        let client = http_client(Duration::from_secs(20));
        let mut rb = client.get(&url);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let resp = rb.send().expect("open the event stream");
        assert_eq!(resp.status().as_u16(), 200);
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(ctype.starts_with("text/event-stream"), "{ctype}");
        let _ = connected_tx.send(());
        let mut got = Vec::new();
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data:") {
                got.push(serde_json::from_str(data.trim()).expect("an event's JSON"));
                if done(&got) {
                    break;
                }
            }
        }
        let _ = tx.send(got);
    });
    Sse { connected, events }
}

#[test]
fn events_stream_live_and_replay_after_an_id() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    server.write_volume("vm", 0, &vec![0x32; 64 * 1024]);
    let live = collect_sse(server.url("/v1/events/stream"), vec![], 1);
    // No event exists yet: what arrives was sent live.
    live.wait_connected();
    assert!(server.all_events().is_empty());
    server.corrupt_file("b.img", 5000, 10);
    assert_all_bytes(&server.read_volume("vm", 0, 8192), 0x32, "the read");
    let got = live
        .events
        .recv_timeout(Duration::from_secs(10))
        .expect("a live event within 10 s");
    assert_eq!(got.len(), 1, "{got:?}");
    check_event_shape(&got[0]);
    check_report(&got[0], "vm", "b", "read", None);
    assert_eq!(data_u64(&got[0], "offset"), 5000);
    assert_eq!(data_u64(&got[0], "bytes"), 10);
    let first_id = got[0]["id"].as_u64().expect("id");

    // The report made b damaged: a CHILD_STATE_CHANGE follows it.
    let seen = server.last_event_id();
    assert_eq!(seen, first_id + 1, "{:?}", server.all_events());

    // A second report, then a client that reconnects after the events it
    // had gets only the new ones, from the backlog.
    server.corrupt_file("c.img", 9000, 1);
    server.read_volume("vm", 8192, 4096);
    let replay = collect_sse(
        server.url("/v1/events/stream"),
        vec![("last-event-id", seen.to_string())],
        1,
    );
    let got = replay
        .events
        .recv_timeout(Duration::from_secs(10))
        .expect("the replayed event");
    check_report(&got[0], "vm", "c", "read", None);
    assert!(got[0]["id"].as_u64().expect("id") > seen);
    // The same through ?since=, filtered by volume: each report, and the
    // state change it caused.
    let other = collect_sse(server.url("/v1/events/stream?since=0&volume=vm"), vec![], 4);
    let got = other
        .events
        .recv_timeout(Duration::from_secs(10))
        .expect("every event");
    assert_eq!(
        got.iter()
            .map(|e| (e["event"].as_str(), e["data"]["node-name"].as_str()))
            .collect::<Vec<_>>(),
        [
            (Some("QUORUM_REPORT_BAD"), Some("b")),
            (Some("CHILD_STATE_CHANGE"), Some("b")),
            (Some("QUORUM_REPORT_BAD"), Some("c")),
            (Some("CHILD_STATE_CHANGE"), Some("c")),
        ]
    );
}

/// SIGTERM during a slow write: the write completes and is acknowledged,
/// its bytes are on every child, the open event stream (which got the two
/// events there are and waits for a third) is ended by the server instead
/// of holding it up, and the exit status is 0.
#[test]
fn sigterm_finishes_in_flight_writes() {
    let slow = fault("write", &["latency = \"1500ms\""]);
    let config = volume(
        "vm",
        "1MiB",
        2,
        "",
        &[child_with("a", &slow), child("b"), child("c")],
    );
    let mut server = Sandbox::new().serve(&config);
    // Two events (c loses a vote, and is damaged), so the stream shows it
    // is live.
    server.corrupt_file("c.img", 100, 1);
    server.read_volume("vm", 0, 4096);
    assert_eq!(server.all_events().len(), 2);
    let stream = collect_sse(server.url("/v1/events/stream?since=0"), vec![], 3);
    stream.wait_connected();
    let url = server.url(&format!("{DATA}?offset=4096"));
    let writer = thread::spawn(move || {
        let client = http_client(Duration::from_secs(20));
        let started = Instant::now();
        let status = client
            .put(url)
            .body(vec![0x77; 8192])
            .send()
            .expect("the write's answer")
            .status()
            .as_u16();
        (status, started.elapsed())
    });
    // The write is in flight once the fast children have it; a's copy waits
    // out its latency.
    wait_until("the write to reach b and c", || {
        ["b.img", "c.img"]
            .iter()
            .all(|f| server.read_file_at(f, 4096, 8192) == vec![0x77; 8192])
    });
    assert!(
        stream.events.try_recv().is_err(),
        "the event stream ended before the shutdown"
    );
    let exit = server.stop();
    let (status, took) = writer.join().expect("writer");
    assert_eq!(status, 204, "the in-flight write must complete");
    assert!(
        took >= Duration::from_millis(1400),
        "the write was not slow: {took:?}"
    );
    assert!(exit.success(), "exit status {exit:?}");
    let got = stream
        .events
        .recv_timeout(Duration::from_secs(5))
        .expect("the event stream ended with the server");
    assert_eq!(got.len(), 2, "{got:?}");
    check_report(&got[0], "vm", "c", "read", None);
    assert_eq!(got[1]["event"], "CHILD_STATE_CHANGE", "{got:?}");
    for f in ABC {
        assert_all_bytes(&server.read_file_at(f, 4096, 8192), 0x77, f);
    }
    assert!(
        server.stderr().contains("flushed and closed"),
        "{}",
        server.stderr()
    );
}
