//! Issue 16, items 4 and 5: one owner per replica, and readiness.
//!
//! A second server on the same `data_dir` or the same child file must not
//! start (it would rewrite the first one's stale maps, or write behind its
//! back); the refusal names the lock and its holder, and once the first
//! server stops the second starts. `/readyz` says whether every volume can
//! serve at its threshold, without a token.

use crate::util::*;

/// A config beside the first server's: its children (`a`, `b`, `c` of
/// `first`) or fresh ones in `second`, its `data_dir` or a fresh one.
fn second_config(
    first: &Server,
    second: &Sandbox,
    share_data: bool,
    share_children: bool,
) -> String {
    let children: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let at = if share_children {
                first.file(&format!("{name}.img"))
            } else {
                second.file(&format!("{name}.img"))
            };
            format!(
                "  [[volume.child]]\n  name = \"{name}\"\n  uri = \"{}\"\n",
                at.display()
            )
        })
        .collect();
    let data_dir = if share_data {
        first.file("quorum-data")
    } else {
        second.file("quorum-data")
    };
    format!(
        "data_dir = \"{}\"\n{}",
        data_dir.display(),
        volume("vm", "4MiB", 2, "", &children)
    )
}

#[test]
fn a_second_server_on_one_data_dir_is_refused_until_the_first_stops() {
    let mut first = Sandbox::new().serve(&abc_volume("4MiB", ""));
    let second = Sandbox::new();
    let config = second_config(&first, &second, true, false);
    let refused = second.start_expecting_failure(&config);
    let line = refused.one_line();
    let lock = first.file("quorum-data/lock");
    for words in [
        "in use by another server".to_owned(),
        lock.display().to_string(),
        format!("pid {}", first.pid()),
        "quorum-server".to_owned(),
    ] {
        assert!(
            line.contains(&words),
            "the refusal {line:?} should say {words:?}"
        );
    }
    let locks = std::fs::read_to_string("/proc/locks").expect("read /proc/locks");
    assert!(
        locks
            .lines()
            .any(|l| l.contains("FLOCK") && l.contains(&format!(" {} ", first.pid()))),
        "/proc/locks should show the first server's flock:\n{locks}"
    );
    assert!(first.stop().success(), "the first server stops cleanly");
    // The data_dir has the first server's journal of vm, and none of the
    // second's files exists: as if the disk that holds them were not
    // mounted. The start refuses, naming the journal to delete to start
    // the volume empty; once it is deleted, the second server starts.
    let journal = first.file("quorum-data/stale/vm.jsonl");
    let empty = second.start_expecting_failure(&config);
    let line = empty.one_line();
    for words in [
        "no child is left holding its data",
        &journal.display().to_string(),
    ] {
        assert!(
            line.contains(words),
            "the refusal {line:?} should say {words:?}"
        );
    }
    std::fs::remove_file(&journal).expect("delete the journal, as the refusal says");
    let mut second = second.serve(&config);
    second.get("/v1/volumes/vm").expect_status(200);
    second.stop();
}

#[test]
fn a_second_server_on_one_child_file_is_refused_and_names_the_file() {
    let mut first = Sandbox::new().serve(&abc_volume("4MiB", ""));
    first
        .put("/v1/volumes/vm/data?offset=0", vec![0x5a; 65536])
        .expect_status(204);
    let second = Sandbox::new();
    let config = second_config(&first, &second, false, true);
    let before = first.snapshot(&["a.img", "b.img", "c.img"]);
    let refused = second.start_expecting_failure(&config);
    let line = refused.one_line();
    let child = first.file("a.img");
    for words in [
        child.display().to_string(),
        "locked by another process".to_owned(),
        format!("pid {}", first.pid()),
        "one server per child file".to_owned(),
    ] {
        assert!(
            line.contains(&words),
            "the refusal {line:?} should say {words:?}"
        );
    }
    first.assert_unchanged(&before, "a refused second server writes nothing");
    assert!(first.stop().success(), "the first server stops cleanly");
    let mut second = second.serve(&config);
    second.get("/v1/volumes/vm").expect_status(200);
    second.stop();
}

#[test]
fn readyz_says_which_volume_cannot_serve_at_its_threshold() {
    let read_fails = fault("read", &["error = \"EIO\""]);
    let token = "readyz-t0ken-0f-some-length";
    let config = format!(
        "[auth]\ntoken = \"{token}\"\n\n{}{}",
        volume("good", "1MiB", 2, "", &[child("a"), child("b"), child("c")]),
        volume(
            "bad",
            "1MiB",
            2,
            "",
            &[
                child_with("d", &read_fails),
                child_with("e", &read_fails),
                child("f")
            ],
        )
    );
    let mut server = Sandbox::new().serve(&config);
    let ready = server.get("/readyz");
    ready.expect_status(200);
    assert_eq!(
        ready.json()["ready"],
        true,
        "every child is healthy at the start"
    );

    // Two of three children fail a read: the read fails, and they are failed.
    server.set_token(Some(token));
    let read = server.get_range("/v1/volumes/bad/data", "bytes=0-4095");
    assert!(
        read.status >= 500,
        "the read lacks a quorum: {}",
        read.status
    );
    server.set_token(None);
    let unready = server.get("/readyz");
    unready.expect_status(503);
    let body = unready.json();
    assert_eq!(body["ready"], false, "{body}");
    let by_name = |name: &str| {
        body["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["volume"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("/readyz should list {name}: {body}"))
    };
    assert_eq!(by_name("bad")["ready"], false, "{body}");
    assert_eq!(by_name("bad")["healthy_children"], 1, "{body}");
    assert_eq!(by_name("bad")["vote_threshold"], 2, "{body}");
    assert_eq!(by_name("good")["ready"], true, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains(".img"),
        "an open probe shows no child uri: {text}"
    );
}
