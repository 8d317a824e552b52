//! `Range:` on `GET /recordings/{id}.wav`: `http::recordings::parse_range`
//! against a file length, checked for what `serve_wav` then computes
//! unchecked (`end - start + 1`, `start + count - 1`), and the recording
//! id from the same path (`record::store::RecordingId::parse`).
//!
//! Input: 8 bytes of file length (big-endian; a few small lengths are
//! likelier through the corpus), then the header value as text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siprelay::http::recordings::{parse_range, ByteRange};
use siprelay::record::store::RecordingId;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len, header) = data.split_at(8);
    let len = u64::from_be_bytes(len.try_into().unwrap());
    // Header values are visible ASCII in practice; `to_str` refuses others.
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    match parse_range(Some(header), len) {
        ByteRange::Whole | ByteRange::Unsatisfiable => {}
        ByteRange::Part(start, end) => {
            assert!(start <= end, "range {start}-{end} of {len} runs backwards");
            assert!(end < len, "range {start}-{end} ends past {len}");
            let count = end - start + 1;
            assert_eq!(start + count - 1, end);
        }
    }
    let id = header.strip_suffix(".wav").unwrap_or(header);
    if let Ok(id) = RecordingId::parse(id) {
        let _ = id.wav_name();
    }
});
