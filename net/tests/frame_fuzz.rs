//! The decoder against garbage: random bytes, mutated valid frames, truncations and oversized length
//! fields. It must return an error (never panic, never hang) and never allocate past the cap.

use a2cid_net::connection::{FrameReader, FrameWriter};
use a2cid_net::frame::{encode_header, encode_msg, CollHeader, Frame, Kind, Limits, Msg, PairMsg};
use a2cid_net::{BufPool, FrameError};
use proptest::prelude::*;

const PARAMS: u64 = 64;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn reader(bytes: &[u8]) -> FrameReader<&[u8]> {
    let mut r = FrameReader::new(bytes, BufPool::default());
    r.set_limits(Limits { params: PARAMS });
    r
}

/// Read frames until the first error; the input is finite so this must terminate.
async fn drain(bytes: &[u8]) -> (usize, FrameError) {
    let mut r = reader(bytes);
    let mut frames = 0;
    loop {
        match r.read_frame().await {
            Ok(_) => frames += 1,
            Err(e) => return (frames, e),
        }
    }
}

fn valid_stream() -> Vec<u8> {
    rt().block_on(async {
        let mut w = FrameWriter::new(Vec::new());
        let frames = [
            Frame::Msg(Msg::Pair(PairMsg::Propose { seq: 7 })),
            Frame::Snapshot {
                seq: 3,
                data: vec![1.5f32; PARAMS as usize],
            },
            Frame::Coll {
                hdr: CollHeader {
                    op: 1,
                    phase: 2,
                    step: 0,
                    chunk: 0,
                },
                data: vec![2.0f32; 10],
            },
            Frame::Msg(Msg::Table {
                addrs: vec!["a:1".into(), "b:2".into()],
            }),
        ];
        for f in &frames {
            w.write_frame(f).await.expect("write");
        }
        // The same bytes as the pure encoder gives.
        let mut bytes = w.into_inner();
        bytes.extend_from_slice(&encode_msg(&Msg::Goodbye {
            reason: "bye".into(),
        }));
        bytes
    })
}

#[test]
fn valid_stream_decodes_fully() {
    let s = valid_stream();
    let (n, e) = rt().block_on(drain(&s));
    assert_eq!(n, 5);
    assert!(matches!(e, FrameError::Closed), "{e}");
}

#[test]
fn oversized_and_wrong_size_payloads_are_refused() {
    let rt = rt();
    let mut big = encode_header(Kind::Snapshot, 8 + 4 * (PARAMS + 1)).to_vec();
    big.extend_from_slice(&[0u8; 64]);
    let (_, e) = rt.block_on(drain(&big));
    assert!(matches!(e, FrameError::Oversized { .. }), "{e}");
    let mut short = encode_header(Kind::Snapshot, 8 + 4 * (PARAMS - 1)).to_vec();
    short.extend_from_slice(&[0u8; 512]);
    let (_, e) = rt.block_on(drain(&short));
    assert!(matches!(e, FrameError::WrongPayloadLen { .. }), "{e}");
    assert!(e.to_string().contains("different model"), "{e}");
    let huge_ctrl = encode_header(Kind::Goodbye, u64::MAX).to_vec();
    let (_, e) = rt.block_on(drain(&huge_ctrl));
    assert!(matches!(e, FrameError::Oversized { .. }), "{e}");
    let (_, e) = rt.block_on(drain(&[0xEE, 1, 2, 3, 4, 5, 6, 7, 8]));
    assert!(matches!(e, FrameError::UnknownKind(0xEE)), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (_, e) = rt().block_on(drain(&bytes));
        // Any error is fine; reaching here means no panic and no hang.
        let _ = e.to_string();
    }

    #[test]
    fn mutated_frames_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut s = valid_stream();
        for (i, b) in flips {
            let k = i.index(s.len());
            s[k] = b;
        }
        if truncate {
            let k = cut.index(s.len());
            s.truncate(k);
        }
        let (n, e) = rt().block_on(drain(&s));
        prop_assert!(n <= 5 + s.len());
        let _ = e.to_string();
    }

    #[test]
    fn truncation_anywhere_is_an_error_not_a_frame(cut in any::<prop::sample::Index>()) {
        let s = valid_stream();
        let k = cut.index(s.len());
        let (_, e) = rt().block_on(drain(&s[..k]));
        prop_assert!(matches!(e, FrameError::Closed | FrameError::Truncated), "{}", e);
    }
}

#[test]
fn decoded_snapshot_keeps_bits() {
    let s = valid_stream();
    let rt = rt();
    let mut r = reader(&s);
    match rt.block_on(r.read_frame()).expect("propose") {
        Frame::Msg(Msg::Pair(PairMsg::Propose { seq: 7 })) => {}
        other => panic!("{other:?}"),
    }
    match rt.block_on(r.read_frame()).expect("snapshot") {
        Frame::Snapshot { seq, data } => {
            assert_eq!(seq, 3);
            assert!(data.iter().all(|x| x.to_bits() == 1.5f32.to_bits()));
        }
        other => panic!("{other:?}"),
    }
}
