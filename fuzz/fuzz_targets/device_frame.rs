//! A device's WebSocket (`http::device::serve`): a run of frames as a board
//! sends them. Binary frames are audio in the device's format
//! (`devices::AudioFormat::decode_to_pcm_bytes`) queued for playout paced
//! to the device's clock (`OutboundAudio` with `follow_device_clock`, the
//! frames the media clock then takes); text frames are `HELLO:{json}`
//! (the checks of `http::device::hello`, private, repeated here) or a
//! command (`Connection::handle_text`: size check, `wire::Command::parse`
//! in the V1 dialect devices speak).
//!
//! Input: byte 0 picks the format (0 pcmu, 1 pcma, 2 l16, mod 3); then
//! frames, each a kind byte (bit 0: text), a 2-byte big-endian length and
//! that many bytes (the last one takes whatever is left).
#![no_main]

use libfuzzer_sys::fuzz_target;
use siprelay::devices::AudioFormat;
use siprelay::http::connection::MAX_COMMAND_BYTES;
use siprelay::media::playout::FRAME_SAMPLES;
use siprelay::media::prompt::OutboundAudio;
use siprelay::media::session::PLAYOUT_CAPACITY;
use siprelay::wire::{Command, Dialect};

/// `http::device::MAX_DEVICE_FRAME` (private): axum refuses larger frames.
const MAX_DEVICE_FRAME: usize = 16 * 1024;
/// `http::device::MAX_HELLO` (private).
const MAX_HELLO: usize = 4 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&format, mut rest)) = data.split_first() else {
        return;
    };
    let format = match format % 3 {
        0 => AudioFormat::Pcmu,
        1 => AudioFormat::Pcma,
        _ => AudioFormat::L16,
    };
    let mut out = OutboundAudio::new(PLAYOUT_CAPACITY);
    out.follow_device_clock(true);
    let mut pcm = Vec::new();
    let mut frame = [0i16; FRAME_SAMPLES];
    while let [kind, tail @ ..] = rest {
        let (body, r) = match tail {
            [hi, lo, body @ ..] => {
                let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(body.len());
                body.split_at(len)
            }
            _ => (tail, &[][..]),
        };
        rest = r;
        if body.len() > MAX_DEVICE_FRAME {
            continue;
        }
        if kind & 1 == 0 {
            pcm.clear();
            if format.decode_to_pcm_bytes(body, &mut pcm).is_ok() {
                let expected = match format {
                    AudioFormat::L16 => body.len(),
                    _ => body.len() * 2,
                };
                assert_eq!(pcm.len(), expected);
                let _ = out.push_client(&pcm);
            }
        } else {
            // Text frames are UTF-8 (the WebSocket layer checks).
            let Ok(text) = std::str::from_utf8(body) else {
                continue;
            };
            match text.strip_prefix("HELLO:") {
                Some(json) if json.len() <= MAX_HELLO => {
                    let _ = serde_json::from_str::<serde_json::Value>(json)
                        .ok()
                        .filter(serde_json::Value::is_object);
                }
                Some(_) => {}
                None if text.len() > MAX_COMMAND_BYTES => {}
                None => {
                    if let Ok(Command::Audio { payload, .. }) = Command::parse(Dialect::V1, text) {
                        pcm.clear();
                        if payload.decode_into(&mut pcm).is_ok() {
                            let _ = out.push_client(&pcm);
                        }
                    }
                }
            }
        }
        // The media clock takes one frame per tick.
        out.next_frame(&mut frame);
    }
});
