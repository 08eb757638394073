//! Child names obey the volume-name rule, at run time and in the config.

use reqwest::Method;
use serde_json::Value;

use super::child_roots;
use crate::membership::{add, children};
use crate::util::*;

/// A child added at run time with a name of 65 characters or with a
/// character outside `[A-Za-z0-9._-]` gets 400 `bad_request`, one of
/// 1.9 MB 413 `payload_too_large` (its body is over the 64 KiB of a
/// control request): nothing is added, no file is created, and `/metrics`
/// does not grow. A name of exactly 64 allowed characters is added.
#[test]
fn bad_child_names_are_refused_at_run_time() {
    let sandbox = Sandbox::new();
    let config = format!("{}{}", child_roots(&sandbox), abc_volume("1MiB", ""));
    let server = sandbox.serve(&config);
    let metrics_before = server.get("/metrics").expect_status(200).body.len();
    let events_before = server.last_event_id();
    let bad = [
        "n".repeat(1_900_000),
        "n".repeat(65),
        "a/b".into(),
        "../up".into(),
        "a b".into(),
        "caf\u{e9}".into(),
        "a\nb".into(),
        "a\"b".into(),
        "a%2Fb".into(),
        "{x}".into(),
        "a\u{0}b".into(),
        String::new(),
    ];
    for (i, name) in bad.iter().enumerate() {
        let uri = format!("bad-{i}.img");
        let shown: String = name.chars().take(40).collect();
        if name.len() > 64 * 1024 {
            // Over the 64 KiB body limit: 413, or the connection cut while
            // the client still sends (the server answers without reading
            // the rest, and the client may see its write fail first).
            let body = serde_json::json!({ "name": name, "uri": uri, "options": {} }).to_string();
            let status = server.send_oversized(
                server
                    .request(Method::POST, "/v1/volumes/vm/children")
                    .body(body),
            );
            assert!(
                matches!(status, Some(413) | None),
                "a child named {shown:?}: {status:?}"
            );
            assert!(!server.file(&uri).exists(), "the refused child left {uri}");
            continue;
        }
        let r = add(&server, name, &uri);
        assert_eq!(
            r.status,
            400,
            "a child named {shown:?} ({} bytes): expected 400, got {} {:?}",
            name.len(),
            r.status,
            r.preview().chars().take(200).collect::<String>()
        );
        r.expect_error(400, "bad_request");
        assert!(
            !server.file(&uri).exists(),
            "the refused child {shown:?} left its file {uri}"
        );
    }
    assert_eq!(children(&server).len(), 3, "a child was added");
    let added: Vec<Value> = server
        .events(&format!("since={events_before}"))
        .into_iter()
        .filter(|e| e["event"] == "CHILD_ADDED")
        .collect();
    assert!(added.is_empty(), "children were added: {added:?}");
    let metrics = server.get("/metrics").expect_status(200).body.len();
    assert!(
        metrics <= metrics_before + 4096,
        "/metrics grew from {metrics_before} to {metrics} bytes"
    );

    let longest: String = "Az09._-".chars().cycle().take(64).collect();
    add(&server, &longest, "longest.img").expect_status(201);
    assert_eq!(children(&server)[3]["name"], longest.as_str());
}

/// A child name that breaks the rule in the config file stops the start
/// with one line that names the child.
#[test]
fn a_bad_child_name_in_the_config_stops_the_start() {
    for name in ["bad/name".to_string(), "n".repeat(65), "a b".to_string()] {
        let config = volume(
            "vm",
            "1MiB",
            2,
            "",
            &[
                child("a"),
                child("b"),
                format!("  [[volume.child]]\n  name = \"{name}\"\n  uri = \"c.img\"\n"),
            ],
        );
        let failed = Sandbox::new().start_expecting_failure(&config);
        let line = failed.one_line();
        assert!(
            line.contains(&name),
            "the refusal should name the child {name:?}: {line}"
        );
    }
}
