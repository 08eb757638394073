//! Disk images in and out of a volume: `qemu-img convert` from a raw and
//! from a qcow2 image, and `nbdcopy`, each into the volume over NBD and
//! back out to a file, which must be byte-identical to the source; and
//! the source's holes stay holes in the volume's block status, since both
//! tools skip (write as zeroes) what reads as zero.

use std::ops::Range;

use super::{MapRow, nbdinfo_map, run, url, with_nbd};
use crate::util::*;

/// The image and the volume: 64 MiB.
const IMAGE: u64 = 64 * MIB;

/// A raw image of [`IMAGE`] bytes in the sandbox: random data at
/// scattered 4 KiB-aligned offsets, holes between (a seeded [`Rng`]);
/// returns the data ranges, in order.
fn scattered_image(sandbox: &Sandbox, name: &str, seed: u64) -> Vec<Range<u64>> {
    sandbox.create_file(name, IMAGE);
    let mut rng = Rng(seed);
    let mut extents = Vec::new();
    for slot in 0..IMAGE / MIB {
        if rng.below(2) == 0 {
            continue;
        }
        let start = slot * MIB + rng.below(128) * BLOCK;
        let len = rng.range(1, 100) * BLOCK;
        sandbox.write_file_at(name, start, &pattern(seed ^ slot, len as usize));
        extents.push(start..start + len);
    }
    assert!(
        extents.len() >= 16,
        "seed {seed} gave only {} extents",
        extents.len()
    );
    extents
}

/// A volume `vm` of [`IMAGE`] bytes on three file children, over NBD.
fn image_volume() -> String {
    with_nbd(&abc_volume("64MiB", ""))
}

/// Asserts that the map holds data on exactly the 4 KiB blocks of
/// `extents` and holes everywhere else.
#[track_caller]
fn assert_map_matches(map: &[MapRow], extents: &[Range<u64>], what: &str) {
    let blocks = (IMAGE / BLOCK) as usize;
    let mut want = vec![false; blocks];
    for e in extents {
        want[(e.start / BLOCK) as usize..(e.end / BLOCK) as usize].fill(true);
    }
    let mut got = vec![None; blocks];
    for &(offset, length, kind) in map {
        assert!(
            offset % BLOCK == 0 && length % BLOCK == 0,
            "{what}: an extent not on 4 KiB blocks: {offset} +{length}"
        );
        let data = kind & 1 == 0;
        got[(offset / BLOCK) as usize..((offset + length) / BLOCK) as usize].fill(Some(data));
    }
    for (block, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(
            Some(*w),
            *g,
            "{what}: block {block} (byte {}) should be {} in the map:\n{map:?}",
            block as u64 * BLOCK,
            if *w { "data" } else { "a hole" }
        );
    }
}

/// Makes the image, turns it into the source to import (`source_of`
/// gets the sandbox and the raw image's path), imports it into a fresh
/// volume with `import(source, url)`, checks the volume's map, exports it
/// with `export(url, out)` and compares `out` with the raw image; the
/// children stay identical and nothing is reported.
fn round_trip(
    source_of: impl FnOnce(&Sandbox, &str) -> String,
    import: impl FnOnce(&str, &str),
    export: impl FnOnce(&str, &str),
) {
    let sandbox = Sandbox::new();
    let extents = scattered_image(&sandbox, "image.raw", 0x5eed);
    let raw = sandbox.file("image.raw").display().to_string();
    let source = source_of(&sandbox, &raw);
    let out = sandbox.file("out.raw").display().to_string();
    let server = sandbox.serve(&image_volume());
    let vm = url(&server, "vm");

    import(&source, &vm);
    assert_map_matches(
        &nbdinfo_map(&vm),
        &extents,
        "the volume's block status after the import",
    );
    export(&vm, &out);
    run("cmp", &[&raw, &out]);
    for f in ["b.img", "c.img"] {
        assert_bytes_eq(
            &server.read_file(f),
            &server.read_file("a.img"),
            &format!("{f} against a.img"),
        );
    }
    let events = server.all_events();
    assert!(
        events.is_empty(),
        "a clean round trip gave events: {events:?}"
    );
}

/// `qemu-img convert -n` of a raw image into the volume, then out to a
/// raw file: identical; the source's holes are holes in the volume.
#[test]
fn raw_image_round_trips_with_qemu_img_convert() {
    round_trip(
        |_, raw| raw.to_string(),
        |src, vm| {
            run(
                "qemu-img",
                &["convert", "-n", "-p", "-f", "raw", "-O", "raw", src, vm],
            );
        },
        |vm, out| {
            run(
                "qemu-img",
                &["convert", "-p", "-f", "raw", "-O", "raw", vm, out],
            );
        },
    );
}

/// The same from a qcow2 image made of the raw one.
#[test]
fn qcow2_image_round_trips_with_qemu_img_convert() {
    round_trip(
        |sandbox, raw| {
            let qcow2 = sandbox.file("image.qcow2").display().to_string();
            run(
                "qemu-img",
                &["convert", "-f", "raw", "-O", "qcow2", raw, &qcow2],
            );
            qcow2
        },
        |src, vm| {
            run(
                "qemu-img",
                &["convert", "-n", "-p", "-f", "qcow2", "-O", "raw", src, vm],
            );
        },
        |vm, out| {
            run(
                "qemu-img",
                &["convert", "-p", "-f", "raw", "-O", "raw", vm, out],
            );
        },
    );
}

/// The same with `nbdcopy`, in and out (it uses up to 4 connections).
#[test]
fn raw_image_round_trips_with_nbdcopy() {
    round_trip(
        |_, raw| raw.to_string(),
        |src, vm| {
            run("nbdcopy", &["--progress", src, vm]);
        },
        |vm, out| {
            run("nbdcopy", &[vm, out]);
        },
    );
}
