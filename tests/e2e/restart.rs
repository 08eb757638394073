//! Must show 6: the event log lives in data_dir and survives a restart;
//! ids keep increasing across it.

use serde_json::Value;

use crate::util::*;

/// Makes child c lose a vote on a 4 KiB read: one QUORUM_REPORT_BAD, and
/// c becomes damaged (a CHILD_STATE_CHANGE; the write before it heals c if
/// it was damaged, another one).
fn cause_an_event(server: &Server, seed: u64) {
    let data = pattern(seed, 4096);
    server.write_volume("vm", 0, &data);
    server.corrupt_file("c.img", 100, 10);
    assert_bytes_eq(&server.read_volume("vm", 0, 4096), &data, "the voted read");
}

const BAD: &str = "QUORUM_REPORT_BAD";
const STATE: &str = "CHILD_STATE_CHANGE";

/// Restarts the server with `stop` and checks the log afterwards. After a
/// clean stop the log is exactly as it was (and c still damaged); after a
/// kill the restart reconciles the regions written last (a crash may have
/// left the children different there), which finds c's corruption again
/// and repairs it: its events come after the old ones.
fn events_survive(stop: impl FnOnce(&mut Server), clean: bool) {
    let mut server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    cause_an_event(&server, 40);
    cause_an_event(&server, 41);
    let before = server.events_settled(0, &[BAD, STATE, STATE, BAD, STATE]);
    let old_max = server.last_event_id();

    stop(&mut server);
    server.restart();

    let after = server.all_events();
    if clean {
        assert_eq!(
            after, before,
            "after a clean stop the events should be exactly the ones before"
        );
    } else {
        assert_eq!(
            &after[..before.len().min(after.len())],
            &before[..],
            "the events before the kill stay listed, first"
        );
        assert!(
            named(&after, "QUORUM_REWRITE").len() == 1,
            "the restart reconciled the written region and repaired c: {after:?}"
        );
    }
    let restarted = after.len();
    cause_an_event(&server, 42);
    // After a clean stop c is still damaged: the write heals it first.
    let caused: &[&str] = if clean {
        &[STATE, BAD, STATE]
    } else {
        &[BAD, STATE]
    };
    let all = server.events_settled(restarted, caused);
    assert_eq!(
        &all[..before.len()],
        &before[..],
        "the old events stay listed"
    );
    let new_id = all[restarted]["id"].as_u64().unwrap_or(0);
    assert!(
        new_id > old_max,
        "the new event's id {new_id} should be above the old maximum {old_max}"
    );
    let since: Vec<Value> = server.events(&format!("since={old_max}"));
    assert_eq!(
        since,
        all[before.len()..],
        "since=old maximum lists only the events after the old ones"
    );
    // The data survived too.
    assert_bytes_eq(
        &server.read_volume("vm", 0, 4096),
        &pattern(42, 4096),
        "data",
    );
}

/// A clean stop (SIGTERM, exit status 0), then a start on the same config
/// and data_dir.
#[test]
fn events_survive_a_restart_and_ids_keep_increasing() {
    events_survive(
        |server| {
            let status = server.stop();
            assert!(
                status.success(),
                "SIGTERM should shut the server down cleanly, it exited with {status}\nstderr:\n{}",
                server.stderr()
            );
        },
        true,
    );
}

/// The same after SIGKILL: an event acknowledged by the HTTP answer that
/// follows it is not lost when the process dies.
#[test]
fn events_survive_a_killed_server() {
    events_survive(Server::kill, false);
}
