//! Prompts: playing a WAV into a call and cutting audio off.
//!
//! # Format
//! ```text
//! client: PLAY:{call_id}##{name}     play assets/{name} to the far end now
//! client: CLEAR:{call_id}            stop the prompt and drop queued audio (barge-in)
//! daemon: PLAYED:{call_id}##{name}   the prompt finished or was cut off
//! ```
//! A prompt plays instead of the client's queued audio; audio the client
//! sends while it plays cuts it off, as `CLEAR` does.

use super::call::{one_call_id, required};
use super::{split_args, truncate_for_error, Command, ProtocolError};

/// Longest prompt name accepted.
const MAX_NAME_LEN: usize = 255;

pub fn parse<'a>(verb: &str, args: Option<&'a str>) -> Result<Command<'a>, ProtocolError> {
    match verb {
        "CLEAR" => one_call_id(verb, args).map(|call| Command::Clear { call }),
        "PLAY" => {
            let args = required(verb, args)?;
            let mut parts = split_args(args);
            let (Some(call), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ProtocolError::bad_request(
                    "PLAY takes a call id and a file name: PLAY:{call_id}##{name}",
                ));
            };
            let call = one_call_id(verb, Some(call))?;
            if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(|c| c.is_control())
            {
                return Err(ProtocolError::bad_request(format!(
                    "bad file name {}",
                    truncate_for_error(name)
                )));
            }
            Ok(Command::Play { call, name })
        }
        _ => unreachable!("dispatched by Command::parse"),
    }
}

pub fn write_played(call: &str, name: &str, out: &mut String) {
    out.push_str("PLAYED:");
    out.push_str(call);
    out.push_str("##");
    out.push_str(name);
}

#[cfg(test)]
mod tests {
    use super::super::{Dialect, Event};
    use super::*;

    #[test]
    fn play_and_clear_parse() {
        assert_eq!(
            Command::parse(Dialect::V1, "PLAY:abc##hello.wav"),
            Ok(Command::Play {
                call: "abc",
                name: "hello.wav"
            })
        );
        assert_eq!(
            Command::parse(Dialect::V1, "CLEAR:abc"),
            Ok(Command::Clear { call: "abc" })
        );
        for bad in [
            "PLAY",
            "PLAY:abc",
            "PLAY:abc##",
            "PLAY:##x.wav",
            "PLAY:a##b.wav##c",
            "PLAY:a##b\u{1}.wav",
            "CLEAR",
            "CLEAR:a##b",
        ] {
            assert_eq!(
                Command::parse(Dialect::V1, bad).unwrap_err().code,
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn played_format() {
        let e = Event::Played {
            call: "abc",
            name: "hello.wav",
        };
        assert_eq!(e.format(Dialect::V1), "PLAYED:abc##hello.wav");
    }
}
