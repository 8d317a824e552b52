//! DTMF both ways.
//!
//! # Format
//! ```text
//! client: DTMF:{call_id}##{digits}   send digits (0-9 * # A-D, at most 32) to the far end
//! client: DTMF:{digits}              the same, on the connection's only call
//! daemon: DTMF:{call_id}##{digit}    the far end pressed a key
//! ```
//! Digits go out as RFC 4733 telephone-events when the far end negotiated
//! them, as in-band tones otherwise; each is 100 ms long, 60 ms apart.

use super::call::{one_call_id, required};
use super::{split_args, Command, ProtocolError};

pub fn parse<'a>(verb: &str, args: Option<&'a str>) -> Result<Command<'a>, ProtocolError> {
    let args = required(verb, args)?;
    let mut parts = split_args(args);
    let (call, digits) = match (parts.next(), parts.next(), parts.next()) {
        (Some(digits), None, None) => (None, digits),
        (Some(call), Some(digits), None) => (Some(one_call_id(verb, Some(call))?), digits),
        _ => {
            return Err(ProtocolError::bad_request(
                "DTMF takes a call id and digits: DTMF:{call_id}##{digits}",
            ))
        }
    };
    if digits.is_empty() {
        return Err(ProtocolError::bad_request("DTMF: no digits"));
    }
    Ok(Command::Dtmf { call, digits })
}

pub fn write_dtmf(call: &str, digit: char, out: &mut String) {
    out.push_str("DTMF:");
    out.push_str(call);
    out.push_str("##");
    out.push(digit);
}

#[cfg(test)]
mod tests {
    use super::super::{Dialect, Event};
    use super::*;

    #[test]
    fn dtmf_parses_and_formats() {
        assert_eq!(
            Command::parse(Dialect::V1, "DTMF:abc##12#"),
            Ok(Command::Dtmf {
                call: Some("abc"),
                digits: "12#"
            })
        );
        assert_eq!(
            Command::parse(Dialect::V1, "DTMF:5"),
            Ok(Command::Dtmf {
                call: None,
                digits: "5"
            })
        );
        for bad in ["DTMF", "DTMF:", "DTMF:a##", "DTMF:a##1##2"] {
            assert_eq!(
                Command::parse(Dialect::V1, bad).unwrap_err().code,
                400,
                "{bad}"
            );
        }
        let e = Event::Dtmf {
            call: "abc",
            digit: '#',
        };
        assert_eq!(e.format(Dialect::V1), "DTMF:abc###");
    }
}
