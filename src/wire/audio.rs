//! Audio in both directions: `RTP`.
//!
//! # Format
//! ```text
//! client: RTP:{call_id}##{base64}    v1: base64 of 16-bit LE PCM, 8 kHz mono, any length
//! client: RTP:{base64}               v1: the connection's only call
//! client: RTP:{hex}                  legacy: hex of the PCM bytes
//! daemon: RTP:{call_id}##{base64}    v1: one 20 ms frame (320 bytes of PCM)
//! daemon: RTP:{hex}                  legacy
//! ```

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::{split_args, truncate_for_error, Command, Dialect, ProtocolError};

/// Standard alphabet; padding written, and accepted with or without.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encoded audio as it arrived, decoded only once the call is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioPayload<'a> {
    Base64(&'a str),
    Hex(&'a str),
}

impl AudioPayload<'_> {
    /// Decodes into `out` (cleared first), reusing its allocation.
    pub fn decode_into(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        out.clear();
        match self {
            AudioPayload::Base64(s) => BASE64
                .decode_vec(s.as_bytes(), out)
                .map_err(|e| ProtocolError::bad_request(format!("bad base64 audio: {e}"))),
            AudioPayload::Hex(s) => decode_hex(s.as_bytes(), out),
        }
    }

    pub fn encoded_len(&self) -> usize {
        match self {
            AudioPayload::Base64(s) | AudioPayload::Hex(s) => s.len(),
        }
    }
}

pub fn parse(dialect: Dialect, args: Option<&str>) -> Result<Command<'_>, ProtocolError> {
    let args = args.unwrap_or_default();
    if dialect == Dialect::Legacy {
        return Ok(Command::Audio {
            call: None,
            payload: AudioPayload::Hex(args),
        });
    }
    let mut parts = split_args(args);
    let first = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => Ok(Command::Audio {
            call: None,
            payload: AudioPayload::Base64(first),
        }),
        (Some(audio), None) if !first.is_empty() => Ok(Command::Audio {
            call: Some(first),
            payload: AudioPayload::Base64(audio),
        }),
        _ => Err(ProtocolError::bad_request(format!(
            "RTP takes {{call_id}}##{{base64}}, got {}",
            truncate_for_error(args)
        ))),
    }
}

fn decode_hex(s: &[u8], out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if !s.len().is_multiple_of(2) {
        return Err(ProtocolError::bad_request(
            "bad hex audio: odd number of digits",
        ));
    }
    out.reserve(s.len() / 2);
    for pair in s.chunks_exact(2) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => return Err(ProtocolError::bad_request("bad hex audio: not a hex digit")),
        }
    }
    Ok(())
}

/// Formats one audio frame for a client, appending to `out`.
///
/// This runs once per received RTP packet, so it writes into a buffer the
/// caller reuses rather than building a fresh string.
pub fn write_event(dialect: Dialect, call: &str, pcm_le: &[u8], out: &mut String) {
    out.push_str("RTP:");
    match dialect {
        Dialect::V1 => {
            out.push_str(call);
            out.push_str("##");
            BASE64.encode_string(pcm_le, out);
        }
        Dialect::Legacy => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.reserve(pcm_le.len() * 2);
            for &b in pcm_le {
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 0xF) as usize] as char);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_audio_with_and_without_call_id() {
        let Command::Audio { call, payload } =
            Command::parse(Dialect::V1, "RTP:abc##AAEC").unwrap()
        else {
            panic!()
        };
        assert_eq!(call, Some("abc"));
        let mut buf = Vec::new();
        payload.decode_into(&mut buf).unwrap();
        assert_eq!(buf, [0, 1, 2]);

        let Command::Audio { call, payload } = Command::parse(Dialect::V1, "RTP:AAEC").unwrap()
        else {
            panic!()
        };
        assert_eq!(call, None);
        payload.decode_into(&mut buf).unwrap();
        assert_eq!(buf, [0, 1, 2]);
    }

    #[test]
    fn unpadded_base64_is_accepted_and_garbage_is_400() {
        let mut buf = Vec::new();
        AudioPayload::Base64("AAE").decode_into(&mut buf).unwrap();
        assert_eq!(buf, [0, 1]);
        let e = AudioPayload::Base64("!!!!")
            .decode_into(&mut buf)
            .unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.starts_with("bad base64 audio"));
        assert_eq!(
            Command::parse(Dialect::V1, "RTP:a##b##c").unwrap_err().code,
            400
        );
        assert_eq!(
            Command::parse(Dialect::V1, "RTP:##AAEC").unwrap_err().code,
            400
        );
    }

    #[test]
    fn legacy_audio_is_hex_both_ways() {
        let Command::Audio { call, payload } =
            Command::parse(Dialect::Legacy, "RTP:00ff10").unwrap()
        else {
            panic!()
        };
        assert_eq!(call, None);
        let mut buf = Vec::new();
        payload.decode_into(&mut buf).unwrap();
        assert_eq!(buf, [0x00, 0xFF, 0x10]);
        assert_eq!(
            AudioPayload::Hex("0g")
                .decode_into(&mut buf)
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            AudioPayload::Hex("abc")
                .decode_into(&mut buf)
                .unwrap_err()
                .code,
            400
        );

        let mut out = String::new();
        write_event(Dialect::Legacy, "ignored", &[0x00, 0xAB], &mut out);
        assert_eq!(out, "RTP:00ab");
    }

    #[test]
    fn v1_event_round_trips_through_the_parser() {
        let pcm: Vec<u8> = (0..320).map(|i| i as u8).collect();
        let mut out = String::new();
        write_event(Dialect::V1, "c1", &pcm, &mut out);
        let Command::Audio { call, payload } = Command::parse(Dialect::V1, &out).unwrap() else {
            panic!()
        };
        assert_eq!(call, Some("c1"));
        let mut back = Vec::new();
        payload.decode_into(&mut back).unwrap();
        assert_eq!(back, pcm);
    }
}
