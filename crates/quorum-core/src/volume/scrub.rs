//! Scrub: a range read through the vote, the losers counted and, with
//! repair, rewritten.

use std::ops::Range;

use super::Volume;
use super::tally::Voted;
use crate::error::VolumeError;
use crate::vote;

/// What a scrub of a range found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scrubbed {
    /// Bytes each child lost votes on, by child name (children with none
    /// are absent).
    pub lost: Vec<(String, u64)>,
    /// Bytes written back over losers and failed children.
    pub repaired: u64,
    /// Blocks where no version reached the threshold: not repaired.
    pub unrecoverable: Vec<Range<u64>>,
    /// Children that could not be read, or (with repair) not repaired: the
    /// range may still differ on them.
    pub unreached: Vec<String>,
}

impl Scrubbed {
    pub(super) fn add_unreached(&mut self, child: &str) {
        if !self.unreached.iter().any(|c| c == child) {
            self.unreached.push(child.to_owned());
        }
    }

    pub(super) fn add_lost(&mut self, child: &str, bytes: u64) {
        match self.lost.iter_mut().find(|(c, _)| c == child) {
            Some((_, b)) => *b += bytes,
            None => self.lost.push((child.to_owned(), bytes)),
        }
    }

    /// Adds another range's findings to these.
    pub fn merge(&mut self, other: Scrubbed) {
        for (child, bytes) in other.lost {
            self.add_lost(&child, bytes);
        }
        self.repaired += other.repaired;
        self.unrecoverable.extend(other.unrecoverable);
        for child in other.unreached {
            self.add_unreached(&child);
        }
    }
}

impl Volume {
    /// Reads `offset..offset+length` through the vote, whatever the read
    /// pattern, and says which children lost votes there; with `repair`, the
    /// winning data is written back over them. A block without a majority
    /// is not repaired: it is listed as unrecoverable, and the blocks around
    /// it are still scrubbed. This is one step of a scrub, which is md's
    /// check/repair or ZFS's scrub with the vote deciding.
    ///
    /// # Errors
    /// When the range cannot be read at all (too few children answer).
    pub fn scrub(&self, offset: u64, length: u64, repair: bool) -> Result<Scrubbed, VolumeError> {
        let end = self.check_range(offset, length)?;
        let mut found = Scrubbed::default();
        let mut reports = self.reports();
        let whole = {
            let _guard = self.ranges.shared(offset, end);
            self.read_voted(
                offset,
                length as usize,
                &mut reports,
                repair,
                Some(&mut found),
            )
        };
        if let Voted::Answer(_) = whole? {
            return Ok(found);
        }
        // The blocks are read again one by one: each finding is reported
        // (and each unrecoverable block counted) there.
        reports.discard();
        // Find the blocks without a majority, one block at a time.
        let mut found = Scrubbed::default();
        let mut at = offset;
        while at < end {
            let next = ((at / vote::VOTE_BLOCK + 1) * vote::VOTE_BLOCK).min(end);
            let _guard = self.ranges.shared(at, next);
            let voted = self.read_voted(
                at,
                (next - at) as usize,
                &mut reports,
                repair,
                Some(&mut found),
            )?;
            if let Voted::NoMajority(none) = voted {
                self.report_failure(&mut reports, &none.error);
                found.unrecoverable.push(at..next);
            }
            at = next;
        }
        Ok(found)
    }
}
