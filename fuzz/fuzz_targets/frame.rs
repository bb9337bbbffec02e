//! Segment files: scanning arbitrary bytes as a segment, and encoding arbitrary frames, in
//! both frame layouts (version 1, and version 2 whose view is read from the entry).
//!
//! Properties:
//! * scanning never panics; accepted frames are contiguous from the header, carry consecutive
//!   seqnos after `prev` with non-decreasing views, and each re-encodes to exactly its bytes;
//!   a scan without damage covers the whole input, frames then zeros (unused space);
//! * encode -> scan of non-empty payloads is the identity (txids and payload bytes);
//! * flipping any single bit of a valid segment is detected.
#![no_main]

use arbitrary::Arbitrary;
use ledger_core::TxId;
use ledger_core::entry::FORMAT_VERSION;
use ledger_store::segment::{
    FrameLayout, SEGMENT_HEADER_LEN, Scan, encode_frame, encode_frame_v1,
    encode_segment_header_version, scan_segment,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// Arbitrary bytes after a valid header (so frames get looked at), or as a whole file.
    Scan {
        /// 0: the bytes are the whole file; 1 or 2: after a valid header of that version.
        header: u8,
        prev: Option<(u64, u64)>,
        bytes: Vec<u8>,
    },
    /// Frames we encode ourselves.
    RoundTrip {
        version_1: bool,
        prev: Option<(u64, u64)>,
        /// (view increment, payload)
        frames: Vec<(u8, Vec<u8>)>,
        flip_bit: Option<u32>,
    },
}

/// A version-2 frame's payload must start like an entry: format version, a kind, and the view
/// as a LEB128 varint (all the scanner reads of it).
fn entry_like(view: u64, rest: &[u8]) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION, 1 + rest[0] % 3];
    let mut v = view;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out.extend_from_slice(rest);
    out
}

fn encode_frame_for(version_1: bool, out: &mut Vec<u8>, txid: TxId, payload: &[u8]) {
    if version_1 {
        encode_frame_v1(out, txid, payload);
    } else {
        encode_frame(out, payload);
    }
}

fn prev_txid(prev: Option<(u64, u64)>) -> Option<TxId> {
    // Keep seqnos away from u64::MAX so `prev + frames` cannot overflow in the round trip.
    prev.and_then(|(v, s)| TxId::new(v % (1 << 40), s % (1 << 40)))
}

/// The invariants of any scan of `bytes`.
fn check_scan(bytes: &[u8], prev: Option<TxId>, scan: &Scan) {
    let mut expected_offset = SEGMENT_HEADER_LEN as u64;
    let mut last = prev;
    for frame in &scan.frames {
        assert_eq!(frame.offset, expected_offset, "frames are contiguous");
        assert_eq!(
            frame.txid.seqno(),
            last.map_or(1, |t| t.seqno() + 1),
            "consecutive seqnos"
        );
        if let Some(l) = last {
            assert!(frame.txid.view() >= l.view(), "views never decrease");
        }
        let start = frame.offset as usize;
        let end = frame.end() as usize;
        assert!(end <= bytes.len());
        assert!(frame.payload_len >= 1);
        let mut reencoded = Vec::new();
        let payload = &bytes[frame.payload_offset() as usize..end];
        match scan.layout.expect("frames were accepted") {
            FrameLayout::V1 => encode_frame_v1(&mut reencoded, frame.txid, payload),
            FrameLayout::V2 => encode_frame(&mut reencoded, payload),
        }
        assert_eq!(reencoded, &bytes[start..end], "an accepted frame re-encodes to itself");
        expected_offset = frame.end();
        last = Some(frame.txid);
    }
    match &scan.damage {
        None => {
            assert_eq!(expected_offset, scan.data_end(), "the data ends after the last frame");
            assert_eq!(
                scan.data_end() + scan.unused,
                bytes.len() as u64,
                "an undamaged scan covers all"
            );
            assert!(
                bytes[expected_offset as usize..].iter().all(|&b| b == 0),
                "only zeros are unused space"
            );
            let first = prev.map_or(1, |t| t.seqno() + 1);
            let version = match scan.layout.expect("an undamaged scan read the header") {
                FrameLayout::V1 => 1,
                FrameLayout::V2 => 2,
            };
            assert_eq!(
                &bytes[..SEGMENT_HEADER_LEN],
                encode_segment_header_version(first, version)
            );
        }
        Some(d) => {
            if d.offset != 0 {
                assert_eq!(d.offset, expected_offset, "damage starts where frames stop");
            } else {
                assert!(scan.frames.is_empty());
            }
        }
    }
}

fuzz_target!(|input: Input| match input {
    Input::Scan {
        header,
        prev,
        bytes,
    } => {
        let prev = prev_txid(prev);
        let data = if header % 3 != 0 {
            let first = prev.map_or(1, |t| t.seqno() + 1);
            let mut data = encode_segment_header_version(first, u32::from(header % 3)).to_vec();
            data.extend_from_slice(&bytes);
            data
        } else {
            bytes
        };
        let scan = scan_segment(&data, prev);
        check_scan(&data, prev, &scan);
    }
    Input::RoundTrip {
        version_1,
        prev,
        frames,
        flip_bit,
    } => {
        let prev = prev_txid(prev);
        let first = prev.map_or(1, |t| t.seqno() + 1);
        let mut view = prev.map_or(1, |t| t.view());
        let version = if version_1 { 1 } else { 2 };
        let mut data = encode_segment_header_version(first, version).to_vec();
        let mut expected = Vec::new();
        for (i, (step, payload)) in frames.iter().filter(|(_, p)| !p.is_empty()).enumerate() {
            view += u64::from(*step);
            let txid = TxId::new(view, first + i as u64).unwrap();
            let payload = if version_1 {
                payload.clone()
            } else {
                entry_like(view, payload)
            };
            let offset = data.len();
            encode_frame_for(version_1, &mut data, txid, &payload);
            expected.push((txid, offset, payload));
        }
        let scan = scan_segment(&data, prev);
        check_scan(&data, prev, &scan);
        assert!(scan.damage.is_none(), "{:?}", scan.damage);
        assert_eq!(scan.frames.len(), expected.len());
        for (frame, (txid, offset, payload)) in scan.frames.iter().zip(&expected) {
            assert_eq!(frame.txid, *txid);
            assert_eq!(frame.offset, *offset as u64);
            let start = frame.payload_offset() as usize;
            assert_eq!(&data[start..frame.end() as usize], payload.as_slice());
        }
        if let Some(bit) = flip_bit {
            let bit = bit as usize % (data.len() * 8);
            data[bit / 8] ^= 1 << (bit % 8);
            let scan = scan_segment(&data, prev);
            check_scan(&data, prev, &scan);
            assert!(scan.damage.is_some(), "bit {bit} flipped undetected");
        }
    }
});
