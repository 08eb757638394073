//! An S3 chunk that cannot be read (its object was cut short behind
//! quorum's back) is rebuilt whole from the vote, by the resync and by a
//! scrub with repair, rather than patched forever (issue 11, defect 6).

use object_store::{ObjectStoreExt, PutPayload};

use crate::s3::{Weed, chunk_object, runtime, s3_child};
use crate::scrub::{scrub, wait_done};
use crate::util::*;

const DATA: &str = "/v1/volumes/vm/data";
/// The chunk size of `s3_child`.
const CHUNK: u64 = 64 * 1024;

/// Cuts chunk `index` of the store down to 100 bytes: every read of it fails.
fn break_chunk(weed: &Weed, rt: &tokio::runtime::Runtime, index: u64) {
    rt.block_on(
        weed.client()
            .put(&chunk_object("vm", index), PutPayload::from(vec![7u8; 100])),
    )
    .expect("cut the chunk short");
}

fn chunk_bytes(weed: &Weed, rt: &tokio::runtime::Runtime, index: u64) -> Vec<u8> {
    rt.block_on(async {
        weed.client()
            .get(&chunk_object("vm", index))
            .await?
            .bytes()
            .await
    })
    .expect("read the chunk object")
    .to_vec()
}

fn s_state(server: &Server) -> serde_json::Value {
    server.get("/v1/volumes/vm").json()["children"][2].clone()
}

#[test]
fn an_unreadable_chunk_is_rebuilt_by_the_resync_and_by_a_scrub() {
    let weed = Weed::start();
    let rt = runtime();
    let server = Sandbox::new().serve(&volume(
        "vm",
        "1MiB",
        2,
        "",
        &[child("a"), child("b"), s3_child("s", &weed, "vm")],
    ));
    let mut data = pattern(11, 4 * CHUNK as usize);
    server.write_volume("vm", 0, &data);

    // Resync: a 4 KiB write into the broken chunk 1 cannot patch it on s
    // (the rest of the chunk cannot be read), so s misses it; the resync
    // must rebuild the whole chunk from a and b.
    break_chunk(&weed, &rt, 1);
    let piece = pattern(12, 4096);
    let at = CHUNK as usize + 4096;
    server
        .put(&format!("{DATA}?offset={at}"), piece.clone())
        .expect_status(204);
    data[at..at + 4096].copy_from_slice(&piece);
    wait_until("s to be resynced", || s_state(&server)["stale_bytes"] == 0);
    assert_bytes_eq(
        &chunk_bytes(&weed, &rt, 1),
        &data[CHUNK as usize..2 * CHUNK as usize],
        "chunk 1 of s after the resync",
    );

    // Scrub with repair: chunk 2 broken, nothing written there.
    break_chunk(&weed, &rt, 2);
    let id = scrub(&server, true);
    let job = wait_done(&server, id);
    assert_eq!(job["state"], "completed", "{job}");
    assert_bytes_eq(
        &chunk_bytes(&weed, &rt, 2),
        &data[2 * CHUNK as usize..3 * CHUNK as usize],
        "chunk 2 of s after the scrub",
    );
    assert_bytes_eq(&server.read_volume("vm", 0, 4 * CHUNK), &data, "the volume");
}
