//! `quorum import` and `quorum export`: a 256 MiB sparse image in and out,
//! byte for byte, its holes kept on both sides, its BLAKE3 printed.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::{QUORUM, Ran, quorum, run_in};
use crate::util::*;

const SIZE: u64 = 256 * MIB;

/// A sparse image of [`SIZE`] bytes at `path`: data extents of many sizes
/// (some not block-aligned), holes between, nothing past 192 MiB.
fn sparse_image(path: &Path) -> u64 {
    let f = File::create(path).expect("create the image");
    f.set_len(SIZE).expect("size the image");
    let mut rng = Rng(17);
    let mut written = 0;
    for i in 0..48u64 {
        let len = match i % 4 {
            0 => 4 * KIB,
            1 => 1000 + rng.below(3000),
            2 => MIB + rng.below(MIB),
            _ => 64 * KIB,
        };
        let offset = i * 4 * MIB + rng.below(2 * MIB);
        f.write_all_at(&pattern(i + 1, len as usize), offset)
            .expect("write the image");
        written += len;
    }
    written
}

/// The bytes a file takes on disk.
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").blocks() * 512
}

/// The volume's block status, every page of it.
fn block_status(server: &Server) -> Vec<(u64, u64, bool)> {
    let mut at = 0;
    let mut all = Vec::new();
    while at < SIZE {
        let r = server.get(&format!(
            "/v1/volumes/vm/block-status?offset={at}&length={}",
            SIZE - at
        ));
        r.expect_status(200);
        for e in r.json().as_array().expect("a list of extents") {
            let (o, l) = (e["offset"].as_u64(), e["length"].as_u64());
            all.push((o.expect("offset"), l.expect("length"), e["zero"] == true));
        }
        match r.header("quorum-next-offset") {
            Some(next) => at = next.parse().expect("a number"),
            None => break,
        }
    }
    all
}

/// The line `HEX  FILE` a copy prints, for `name`.
#[track_caller]
fn checksum_line(text: &str, name: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.ends_with(&format!("  {name}")))
        .unwrap_or_else(|| panic!("no `HEX  {name}` line in {text:?}"));
    line.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_sparse_image_goes_in_and_out_byte_for_byte_with_its_holes() {
    let server = Sandbox::new().serve(&abc_volume("256MiB", ""));
    let image = server.file("image.raw");
    let written = sparse_image(&image);
    let image_bytes = fs::read(&image).expect("read the image");
    let hash = blake3::hash(&image_bytes).to_hex().to_string();
    // Data where the image has holes: the import must zero it.
    server.write_volume("vm", 200 * MIB, &pattern(99, 4 * MIB as usize));
    let image_arg = image.display().to_string();

    let ran = quorum(&server, &["import", "vm", &image_arg]);
    let out = ran.ok();
    assert_eq!(checksum_line(&out, &image_arg), hash, "the import's BLAKE3");
    assert!(ran.stderr.contains("imported"), "{}", ran.stderr);
    assert_bytes_eq(
        &server.read_file("a.img"),
        &image_bytes,
        "child a after the import",
    );
    assert_bytes_eq(
        &server.read_file("c.img"),
        &image_bytes,
        "child c after the import",
    );
    // Holes stay holes: the volume holds no more data than the image.
    let map = block_status(&server);
    let data: u64 = map.iter().filter(|e| !e.2).map(|e| e.1).sum();
    assert!(
        data <= allocated(&image) && data >= written,
        "the volume holds {data} bytes of data for an image of {written} written, {} allocated: {map:?}",
        allocated(&image)
    );
    assert!(
        map.iter()
            .filter(|e| e.0 < 204 * MIB && e.0 + e.1 > 200 * MIB)
            .all(|e| e.2),
        "the data under the image's hole at 200 MiB was zeroed: {map:?}"
    );

    let out_path = server.file("exported.raw");
    let out_arg = out_path.display().to_string();
    let out = quorum(&server, &["export", "vm", &out_arg]).ok();
    assert_eq!(checksum_line(&out, &out_arg), hash, "the export's BLAKE3");
    assert_bytes_eq(
        &fs::read(&out_path).expect("read"),
        &image_bytes,
        "the export",
    );
    assert_eq!(fs::metadata(&out_path).expect("stat").len(), SIZE);
    assert!(
        allocated(&out_path) <= allocated(&image),
        "the export takes {} bytes on disk, the image {}",
        allocated(&out_path),
        allocated(&image)
    );

    // Through a pipe both ways: every byte, the same hash.
    let ran = quorum(&server, &["export", "vm", "-"]);
    ran.code(0);
    assert_bytes_eq(&ran.stdout, &image_bytes, "export to stdout");
    assert_eq!(checksum_line(&ran.stderr, "-"), hash, "{}", ran.stderr);
    server.write_volume("vm", 240 * MIB, &pattern(98, MIB as usize));
    let url = server.url("");
    let ran = run_in(
        &server,
        QUORUM,
        &["--url", &url, "import", "vm", "-"],
        &[],
        Some(image),
    );
    assert_eq!(checksum_line(&ran.ok(), "-"), hash);
    assert_bytes_eq(
        &server.read_file("b.img"),
        &image_bytes,
        "child b after stdin",
    );
    // From a pipe, zeros become holes in runs of 64 KiB: at most two
    // runs more an extent of the image than from the file.
    let map = block_status(&server);
    let data_after: u64 = map.iter().filter(|e| !e.2).map(|e| e.1).sum();
    let slack = 48 * 2 * 64 * KIB;
    assert!(
        data_after <= allocated(&server.file("image.raw")) + slack,
        "stdin's zeros became holes: {data_after} bytes of data"
    );
    assert!(
        map.iter()
            .filter(|e| e.0 < 241 * MIB && e.0 + e.1 > 240 * MIB)
            .all(|e| e.2),
        "the data under the image's hole at 240 MiB was zeroed: {map:?}"
    );
}

#[test]
fn an_image_larger_than_the_volume_changes_nothing() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    server.write_volume("vm", 0, &pattern(7, MIB as usize));
    let before = server.snapshot(&ABC);
    let big = server.file("big.raw");
    fs::write(&big, pattern(8, 2 * MIB as usize)).expect("write the image");
    let ran: Ran = quorum(&server, &["import", "vm", &big.display().to_string()]);
    let line = ran.error_line();
    assert!(
        line.contains("more than") && line.contains("nothing was written"),
        "{line}"
    );
    server.assert_unchanged(&before, "a refused import");
    let missing = server.file("missing.raw").display().to_string();
    let line = quorum(&server, &["import", "vm", &missing]).error_line();
    assert!(line.contains("missing.raw"), "{line}");
    let line = quorum(&server, &["export", "nope", "x.raw"]).error_line();
    assert!(line.starts_with("error: 404 no_such_volume"), "{line}");
}

/// An image named by a path that is a pipe (`<(zcat image.gz)`, a FIFO)
/// is read to its end as stdin is, not taken for an empty file: every
/// byte lands (zeros over old data too), the rest of the volume is
/// untouched, and the BLAKE3 is the image's.
#[test]
fn an_image_from_a_pipe_is_read_to_its_end() {
    let server = Sandbox::new().serve(&abc_volume("4MiB", ""));
    let old = pattern(5, 4 * MIB as usize);
    server.write_volume("vm", 0, &old);
    // Not a multiple of 4 KiB, with a run of zeros over old data.
    let len = 3 * MIB as usize + 1234;
    let mut image = pattern(6, len);
    image[MIB as usize..2 * MIB as usize].fill(0);
    let path = server.file("image.raw");
    fs::write(&path, &image).expect("write the image");
    let script = format!(
        "exec '{QUORUM}' --url '{}' import vm <(cat '{}')",
        server.url(""),
        path.display()
    );
    let out = run_in(&server, "bash", &["-c", &script], &[], None).ok();
    let hash = out.split_whitespace().next().unwrap_or_default();
    assert_eq!(hash, blake3::hash(&image).to_hex().as_str(), "{out}");
    let after = server.read_volume("vm", 0, 4 * MIB);
    assert_bytes_eq(&after[..len], &image, "the volume after the import");
    assert_bytes_eq(&after[len..], &old[len..], "the volume past the image");
}

/// Stdin longer than the volume: what fits is imported (zeros included)
/// and flushed, then the import fails with one line that says so, and
/// prints no checksum.
#[test]
fn stdin_longer_than_the_volume_fills_it_and_fails() {
    let server = Sandbox::new().serve(&abc_volume("1MiB", ""));
    server.write_volume("vm", 0, &pattern(7, MIB as usize));
    // Its last quarter within the volume is zeros over old data.
    let mut image = pattern(8, MIB as usize + 5000);
    image[768 * KIB as usize..MIB as usize].fill(0);
    let path = server.file("long.raw");
    fs::write(&path, &image).expect("write the image");
    let url = server.url("");
    let ran = run_in(
        &server,
        QUORUM,
        &[
            "--url",
            &url,
            "import",
            "vm",
            "-",
            "--request-size",
            "256KiB",
        ],
        &[],
        Some(path),
    );
    let line = ran.error_line();
    assert!(
        line.contains("longer than volume vm") && line.contains("first 1048576 bytes"),
        "{line}"
    );
    assert!(ran.stdout.is_empty(), "no checksum: {}", ran.stdout());
    assert_bytes_eq(
        &server.read_volume("vm", 0, MIB),
        &image[..MIB as usize],
        "the volume holds what fits",
    );
}

/// A volume exported to a path that is a pipe (a FIFO, `>(zstd > x)`)
/// gets every byte, holes as zeros, as stdout does: it cannot be sized
/// like a file.
#[test]
fn a_volume_exported_to_a_pipe_gets_every_byte() {
    let server = Sandbox::new().serve(&abc_volume("4MiB", ""));
    let data = pattern(9, MIB as usize + 1000);
    server.write_volume("vm", MIB, &data);
    let mut volume = vec![0u8; 4 * MIB as usize];
    volume[MIB as usize..MIB as usize + data.len()].copy_from_slice(&data);
    let fifo = server.file("volume.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader_path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(fs::read(&reader_path));
    });
    let fifo_arg = fifo.display().to_string();
    let ran = quorum(&server, &["export", "vm", &fifo_arg]);
    let read = match rx.recv_timeout(std::time::Duration::from_secs(2)) {
        Ok(read) => read,
        Err(_) => {
            // Quorum never opened it: a writer that closes at once ends
            // the read.
            drop(fs::OpenOptions::new().write(true).open(&fifo));
            rx.recv_timeout(std::time::Duration::from_secs(5))
                .expect("the reader ends")
        }
    };
    let out = ran.ok();
    let got = read.expect("read the pipe");
    assert_bytes_eq(&got, &volume, "the bytes through the pipe");
    assert_eq!(
        checksum_line(&out, &fifo_arg),
        blake3::hash(&volume).to_hex().as_str()
    );
}
