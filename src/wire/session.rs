//! Session-level messages: `PING` / `PONG` and `ERROR`.
//!
//! # Format
//! ```text
//! client: PING
//! daemon: PONG
//! daemon: ERROR:{code} {message}
//! ```
//! `{code}` follows HTTP's meanings: 400 malformed, 403 not your call,
//! 404 unknown call, 409 wrong state, 413 too large, 503 no resources.

use super::{Command, ProtocolError};

pub fn parse_ping(args: Option<&str>) -> Result<Command<'_>, ProtocolError> {
    match args {
        None | Some("") => Ok(Command::Ping),
        Some(_) => Err(ProtocolError::bad_request("PING takes no arguments")),
    }
}

pub fn write_error(e: &ProtocolError, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(out, "ERROR:{} {}", e.code, e.message);
}

#[cfg(test)]
mod tests {
    use super::super::{Dialect, Event};
    use super::*;

    #[test]
    fn ping_pong() {
        assert_eq!(Command::parse(Dialect::V1, "PING"), Ok(Command::Ping));
        assert_eq!(Command::parse(Dialect::V1, "PING:x").unwrap_err().code, 400);
        assert_eq!(Event::Pong.format(Dialect::V1), "PONG");
    }

    #[test]
    fn error_format() {
        let e = ProtocolError::new(404, "unknown call abc");
        assert_eq!(
            Event::Error(&e).format(Dialect::Legacy),
            "ERROR:404 unknown call abc"
        );
    }
}
