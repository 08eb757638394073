//! Stale ranges: writes a child missed are recorded (durably), never read
//! from it, and copied back by the resync, and nothing else is.

use std::collections::BTreeSet;

use crate::remote::block_servers;
use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";

/// Writes 4 KiB pieces at scattered offsets; returns the offsets written
/// (the pieces do not overlap).
fn scattered_writes(front: &Server, seed: u64, count: u64) -> BTreeSet<u64> {
    let mut offsets = BTreeSet::new();
    for i in 0..count {
        let offset = ((i * 7919 + seed * 104_729) % 200) * 4096;
        if offsets.insert(offset) {
            front
                .put(
                    &format!("{DATA}?offset={offset}"),
                    pattern(seed * 1000 + i, 4096),
                )
                .expect_status(204);
        }
    }
    offsets
}

fn child_json(front: &Server, i: usize) -> serde_json::Value {
    front.get("/v1/volumes/vm").json()["children"][i].clone()
}

/// Waits until the front's child 0 has nothing stale, and returns the bytes
/// the resync copied onto it.
fn wait_for_resync(front: &Server) -> f64 {
    wait_until("the resync of r0", || {
        child_json(front, 0)["stale_bytes"] == 0
    });
    front.metric(r#"quorum_repaired_bytes_total{volume="vm",child="r0"}"#)
}

#[test]
fn a_child_that_was_down_gets_only_what_it_missed() {
    let (mut blocks, children) = block_servers(3);
    // A slow resync (4 KiB ranges at 128 KiB/s), so that reads meet r0 while
    // it is back but still stale.
    let config = format!(
        "resync_rate = \"128KiB\"\n{}",
        volume("vm", "1MiB", 2, "", &children)
    );
    let front = Sandbox::new().serve(&config);
    front.write_volume("vm", 0, &pattern(1, 1 << 20));

    blocks[0].kill();
    let offsets = scattered_writes(&front, 2, 40);
    let missed = offsets.len() as u64 * 4096;
    let r0 = child_json(&front, 0);
    assert_eq!(r0["stale_bytes"], missed, "{r0}");
    assert_eq!(
        front.metric(r#"quorum_stale_bytes{volume="vm",child="r0"}"#),
        missed as f64
    );
    // Reads never come from the stale ranges: once r0 is back, its ranges
    // stay out of the vote until resynced. To make its vote decide, r2 is
    // given r0's old version of a block for one read: had r0 voted, the old
    // version would have its 2 votes and be returned; without r0, r1 and r2
    // disagree and the read fails.
    blocks[0].restart();
    wait_until("r0 to be reachable again (the resync started)", || {
        child_json(&front, 0)["stale_bytes"].as_u64() < Some(missed)
    });
    let mut proven = 0;
    for &off in offsets.iter().rev() {
        let old = blocks[0].read_file_at("disk.img", off, 4096);
        let new = blocks[1].read_file_at("disk.img", off, 4096);
        if old == new {
            // Resynced already (the resync goes by offset, the loop by
            // write order): nothing left to prove here.
            continue;
        }
        blocks[2].write_file_at("disk.img", off, &old);
        let r = front.get_range(DATA, &format!("bytes={off}-{}", off + 4095));
        // r0 still held the old version after the read, so during it too.
        let still_old = blocks[0].read_file_at("disk.img", off, 4096) == old;
        blocks[2].write_file_at("disk.img", off, &new);
        assert!(
            r.body != old,
            "a read at {off} returned r0's stale version ({} {})",
            r.status,
            r.request
        );
        if still_old {
            r.expect_error(503, "quorum_failure");
            proven += 1;
            if proven == 5 {
                break;
            }
        }
    }
    assert!(
        proven > 0,
        "every range was resynced before a read could meet it stale"
    );
    let copied = wait_for_resync(&front);
    assert_eq!(
        copied, missed as f64,
        "the resync copied exactly the missed ranges, not the disk"
    );
    let disk = |b: &Server| b.read_file("disk.img");
    assert!(
        disk(&blocks[0]) == disk(&blocks[1]) && disk(&blocks[1]) == disk(&blocks[2]),
        "children differ after the resync"
    );
    // r0 was reported for the writes it missed, never as a loser of a vote.
    let events = front.all_events();
    let votes_lost: Vec<_> = reports_for(&events, "r0")
        .into_iter()
        .filter(|e| e["data"]["error"].is_null())
        .collect();
    assert!(votes_lost.is_empty(), "r0 voted: {votes_lost:?}");
    assert_eq!(child_json(&front, 0)["state"], "healthy");
    let state = |s: &str| {
        front.metric(&format!(
            r#"quorum_child_state{{volume="vm",child="r0",state="{s}"}}"#
        ))
    };
    assert_eq!(
        (state("healthy"), state("stale"), state("failed")),
        (1.0, 0.0, 0.0)
    );
    assert_eq!(
        front.metric(r#"quorum_stale_bytes{volume="vm",child="r0"}"#),
        0.0
    );
}

#[test]
fn the_stale_map_survives_a_crash_of_the_front() {
    let (mut blocks, children) = block_servers(3);
    let mut front = Sandbox::new().serve(&volume("vm", "1MiB", 2, "", &children));
    front.write_volume("vm", 0, &pattern(3, 1 << 20));
    blocks[0].kill();
    let missed = scattered_writes(&front, 4, 30).len() as u64 * 4096;
    assert_eq!(child_json(&front, 0)["stale_bytes"], missed);

    // kill -9 between the missed writes and the resync.
    front.kill();
    blocks[0].restart();
    front.restart();
    let copied = wait_for_resync(&front);
    assert_eq!(
        copied, missed as f64,
        "the map came back from the journal and was resynced"
    );
    let disk = |b: &Server| b.read_file("disk.img");
    assert!(
        disk(&blocks[0]) == disk(&blocks[1]),
        "children differ after the resync"
    );
}
