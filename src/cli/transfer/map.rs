//! Where the data is: a volume's map from its block status, a file's from
//! `SEEK_DATA`/`SEEK_HOLE`.

use std::fs::File;

use reqwest::Method;
use rustix::fs::SeekFrom;
use rustix::io::Errno;
use serde::Deserialize;

use super::super::client;
use super::{Client, Error, with_retries};

/// The header of a block status answer cut short: where the next page
/// starts.
const NEXT_OFFSET: &str = "quorum-next-offset";

/// A stretch of a volume or file, and whether it reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Extent {
    /// Where it starts.
    pub offset: u64,
    /// How many bytes.
    pub length: u64,
    /// Whether it reads as zeros (a hole).
    pub zero: bool,
}

impl Extent {
    /// Where it ends.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// The block status of `offset..offset + length` of `volume`, every page
/// of it, as one list.
///
/// # Errors
/// The server's refusal, a transport failure, or pages that do not fit
/// end to end.
pub fn volume_map(
    client: &Client,
    volume: &str,
    offset: u64,
    length: u64,
) -> Result<Vec<Extent>, Error> {
    let url = client.url(&["v1", "volumes", volume, "block-status"]);
    let end = offset + length;
    let mut at = offset;
    let mut map: Vec<Extent> = Vec::new();
    while at < end {
        let query = [("offset", at), ("length", end - at)];
        let response =
            with_retries(|| client.send(client.request(Method::GET, url.clone()).query(&query)))?;
        let next = response
            .headers()
            .get(NEXT_OFFSET)
            .map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()));
        let page: Vec<Extent> = client::json(response)?;
        let bad = |problem: String| Error::Protocol {
            url: url.to_string(),
            problem,
        };
        let mut expect = at;
        for e in &page {
            if e.offset != expect || e.length == 0 {
                return Err(bad(format!(
                    "block status extent at {} where {expect} was due",
                    e.offset
                )));
            }
            expect = e.end();
        }
        map.extend(page);
        match next {
            None if expect == end => break,
            None => {
                return Err(bad(format!(
                    "block status stopped at {expect} of {end} without {NEXT_OFFSET}"
                )));
            }
            Some(Some(n)) if n == expect && n > at => at = n,
            Some(_) => return Err(bad(format!("a bad {NEXT_OFFSET} after {expect}"))),
        }
    }
    Ok(map)
}

/// The extents of the first `len` bytes of `file`: data, and holes as zero.
///
/// # Errors
/// A seek that fails (other than past the last data).
pub fn file_map(file: &File, len: u64, name: &str) -> Result<Vec<Extent>, Error> {
    let seek = |to: SeekFrom| match rustix::fs::seek(file, to) {
        Ok(at) => Ok(at),
        Err(Errno::NXIO) => Ok(len),
        Err(e) => Err(Error::io(
            format!("cannot map the holes of {name}"),
            e.into(),
        )),
    };
    let mut map = Vec::new();
    let mut push = |offset: u64, end: u64, zero: bool| {
        if end > offset {
            map.push(Extent {
                offset,
                length: end - offset,
                zero,
            });
        }
    };
    let mut at = 0;
    while at < len {
        let data = seek(SeekFrom::Data(at))?.min(len);
        push(at, data, true);
        if data >= len {
            break;
        }
        let hole = seek(SeekFrom::Hole(data))?.min(len);
        push(data, hole, false);
        at = hole;
    }
    Ok(map)
}

/// The parts of a volume that do not read as zeros, asked for in
/// increasing order.
pub struct NonZero {
    extents: Vec<Extent>,
    next: usize,
}

impl NonZero {
    /// The data extents of `map`.
    pub fn new(map: Vec<Extent>) -> NonZero {
        NonZero {
            extents: map.into_iter().filter(|e| !e.zero).collect(),
            next: 0,
        }
    }

    /// The ranges of `start..end` that hold data; `start` never goes back
    /// from one call to the next.
    pub fn within(&mut self, start: u64, end: u64) -> Vec<(u64, u64)> {
        while self
            .extents
            .get(self.next)
            .is_some_and(|e| e.end() <= start)
        {
            self.next += 1;
        }
        self.extents[self.next..]
            .iter()
            .take_while(|e| e.offset < end)
            .map(|e| (e.offset.max(start), e.end().min(end)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    fn ext(offset: u64, length: u64, zero: bool) -> Extent {
        Extent {
            offset,
            length,
            zero,
        }
    }

    #[test]
    fn data_within_a_range() {
        let mut nz = NonZero::new(vec![
            ext(0, 10, false),
            ext(10, 10, true),
            ext(20, 10, false),
            ext(30, 70, true),
        ]);
        assert_eq!(nz.within(5, 25), vec![(5, 10), (20, 25)]);
        assert_eq!(nz.within(25, 40), vec![(25, 30)]);
        assert_eq!(nz.within(40, 100), vec![]);
    }

    #[test]
    fn a_sparse_file_maps_to_its_data() {
        let f = tempfile::tempfile().expect("a temporary file");
        let block = 1 << 20;
        f.set_len(8 * block).expect("size");
        f.write_all_at(&[1; 4096], 2 * block).expect("write");
        let map = file_map(&f, 8 * block, "tmp").expect("map");
        let data: Vec<_> = map.iter().filter(|e| !e.zero).collect();
        assert_eq!(map.first().map(|e| e.offset), Some(0));
        assert_eq!(map.last().map(Extent::end), Some(8 * block));
        // Filesystems allocate in their own blocks: the data covers the
        // write, and not the whole file.
        assert!(
            data.iter()
                .any(|e| e.offset <= 2 * block && e.end() >= 2 * block + 4096),
            "{map:?}"
        );
        let mapped: u64 = data.iter().map(|e| e.length).sum();
        assert!(mapped < 8 * block, "{map:?}");
    }
}
