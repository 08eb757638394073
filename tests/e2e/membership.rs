//! Children added and removed at run time: a new child syncs before it
//! votes, QEMU's constraints hold, and the membership survives a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use reqwest::Method;
use serde_json::{Value, json};

use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";

pub fn add(server: &Server, name: &str, uri: &str) -> Resp {
    let body = json!({ "name": name, "uri": uri, "options": {} }).to_string();
    server.send(
        server
            .request(Method::POST, "/v1/volumes/vm/children")
            .body(body),
    )
}

pub fn remove(server: &Server, name: &str) -> Resp {
    server.send(server.request(Method::DELETE, &format!("/v1/volumes/vm/children/{name}")))
}

pub fn children(server: &Server) -> Vec<Value> {
    server.get("/v1/volumes/vm").json()["children"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The volume's last 16 KiB: the load below never writes there.
const TAIL: u64 = 2 * MIB - 16 * KIB;

/// A child added at run time is stale over the whole volume and `syncing`
/// until the resync has copied it: no read comes from it and it casts no
/// vote, even where its vote would decide the answer.
#[test]
fn a_new_child_syncs_under_load_without_serving_reads() {
    let sandbox = Sandbox::new();
    let truth = pattern(2, 16 * KIB as usize);
    let last = 2 * MIB - BLOCK;
    let wrong = flipped(&truth[(last - TAIL) as usize..]);
    // The new child's file holds garbage: had a read been voted with it, it
    // would have lost and been reported. In the last block it holds the same
    // wrong version as child a: had it voted there, a and d would tie 2:2
    // with b and c, and the tie would go to a's (wrong) version.
    sandbox.fill_file("d.img", 0xee, 2 * MIB);
    sandbox.write_file_at("d.img", last, &wrong);
    sandbox.mark_as_child_of("d.img", "vm");
    let config = format!(
        "resync_rate = \"1MiB\"\nchild_roots = [\".\"]\n{}",
        abc_volume("2MiB", "")
    );
    let server = Arc::new(sandbox.serve(&config));
    server.write_volume("vm", 0, &pattern(1, MIB as usize + 12_345));
    server.write_volume("vm", TAIL, &truth);
    server.write_file_at("a.img", last, &wrong);
    assert_bytes_eq(
        &server.read_volume("vm", TAIL, 16 * KIB),
        &truth,
        "a is outvoted in the last block before d is added",
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let load = {
        let (server, stop, writes) = (server.clone(), stop.clone(), writes.clone());
        let truth = truth.clone();
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 5_000 {
                // Block-aligned + 100, below TAIL (506 blocks, 7 is prime to 506).
                let offset = (i * 7 * 4096 + 100) % (TAIL - 2 * BLOCK);
                server
                    .put(&format!("{DATA}?offset={offset}"), pattern(100 + i, 5000))
                    .expect_status(204);
                let back = server.read_volume("vm", offset, 5000);
                assert_bytes_eq(&back, &pattern(100 + i, 5000), "a read during the sync");
                let tail = server.read_volume("vm", TAIL, 16 * KIB);
                assert_bytes_eq(&tail, &truth, "the tail during the sync");
                writes.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    wait_until("the load to run", || writes.load(Ordering::Relaxed) > 0);
    let r = add(&server, "d", "d.img");
    r.expect_status(201);
    let added = r.json();
    assert_eq!(added["state"], "syncing", "{added}");
    assert_eq!(
        added["stale_bytes"],
        2 * MIB,
        "stale over the volume: {added}"
    );
    assert_eq!(children(&server)[3]["name"], "d");

    // Reads of the tail while d is syncing and still holds its own bytes
    // there (checked after each read, so the read saw them too).
    let mut proven = 0;
    let deadline = std::time::Instant::now() + EFFECT_DEADLINE;
    while proven < 5 && std::time::Instant::now() < deadline {
        let tail = server.read_volume("vm", TAIL, 16 * KIB);
        assert_bytes_eq(&tail, &truth, "a read of the tail while d is syncing");
        let syncing = children(&server)[3]["state"] == "syncing";
        if !syncing || server.read_file_at("d.img", last, BLOCK as usize) != wrong {
            break;
        }
        proven += 1;
    }
    assert!(
        proven >= 1,
        "no read of the tail happened while d was syncing with its own bytes there"
    );

    wait_until("d to be synced", || {
        named(&server.all_events(), "CHILD_STATE_CHANGE")
            .iter()
            .any(|e| e["data"]["node-name"] == "d")
    });
    assert_eq!(children(&server)[3]["state"], "healthy");
    let at_sync = writes.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    load.join().expect("the load");
    assert!(
        at_sync > 10,
        "only {at_sync} rounds of load during the sync"
    );

    let events = server.all_events();
    assert!(
        reports_for(&events, "d").is_empty(),
        "d was read while syncing: {events:?}"
    );
    assert_eq!(named(&events, "CHILD_ADDED").len(), 1);
    let changed = named(&events, "CHILD_STATE_CHANGE");
    assert!(
        changed.iter().any(|e| e["data"]["node-name"] == "d"
            && e["data"]["from"] == "syncing"
            && e["data"]["to"] == "healthy"),
        "{events:?}"
    );
    // The resync copied the voted data: d now agrees with b and c, also in
    // the last block, where a still holds its wrong version.
    let b = server.read_file("b.img");
    for f in ["c.img", "d.img"] {
        assert!(
            server.read_file(f) == b,
            "{f} differs from b.img after the sync"
        );
    }
    let a = server.read_file("a.img");
    assert!(
        a[..last as usize] == b[..last as usize],
        "a.img differs from b.img"
    );
    assert_bytes_eq(&a[last as usize..], &wrong, "a's last block");
    assert_bytes_eq(
        &server.read_volume("vm", TAIL, 16 * KIB),
        &truth,
        "the tail after the sync",
    );
}

#[test]
fn removal_stops_at_the_threshold_and_membership_survives_a_restart() {
    let sandbox = Sandbox::new();
    let config = format!("child_roots = [\".\"]\n{}", abc_volume("1MiB", ""));
    let mut server = sandbox.serve(&config);
    server.write_volume("vm", 0, &pattern(2, 64 * 1024));
    add(&server, "a", "x.img").expect_error(409, "conflict");
    remove(&server, "nobody").expect_error(404, "no_such_child");
    add(&server, "d", "d.img").expect_status(201);
    wait_until("d to be synced", || {
        children(&server)[3]["state"] == "healthy"
    });
    remove(&server, "b").expect_status(204);
    remove(&server, "a").expect_status(204);
    let names: Vec<Value> = children(&server)
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("c"), json!("d")]);
    let r = remove(&server, "c");
    r.expect_error(409, "below_threshold");
    assert_bytes_eq(
        &server.read_volume("vm", 0, 64 * 1024),
        &pattern(2, 64 * 1024),
        "read from c and d",
    );
    assert_eq!(named(&server.all_events(), "CHILD_REMOVED").len(), 2);

    server.stop();
    server.restart();
    let names: Vec<Value> = children(&server)
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(
        names,
        vec![json!("c"), json!("d")],
        "the membership came back from data_dir"
    );
    assert_bytes_eq(
        &server.read_volume("vm", 0, 64 * 1024),
        &pattern(2, 64 * 1024),
        "read after the restart",
    );
}

#[test]
fn no_child_is_added_in_blkverify_mode() {
    let server = Sandbox::new().serve(&volume(
        "vm",
        "1MiB",
        2,
        "blkverify = true",
        &[child("a"), child("b")],
    ));
    add(&server, "c", "c.img").expect_error(409, "conflict");
    remove(&server, "a").expect_error(409, "below_threshold");
}

#[test]
fn one_storage_under_two_names_is_refused() {
    let sandbox = Sandbox::new();
    let dir = sandbox.file("");
    let config = format!("child_roots = [\".\"]\n{}", abc_volume("1MiB", ""));
    let server = sandbox.serve(&config);
    // The same file as child a, spelled another way; a symbolic link or a
    // `..` is not followed at run time at all.
    let absolute = format!("file://{}", dir.join("a.img").display());
    let dotted = "./sub/../a.img".to_string();
    std::fs::create_dir_all(dir.join("sub")).expect("sub dir");
    std::os::unix::fs::symlink(dir.join("a.img"), dir.join("link.img")).expect("symlink");
    let message = add(&server, "twin", &absolute).expect_error(409, "conflict");
    assert!(message.contains("\"a\""), "{absolute}: {message}");
    for uri in [dotted.as_str(), "link.img"] {
        add(&server, "twin", uri).expect_error(403, "forbidden");
    }
    assert_eq!(children(&server).len(), 3, "nothing was added");
    // In the config file too, it is refused at start.
    let failed = Sandbox::new().start_expecting_failure(&volume(
        "vm",
        "1MiB",
        2,
        "",
        &[
            child("a"),
            "  [[volume.child]]\n  name = \"b\"\n  uri = \"./a.img\"\n".to_string(),
        ],
    ));
    assert!(failed.stderr.contains("same storage"), "{}", failed.stderr);
}

#[test]
fn removing_the_only_fresh_copy_of_a_range_is_refused() {
    // Threshold 1 of 2: b fails the write at 64 KiB, so only a holds it.
    let b = child_with(
        "b",
        &fault(
            "write",
            &["offset = \"64KiB\"", "length = \"4KiB\"", "error = \"EIO\""],
        ),
    );
    let server = Sandbox::new().serve(&volume("vm", "1MiB", 1, "", &[child("a"), b]));
    server
        .put(&format!("{DATA}?offset={}", 64 * 1024), pattern(5, 4096))
        .expect_status(204);
    let message = remove(&server, "a").expect_error(409, "last_copy");
    assert!(message.contains("65536..69632"), "{message}");
    assert_eq!(children(&server).len(), 2, "a is still there");
    assert_bytes_eq(
        &server.read_volume("vm", 64 * 1024, 4096),
        &pattern(5, 4096),
        "the write after the refused removal",
    );
}

#[test]
fn a_finished_sync_is_saved_at_once() {
    // At 1 MiB/s the sync takes a second: long enough to see it saved as
    // syncing first.
    let config = format!(
        "resync_rate = \"1MiB\"\nchild_roots = [\".\"]\n{}",
        abc_volume("1MiB", "")
    );
    let server = Sandbox::new().serve(&config);
    server.write_volume("vm", 0, &pattern(8, 300_000));
    add(&server, "d", "d.img").expect_status(201);
    let saved = || -> Value {
        let text = std::fs::read(server.file("quorum-data/membership/vm.json"))
            .expect("the saved membership");
        serde_json::from_slice(&text).expect("JSON")
    };
    assert_eq!(saved()["syncing"], json!(["d"]), "{}", saved());
    wait_until("d to sync and the membership to be saved", || {
        saved()["syncing"] == json!([])
    });
    assert_eq!(saved()["children"].as_array().map(Vec::len), Some(4));
}

/// Children of the other backends added at run time (SPEC 4): an S3 child
/// (a real SeaweedFS) and a remote one (a block server), each on an
/// endpoint of `allowed_endpoints`. Each syncs to `healthy`; then the two
/// file children are removed, so every read is voted by the added two
/// alone, and a write after that lands on both (the block server's file and
/// the store's chunk object say so).
#[test]
fn s3_and_remote_children_are_added_at_run_time_and_sync() {
    let weed = crate::s3::Weed::start();
    let block = crate::remote::block_server("1MiB", "");
    let config = format!(
        "allowed_endpoints = [\"{}\", \"http://127.0.0.1:{}\"]\n{}",
        weed.endpoint(),
        block.port(),
        volume("vm", "1MiB", 1, "", &[child("a"), child("b")])
    );
    let server = Sandbox::new().serve(&config);
    let data = pattern(60, MIB as usize);
    server.write_volume("vm", 0, &data);

    let add_with = |name: &str, uri: &str, options: Value| {
        let body = json!({ "name": name, "uri": uri, "options": options }).to_string();
        server.send(
            server
                .request(Method::POST, "/v1/volumes/vm/children")
                .body(body),
        )
    };
    let s3 = add_with(
        "s",
        "s3://blocks/vm",
        json!({
            "aws_endpoint": weed.endpoint(),
            "aws_allow_http": "true",
            "aws_region": "us-east-1",
            "aws_access_key_id": crate::s3::ACCESS_KEY,
            "aws_secret_access_key": crate::s3::SECRET_KEY,
            "chunk_size": "64KiB",
        }),
    );
    s3.expect_status(201);
    assert_eq!(s3.json()["backend"], "s3", "{}", s3.preview());
    assert!(
        !s3.text().contains(crate::s3::SECRET_KEY),
        "the secret is in the answer"
    );
    let remote = add_with(
        "r",
        &format!("http://127.0.0.1:{}/v1/volumes/blk", block.port()),
        json!({ "timeout": "2s", "connect_timeout": "500ms" }),
    );
    remote.expect_status(201);
    assert_eq!(remote.json()["backend"], "http", "{}", remote.preview());
    wait_until("s and r to be synced", || {
        let cs = children(&server);
        cs.len() == 4 && cs[2..].iter().all(|c| c["state"] == "healthy")
    });

    remove(&server, "a").expect_status(204);
    remove(&server, "b").expect_status(204);
    let names: Vec<Value> = children(&server)
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("s"), json!("r")]);
    assert_bytes_eq(
        &server.read_volume("vm", 0, MIB),
        &data,
        "the volume, read from s and r alone",
    );
    let events = server.all_events();
    assert!(
        named(&events, "QUORUM_REPORT_BAD").is_empty(),
        "s and r agree everywhere: {events:?}"
    );

    let last = pattern(61, 4096);
    server.write_volume("vm", 3 * 64 * KIB, &last);
    assert_bytes_eq(
        &block.read_file_at("disk.img", 3 * 64 * KIB, 4096),
        &last,
        "the block server's file",
    );
    let chunk = crate::s3::runtime()
        .block_on(async {
            use object_store::ObjectStoreExt;
            weed.client()
                .get(&crate::s3::chunk_object("vm", 3))
                .await?
                .bytes()
                .await
        })
        .expect("read chunk 3 from the store");
    assert_bytes_eq(&chunk[..4096], &last, "chunk 3 in the store");
    assert_bytes_eq(
        &chunk[4096..],
        &data[(3 * 64 * KIB + 4096) as usize..(4 * 64 * KIB) as usize],
        "the rest of chunk 3",
    );
}
