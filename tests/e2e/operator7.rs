//! A hostile operator's review: what a real operator does (a replica added
//! to a fragmented disk, a child added by a path relative to the config)
//! and whether the events, metrics and errors then say what happened.

use std::fs;
use std::time::Instant;

use serde_json::Value;

use crate::cli::{quorum, run_in};
use crate::membership::{add, children};
use crate::util::*;

const SIZE: u64 = 64 * MIB;
/// The children hold 4 KiB of data at the start of every 8 KiB: a disk of
/// 8192 extents, as a used VM disk is.
const STRIDE: u64 = 8 * KIB;
const DATA: u64 = 4 * KIB;

/// Whether the `[offset, offset + bytes)` of some event holds `at` (a
/// folded event's span covers every range it stands for).
fn covered(events: &[&Value], at: u64) -> bool {
    events.iter().any(|e| {
        let offset = data_u64(e, "offset");
        offset <= at && at < offset + data_u64(e, "bytes")
    })
}

/// Adding a replica copies the volume a piece at a time (256 KiB here,
/// finer where writes come between), and each piece was one
/// `QUORUM_REWRITE` in the bounded log: 4096 events a GiB, so adding a
/// replica to a 3 GiB disk pushed every earlier event out of the default
/// `max_events` (10,000), among them the `QUORUM_REPORT_BAD` that had named
/// the replica that went bad, the one thing the operator needed. Here the
/// same at a 64th of the scale (256 pieces, `max_events = 100`). The
/// resync's rewrites are now folded per child and second like reports: the
/// report stays, the rewrites still cover every byte copied, and the
/// metric counts every byte.
#[test]
fn a_resync_over_many_extents_keeps_the_report_of_the_bad_replica() {
    let sandbox = Sandbox::new();
    for f in ABC {
        sandbox.striped_file(f, SIZE, STRIDE, DATA, 0x5a);
    }
    let config = format!(
        "max_events = 100\nchild_roots = [\".\"]\n{}",
        abc_volume("64MiB", "")
    );
    let server = sandbox.serve(&config);
    server.corrupt_file("c.img", 3 * STRIDE + 100, 10);
    assert_all_bytes(
        &server.read_volume("vm", 3 * STRIDE, DATA),
        0x5a,
        "the read c was outvoted on",
    );
    let reports = named(&server.all_events(), "QUORUM_REPORT_BAD")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(reports.len(), 1, "{reports:?}");
    check_report(&reports[0], "vm", "c", "read", None);

    let started = Instant::now();
    add(&server, "d", "d.img").expect_status(201);
    wait_until_within("d to be synced", 20 * EFFECT_DEADLINE, || {
        children(&server)[3]["state"] == "healthy"
    });
    let seconds = started.elapsed().as_secs();
    let events = server.all_events();
    assert!(
        !reports_for(&events, "c").is_empty(),
        "the report that named c is still in the log: {} events, the first {}",
        events.len(),
        events.first().map(Value::to_string).unwrap_or_default()
    );
    let extents: Vec<u64> = (0..SIZE / STRIDE).map(|i| i * STRIDE).collect();
    let mut events = Vec::new();
    wait_until("the rewrites of d to cover every extent", || {
        events = server.all_events();
        let rewrites: Vec<&Value> = named(&events, "QUORUM_REWRITE")
            .into_iter()
            .filter(|e| e["data"]["node-name"] == "d")
            .collect();
        extents.iter().all(|at| covered(&rewrites, *at))
    });

    let rewrites = named(&events, "QUORUM_REWRITE");
    assert!(
        rewrites.len() as u64 <= 2 * (seconds + 2),
        "about one rewrite event a second while the resync ran {seconds} s, not one per \
         extent: {} events",
        rewrites.len()
    );
    assert!(
        rewrites.iter().any(|e| reports_in(e) > 1),
        "a folded rewrite says how many it stands for: {rewrites:?}"
    );
    for e in &rewrites {
        assert_eq!(e["data"]["node-name"], "d", "only d was written: {e}");
        assert!(data_u64(e, "offset") + data_u64(e, "bytes") <= SIZE, "{e}");
    }
    let repaired = server.metric(r#"quorum_repaired_bytes_total{volume="vm",child="d"}"#);
    assert!(
        repaired >= (SIZE / STRIDE * DATA) as f64,
        "the metric counts every byte copied: {repaired}"
    );
    assert_bytes_eq(
        &server.read_file("d.img"),
        &server.read_file("a.img"),
        "d.img after the resync",
    );
}

/// An operator runs the server in its directory (`--config config.toml`)
/// with `child_roots` written absolute, and adds a child by a path as the
/// config's own children are written, relative to the config file. The path was
/// compared with the roots as written, `./d.img` against `/abs/dir`, and
/// refused: "./d.img is not under the server's child_roots", though it
/// is. The config's directory is now made absolute once at load, so the
/// child is added and synced; a path that does leave the root is still
/// refused, and nothing is created for it.
#[test]
fn a_child_relative_to_a_config_given_by_a_relative_path_is_under_its_root() {
    let sandbox = Sandbox::new();
    let config = format!(
        "child_roots = [\"{}\"]\n{}",
        sandbox.file(".").display(),
        abc_volume("1MiB", "")
    );
    let outside = sandbox.file("../e.img");
    let server = sandbox.serve_relative(&config);
    server.write_volume("vm", 0, &pattern(7, 64 * KIB as usize));

    let out = quorum(&server, &["child", "add", "vm", "d", "d.img"]).ok();
    assert!(out.contains("synced and healthy"), "{out}");
    assert_eq!(children(&server)[3]["state"], "healthy");
    assert_bytes_eq(
        &server.read_file_at("d.img", 0, 64 * KIB as usize),
        &pattern(7, 64 * KIB as usize),
        "d.img, next to the config file",
    );

    let line = quorum(&server, &["child", "add", "vm", "e", "../e.img"]).error_line();
    assert!(line.contains("403 forbidden"), "{line}");
    assert!(!outside.exists(), "nothing made outside the root");
    assert_eq!(children(&server).len(), 4);
}

/// A replica's file vanishes while the server is down (deleted by mistake,
/// or its disk not mounted at boot, so the path is an empty directory's).
/// The config's child was created again, empty, and served as `healthy`:
/// in `fifo` mode, which reads child 0 alone, an acknowledged and flushed
/// megabyte then read back as zeroes, and nothing said why. A server that
/// has the volume's journal now marks a re-created file stale over the
/// whole volume (`CHILD_STATE_CHANGE` healthy to stale, a warning naming
/// it), so it is not read until the resync has copied it.
#[test]
fn a_child_file_that_vanished_is_not_served_as_empty() {
    replaced_child_is_resynced_before_it_is_read("file was missing", |server, _old| {
        fs::remove_file(server.file("a.img")).expect("remove a.img");
    });
}

/// A replica's file restored from a copy taken earlier (`cp`, which keeps
/// no extended attribute) while the server was down: it was served as
/// `healthy`, and `fifo` read the copy's old bytes over an acknowledged,
/// flushed write. A file without the volume's mark, while another child's
/// file has it, is now resynced before it is read, like a missing one.
#[test]
fn a_child_file_restored_from_an_old_copy_is_not_served_as_it_is() {
    replaced_child_is_resynced_before_it_is_read(
        "does not carry this volume's mark",
        |server, old| {
            fs::remove_file(server.file("a.img")).expect("remove a.img");
            server.write_file_at("a.img", 0, old);
        },
    );
}

/// Two replicas' files of three vanish while the server is down (one
/// disk held both). Created empty again, the two agreed with each other
/// and outvoted the one that held the data: reads answered zeroes, and the
/// one good replica was reported as the bad one. With fewer than
/// `vote_threshold` children left holding the data the start is now
/// refused in one line naming them and what to do, creating nothing;
/// `quorum-server check` says the same; lowering the threshold lets the
/// resync copy from the one left.
#[test]
fn a_start_with_too_few_replicas_left_holding_the_data_is_refused() {
    let config = with_nbd(&abc_volume("4MiB", ""));
    let mut server = Sandbox::new().serve(&config);
    qemu_io(&nbd_url(&server, "vm"), &["write -P 0xab 0 1M", "flush"]);
    server.stop();
    for f in ["a.img", "b.img"] {
        fs::remove_file(server.file(f)).expect("remove a child file");
    }
    let path = server.file("config.toml").display().to_string();
    let checked = run_in(&server, &bin(), &["check", "--config", &path], &[], None).error_line();
    assert!(
        checked.contains("children a, b"),
        "check says it too: {checked}"
    );
    let refused = server.start_expecting_failure(&config);
    let line = refused.one_line();
    assert!(
        line.contains("children a, b") && line.contains("fewer than vote_threshold 2"),
        "{line}"
    );
    assert!(
        !server.file("a.img").exists() && !server.file("b.img").exists(),
        "a refused start creates nothing"
    );

    let lowered = with_nbd(&volume(
        "vm",
        "4MiB",
        1,
        "",
        &[child("a"), child("b"), child("c")],
    ));
    server.write_config(&lowered);
    server.restart();
    let out = qemu_io(&nbd_url(&server, "vm"), &["read -P 0xab 0 1M"]);
    assert!(out.contains("read 1048576/1048576"), "{out}");
    wait_until("a and b to be copied from c", || {
        children(&server).iter().all(|c| c["state"] == "healthy")
    });
    for f in ["a.img", "b.img"] {
        assert_bytes_eq(&server.read_file(f), &server.read_file("c.img"), f);
    }
}

/// Writes 0x11, keeps a copy of a.img, writes 0xab over it; stops the
/// server, lets `replace` do its worst to a.img (given the copy), starts
/// it again: 0xab must read back, and a be marked stale (with a warning
/// saying `warning`), resynced and healthy again.
fn replaced_child_is_resynced_before_it_is_read(warning: &str, replace: impl Fn(&Server, &[u8])) {
    let config = with_nbd(&volume(
        "vm",
        "4MiB",
        1,
        "read_pattern = \"fifo\"",
        &[child("a"), child("b")],
    ));
    let mut server = Sandbox::new().serve(&config);
    qemu_io(&nbd_url(&server, "vm"), &["write -P 0x11 0 1M", "flush"]);
    let old = server.read_file("a.img");
    qemu_io(&nbd_url(&server, "vm"), &["write -P 0xab 0 1M", "flush"]);
    server.stop();
    replace(&server, &old);
    server.restart();

    let out = qemu_io(&nbd_url(&server, "vm"), &["read -P 0xab 0 1M"]);
    assert!(out.contains("read 1048576/1048576"), "{out}");
    let mut events = Vec::new();
    wait_until("a to be copied and healthy again", || {
        events = server.all_events();
        named(&events, "CHILD_STATE_CHANGE").len() >= 2
    });
    let changes: Vec<(String, String, String)> = named(&events, "CHILD_STATE_CHANGE")
        .iter()
        .map(|e| {
            let field = |k: &str| e["data"][k].as_str().unwrap_or_default().to_owned();
            (field("node-name"), field("from"), field("to"))
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("a".into(), "healthy".into(), "stale".into()),
            ("a".into(), "stale".into(), "healthy".into())
        ],
        "{events:?}"
    );
    let stderr = server.stderr();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains(warning) && l.contains("child=a")),
        "a warning says why a is stale: {stderr}"
    );
    assert_bytes_eq(
        &server.read_file("a.img"),
        &server.read_file("b.img"),
        "a.img after the resync",
    );
    server.stop();
    server.restart();
    assert!(
        !server.stderr().contains(warning),
        "a resynced file is the volume's again: {}",
        server.stderr()
    );
}

/// After a child is removed at run time the saved membership replaces the
/// config file's children at every start, as the README says; but the
/// start said only `children=2`, so an operator who edited the config
/// (added a child there, or still reads `a` in it) was served something
/// else without a word. The start now warns, naming both lists; a start
/// whose membership matches the config says nothing.
#[test]
fn a_start_says_when_the_saved_membership_replaces_the_configs_children() {
    const WARNING: &str = "the saved membership replaces them";
    let config = format!("child_roots = [\".\"]\n{}", abc_volume("1MiB", ""));
    let mut server = Sandbox::new().serve(&config);
    server.stop();
    server.restart();
    assert!(
        !server.stderr().contains(WARNING),
        "nothing changed at run time: {}",
        server.stderr()
    );
    let out = quorum(&server, &["child", "remove", "vm", "a"]).ok();
    assert!(out.contains("removed child a"), "{out}");
    server.stop();
    server.restart();
    let stderr = server.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap_or_else(|| panic!("a warning at start: {stderr}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("saved=b, c") && line.contains("config=a, b, c"),
        "{line}"
    );
    let names: Vec<Value> = children(&server)
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, ["b", "c"], "what the warning said is what is served");
}

/// `[nbd] listen` copied from `listen` by mistake: the NBD listener bound
/// the port first, the children were created, and the HTTP one then failed
/// with "cannot listen on ...: Address already in use", as if another
/// process held the port. The start (and `quorum-server check`) now
/// refuses it in one line naming both keys, before anything is created.
#[test]
fn nbd_on_the_http_port_is_refused_naming_both_keys() {
    let sandbox = Sandbox::new();
    let config = format!(
        "listen = \"127.0.0.1:47\"\ndata_dir = \"state\"\n[nbd]\nlisten = \"127.0.0.1:47\"\n{}",
        abc_volume("1MiB", "")
    );
    let path = sandbox.write_config(&config).display().to_string();
    let refused = sandbox.run_expecting_failure(&["--config", &path]);
    let line = refused.one_line();
    assert!(
        line.contains("nbd.listen 127.0.0.1:47 and listen 127.0.0.1:47 are the same port"),
        "{line}"
    );
    let checked = run_in(&sandbox, &bin(), &["check", "--config", &path], &[], None).error_line();
    assert!(checked.contains("nbd.listen"), "{checked}");
    for made in ["a.img", "b.img", "c.img", "state"] {
        assert!(
            !sandbox.file(made).exists(),
            "{made} was made by a refused start"
        );
    }
}
