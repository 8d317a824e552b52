//! Prompt and greeting WAV files: `media::wav::decode_to_call_rate`, which
//! `prompts::PromptLibrary` calls on a file's bytes (through a `Cursor`,
//! as here) for `PLAY` and for the greeting; hound's reader, the channel
//! mix, the scaling and the resampler to 8 kHz.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use siprelay::media::wav::{decode_to_call_rate, CALL_RATE, MAX_PROMPT_SECONDS};

fuzz_target!(|data: &[u8]| {
    if let Ok(samples) = decode_to_call_rate(Cursor::new(data)) {
        // The length bound holds on what comes out, whatever the header said
        // (plus the resampler's rounding).
        assert!(samples.len() <= (MAX_PROMPT_SECONDS * CALL_RATE) as usize + 4096);
    }
});
