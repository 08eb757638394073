//! The codec's rules, each checked on bytes.

use bytes::{BufMut, Bytes};

use super::*;

fn session() -> Session {
    Session {
        size: 1 << 20,
        structured: true,
        base_allocation: true,
    }
}

fn header(kind: u16, flags: u16, offset: u64, length: u32) -> RequestHeader {
    RequestHeader {
        flags,
        kind,
        cookie: 7,
        offset,
        length,
    }
}

#[test]
fn request_header_round_trips_and_bad_magic_is_refused() {
    let h = header(cmd::WRITE, cflag::FUA, 4096, 512);
    assert_eq!(RequestHeader::decode(&h.encode()), Ok(h));
    let mut bytes = h.encode();
    bytes[0] ^= 1;
    assert!(matches!(
        RequestHeader::decode(&bytes),
        Err(ProtoError::BadMagic { .. })
    ));
}

#[test]
fn requests_are_checked_against_the_export() {
    let s = session();
    let size = s.size;
    assert_eq!(
        check(&header(cmd::READ, 0, 0, 512), &s),
        Ok(Command::Read {
            offset: 0,
            length: 512
        })
    );
    let past = check(&header(cmd::READ, 0, size - 1, 2), &s).expect_err("past the end");
    assert_eq!(past.errno, errno::EINVAL);
    let overflow = check(&header(cmd::READ, 0, u64::MAX, 2), &s).expect_err("overflow");
    assert_eq!(overflow.errno, errno::EINVAL);
    let big = check(&header(cmd::READ, 0, 0, u32::MAX), &s).expect_err("4 GiB read");
    assert_eq!(big.errno, errno::EOVERFLOW);
    let w = check(&header(cmd::WRITE, 0, size, 512), &s).expect_err("write past the end");
    assert_eq!((w.errno, w.discard, w.fatal), (errno::ENOSPC, 512, false));
    let w = check(&header(cmd::WRITE, 0, 0, MAX_PAYLOAD + 1), &s).expect_err("huge write");
    assert!(w.fatal);
    let w = check(&header(cmd::WRITE, cflag::REQ_ONE, 0, 8), &s).expect_err("bad flag");
    assert_eq!((w.errno, w.discard), (errno::EINVAL, 8));
    let z = check(&header(cmd::WRITE_ZEROES, 0, size, 1), &s).expect_err("zeroes past");
    assert_eq!(z.errno, errno::ENOSPC);
    let unknown = check(&header(99, 0, 0, 0), &s).expect_err("unknown command");
    assert_eq!(unknown.errno, errno::EINVAL);
    assert_eq!(
        check(&header(cmd::TRIM, cflag::FUA, 0, 4096), &s),
        Ok(Command::Trim {
            offset: 0,
            length: 4096,
            fua: true
        })
    );
    let t = check(&header(cmd::TRIM, cflag::NO_HOLE, 0, 4096), &s).expect_err("NO_HOLE on TRIM");
    assert_eq!(t.errno, errno::EINVAL);
    let t = check(&header(cmd::TRIM, 0, size - 1, 2), &s).expect_err("trim past the end");
    assert_eq!(t.errno, errno::EINVAL);
    let t = check(&header(cmd::TRIM, 0, u64::MAX, 2), &s).expect_err("trim overflow");
    assert_eq!(t.errno, errno::EINVAL);
    for (flags, no_hole) in [(0, false), (cflag::NO_HOLE, true)] {
        assert_eq!(
            check(&header(cmd::WRITE_ZEROES, flags, 512, 4096), &s),
            Ok(Command::WriteZeroes {
                offset: 512,
                length: 4096,
                no_hole,
                fua: false
            })
        );
    }
    let no_meta = Session {
        base_allocation: false,
        ..s
    };
    let bs = check(&header(cmd::BLOCK_STATUS, 0, 0, 512), &no_meta).expect_err("no context");
    assert_eq!(bs.errno, errno::EINVAL);
    assert_eq!(
        check(&header(cmd::DISC, 0, 0, 0), &s),
        Ok(Command::Disconnect)
    );
}

#[test]
fn replies_are_encoded_as_the_protocol_says() {
    let (h, p) = encode_reply(9, &ReplyBody::Done, true);
    assert_eq!(
        &h[..],
        &[0x67, 0x44, 0x66, 0x98, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]
    );
    assert!(p.is_empty());
    let data = Bytes::from_static(b"abc");
    let (h, p) = encode_reply(
        1,
        &ReplyBody::Data {
            offset: 512,
            data: data.clone(),
        },
        true,
    );
    assert_eq!(h.len(), 20 + 8);
    assert_eq!(&h[0..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
    assert_eq!(&h[4..6], &reply::FLAG_DONE.to_be_bytes());
    assert_eq!(&h[6..8], &reply::TYPE_OFFSET_DATA.to_be_bytes());
    assert_eq!(&h[16..20], &11u32.to_be_bytes());
    assert_eq!(&h[20..28], &512u64.to_be_bytes());
    assert_eq!(p, data);
    let (h, _) = encode_reply(
        1,
        &ReplyBody::Error {
            errno: errno::EIO,
            message: "no".into(),
        },
        true,
    );
    assert_eq!(&h[6..8], &reply::TYPE_ERROR.to_be_bytes());
    assert_eq!(&h[16..20], &8u32.to_be_bytes());
    assert_eq!(&h[20..24], &errno::EIO.to_be_bytes());
    let (h, _) = encode_reply(
        1,
        &ReplyBody::Extents(vec![Descriptor {
            length: 4096,
            flags: 3,
        }]),
        true,
    );
    assert_eq!(h.len(), 20 + 12);
}

#[test]
fn option_data_is_parsed_strictly() {
    let mut d = Vec::new();
    d.put_u32(2);
    d.put_slice(b"vm");
    d.put_u16(2);
    d.put_u16(info::NAME);
    d.put_u16(info::BLOCK_SIZE);
    assert_eq!(
        InfoRequest::decode(&d),
        Ok(InfoRequest {
            name: "vm".into(),
            items: vec![info::NAME, info::BLOCK_SIZE]
        })
    );
    assert!(InfoRequest::decode(&d[..d.len() - 1]).is_err());
    let mut long = d.clone();
    long.push(0);
    assert!(InfoRequest::decode(&long).is_err());
    let mut lie = Vec::new();
    lie.put_u32(u32::MAX);
    assert!(InfoRequest::decode(&lie).is_err());

    let mut m = Vec::new();
    m.put_u32(0);
    m.put_u32(1);
    m.put_u32(5);
    m.put_slice(b"base:");
    let q = MetaRequest::decode(&m).expect("a query");
    assert!(q.matches_base_allocation(true));
    assert!(!q.matches_base_allocation(false));
    let mut m2 = Vec::new();
    m2.put_u32(0);
    m2.put_u32(u32::MAX);
    assert!(MetaRequest::decode(&m2).is_err());
}

#[test]
fn descriptors_clip_merge_and_limit() {
    let e = [(0, 4096, false), (4096, 4096, false), (8192, 1 << 20, true)];
    assert_eq!(
        descriptors(0, 16384, e, 100),
        vec![
            Descriptor {
                length: 8192,
                flags: 0
            },
            Descriptor {
                length: 8192,
                flags: state::HOLE | state::ZERO
            }
        ]
    );
    assert_eq!(descriptors(0, 16384, e, 1).len(), 1);
    assert_eq!(
        descriptors(100, 10, e, 10),
        vec![Descriptor {
            length: 10,
            flags: 0
        }]
    );
    assert!(descriptors(0, 10, [(5, 5, true)], 10).is_empty());
}
