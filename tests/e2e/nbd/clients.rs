//! Real clients on the export: qemu-io round trips with HTTP, qemu-img
//! info, and nbdinfo's description and list of the exports.

use std::time::Duration;

use serde_json::Value;

use super::{SIZE, nbd_config, nbdinfo_map, output, qemu_io, run, url, with_nbd};
use crate::util::*;

/// A pattern written with qemu-io reads back over HTTP and over NBD;
/// HTTP writes read back over NBD; write zeroes, discard and flush work;
/// the children stay identical; the metrics count the connection.
#[test]
fn qemu_io_round_trips_with_http() {
    let server = Sandbox::new().serve(&nbd_config());
    let vm = url(&server, "vm");

    qemu_io(
        &vm,
        &["write -P 0xab 4096 65536", "read -P 0xab 4096 65536"],
    );
    let back = server.read_volume("vm", 4096, 65536);
    assert_all_bytes(&back, 0xab, "the NBD write read over HTTP");

    server.write_volume("vm", MIB, &vec![0xcd; 65536]);
    qemu_io(&vm, &["read -P 0xcd 1M 64k", "read -P 0 0 4096"]);

    // Write zeroes (with and without a hole), discard and flush.
    qemu_io(
        &vm,
        &[
            "write -P 0x11 2M 1M",
            "write -z 2M 256k",
            "write -z -u 3M 64k",
            "discard 2560k 64k",
            "flush",
            "read -P 0 2M 256k",
            "read -P 0 2560k 64k",
            "read -P 0x11 2624k 64k",
        ],
    );
    assert_all_bytes(
        &server.read_volume("vm", 2 * MIB, 256 * KIB),
        0,
        "zeroes over HTTP",
    );
    for f in ABC {
        assert_all_bytes(
            &server.read_file_at(f, 2 * MIB, 256 * 1024),
            0,
            &format!("{f} after write -z"),
        );
        assert_all_bytes(
            &server.read_file_at(f, 4096, 65536),
            0xab,
            &format!("{f} after the NBD write"),
        );
    }

    // The empty export name selects the only volume.
    qemu_io(&url(&server, ""), &["read -P 0xab 4096 65536"]);

    let writes = server.metric(r#"quorum_requests_total{volume="vm",op="write"}"#);
    assert!(writes >= 3.0, "NBD writes are counted: {writes}");
    let mut connections = 1.0;
    for _ in 0..100 {
        connections = server.metric(r#"quorum_nbd_connections{volume="vm"}"#);
        if connections == 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(connections, 0.0, "every NBD client has gone");
}

/// `nbdinfo --json` describes the export as advertised; `nbdinfo --map`
/// shows written ranges as data and the rest as holes.
#[test]
fn nbdinfo_describes_and_maps_the_export() {
    let server = Sandbox::new().serve(&nbd_config());
    let vm = url(&server, "vm");
    qemu_io(&vm, &["write -P 0x77 1M 128k"]);

    let info: Value = serde_json::from_str(&run("nbdinfo", &["--json", &vm]))
        .expect("nbdinfo --json prints JSON");
    let export = &info["exports"][0];
    assert_eq!(export["export-name"], "vm", "{info}");
    assert_eq!(export["export-size"], SIZE, "{info}");
    for flag in [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_multi_conn",
        "can_cache",
    ] {
        assert_eq!(export[flag], true, "{flag}: {info}");
    }
    assert_eq!(export["is_read_only"], false, "{info}");
    assert_eq!(export["block_size_minimum"], 1, "{info}");
    assert_eq!(export["block_size_preferred"], 4096, "{info}");
    assert_eq!(export["block_size_maximum"], 32 * MIB, "{info}");
    assert_eq!(info["protocol"], "newstyle-fixed", "{info}");
    assert_eq!(info["TLS"], false, "{info}");
    let contexts = export["contexts"].to_string();
    assert!(contexts.contains("base:allocation"), "{info}");

    assert_eq!(
        nbdinfo_map(&vm),
        [
            (0, MIB, 3),
            (MIB, 128 * KIB, 0),
            (MIB + 128 * KIB, SIZE - MIB - 128 * KIB, 3)
        ],
        "nbdinfo --map"
    );
}

/// With two volumes, `nbdinfo --list --json` lists both exports with their
/// sizes, each export reaches its own volume, and the empty export name
/// (which picks the only volume) names none.
#[test]
fn nbdinfo_lists_every_volume() {
    let config = with_nbd(&format!(
        "{}{}",
        abc_volume("16MiB", ""),
        volume("data", "8MiB", 2, "", &[child("d"), child("e"), child("f")])
    ));
    let server = Sandbox::new().serve(&config);
    let base = format!("nbd://{}", server.nbd_addr());

    let list: Value = serde_json::from_str(&run("nbdinfo", &["--list", "--json", &base]))
        .expect("nbdinfo --list --json prints JSON");
    let mut exports: Vec<(&str, u64)> = list["exports"]
        .as_array()
        .unwrap_or_else(|| panic!("no exports in {list}"))
        .iter()
        .map(|e| {
            (
                e["export-name"].as_str().unwrap_or("?"),
                e["export-size"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    exports.sort();
    assert_eq!(
        exports,
        [("data", 8 * MIB), ("vm", SIZE)],
        "nbdinfo --list: {list}"
    );

    qemu_io(&url(&server, "data"), &["write -P 0x66 0 4k"]);
    assert_all_bytes(
        &server.read_volume("data", 0, 4096),
        0x66,
        "the write to the export `data`",
    );
    assert_all_bytes(
        &server.read_volume("vm", 0, 4096),
        0,
        "vm, untouched by the write to `data`",
    );

    // The empty name: NBD_REP_ERR_UNKNOWN, and nbdinfo fails.
    let mut s = nbd_tcp(server.nbd_addr()).expect("connect to the NBD port");
    greet(&mut s).expect("the greeting");
    send_option(&mut s, opt::GO, &go_data("")).expect("send NBD_OPT_GO");
    let (option, kind, message) = option_reply(&mut s).expect("a reply to NBD_OPT_GO");
    assert_eq!(
        (option, kind),
        (opt::GO, rep::ERR_UNKNOWN),
        "the empty export name with two volumes: {}",
        String::from_utf8_lossy(&message)
    );
    let empty = output("nbdinfo", &[&format!("{base}/")]);
    assert!(
        !empty.status.success() && !empty.stderr.is_empty(),
        "the empty export name with two volumes: nbdinfo succeeded: {}",
        String::from_utf8_lossy(&empty.stdout)
    );
}
