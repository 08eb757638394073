//! The server's I/O history (`GET /v1/volumes/{vol}/history`, issue 16
//! item 11): one sample per second of wall-clock time, the requests that
//! ended in it counted exactly, the scrub and resync bytes of that second,
//! a bounded ring; and `quorum_job_remaining_bytes`, what the running jobs
//! have left.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::membership::{add, children};
use crate::scrub::{scrub, wait_done};
use crate::util::*;

const HISTORY: &str = "/v1/volumes/vm/history";
const SIZE: u64 = 4 * MIB;
const WRITES: u64 = 20;
const READS: u64 = 7;

fn history(server: &Server, query: &str) -> Value {
    let r = server.get(&format!("{HISTORY}{query}"));
    r.expect_status(200);
    r.json()
}

fn samples(answer: &Value) -> Vec<Value> {
    answer["samples"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no samples in {answer}"))
}

#[track_caller]
fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// The sum of `key` over the samples.
fn sum(list: &[Value], key: &str) -> u64 {
    list.iter().map(|s| u(s, key)).sum()
}

/// The wall clock, in seconds and the fraction of the current one.
fn wall() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
}

/// The whole history, once the second `t` is closed.
fn history_after(server: &Server, t: u64) -> Vec<Value> {
    let mut answer = Value::Null;
    wait_until(&format!("second {t} to close"), || {
        answer = history(server, "");
        u(&answer, "now") > t
    });
    samples(&answer)
}

/// Checks the shape every answer has: one sample a second, in order, all
/// closed, at most `capacity`.
#[track_caller]
fn check_shape(answer: &Value) {
    assert_eq!(answer["volume"], "vm");
    assert_eq!(answer["interval_seconds"], 1);
    assert_eq!(answer["capacity"], 900, "15 minutes");
    let list = samples(answer);
    let now = u(answer, "now");
    assert!(list.len() <= 900, "{} samples", list.len());
    for pair in list.windows(2) {
        assert_eq!(u(&pair[1], "t"), u(&pair[0], "t") + 1, "{answer}");
    }
    if let Some(last) = list.last() {
        assert!(u(last, "t") < now, "the open second {now} is not listed");
    }
}

#[test]
fn history_counts_each_second_exactly() {
    let config = format!("child_roots = [\".\"]\n{}", abc_volume("4MiB", ""));
    let sandbox = Sandbox::new();
    let server = sandbox.serve(&config);
    let started = wall().as_secs();

    // The first second closes with no I/O: every sample is idle.
    let idle = history_after(&server, started);
    let answer = history(&server, "");
    check_shape(&answer);
    assert!(!idle.is_empty());
    assert!(u(&idle[0], "t") >= started.saturating_sub(1), "{idle:?}");
    for s in &idle {
        for key in [
            "reads",
            "writes",
            "read_bytes",
            "write_bytes",
            "scrub_bytes",
        ] {
            assert_eq!(u(s, key), 0, "{key} of {s}");
        }
        assert_eq!(s["read_p50_ns"], Value::Null, "no latency without reads");
    }

    // N writes and M reads within one second if the machine allows (they
    // start 50 ms into a second): that second's sample holds exactly them.
    let into = wall().subsec_millis();
    std::thread::sleep(Duration::from_millis(u64::from(1050 - into)));
    let from = wall();
    for i in 0..WRITES {
        server.write_volume("vm", i * BLOCK, &pattern(i, BLOCK as usize));
    }
    for i in 0..READS {
        let data = server.read_volume("vm", i * 2 * BLOCK, 2 * BLOCK);
        assert_eq!(data.len() as u64, 2 * BLOCK);
    }
    let to = wall();
    let list = history_after(&server, to.as_secs());
    let within: Vec<Value> = list
        .iter()
        .filter(|s| (from.as_secs()..=to.as_secs()).contains(&u(s, "t")))
        .cloned()
        .collect();
    assert_eq!(
        within.len() as u64,
        to.as_secs() - from.as_secs() + 1,
        "{list:?}"
    );
    assert_eq!(sum(&within, "writes"), WRITES, "{within:?}");
    assert_eq!(sum(&within, "write_bytes"), WRITES * BLOCK);
    assert_eq!(sum(&within, "reads"), READS);
    assert_eq!(sum(&within, "read_bytes"), READS * 2 * BLOCK);
    // Nothing else ran: the whole history holds only these.
    assert_eq!(sum(&list, "writes"), WRITES);
    assert_eq!(sum(&list, "reads"), READS);
    for s in &within {
        if u(s, "writes") > 0 {
            let (p50, p99) = (u(s, "write_p50_ns"), u(s, "write_p99_ns"));
            assert!(0 < p50 && p50 <= p99, "{s}");
        }
    }
    if from.as_secs() == to.as_secs() && to.subsec_millis() < 900 {
        let s = &within[0];
        assert_eq!((u(s, "writes"), u(s, "reads")), (WRITES, READS), "{s}");
        eprintln!("the requests ended within second {}: {s}", from.as_secs());
    } else {
        eprintln!("the requests spanned {from:?}..{to:?}: only their sum is checked, {within:?}");
    }

    // `since` gives only the later seconds.
    let before = from.as_secs() - 1;
    let later = history(&server, &format!("?since={before}"));
    check_shape(&later);
    let later = samples(&later);
    assert_eq!(
        later.first().map(|s| u(s, "t")),
        Some(from.as_secs()),
        "{later:?}"
    );
    assert_eq!(sum(&later, "writes"), WRITES);
    let last = later.last().map(|s| u(s, "t")).expect("a later second");
    let none = history(&server, &format!("?since={last}"));
    assert!(samples(&none).is_empty(), "{none}");

    // A scrub's bytes: the volume's size, in the seconds it ran.
    let id = scrub(&server, false);
    let done = wait_done(&server, id);
    assert_eq!(done["state"], "completed", "{done}");
    let list = history_after(&server, wall().as_secs());
    assert_eq!(sum(&list, "scrub_bytes"), SIZE);
    assert_eq!(sum(&list, "resync_bytes"), 0);
    let metrics = server.metrics();
    assert_eq!(
        metrics.get(r#"quorum_job_remaining_bytes{volume="vm",kind="scrub"}"#),
        Some(0.0),
        "no scrub runs"
    );

    // A replica added at run time: the resync copies the whole volume onto
    // it, and its bytes are counted where they were copied.
    add(&server, "d", "d.img").expect_status(201);
    wait_until("d to sync", || {
        children(&server)
            .iter()
            .any(|c| c["name"] == "d" && c["state"] == "healthy")
    });
    let list = history_after(&server, wall().as_secs());
    assert_eq!(sum(&list, "resync_bytes"), SIZE, "{list:?}");
    assert_eq!(
        server
            .metrics()
            .get(r#"quorum_job_remaining_bytes{volume="vm",kind="resync"}"#),
        Some(0.0)
    );
}

#[test]
fn history_refuses_bad_queries_and_unknown_volumes() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    server
        .get(&format!("{HISTORY}?since=yesterday"))
        .expect_error(400, "bad_request");
    server
        .get(&format!("{HISTORY}?from=1"))
        .expect_error(400, "bad_request");
    server
        .get("/v1/volumes/nope/history")
        .expect_error(404, "no_such_volume");
    history(&server, "?since=0");
}

/// While the resync copies a new replica (slowly: 1 MiB a second), the
/// bytes it has left are `quorum_job_remaining_bytes{kind="resync"}`, and
/// they shrink to zero.
#[test]
fn job_remaining_bytes_shrink_while_a_replica_syncs() {
    let config = format!(
        "resync_rate = \"1MiB\"\nchild_roots = [\".\"]\n{}",
        abc_volume("4MiB", "")
    );
    let server = Sandbox::new().serve(&config);
    const RESYNC: &str = r#"quorum_job_remaining_bytes{volume="vm",kind="resync"}"#;
    assert_eq!(server.metrics().get(RESYNC), Some(0.0));
    add(&server, "d", "d.img").expect_status(201);
    let mut seen = Vec::new();
    wait_until_within("d to sync", Duration::from_secs(20), || {
        let left = server.metrics().get(RESYNC).expect("the resync's series");
        if seen.last() != Some(&left) {
            seen.push(left);
        }
        left == 0.0
    });
    assert!(
        seen.len() >= 3,
        "the bytes left went down in steps of at most 1 MiB: {seen:?}"
    );
    assert!(seen[0] <= SIZE as f64 && seen[0] > 0.0, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[1] < w[0]), "{seen:?}");
}
