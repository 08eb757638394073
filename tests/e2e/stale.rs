//! Stale ranges: writes a child missed are recorded (durably), never read
//! from it, and copied back by the resync, and nothing else is.

use std::collections::BTreeSet;

use crate::remote::block_servers;
use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";

/// Writes 4 KiB pieces at scattered offsets; returns the bytes written (the
/// pieces do not overlap).
fn scattered_writes(front: &Server, seed: u64, count: u64) -> u64 {
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
    offsets.len() as u64 * 4096
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
    let front = Sandbox::new().serve(&volume("vm", "1MiB", 2, "", &children));
    front.write_volume("vm", 0, &pattern(1, 1 << 20));

    blocks[0].kill();
    let missed = scattered_writes(&front, 2, 40);
    let r0 = child_json(&front, 0);
    assert_eq!(r0["stale_bytes"], missed, "{r0}");
    assert_eq!(
        front.metric(r#"quorum_stale_bytes{volume="vm",child="r0"}"#),
        missed as f64
    );
    // Reads never come from the stale ranges (r0 is down anyway, but its
    // ranges stay out of the vote after it is back, until resynced).
    blocks[0].restart();
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
    let missed = scattered_writes(&front, 4, 30);
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
