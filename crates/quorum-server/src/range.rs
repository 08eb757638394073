//! The `Range` header of a volume read, parsed by `http-range-header` and
//! checked against the volume as SPEC section 4 says: one range only, and a
//! range wholly or partly outside the volume reads nothing (416), where
//! RFC 9110 would clamp it.

use http_range_header::{EndPosition, StartPosition};

use crate::error::ApiError;

/// The bytes a `Range` header asks for: `offset..offset+length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes (at least 1).
    pub length: u64,
}

impl ByteRange {
    /// The last byte, inclusive, as `Content-Range` writes it.
    pub fn last(&self) -> u64 {
        self.offset + self.length - 1
    }
}

/// Parses `value` for a volume of `size` bytes.
pub fn parse(value: &str, size: u64) -> Result<ByteRange, ApiError> {
    let parsed = http_range_header::parse_range_header(value)
        .map_err(|e| ApiError::BadRequest(format!("malformed Range header {value:?}: {e}")))?;
    let [range] = parsed.ranges.as_slice() else {
        return Err(ApiError::BadRequest(format!(
            "Range header {value:?} asks for {} ranges; one is supported",
            parsed.ranges.len()
        )));
    };
    let outside = || ApiError::OutOfRange {
        message: format!("Range {value:?} lies wholly or partly outside the volume's {size} bytes"),
        size,
    };
    let (first, last) = match (range.start, range.end) {
        (StartPosition::Index(a), EndPosition::Index(b)) => {
            if b < a {
                return Err(ApiError::BadRequest(format!(
                    "Range {value:?} ends before it starts"
                )));
            }
            (a, b)
        }
        (StartPosition::Index(a), EndPosition::LastByte) => {
            (a, size.checked_sub(1).ok_or_else(outside)?)
        }
        (StartPosition::FromLast(n), _) => {
            let first = size.checked_sub(n).ok_or_else(outside)?;
            (first, size.checked_sub(1).ok_or_else(outside)?)
        }
    };
    if first >= size || last >= size {
        return Err(outside());
    }
    Ok(ByteRange {
        offset: first,
        length: last - first + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: &str) -> (u64, u64) {
        let r = parse(v, 1000).expect(v);
        (r.offset, r.length)
    }

    fn status(v: &str) -> &'static str {
        match parse(v, 1000) {
            Err(ApiError::BadRequest(_)) => "400",
            Err(ApiError::OutOfRange { .. }) => "416",
            Err(_) => "other",
            Ok(_) => "ok",
        }
    }

    #[test]
    fn the_three_forms() {
        assert_eq!(ok("bytes=0-0"), (0, 1));
        assert_eq!(ok("bytes=100-199"), (100, 100));
        assert_eq!(ok("bytes=900-"), (900, 100));
        assert_eq!(ok("bytes=-10"), (990, 10));
        assert_eq!(ok("bytes=-1000"), (0, 1000));
    }

    #[test]
    fn bad_and_outside() {
        for v in [
            "bytes=",
            "bytes=-",
            "bytes=--5",
            "bytes=1-x",
            "bytes=abc",
            "items=0-1",
            "bytes=5-1",
            "bytes=0-1,3-4",
            "bytes=-0",
        ] {
            assert_eq!(status(v), "400", "{v}");
        }
        for v in [
            "bytes=1000-",
            "bytes=1000-1001",
            "bytes=999-1000",
            "bytes=-1001",
            "bytes=18446744073709551614-18446744073709551615",
        ] {
            assert_eq!(status(v), "416", "{v}");
        }
        assert!(matches!(
            parse("bytes=0-", 0),
            Err(ApiError::OutOfRange { .. })
        ));
    }
}
