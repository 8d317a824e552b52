//! The WebSocket text protocol: one text frame from a client, as
//! `http::connection::Connection::dispatch` takes it (size check, then
//! `wire::Command::parse`), and what the connection does next with the
//! parts that stay text: audio payloads decoded into the playout queue,
//! DTMF digits queued, dial strings turned into a Request-URI the way
//! `sip::outbound` does, and the `ERROR` event a failure sends back.
//!
//! Input: byte 0 picks the dialect (bit 0: legacy), the rest is the frame
//! (WebSocket text frames are UTF-8; other bytes never reach the parser).
#![no_main]

use libfuzzer_sys::fuzz_target;
use siprelay::http::connection::MAX_COMMAND_BYTES;
use siprelay::media::dtmf::DtmfSender;
use siprelay::media::prompt::OutboundAudio;
use siprelay::media::session::PLAYOUT_CAPACITY;
use siprelay::wire::call::{parse_account, parse_target};
use siprelay::wire::{Command, Dialect, Event, ProtocolError};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, frame)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(frame) else {
        return;
    };
    let dialect = if mode & 1 == 0 {
        Dialect::V1
    } else {
        Dialect::Legacy
    };
    if let Err(e) = dispatch(dialect, text) {
        let _ = Event::Error(&e).format(dialect);
    }
});

fn dispatch(dialect: Dialect, text: &str) -> Result<(), ProtocolError> {
    if text.len() > MAX_COMMAND_BYTES {
        return Err(ProtocolError::new(413, "too long"));
    }
    match Command::parse(dialect, text)? {
        Command::Audio { payload, .. } => {
            let mut pcm = Vec::new();
            payload.decode_into(&mut pcm)?;
            let mut out = OutboundAudio::new(PLAYOUT_CAPACITY);
            let (queued, _) = out.push_client(&pcm);
            queued.map_err(|e| ProtocolError::new(413, e.to_string()))?;
            let mut frame = [0i16; siprelay::media::playout::FRAME_SAMPLES];
            out.next_frame(&mut frame);
        }
        Command::Dtmf { digits, .. } => {
            DtmfSender::default()
                .push(digits)
                .map_err(|e| ProtocolError::bad_request(e.to_string()))?;
        }
        Command::Call { target, account } => {
            // Already checked by the parser; checked again here so that
            // a parser change that lets more through shows up.
            parse_target(target)?;
            if let Some(account) = account {
                parse_account(account)?;
            }
            target_uri(target)?;
        }
        Command::Answer { .. }
        | Command::Reject { .. }
        | Command::Hangup { .. }
        | Command::Ping
        | Command::Play { .. }
        | Command::Clear { .. } => {}
    }
    Ok(())
}

/// `sip::outbound::Dialer::target_uri` (private): a `sip:` URI as given, a
/// plain number as the user part at a domain, then rsipstack's URI parser.
fn target_uri(target: &str) -> Result<String, ProtocolError> {
    let text = if target.to_ascii_lowercase().starts_with("sip") {
        target.to_string()
    } else {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "+*#._-".contains(c);
        if target.is_empty() || !target.chars().all(allowed) {
            return Err(ProtocolError::bad_request("bad number"));
        }
        format!("sip:{target}@pbx.example.com")
    };
    let uri = rsipstack::sip::Uri::try_from(text.as_str())
        .map_err(|e| ProtocolError::bad_request(format!("bad SIP URI: {e}")))?;
    Ok(uri.to_string())
}
