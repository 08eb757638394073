//! Volumes of file children for the server's unit tests.

use std::path::Path;
use std::sync::Arc;

use quorum_backends::FileBackend;
use quorum_core::{ChildSpec, EventSink, ReadPattern, Volume, VolumeOptions};

/// Children named `names`, files of `size` bytes in `dir`.
pub(crate) fn file_children(dir: &Path, names: &[&str], size: u64) -> Vec<ChildSpec> {
    names
        .iter()
        .map(|&name| {
            let file = FileBackend::open(&dir.join(name), Some(size)).expect("file");
            ChildSpec::new(name, Arc::new(file))
        })
        .collect()
}

/// Volume `vm` of `children`, vote threshold 2, the default options.
pub(crate) fn open(children: Vec<ChildSpec>, sink: Arc<dyn EventSink>) -> Volume {
    let options = VolumeOptions {
        name: "vm".into(),
        vote_threshold: 2,
        read_pattern: ReadPattern::Quorum,
        rewrite_corrupted: false,
        blkverify: false,
        child_timeout: VolumeOptions::DEFAULT_CHILD_TIMEOUT,
    };
    Volume::open(options, children, sink).expect("open")
}
