//! SPEC sections 2 and 3: a config the server cannot serve exits non-zero
//! with one line on stderr that names the volume, the child and the problem.

use crate::util::*;

/// Every bad config is refused at start with a one-line message naming
/// what is wrong. All cases run; the failures are reported together.
#[test]
fn bad_configs_are_refused_with_one_line() {
    let mut problems = Vec::new();
    for BadConfig {
        what,
        config,
        words,
        ..
    } in bad_configs()
    {
        let sandbox = bad_config_sandbox();
        let failure = sandbox.start_expecting_failure(&config);
        let stderr = failure.stderr.trim();
        if failure.status.success() {
            problems.push(format!("{what}: exited with {}", failure.status));
        }
        if stderr.lines().count() != 1 {
            problems.push(format!("{what}: stderr is not one line: {stderr:?}"));
        }
        for w in words {
            if !stderr.contains(w) {
                problems.push(format!("{what}: stderr does not say {w:?}: {stderr:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "bad configs:\n{}", problems.join("\n"));
}

/// A config file that does not exist is refused, and the message names it.
#[test]
fn a_missing_config_file_is_refused() {
    let sandbox = Sandbox::new();
    let missing = sandbox.file("missing.toml").display().to_string();
    let failure = sandbox.run_expecting_failure(&["--config", &missing, "--listen", "127.0.0.1:0"]);
    assert!(!failure.status.success(), "exited with {}", failure.status);
    let stderr = failure.stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(
        stderr.contains("missing.toml"),
        "the error should name the file: {stderr:?}"
    );
}

/// Children that cannot be reached at start (remote block servers or S3
/// endpoints whose port refuses connections), so many that the others are
/// fewer than `vote_threshold`, stop the start: a non-zero exit with one
/// line naming the volume, each child and why, within the start deadline
/// (the client's bounded timeouts, not object_store's minutes of retries).
/// (With one of three unreachable the volume starts degraded:
/// `operators_events`.)
#[test]
fn children_unreachable_at_start_below_the_threshold_are_refused_with_one_line() {
    let refusing = RefusingPort::new();
    let port = refusing.port;
    // A child table of `kind` on the refusing port.
    let far = |kind: &str, name: &str| match kind {
        "http" => format!(
            "  [[volume.child]]\n  name = \"{name}\"\n  uri = \"http://127.0.0.1:{port}/v1/volumes/{name}\"\n  options = {{ timeout = \"2s\", connect_timeout = \"500ms\" }}\n"
        ),
        _ => format!(
            "  [[volume.child]]\n  name = \"{name}\"\n  uri = \"s3://blocks/{name}\"\n  options = {{ aws_endpoint = \"http://127.0.0.1:{port}\", aws_allow_http = \"true\", aws_region = \"us-east-1\", aws_access_key_id = \"k\", aws_secret_access_key = \"s\" }}\n"
        ),
    };
    for what in ["http", "s3"] {
        let sandbox = Sandbox::new();
        let failure = sandbox.start_expecting_failure(&volume(
            "vm",
            "1MiB",
            2,
            "",
            &[child("a"), far(what, "far1"), far(what, "far2")],
        ));
        let line = failure.one_line();
        assert!(
            line.contains("\"vm\"") && line.contains("\"far1\"") && line.contains("\"far2\""),
            "{what}: the line should name the volume and both children: {line}"
        );
        assert!(
            line.contains("vote_threshold 2"),
            "{what}: the line should say the threshold: {line}"
        );
        // And the reason: it could not reach the port (not another refusal
        // that happens to name the child).
        let unreachable = line.contains(&port.to_string())
            || line.contains("cannot be reached")
            || line.contains("connect");
        assert!(
            unreachable,
            "{what}: the line should say the children could not be reached: {line}"
        );
    }
}
