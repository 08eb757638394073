//! Block status over NBD (`base:allocation`): `qemu-img map` and
//! `nbdinfo --map` see written ranges as data, never-written ranges as
//! holes, and a range that only one child holds as data as data (SPEC 9:
//! a hole only where every child says zero).

use serde_json::Value;

use super::{SIZE, nbd_config, nbdinfo_map, qemu_io, run, url};
use crate::util::*;

/// `qemu-img info` sees the size; `qemu-img map` (block status with
/// base:allocation) sees written ranges as data and the rest as zero.
#[test]
fn qemu_img_info_and_map() {
    let server = Sandbox::new().serve(&nbd_config());
    let vm = url(&server, "vm");
    qemu_io(&vm, &["write -P 0x5a 0 64k", "write -P 0x5a 8M 4k"]);

    let info: Value = serde_json::from_str(&run(
        "qemu-img",
        &["info", "--output=json", "-f", "raw", &vm],
    ))
    .expect("qemu-img info prints JSON");
    assert_eq!(info["virtual-size"], SIZE, "{info}");

    let map: Value = serde_json::from_str(&run(
        "qemu-img",
        &["map", "--output=json", "-f", "raw", &vm],
    ))
    .expect("qemu-img map prints JSON");
    let map = map.as_array().expect("a list of extents");
    let expect = [
        (0, 64 * KIB, true),
        (64 * KIB, 8 * MIB - 64 * KIB, false),
        (8 * MIB, 4 * KIB, true),
        (8 * MIB + 4 * KIB, SIZE - 8 * MIB - 4 * KIB, false),
    ];
    let got: Vec<(u64, u64, bool)> = map
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap_or(u64::MAX),
                e["length"].as_u64().unwrap_or(u64::MAX),
                e["data"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(got, expect, "qemu-img map: {map:?}");
    for e in map {
        assert_eq!(e["zero"], !e["data"].as_bool().unwrap_or(true), "{e}");
    }
}

/// A range the volume never wrote but that child b holds as data (bytes
/// put in b.img behind the server's back) is data in `nbdinfo --map` and
/// in HTTP block status, not a hole: SPEC 9 and §5 say a hole only where
/// every child says zero. Never-written ranges stay holes, written ones
/// are data; the read there still votes b down.
#[test]
fn data_on_one_child_is_data_in_the_map() {
    let sandbox = Sandbox::new();
    for f in ABC {
        sandbox.create_file(f, SIZE);
    }
    sandbox.write_file_at("b.img", 4 * MIB, &pattern(41, 64 * KIB as usize));
    let server = sandbox.serve(&nbd_config());
    let vm = url(&server, "vm");
    qemu_io(&vm, &["write -P 0x77 1M 128k"]);

    let expect = [
        (0, MIB, 3),
        (MIB, 128 * KIB, 0),
        (MIB + 128 * KIB, 3 * MIB - 128 * KIB, 3),
        (4 * MIB, 64 * KIB, 0),
        (4 * MIB + 64 * KIB, SIZE - 4 * MIB - 64 * KIB, 3),
    ];
    assert_eq!(nbdinfo_map(&vm), expect, "nbdinfo --map");

    let status = server
        .get(&format!(
            "/v1/volumes/vm/block-status?offset={}&length={}",
            4 * MIB - 64 * KIB,
            192 * KIB
        ))
        .json();
    let got: Vec<(u64, u64, bool)> = status
        .as_array()
        .unwrap_or_else(|| panic!("block-status is not a list: {status}"))
        .iter()
        .map(|e| {
            (
                e["offset"].as_u64().unwrap_or(u64::MAX),
                e["length"].as_u64().unwrap_or(u64::MAX),
                e["zero"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (4 * MIB - 64 * KIB, 64 * KIB, true),
            (4 * MIB, 64 * KIB, false),
            (4 * MIB + 64 * KIB, 64 * KIB, true)
        ],
        "HTTP block status around b's data"
    );

    // The data is b's alone: the vote returns the zeros of a and c.
    qemu_io(&vm, &["read -P 0 4M 64k"]);
    let events = server.all_events();
    let reports = reports_for(&events, "b");
    assert_eq!(reports.len(), 1, "b outvoted once: {reports:?}");
    assert_eq!(
        (
            data_u64(reports[0], "offset"),
            data_u64(reports[0], "bytes")
        ),
        (4 * MIB, 64 * KIB),
        "{}",
        reports[0]
    );
}
