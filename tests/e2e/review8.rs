//! A hostile review of the start-time origin checks (`origins.rs`): an
//! operator who restarts the server a lot, through failed starts and
//! emptied files, and reads back what the volume held.

use std::fs;

use crate::membership::{add, children};
use crate::util::*;

/// The volume of two children `a`, `b`, read `fifo` (a alone answers
/// reads) with `vote_threshold` 1, plus `more` children, served over NBD.
fn fifo_config(more: &[String]) -> String {
    let mut list = vec![child("a"), child("b")];
    list.extend_from_slice(more);
    format!(
        "child_roots = [\".\"]\n{}",
        with_nbd(&volume("vm", "4MiB", 1, "read_pattern = \"fifo\"", &list))
    )
}

/// a.img vanished while the server was down, and the start then failed on
/// another child (c.img restored at a wrong size). That start had already
/// created a.img empty and marked it as the volume's, but died before it
/// marked a stale: the next start, c fixed, found a.img "ours" and served
/// its zeroes for data written and flushed. A file is now marked as the
/// volume's only once it is journaled stale.
#[test]
fn a_failed_start_does_not_make_a_vanished_file_the_volumes() {
    let config = fifo_config(&[child("c")]);
    let mut server = Sandbox::new().serve(&config);
    qemu_io(&nbd_url(&server, "vm"), &["write -P 0xab 0 1M", "flush"]);
    server.stop();
    fs::remove_file(server.file("a.img")).expect("remove a.img");
    let c = fs::OpenOptions::new()
        .write(true)
        .open(server.file("c.img"))
        .expect("open c.img");
    c.set_len(2 * MIB).expect("shrink c.img");
    let line = server
        .start_expecting_failure(&config)
        .one_line()
        .to_owned();
    assert!(line.contains("c.img"), "the start fails on c: {line}");
    c.set_len(4 * MIB).expect("c.img back to its size");
    drop(c);

    server.restart();
    let out = qemu_io(&nbd_url(&server, "vm"), &["read -P 0xab 0 1M"]);
    assert!(out.contains("read 1048576/1048576"), "{out}");
    wait_until("a to be copied and healthy", || {
        children(&server).iter().all(|c| c["state"] == "healthy")
    });
    assert_bytes_eq(
        &server.read_file("a.img"),
        &server.read_file("b.img"),
        "a.img after the resync",
    );
}

/// A child added at run time (saved membership) whose file was emptied
/// while the server was down (`: > d.img`, a restore gone wrong) was taken
/// at start as a new empty file: sized, marked and served healthy, zeroes
/// where the volume holds data, never copied. It is now stale over the
/// whole volume, copied before it is read, like a config child's file
/// that vanished.
#[test]
fn a_run_time_childs_file_emptied_while_down_is_resynced() {
    let config = fifo_config(&[]);
    let mut server = Sandbox::new().serve(&config);
    qemu_io(&nbd_url(&server, "vm"), &["write -P 0xab 0 1M", "flush"]);
    add(&server, "d", "d.img").expect_status(201);
    wait_until("d to be synced", || {
        children(&server).iter().all(|c| c["state"] == "healthy")
    });
    server.stop();
    fs::File::create(server.file("d.img")).expect("empty d.img");

    server.restart();
    wait_until("d to be copied again and healthy", || {
        children(&server).iter().all(|c| c["state"] == "healthy")
            && server.read_file("d.img") == server.read_file("a.img")
    });
    let events = server.all_events();
    assert!(
        named(&events, "CHILD_STATE_CHANGE").iter().any(|e| {
            e["data"]["node-name"] == "d"
                && e["data"]["from"] == "healthy"
                && e["data"]["to"] == "stale"
        }),
        "d was marked stale at start: {events:?}"
    );
    assert_bytes_eq(
        &server.read_file("d.img"),
        &server.read_file("a.img"),
        "d.img after the resync",
    );
}

/// A volume of a file and a remote child (another quorum-server's volume,
/// as an S3 child would be): a.img vanished while the server was down. The
/// start looked for another child's file carrying the mark, found none (a
/// remote has no file), so created a.img empty and served it healthy: a
/// `fifo` read answered its zeroes. A child whose origin cannot be told (a
/// remote, a device) may hold the data: a is now copied from it first.
#[test]
fn a_vanished_file_beside_a_remote_child_is_resynced() {
    let block = crate::remote::block_server("1MiB", "");
    let list = [
        child("a"),
        crate::remote::remote_child("r", &block, "blk", ""),
    ];
    let config = volume("vm", "1MiB", 1, "read_pattern = \"fifo\"", &list);
    let mut server = Sandbox::new().serve(&config);
    let data = pattern(11, 256 * KIB as usize);
    server.write_volume("vm", 0, &data);
    server.stop();
    fs::remove_file(server.file("a.img")).expect("remove a.img");

    server.restart();
    assert_bytes_eq(
        &server.read_volume("vm", 0, data.len() as u64),
        &data,
        "the read after a.img vanished",
    );
    wait_until("a to be copied from r and healthy", || {
        children(&server).iter().all(|c| c["state"] == "healthy")
    });
    assert_bytes_eq(
        &server.read_file_at("a.img", 0, data.len()),
        &data,
        "a.img after the resync",
    );
}

/// A volume with no file left: every child's file vanished (the one disk
/// that held them all was not mounted), on a server that wrote to the
/// volume. The start created them all empty and served a blank disk; it is
/// now refused, naming them, creating nothing.
#[test]
fn a_start_with_every_file_gone_is_refused() {
    let config = fifo_config(&[]);
    let mut server = Sandbox::new().serve(&config);
    server.write_volume("vm", 0, &pattern(3, 64 * KIB as usize));
    server.stop();
    for f in ["a.img", "b.img"] {
        fs::remove_file(server.file(f)).expect("remove a child file");
    }
    let path = server.file("config.toml").display().to_string();
    let checked =
        crate::cli::run_in(&server, &bin(), &["check", "--config", &path], &[], None).error_line();
    assert!(
        checked.contains("children a, b"),
        "check says it too: {checked}"
    );
    let line = server
        .start_expecting_failure(&config)
        .one_line()
        .to_owned();
    assert!(
        line.contains("children a, b") && line.contains("stale/vm.jsonl"),
        "{line}"
    );
    assert!(
        !server.file("a.img").exists() && !server.file("b.img").exists(),
        "a refused start creates nothing"
    );
}
