//! Call control: placing, answering, rejecting and ending calls.
//!
//! # Format
//! ```text
//! client: CALL:{number}              number, or sip:/sips: URI
//! client: CALL:{number}##{account}   the same through a named SIP account
//! client: CALL_ANS:{call_id}         answer (200 OK)
//! client: CALL_IGNORE:{call_id}      reject with 486 Busy Here
//! client: RING_IGNORE:{call_id}      reject with 603 Decline
//! client: HANGUP:{call_id} | BYE:{call_id} | BYE
//!
//! daemon: RING_ANS:{caller}##{call_id}
//! daemon: CALLING:{number}##{call_id}
//! daemon: RINGING:{call_id}
//! daemon: CALL_ANS:{call_id}
//! daemon: CALL_IGNORE:{call_id}
//! daemon: RING_IGNORE:{call_id}
//! daemon: CALL_FAILED:{status} {reason}##{call_id}    legacy: CALL_FAILED:{status} {reason}
//! daemon: BYE:{call_id}                               legacy: BYE
//! ```

use super::{split_args, truncate_for_error, Command, Dialect, Event, ProtocolError};

/// Longest dial string accepted (a SIP URI with parameters fits easily).
const MAX_TARGET_LEN: usize = 256;

pub fn parse<'a>(verb: &str, args: Option<&'a str>) -> Result<Command<'a>, ProtocolError> {
    match verb {
        "CALL" => {
            let args = required(verb, args)?;
            let (target, account) = match args.split_once("##") {
                Some((target, account)) => (target, Some(parse_account(account)?)),
                None => (args, None),
            };
            parse_target(target).map(|target| Command::Call { target, account })
        }
        "CALL_ANS" => one_call_id(verb, args).map(|call| Command::Answer { call }),
        "CALL_IGNORE" => one_call_id(verb, args).map(|call| Command::Reject { call, status: 486 }),
        "RING_IGNORE" => one_call_id(verb, args).map(|call| Command::Reject { call, status: 603 }),
        "HANGUP" => one_call_id(verb, args).map(|call| Command::Hangup { call: Some(call) }),
        "BYE" => match args {
            None | Some("") => Ok(Command::Hangup { call: None }),
            Some(_) => one_call_id(verb, args).map(|call| Command::Hangup { call: Some(call) }),
        },
        _ => unreachable!("dispatched by Command::parse"),
    }
}

pub(super) fn required<'a>(verb: &str, args: Option<&'a str>) -> Result<&'a str, ProtocolError> {
    match args {
        Some(a) if !a.is_empty() => Ok(a),
        _ => Err(ProtocolError::bad_request(format!(
            "{verb} needs an argument"
        ))),
    }
}

pub(super) fn one_call_id<'a>(verb: &str, args: Option<&'a str>) -> Result<&'a str, ProtocolError> {
    let args = required(verb, args)?;
    let mut parts = split_args(args);
    let id = parts.next().unwrap_or_default();
    if parts.next().is_some() {
        return Err(ProtocolError::bad_request(format!(
            "{verb} takes one call id"
        )));
    }
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProtocolError::bad_request(format!(
            "malformed call id {}",
            truncate_for_error(id)
        )));
    }
    Ok(id)
}

/// An account's name as `[[accounts]]` allows it.
pub fn parse_account(name: &str) -> Result<&str, ProtocolError> {
    let ok = (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(name)
    } else {
        Err(ProtocolError::bad_request(format!(
            "malformed account name {}",
            truncate_for_error(name)
        )))
    }
}

/// A dial string is a `sip:`/`sips:` URI or a plain number; a plain number
/// must not smuggle URI syntax into the Request-URI we build from it. Used
/// by `CALL` and by `POST /calls`.
pub fn parse_target(target: &str) -> Result<&str, ProtocolError> {
    let bad = |why: &str| Err(ProtocolError::bad_request(format!("bad number: {why}")));
    if target.len() > MAX_TARGET_LEN {
        return bad("too long");
    }
    if target.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains white space or control characters");
    }
    let lower = target
        .get(..5)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        return Ok(target);
    }
    if target.contains(['@', ':', ';', '<', '>', '"', '?']) {
        return bad("use a sip: URI to name a host");
    }
    Ok(target)
}

pub fn write_event(event: &Event<'_>, dialect: Dialect, out: &mut String) {
    use std::fmt::Write;
    let legacy = dialect == Dialect::Legacy;
    let _ = match event {
        Event::RingAns { caller, call } => write!(out, "RING_ANS:{}##{call}", escape(caller)),
        Event::Calling { number, call } => write!(out, "CALLING:{}##{call}", escape(number)),
        Event::Ringing { call } => write!(out, "RINGING:{call}"),
        Event::CallAns { call } => write!(out, "CALL_ANS:{call}"),
        Event::CallIgnore { call } => write!(out, "CALL_IGNORE:{call}"),
        Event::RingIgnore { call } => write!(out, "RING_IGNORE:{call}"),
        Event::CallFailed { status, reason, .. } if legacy => {
            write!(out, "CALL_FAILED:{status} {}", escape(reason))
        }
        Event::CallFailed {
            status,
            reason,
            call,
        } => {
            write!(out, "CALL_FAILED:{status} {}##{call}", escape(reason))
        }
        Event::Bye { .. } if legacy => write!(out, "BYE"),
        Event::Bye { call } => write!(out, "BYE:{call}"),
        Event::Error(_)
        | Event::Pong
        | Event::Played { .. }
        | Event::Device { .. }
        | Event::Reg { .. }
        | Event::Dtmf { .. } => {
            unreachable!("formatted in wire::Event::format")
        }
    };
}

/// Keeps text taken from SIP (a caller's number, a reason phrase) from
/// breaking the framing: `#` is percent-encoded, control characters dropped.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(|c: char| c == '#' || c.is_control()) {
        return s.into();
    }
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| {
            if c == '#' {
                "%23".to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_v1(s: &str) -> Result<Command<'_>, ProtocolError> {
        Command::parse(Dialect::V1, s)
    }

    #[test]
    fn parses_every_call_verb() {
        assert_eq!(
            parse_v1("CALL:1002"),
            Ok(Command::Call {
                target: "1002",
                account: None
            })
        );
        assert_eq!(
            parse_v1("CALL:1002##office"),
            Ok(Command::Call {
                target: "1002",
                account: Some("office")
            })
        );
        assert_eq!(
            parse_v1("CALL:sip:bob@127.0.0.1:5070"),
            Ok(Command::Call {
                target: "sip:bob@127.0.0.1:5070",
                account: None
            })
        );
        assert_eq!(
            parse_v1("CALL_ANS:abc"),
            Ok(Command::Answer { call: "abc" })
        );
        assert_eq!(
            parse_v1("CALL_IGNORE:abc"),
            Ok(Command::Reject {
                call: "abc",
                status: 486
            })
        );
        assert_eq!(
            parse_v1("RING_IGNORE:abc"),
            Ok(Command::Reject {
                call: "abc",
                status: 603
            })
        );
        assert_eq!(
            parse_v1("HANGUP:abc"),
            Ok(Command::Hangup { call: Some("abc") })
        );
        assert_eq!(
            parse_v1("BYE:abc"),
            Ok(Command::Hangup { call: Some("abc") })
        );
        assert_eq!(parse_v1("BYE"), Ok(Command::Hangup { call: None }));
    }

    #[test]
    fn rejects_malformed_call_commands() {
        for bad in [
            "CALL",
            "CALL:",
            "CALL:1 2",
            "CALL:bob@evil.example",
            "CALL:1002##",
            "CALL:1002##bad name",
            "CALL:1002##a##b",
            "CALL_ANS",
            "CALL_ANS:a##b",
            "HANGUP:",
            "CALL_ANS:a b",
        ] {
            let e = parse_v1(bad).unwrap_err();
            assert_eq!(e.code, 400, "{bad}");
        }
        let long = format!("CALL:{}", "1".repeat(300));
        assert_eq!(parse_v1(&long).unwrap_err().code, 400);
    }

    #[test]
    fn formats_events_in_both_dialects() {
        let call = "0123456789abcdef";
        let cases: [(Event<'_>, &str, &str); 8] = [
            (
                Event::RingAns {
                    caller: "1001",
                    call,
                },
                "RING_ANS:1001##0123456789abcdef",
                "RING_ANS:1001##0123456789abcdef",
            ),
            (
                Event::Calling {
                    number: "1002",
                    call,
                },
                "CALLING:1002##0123456789abcdef",
                "CALLING:1002##0123456789abcdef",
            ),
            (
                Event::Ringing { call },
                "RINGING:0123456789abcdef",
                "RINGING:0123456789abcdef",
            ),
            (
                Event::CallAns { call },
                "CALL_ANS:0123456789abcdef",
                "CALL_ANS:0123456789abcdef",
            ),
            (
                Event::CallIgnore { call },
                "CALL_IGNORE:0123456789abcdef",
                "CALL_IGNORE:0123456789abcdef",
            ),
            (
                Event::RingIgnore { call },
                "RING_IGNORE:0123456789abcdef",
                "RING_IGNORE:0123456789abcdef",
            ),
            (
                Event::CallFailed {
                    status: 404,
                    reason: "Not Found",
                    call,
                },
                "CALL_FAILED:404 Not Found##0123456789abcdef",
                "CALL_FAILED:404 Not Found",
            ),
            (Event::Bye { call }, "BYE:0123456789abcdef", "BYE"),
        ];
        for (event, v1, legacy) in cases {
            assert_eq!(event.format(Dialect::V1), v1);
            assert_eq!(event.format(Dialect::Legacy), legacy);
        }
    }

    #[test]
    fn text_from_sip_cannot_break_framing() {
        let e = Event::RingAns {
            caller: "12##34\n",
            call: "c",
        };
        assert_eq!(e.format(Dialect::V1), "RING_ANS:12%23%2334##c");
    }
}
