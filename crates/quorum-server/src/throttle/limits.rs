//! A volume's I/O limits as the config and the API write them, checked as
//! QEMU's `throttle_is_valid` checks a `ThrottleConfig`.
//!
//! The keys are QEMU's `BlockIOLimit` ones: `iops_total`, `iops_read`,
//! `iops_write` (operations a second), `bps_total`, `bps_read`, `bps_write`
//! (bytes a second), each with a `_max` burst rate and a `_max_length` in
//! seconds, and `iops_size`. A key left out (or 0) sets no limit; a
//! `_max_length` left out is 1.

use serde::{Deserialize, Serialize};

/// The largest value of any rate (QEMU's `THROTTLE_VALUE_MAX`).
pub const VALUE_MAX: u64 = 1_000_000_000_000_000;

/// One of the six leaky buckets, in QEMU's `BucketType` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKind {
    /// Bytes a second, reads and writes.
    BpsTotal,
    /// Bytes a second, reads.
    BpsRead,
    /// Bytes a second, writes.
    BpsWrite,
    /// Operations a second, reads and writes.
    IopsTotal,
    /// Operations a second, reads.
    IopsRead,
    /// Operations a second, writes.
    IopsWrite,
}

impl BucketKind {
    /// Every bucket, in order.
    pub const ALL: [BucketKind; 6] = [
        BucketKind::BpsTotal,
        BucketKind::BpsRead,
        BucketKind::BpsWrite,
        BucketKind::IopsTotal,
        BucketKind::IopsRead,
        BucketKind::IopsWrite,
    ];

    /// The key of its average rate: `bps_total`, ..., `iops_write`.
    pub fn key(self) -> &'static str {
        match self {
            BucketKind::BpsTotal => "bps_total",
            BucketKind::BpsRead => "bps_read",
            BucketKind::BpsWrite => "bps_write",
            BucketKind::IopsTotal => "iops_total",
            BucketKind::IopsRead => "iops_read",
            BucketKind::IopsWrite => "iops_write",
        }
    }

    /// Whether it counts bytes (else operations).
    pub fn counts_bytes(self) -> bool {
        matches!(
            self,
            BucketKind::BpsTotal | BucketKind::BpsRead | BucketKind::BpsWrite
        )
    }
}

/// One bucket's settings: the average rate, the burst rate, and how many
/// seconds the burst may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketLimit {
    /// Units a second on average; 0 for no limit.
    pub avg: u64,
    /// Units a second during a burst; 0 for QEMU's default (a tenth of a
    /// second's worth of `avg`, to smooth the throttling).
    pub max: u64,
    /// Seconds a burst at `max` may last.
    pub max_length: u64,
}

/// A volume's I/O limits (SPEC 11, QEMU's `BlockIOLimit`): bytes (`bps_*`)
/// or operations (`iops_*`) a second, 0 for none; `*_max` a burst rate and
/// `*_max_length` the seconds it may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct IoLimits {
    pub bps_total: u64,
    pub bps_total_max: u64,
    pub bps_total_max_length: Option<u64>,
    pub bps_read: u64,
    pub bps_read_max: u64,
    pub bps_read_max_length: Option<u64>,
    pub bps_write: u64,
    pub bps_write_max: u64,
    pub bps_write_max_length: Option<u64>,
    pub iops_total: u64,
    pub iops_total_max: u64,
    pub iops_total_max_length: Option<u64>,
    pub iops_read: u64,
    pub iops_read_max: u64,
    pub iops_read_max_length: Option<u64>,
    pub iops_write: u64,
    pub iops_write_max: u64,
    pub iops_write_max_length: Option<u64>,
    /// An operation larger than this counts as `size / iops_size`
    /// operations in the iops buckets; 0 counts every one as one.
    pub iops_size: u64,
}

/// Why a set of limits was refused: QEMU's reasons, naming the keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A total limit beside a read or write one of the same unit.
    #[error(
        "{total} cannot be used together with {read} or {write}: set the total or the read and write limits"
    )]
    TotalWithReadWrite {
        /// The total key.
        total: &'static str,
        /// The read key.
        read: &'static str,
        /// The write key.
        write: &'static str,
    },
    /// `iops_size` without an iops limit.
    #[error("iops_size needs one of iops_total, iops_read or iops_write")]
    SizeWithoutIops,
    /// A rate above [`VALUE_MAX`].
    #[error("{key} is {value}; the most is {VALUE_MAX}")]
    TooLarge {
        /// The key.
        key: String,
        /// Its value.
        value: u64,
    },
    /// A burst length of 0.
    #[error("{0}_max_length cannot be 0 (it is in seconds; 1 is the default)")]
    ZeroLength(&'static str),
    /// A burst length without a burst rate.
    #[error("{0}_max_length is above 1 but {0}_max is not set: a burst length needs a burst rate")]
    LengthWithoutMax(&'static str),
    /// A burst rate without an average rate.
    #[error("{0}_max needs {0}: a burst rate needs an average rate")]
    MaxWithoutAvg(&'static str),
    /// A burst so long that its bucket (`max × max_length`) passes
    /// [`VALUE_MAX`] (QEMU: "burst length too high for this burst rate").
    #[error(
        "{0}_max_length ({1}) is too long for {0}_max ({2}): their product is at most {VALUE_MAX}"
    )]
    BurstTooLong(&'static str, u64, u64),
    /// A burst rate below the average.
    #[error("{0}_max ({1}) cannot be lower than {0} ({2})")]
    MaxBelowAvg(&'static str, u64, u64),
}

impl IoLimits {
    /// The settings of one bucket.
    pub fn bucket(&self, kind: BucketKind) -> BucketLimit {
        let (avg, max, length) = match kind {
            BucketKind::BpsTotal => (
                self.bps_total,
                self.bps_total_max,
                self.bps_total_max_length,
            ),
            BucketKind::BpsRead => (self.bps_read, self.bps_read_max, self.bps_read_max_length),
            BucketKind::BpsWrite => (
                self.bps_write,
                self.bps_write_max,
                self.bps_write_max_length,
            ),
            BucketKind::IopsTotal => (
                self.iops_total,
                self.iops_total_max,
                self.iops_total_max_length,
            ),
            BucketKind::IopsRead => (
                self.iops_read,
                self.iops_read_max,
                self.iops_read_max_length,
            ),
            BucketKind::IopsWrite => (
                self.iops_write,
                self.iops_write_max,
                self.iops_write_max_length,
            ),
        };
        BucketLimit {
            avg,
            max,
            max_length: length.unwrap_or(1),
        }
    }

    /// Whether any limit is set.
    pub fn enabled(&self) -> bool {
        BucketKind::ALL.iter().any(|&k| self.bucket(k).avg > 0)
    }

    /// The same limits with every burst length written out (as the API
    /// answers them: what `GET` says can be `PUT` back).
    pub fn explicit(mut self) -> IoLimits {
        for length in [
            &mut self.bps_total_max_length,
            &mut self.bps_read_max_length,
            &mut self.bps_write_max_length,
            &mut self.iops_total_max_length,
            &mut self.iops_read_max_length,
            &mut self.iops_write_max_length,
        ] {
            length.get_or_insert(1);
        }
        self
    }

    /// Checks the limits as QEMU's `throttle_is_valid` does.
    ///
    /// # Errors
    /// The first rule broken, naming its keys.
    pub fn validate(&self) -> Result<(), LimitsError> {
        use BucketKind as K;
        for (total, read, write) in [
            (K::BpsTotal, K::BpsRead, K::BpsWrite),
            (K::IopsTotal, K::IopsRead, K::IopsWrite),
        ] {
            let (t, r, w) = (self.bucket(total), self.bucket(read), self.bucket(write));
            let avg = t.avg > 0 && (r.avg > 0 || w.avg > 0);
            let max = t.max > 0 && (r.max > 0 || w.max > 0);
            if avg || max {
                return Err(LimitsError::TotalWithReadWrite {
                    total: total.key(),
                    read: read.key(),
                    write: write.key(),
                });
            }
        }
        let iops = [K::IopsTotal, K::IopsRead, K::IopsWrite];
        if self.iops_size > 0 && iops.iter().all(|&k| self.bucket(k).avg == 0) {
            return Err(LimitsError::SizeWithoutIops);
        }
        for kind in K::ALL {
            let b = self.bucket(kind);
            let key = kind.key();
            for (value, name) in [(b.avg, key.to_owned()), (b.max, format!("{key}_max"))] {
                if value > VALUE_MAX {
                    return Err(LimitsError::TooLarge { key: name, value });
                }
            }
            if b.max_length == 0 {
                return Err(LimitsError::ZeroLength(key));
            }
            if b.max_length > 1 && b.max == 0 {
                return Err(LimitsError::LengthWithoutMax(key));
            }
            if b.max > 0 && b.avg == 0 {
                return Err(LimitsError::MaxWithoutAvg(key));
            }
            if b.max > 0 && b.max_length > VALUE_MAX / b.max {
                return Err(LimitsError::BurstTooLong(key, b.max_length, b.max));
            }
            if b.max > 0 && b.max < b.avg {
                return Err(LimitsError::MaxBelowAvg(key, b.max, b.avg));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> IoLimits {
        serde_json::from_str(json).expect("limits")
    }

    #[test]
    fn qemu_rules() {
        assert_eq!(IoLimits::default().validate(), Ok(()));
        assert!(!IoLimits::default().enabled());
        let ok = parse(
            r#"{"iops_total": 100, "iops_total_max": 200, "iops_total_max_length": 3, "bps_read": 1048576, "bps_write": 4096, "iops_size": 4096}"#,
        );
        assert_eq!(ok.validate(), Ok(()));
        assert!(ok.enabled());
        for (json, err) in [
            (
                r#"{"iops_total": 1, "iops_read": 1}"#,
                "iops_total cannot be used together with iops_read or iops_write: set the total or the read and write limits",
            ),
            (
                r#"{"bps_total": 10, "bps_total_max": 20, "bps_write": 5, "bps_write_max": 6}"#,
                "bps_total cannot be used together with bps_read or bps_write: set the total or the read and write limits",
            ),
            (
                r#"{"bps_total": 10, "iops_size": 4096}"#,
                "iops_size needs one of iops_total, iops_read or iops_write",
            ),
            (
                r#"{"bps_read": 1000000000000001}"#,
                "bps_read is 1000000000000001; the most is 1000000000000000",
            ),
            (
                r#"{"iops_write": 5, "iops_write_max_length": 0}"#,
                "iops_write_max_length cannot be 0 (it is in seconds; 1 is the default)",
            ),
            (
                r#"{"iops_write": 5, "iops_write_max_length": 2}"#,
                "iops_write_max_length is above 1 but iops_write_max is not set: a burst length needs a burst rate",
            ),
            (
                r#"{"bps_total_max": 5}"#,
                "bps_total_max needs bps_total: a burst rate needs an average rate",
            ),
            (
                r#"{"iops_read": 50, "iops_read_max": 10}"#,
                "iops_read_max (10) cannot be lower than iops_read (50)",
            ),
            // The bucket of max × max_length would overflow: QEMU refuses it.
            (
                r#"{"iops_total": 1, "iops_total_max": 1000000000000000, "iops_total_max_length": 100000}"#,
                "iops_total_max_length (100000) is too long for iops_total_max (1000000000000000): their product is at most 1000000000000000",
            ),
            (
                r#"{"bps_write": 1, "bps_write_max": 2, "bps_write_max_length": 18446744073709551615}"#,
                "bps_write_max_length (18446744073709551615) is too long for bps_write_max (2): their product is at most 1000000000000000",
            ),
        ] {
            let e = parse(json).validate().expect_err(json);
            assert_eq!(e.to_string(), err, "{json}");
        }
    }

    #[test]
    fn keys_are_strict_and_round_trip() {
        assert!(serde_json::from_str::<IoLimits>(r#"{"iops": 5}"#).is_err());
        assert!(serde_json::from_str::<IoLimits>(r#"{"iops_total": -5}"#).is_err());
        let limits = parse(r#"{"iops_total": 100}"#).explicit();
        assert_eq!(limits.iops_total_max_length, Some(1));
        let text = serde_json::to_string(&limits).expect("json");
        assert_eq!(parse(&text), limits);
        assert_eq!(limits.validate(), Ok(()));
    }
}
