//! `quorum scrub`, `jobs`, `cancel` and `child add|remove`: jobs waited
//! for with their exit codes, listed and cancelled; children added (the
//! command waits for the sync) and removed.

use std::fs;
use std::time::Duration;

use serde_json::Value;

use super::quorum;
use crate::util::*;

/// The usual volume with a scrub that takes a while.
fn slow_scrub_config() -> String {
    format!("scrub_rate = \"1MiB\"\n{}", abc_volume("8MiB", ""))
}

/// `scrub --wait` exits 0 on a clean volume and 3 when a block has three
/// versions (no majority), saying where; `--json` shows the job.
#[test]
fn scrub_wait_exit_codes_say_whether_blocks_are_unrecoverable() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    server.write_volume("vm", 0, &pattern(4, MIB as usize));
    let out = quorum(&server, &["scrub", "vm", "--wait"]).ok();
    assert!(
        out.starts_with("scrub 1 of vm completed: 1.0 MiB scanned"),
        "{out}"
    );
    assert!(out.contains("unrecoverable: none"), "{out}");

    // Block 5: a, b and c each hold a version of their own.
    server.corrupt_file("a.img", 5 * BLOCK, 100);
    server.corrupt_file("b.img", 5 * BLOCK + 200, 100);
    server.corrupt_file("c.img", 9 * BLOCK, 10);
    let ran = quorum(&server, &["scrub", "vm", "--wait"]);
    ran.code(3);
    let out = ran.stdout();
    assert!(out.contains("completed"), "{out}");
    assert!(
        out.contains(&format!("offset {} length {BLOCK}", 5 * BLOCK)),
        "the unrecoverable block is named: {out}"
    );
    assert!(out.contains("lost votes: "), "{out}");

    let ran = quorum(&server, &["scrub", "vm", "--wait", "--repair", "--json"]);
    ran.code(3);
    let job: Value = serde_json::from_slice(&ran.stdout).expect("the job as JSON");
    assert_eq!(job["state"], "completed");
    assert_eq!(job["repair"], true);
    assert_eq!(
        job["unrecoverable"],
        serde_json::json!([{ "offset": 5 * BLOCK, "bytes": BLOCK }])
    );
    assert_eq!(job["bytes_repaired"], 10, "the 10 bytes c lost in block 9");
    assert!(
        quorum(&server, &["scrub", "nope", "--wait"])
            .error_line()
            .starts_with("error: 404 no_such_volume")
    );
}

#[test]
fn jobs_are_listed_and_cancelled() {
    let server = Sandbox::new().serve(&slow_scrub_config());
    let out = quorum(&server, &["scrub", "vm"]).ok();
    assert_eq!(
        out.trim(),
        "scrub 1 of vm started; follow it with: quorum jobs vm"
    );
    let out = quorum(&server, &["jobs", "vm"]).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("ID  KIND"), "{out}");
    assert!(lines[1].starts_with("0   resync"), "{out}");
    let scrub: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(scrub[..3], ["1", "scrub", "running"], "{out}");
    // A second scrub of the volume is refused: the server's words, exit 1.
    let line = quorum(&server, &["scrub", "vm"]).error_line();
    assert!(line.starts_with("error: 409 conflict: "), "{line}");

    let out = quorum(&server, &["cancel", "vm", "1"]).ok();
    assert_eq!(out.trim(), "cancelled job 1 of vm");
    let mut jobs = Value::Null;
    wait_until("the scrub to stop", || {
        jobs = serde_json::from_slice(&quorum(&server, &["jobs", "vm", "--json"]).stdout)
            .expect("jobs --json is JSON");
        jobs[1]["state"] != "running"
    });
    assert_eq!(jobs[1]["state"], "cancelled", "{jobs}");
    let line = quorum(&server, &["cancel", "vm", "1"]).error_line();
    assert!(line.starts_with("error: 409 conflict: "), "{line}");
    let line = quorum(&server, &["cancel", "vm", "99"]).error_line();
    assert!(line.starts_with("error: 404 no_such_job: "), "{line}");
}

/// `child add` waits for the new child's sync and returns with it
/// healthy and holding the volume's data; `child remove` removes it, and
/// the server's refusals come out as one line.
#[test]
fn children_are_added_synced_and_removed() {
    let sandbox = Sandbox::new();
    fs::create_dir(sandbox.file("roots")).expect("create the child root");
    let roots = sandbox.file("roots").display().to_string();
    let config = format!(
        "child_roots = [{roots:?}]\nresync_rate = \"16MiB\"\n{}",
        abc_volume("4MiB", "")
    );
    let server = sandbox.serve(&config);
    let data = pattern(5, 4 * MIB as usize);
    server.write_volume("vm", 0, &data);
    let d = format!("{roots}/d.img");
    let out = quorum(&server, &["child", "add", "vm", "d", &d]).ok();
    assert_eq!(out.trim(), "added child d to vm: synced and healthy");
    let v = server.get("/v1/volumes/vm").json();
    assert_eq!(v["children"][3]["name"], "d");
    assert_eq!(v["children"][3]["state"], "healthy", "{v}");
    assert_eq!(v["children"][3]["stale_bytes"], 0, "{v}");
    assert_bytes_eq(&server.read_file("roots/d.img"), &data, "d after its sync");

    let line = quorum(&server, &["child", "add", "vm", "d", &d]).error_line();
    assert!(line.starts_with("error: 409 conflict: "), "{line}");
    let outside = server.file("outside.img").display().to_string();
    let line = quorum(&server, &["child", "add", "vm", "e", &outside]).error_line();
    assert!(line.starts_with("error: 403 forbidden: "), "{line}");
    let e = format!("{roots}/e.img");
    let line = quorum(
        &server,
        &["child", "add", "vm", "e", &e, "--option", "colour=blue"],
    )
    .error_line();
    assert!(
        line.starts_with("error: 4") && line.contains("colour"),
        "the option reached the server, which refused it: {line}"
    );
    quorum(
        &server,
        &["child", "add", "vm", "e", &e, "--option", "novalue"],
    )
    .code(2);

    for name in ["d", "a"] {
        let out = quorum(&server, &["child", "remove", "vm", name]).ok();
        assert_eq!(out.trim(), format!("removed child {name} from vm"));
    }
    let line = quorum(&server, &["child", "remove", "vm", "b"]).error_line();
    assert!(line.starts_with("error: 409 below_threshold: "), "{line}");
    let v = server.get("/v1/volumes/vm").json();
    let names: Vec<&str> = v["children"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["b", "c"]);
}

/// `child add` waits for the sync, but not forever: a remote child whose
/// block server goes away mid-sync stays failed with no progress, and the
/// command says so and exits 1 once `--stall-timeout` has passed (the
/// server keeps the child and retries it).
#[test]
fn child_add_gives_up_on_a_child_failed_with_no_progress() {
    let mut blk = crate::remote::block_server("4MiB", "");
    let server = Sandbox::new().serve(&format!(
        "resync_rate = \"1MiB\"\nallowed_endpoints = [\"{}\"]\n{}",
        blk.url(""),
        abc_volume("4MiB", "")
    ));
    server.write_volume("vm", 0, &pattern(6, 4 * MIB as usize));
    let uri = format!("http://127.0.0.1:{}/v1/volumes/blk", blk.port());
    let args = [
        "child",
        "add",
        "vm",
        "r",
        &uri,
        "-o",
        "timeout=1s",
        "-o",
        "connect_timeout=300ms",
        "--stall-timeout",
        "2s",
    ];
    std::thread::scope(|s| {
        let add = s.spawn(|| quorum(&server, &args));
        wait_until("r to join vm", || {
            add.is_finished()
                || server.get("/v1/volumes/vm").json()["children"]
                    .as_array()
                    .is_some_and(|c| c.len() == 4)
        });
        if add.is_finished() {
            let ran = add.join().expect("the CLI");
            panic!("child add ended before r joined: {}", ran.stderr);
        }
        blk.stop();
        wait_until_within("child add to give up on r", Duration::from_secs(30), || {
            add.is_finished()
        });
        let line = add.join().expect("the CLI").error_line();
        assert!(
            line.starts_with("error: ")
                && line.contains("child r of vm has been failed for 2s with")
                && line.contains("no progress"),
            "{line}"
        );
    });
    let v = server.get("/v1/volumes/vm").json();
    assert_eq!(v["children"][3]["name"], "r", "{v}");
    assert!(v["children"][3]["stale_bytes"].as_u64() > Some(0), "{v}");
}
