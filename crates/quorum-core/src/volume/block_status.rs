//! Block status: which parts of a range read as zero, merged in one pass
//! from the children's maps.

use std::ops::Range;

use super::Volume;
use crate::backend::Extent;
use crate::error::VolumeError;
use crate::event::Op;
use crate::extents::{ZeroMerge, child_page};
use crate::report::Reports;
use crate::worker::{Reply, Request};

impl Volume {
    /// Which parts of `offset..offset+length` read as zero, in at most
    /// `limit` extents (a `limit` of 0 counts as 1): zero only where every
    /// child says so. A child that fails, is not tried (its breaker is open)
    /// or is stale over a part counts as data there: the write it missed
    /// may be zero nowhere else.
    ///
    /// The extents are in order and contiguous from `offset`. When the range
    /// takes more than `limit` extents, the answer covers a prefix of it
    /// that ends where its last extent really ends: ask again from there,
    /// and the pages put end to end are the whole answer. The work is
    /// linear in the extents passed over, and memory is bounded by `limit`
    /// and the children's pages (see the `extents` module), whatever the
    /// number of extents of the volume.
    ///
    /// # Errors
    /// [`VolumeError::OutOfRange`] outside the volume; [`VolumeError::Quorum`]
    /// when fewer than `vote_threshold` children answered.
    pub fn block_status(
        &self,
        offset: u64,
        length: u64,
        limit: usize,
    ) -> Result<Vec<Extent>, VolumeError> {
        let end = self.check_range(offset, length)?;
        if length == 0 {
            return Ok(Vec::new());
        }
        let _guard = self.ranges.shared(offset, end);
        self.zero_map(offset..end, None, limit, &mut self.reports())
    }

    /// The zero map of `range` from every child but `except`, in at most
    /// `limit` extents, by a caller that holds the range (see
    /// [`Volume::block_status`]). The children are asked in pages of
    /// [`child_page`] extents, each from where the merge has used up its
    /// last answer; a child that fails counts as data from there on, and the
    /// request fails once fewer than `vote_threshold` of the children asked
    /// have answered.
    pub(super) fn zero_map(
        &self,
        range: Range<u64>,
        except: Option<usize>,
        limit: usize,
        reports: &mut Reports<'_>,
    ) -> Result<Vec<Extent>, VolumeError> {
        let (offset, length) = (range.start, range.end - range.start);
        let asked: Vec<usize> = (0..self.children.len())
            .filter(|&i| Some(i) != except)
            .collect();
        let page = child_page(limit);
        let mut merge = ZeroMerge::new(range.clone(), asked.len(), limit);
        let mut tally = self.tally(Op::BlockStatus, offset, length, asked.len());
        while !merge.is_done() {
            let at = merge.at();
            let request = Request::BlockStatus {
                offset: at,
                length: range.end - at,
                limit: page,
            };
            let wanted = merge.wanted();
            let jobs = wanted
                .iter()
                .map(|&k| (asked[k], request.clone()))
                .collect();
            for (&k, (i, result)) in wanted.iter().zip(self.dispatch(jobs)) {
                match result {
                    Ok(Reply::Extents(map)) => merge.feed(k, map, |r| self.stale_of(i, r)),
                    Ok(_) => merge.all_data(k),
                    Err(error) => {
                        self.report_failed(reports, Op::BlockStatus, i, at, range.end - at, &error);
                        tally.failed(i, error);
                        merge.all_data(k);
                    }
                }
            }
            if !tally.has_quorum() {
                return Err(self.fail(reports, self.quorum_error(tally, None)));
            }
            merge.advance();
        }
        Ok(merge.finish())
    }
}
