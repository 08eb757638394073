//! The configs a start refuses (SPEC section 2), shared by the start-up
//! tests and those of `quorum-server check`.

use super::{MIB, Sandbox, child, child_with, fault, volume};

/// A config a start refuses with one line on stderr.
pub struct BadConfig {
    /// What is wrong, for messages.
    pub what: &'static str,
    /// The config.
    pub config: String,
    /// Words the one-line refusal must contain.
    pub words: Vec<&'static str>,
    /// Whether only opening the children shows it (a file of another
    /// size, a directory that does not exist), so that `check --offline`
    /// accepts it.
    pub found_by_opening: bool,
}

/// A sandbox for [`bad_configs`]: `left.img` of 1 MiB, `right.img` of
/// 2 MiB, and `folder.img`, a directory.
pub fn bad_config_sandbox() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.create_file("left.img", MIB);
    sandbox.create_file("right.img", 2 * MIB);
    std::fs::create_dir(sandbox.file("folder.img")).expect("create folder.img");
    sandbox
}

/// Every bad config of the start-up tests, in [`bad_config_sandbox`].
pub fn bad_configs() -> Vec<BadConfig> {
    let abc = || vec![child("a"), child("b"), child("c")];
    let config_cases = vec![
        (
            "threshold 0",
            volume("vm", "1MiB", 0, "", &abc()),
            vec!["vm", "threshold"],
        ),
        (
            "threshold above the children",
            volume("vm", "1MiB", 4, "", &abc()),
            vec!["vm", "threshold"],
        ),
        (
            "unknown read pattern",
            volume("vm", "1MiB", 2, "read_pattern = \"random\"", &abc()),
            vec!["vm", "random"],
        ),
        (
            "unknown key",
            volume("vm", "1MiB", 2, "colour = \"blue\"", &abc()),
            vec!["colour"],
        ),
        (
            "bad size",
            volume("vm", "ten megs", 2, "", &abc()),
            vec!["ten megs"],
        ),
        ("no child", volume("vm", "1MiB", 1, "", &[]), vec!["vm"]),
        (
            "bad volume name",
            volume("bad/name", "1MiB", 2, "", &abc()),
            vec!["bad/name"],
        ),
        (
            "blkverify with threshold 1",
            volume(
                "vm",
                "1MiB",
                1,
                "blkverify = true",
                &[child("a"), child("b")],
            ),
            vec!["vm", "blkverify"],
        ),
        (
            "blkverify with rewrite_corrupted",
            volume(
                "vm",
                "1MiB",
                2,
                "blkverify = true\nrewrite_corrupted = true",
                &[child("a"), child("b")],
            ),
            vec!["vm", "blkverify"],
        ),
        (
            "an unknown fault op",
            volume(
                "vm",
                "1MiB",
                1,
                "",
                &[child_with("a", &fault("munch", &["error = \"EIO\""]))],
            ),
            vec!["munch"],
        ),
        (
            "two volumes with one name",
            format!(
                "{}\n{}",
                volume("vm", "1MiB", 1, "", &[child("a")]),
                volume("vm", "1MiB", 1, "", &[child("b")])
            ),
            vec!["vm"],
        ),
    ];
    // Only opening the children shows these.
    let opening_cases = vec![
        (
            "children of different sizes (left.img 1 MiB, right.img 2 MiB)",
            "[[volume]]\nname = \"vm\"\nvote_threshold = 1\n\
             [[volume.child]]\nname = \"left\"\nuri = \"left.img\"\n\
             [[volume.child]]\nname = \"right\"\nuri = \"right.img\"\n"
                .to_string(),
            vec!["vm", "right"],
        ),
        (
            "a child file that cannot be created",
            volume(
                "vm",
                "1MiB",
                1,
                "",
                &[
                    "  [[volume.child]]\n  name = \"lost\"\n  uri = \"no/such/dir/lost.img\"\n"
                        .to_string(),
                ],
            ),
            vec!["vm", "lost"],
        ),
        (
            "a child that is a directory",
            "[[volume]]\nname = \"vm\"\nvote_threshold = 1\n\
             [[volume.child]]\nname = \"folder\"\nuri = \"folder.img\"\n"
                .to_string(),
            vec!["vm", "folder", "directory"],
        ),
    ];
    let case = |found_by_opening| {
        move |(what, config, words): (&'static str, String, Vec<&'static str>)| BadConfig {
            what,
            config,
            words,
            found_by_opening,
        }
    };
    config_cases
        .into_iter()
        .map(case(false))
        .chain(opening_cases.into_iter().map(case(true)))
        .collect()
}
