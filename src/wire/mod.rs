//! The WebSocket text protocol, pure: parse what clients send, format what
//! the daemon sends. No sockets, no call state.
//!
//! # Grammar
//! One text frame is one message: `VERB` or `VERB:ARGS`, with several
//! arguments separated by `##`. See `protocol/PROTOCOL.md` for every message.
//!
//! The verbs are grouped by concern, one file each: [`call`] (placing,
//! answering, rejecting and ending calls), [`audio`] (`RTP` both ways),
//! [`session`] (`PING`/`PONG`, `ERROR`).

pub mod audio;
pub mod call;
pub mod dtmf;
pub mod playback;
pub mod session;

use std::fmt;

pub use audio::AudioPayload;

/// The two forms of the protocol a connection can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// Protocol v1: every call-scoped message names its call.
    #[default]
    V1,
    /// The seed relay's forms (`/ws?dialect=legacy`): hex audio, no call ids
    /// on `RTP`, `CALL_FAILED` and `BYE`; one call per connection.
    Legacy,
}

/// A message from a client, borrowing from the frame it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `CALL:{number}` or `CALL:{number}##{account}`: dial a plain number
    /// or a `sip:` URI, through the default or the named SIP account.
    Call {
        target: &'a str,
        account: Option<&'a str>,
    },
    /// `CALL_ANS:{call_id}`: answer an offered call.
    Answer { call: &'a str },
    /// `CALL_IGNORE:{call_id}` (486) or `RING_IGNORE:{call_id}` (603).
    Reject { call: &'a str, status: u16 },
    /// `RTP:{call_id}##{audio}` or `RTP:{audio}`.
    Audio {
        call: Option<&'a str>,
        payload: AudioPayload<'a>,
    },
    /// `HANGUP:{call_id}`, `BYE:{call_id}` or bare `BYE`.
    Hangup { call: Option<&'a str> },
    /// `PING`.
    Ping,
    /// `PLAY:{call_id}##{name}`: play a WAV from the assets directory.
    Play { call: &'a str, name: &'a str },
    /// `CLEAR:{call_id}`: stop the prompt, drop queued audio.
    Clear { call: &'a str },
    /// `DTMF:{call_id}##{digits}` or `DTMF:{digits}`.
    Dtmf {
        call: Option<&'a str>,
        digits: &'a str,
    },
}

/// Why a command could not be carried out; sent back as `ERROR:{code} {message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: u16,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for ProtocolError {}

/// Splits a frame into its verb and argument text (`None` when there is no `:`).
pub fn split_verb(text: &str) -> (&str, Option<&str>) {
    match text.split_once(':') {
        Some((verb, args)) => (verb, Some(args)),
        None => (text, None),
    }
}

/// The `##`-separated arguments of a message.
pub fn split_args(args: &str) -> impl Iterator<Item = &str> {
    args.split("##")
}

impl<'a> Command<'a> {
    /// Parses one client frame.
    pub fn parse(dialect: Dialect, text: &'a str) -> Result<Command<'a>, ProtocolError> {
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, args) = split_verb(text);
        match verb {
            "CALL" | "CALL_ANS" | "CALL_IGNORE" | "RING_IGNORE" | "HANGUP" | "BYE" => {
                call::parse(verb, args)
            }
            "RTP" => audio::parse(dialect, args),
            "PLAY" | "CLEAR" => playback::parse(verb, args),
            "DTMF" => dtmf::parse(verb, args),
            "PING" => session::parse_ping(args),
            "" => Err(ProtocolError::bad_request("empty message")),
            other => Err(ProtocolError::bad_request(format!(
                "unknown command {}",
                truncate_for_error(other)
            ))),
        }
    }
}

/// Keeps error messages short and printable whatever the client sent.
pub fn truncate_for_error(s: &str) -> String {
    s.chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A message from the daemon to a client (audio is formatted separately, on
/// the media path, by [`audio::write_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// `RING_ANS:{caller}##{call_id}`
    RingAns { caller: &'a str, call: &'a str },
    /// `CALLING:{number}##{call_id}`
    Calling { number: &'a str, call: &'a str },
    /// `RINGING:{call_id}`
    Ringing { call: &'a str },
    /// `CALL_ANS:{call_id}`
    CallAns { call: &'a str },
    /// `CALL_IGNORE:{call_id}`: the far end declined our call.
    CallIgnore { call: &'a str },
    /// `RING_IGNORE:{call_id}`: the caller gave up before we answered.
    RingIgnore { call: &'a str },
    /// `CALL_FAILED:{status} {reason}##{call_id}`
    CallFailed {
        status: u16,
        reason: &'a str,
        call: &'a str,
    },
    /// `BYE:{call_id}`
    Bye { call: &'a str },
    /// `PLAYED:{call_id}##{name}`
    Played { call: &'a str, name: &'a str },
    /// `ERROR:{code} {message}`
    Error(&'a ProtocolError),
    /// `PONG`
    Pong,
    /// `DEVICE:{id}##online` or `DEVICE:{id}##offline`, to applications.
    Device { id: &'a str, online: bool },
    /// `DTMF:{call_id}##{digit}`: the far end pressed a key.
    Dtmf { call: &'a str, digit: char },
    /// `REG:{account}##{state}`, or `REG:{account}##failed##{status} {reason}`.
    Reg {
        account: &'a str,
        state: &'a str,
        failure: Option<(u16, &'a str)>,
    },
}

impl Event<'_> {
    /// Formats the event as one text frame in the connection's dialect.
    pub fn format(&self, dialect: Dialect) -> String {
        let mut out = String::with_capacity(64);
        match self {
            Event::Error(e) => session::write_error(e, &mut out),
            Event::Pong => out.push_str("PONG"),
            Event::Dtmf { call, digit } => dtmf::write_dtmf(call, *digit, &mut out),
            Event::Device { id, online } => {
                out.push_str("DEVICE:");
                out.push_str(id);
                out.push_str(if *online { "##online" } else { "##offline" });
            }
            Event::Played { call, name } => playback::write_played(call, name, &mut out),
            Event::Reg {
                account,
                state,
                failure,
            } => {
                out.push_str("REG:");
                out.push_str(account);
                out.push_str("##");
                out.push_str(state);
                if let Some((status, reason)) = failure {
                    use std::fmt::Write;
                    let reason = reason.replace("##", "# #");
                    let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
                    let _ = write!(out, "##{status} {reason}");
                }
            }

            _ => call::write_event(self, dialect, &mut out),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_empty_commands_are_400() {
        let e = Command::parse(Dialect::V1, "DANCE:now").unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(e.message, "unknown command DANCE");
        assert_eq!(Command::parse(Dialect::V1, "").unwrap_err().code, 400);
        assert_eq!(
            Command::parse(Dialect::V1, "call:1002").unwrap_err().code,
            400,
            "verbs are upper case"
        );
    }

    #[test]
    fn error_text_is_bounded_and_printable() {
        let long = format!("{}\u{7}", "X".repeat(1000));
        let e = Command::parse(Dialect::V1, &long).unwrap_err();
        assert!(e.message.len() < 60);
        assert!(!e.message.chars().any(char::is_control));
    }

    #[test]
    fn registration_events() {
        let reg = |state, failure| {
            Event::Reg {
                account: "office",
                state,
                failure,
            }
            .format(Dialect::V1)
        };
        assert_eq!(reg("registered", None), "REG:office##registered");
        assert_eq!(
            reg("failed", Some((403, "Forbidden##x\n"))),
            "REG:office##failed##403 Forbidden# #x"
        );
    }

    #[test]
    fn trailing_newline_is_tolerated() {
        assert_eq!(Command::parse(Dialect::V1, "PING\r\n"), Ok(Command::Ping));
    }
}
