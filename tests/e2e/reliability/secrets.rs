//! Secrets never leak, and the security defaults warn.

use super::*;

// ---------------------------------------------------------------------------
// 6. Secrets and security defaults
// ---------------------------------------------------------------------------

/// A server with an `[auth] token` and a remote child whose options carry
/// another token: neither appears in either server's logs, the API
/// answers, the events (live list and file) or the metrics, also after the
/// remote child lost a vote and died. A credential in a child uri is
/// refused with the uri redacted.
#[test]
fn secrets_never_leak() {
    let front_token = "fr0nt-SECRET-t0ken";
    let child_token = "ch1ld-SECRET-t0ken";
    let mut block = Sandbox::new().serve(&format!(
        "[auth]\ntoken = \"{child_token}\"\n{}",
        volume("blk", "1MiB", 1, "", &[child("disk")])
    ));
    let remote = format!(
        "  [[volume.child]]\n  name = \"remote\"\n  uri = \"http://127.0.0.1:{}/v1/volumes/blk\"\n  options = {{ token = \"{child_token}\", timeout = \"2s\", connect_timeout = \"500ms\" }}\n",
        block.port()
    );
    let config = format!(
        "[auth]\ntoken = \"{front_token}\"\n{}",
        volume(
            "vm",
            "1MiB",
            2,
            "",
            &[child("a"), child("b"), remote.clone()]
        )
    );
    let mut front = Sandbox::new().serve(&config);
    front.set_token(Some(front_token));
    let data = pattern(91, 64 * KIB as usize);
    front.write_volume("vm", 0, &data);
    block.corrupt_file("disk.img", 1000, 10);
    assert_bytes_eq(&front.read_volume("vm", 0, 64 * KIB), &data, "the read");
    block.kill();
    front.write_volume("vm", 0, &data);
    let events = front.all_events();
    assert!(
        reports_for(&events, "remote")
            .iter()
            .any(|e| e["data"]["error"].is_string()),
        "no error report of the dead remote: {events:?}"
    );

    let mut places: Vec<(String, String)> = vec![
        ("front stderr".into(), front.stderr()),
        ("block server stderr".into(), block.stderr()),
        (
            "events.jsonl".into(),
            std::fs::read_to_string(front.file("quorum-data/events.jsonl"))
                .expect("read the front's event log"),
        ),
    ];
    // The event log is a place worth searching only if it holds the events.
    assert!(
        places[2].1.contains("QUORUM_REPORT_BAD") && places[2].1.contains("\"remote\""),
        "the event log lacks the remote's reports:\n{}",
        places[2].1
    );
    for path in [
        "/v1/volumes",
        "/v1/volumes/vm",
        "/v1/events?since=0",
        "/metrics",
    ] {
        let r = front.get(path);
        r.expect_status(200);
        places.push((format!("GET {path}"), r.text()));
    }
    for dir in [front.file("logs"), block.file("logs")] {
        for entry in std::fs::read_dir(&dir).expect("list logs").flatten() {
            let text = std::fs::read_to_string(entry.path())
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", entry.path().display()));
            places.push((entry.path().display().to_string(), text));
        }
    }
    for (place, text) in &places {
        for secret in [front_token, child_token] {
            assert!(!text.contains(secret), "{secret} is in {place}:\n{text}");
        }
    }

    // Credentials in the uri: refused, and the line hides them.
    let sandbox = Sandbox::new();
    let with_userinfo = remote.replace(
        "http://127.0.0.1",
        &format!("http://user:{child_token}@127.0.0.1"),
    );
    let refused = sandbox.start_expecting_failure(&volume(
        "vm",
        "1MiB",
        2,
        "",
        &[child("a"), child("b"), with_userinfo],
    ));
    assert!(!refused.status.success());
    assert!(
        !refused.stderr.contains(child_token),
        "the refusal shows the secret: {}",
        refused.stderr
    );
    assert!(refused.stderr.contains("remote"), "{}", refused.stderr);
}

/// A listen address beyond loopback without a token logs a warning; with
/// a token it does not. (The address is TEST-NET-1, which this machine
/// cannot bind, so nothing ever listens beyond loopback: the warning
/// comes before the bind, which then fails.) The default address is
/// loopback: basic.rs `embedded_default_round_trips`.
#[test]
fn a_non_loopback_listen_without_a_token_warns() {
    let sandbox = Sandbox::new();
    let config = sandbox.write_config(&abc_volume("1MiB", ""));
    let config = config.display().to_string();
    let args = ["--config", config.as_str(), "--listen", "192.0.2.1:8700"];
    let out = sandbox.run_expecting_failure(&args);
    failed_to_bind(&out);
    assert!(
        out.stderr.contains("without a token"),
        "no warning for a non-loopback address without a token:\n{}",
        out.stderr
    );

    let sandbox = Sandbox::new();
    let config = sandbox.write_config(&format!(
        "[auth]\ntoken = \"guarded\"\n{}",
        abc_volume("1MiB", "")
    ));
    let config = config.display().to_string();
    let args = ["--config", config.as_str(), "--listen", "192.0.2.1:8700"];
    let out = sandbox.run_expecting_failure(&args);
    // It got as far as the bind: the config (and its token) was accepted.
    failed_to_bind(&out);
    assert!(
        !out.stderr.contains("without a token"),
        "a warning although a token is set:\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains("guarded"), "the token is in the log");
}

/// Asserts that a run failed at the bind of 192.0.2.1:8700 (and not for
/// another reason, such as a config error, which would come before the
/// warning is due).
#[track_caller]
fn failed_to_bind(out: &StartFailure) {
    assert!(!out.status.success(), "{}", out.command_line);
    assert!(
        out.stderr.contains("cannot listen on 192.0.2.1:8700"),
        "the server did not fail at the bind:\n{}",
        out.stderr
    );
}
