//! Config snippets: `[[volume]]` tables, file children and fault rules, as
//! TOML text that a test joins and hands to [`Sandbox::serve`](super::Sandbox::serve).

use std::fmt::Write as _;

/// A `[[volume]]` table. `options` are extra `key = value` lines of the
/// volume; `children` are `[[volume.child]]` tables (see [`child`]).
pub fn volume(
    name: &str,
    size: &str,
    threshold: u32,
    options: &str,
    children: &[String],
) -> String {
    let mut s = format!(
        "[[volume]]\nname = \"{name}\"\nsize = \"{size}\"\nvote_threshold = {threshold}\n{options}\n"
    );
    for c in children {
        s.push_str(c);
    }
    s
}

/// A file child named `name` with the relative uri `NAME.img`.
pub fn child(name: &str) -> String {
    child_with(name, "")
}

/// A file child with extra lines or sub-tables (fault rules) after it.
pub fn child_with(name: &str, extra: &str) -> String {
    format!("  [[volume.child]]\n  name = \"{name}\"\n  uri = \"{name}.img\"\n{extra}\n")
}

/// A `[[volume.child.fault]]` table for `op` with more `key = value` lines.
pub fn fault(op: &str, lines: &[&str]) -> String {
    let mut s = format!("    [[volume.child.fault]]\n    op = \"{op}\"\n");
    for l in lines {
        let _ = writeln!(s, "    {l}");
    }
    s
}

/// The usual volume `vm`: three file children a, b, c, threshold 2.
pub fn abc_volume(size: &str, options: &str) -> String {
    volume(
        "vm",
        size,
        2,
        options,
        &[child("a"), child("b"), child("c")],
    )
}

/// `config` with `[nbd]` on a free port of 127.0.0.1 (at the end, so
/// that the top-level keys of `config` stay top-level).
pub fn with_nbd(config: &str) -> String {
    format!("{config}\n[nbd]\nlisten = \"127.0.0.1:0\"\n")
}
