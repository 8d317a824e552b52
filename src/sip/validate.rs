//! Strict checks on a request the SIP stack has already parsed: what RFC 3261
//! forbids but a lenient parser lets through (RFC 4475 section 3.1.2). Pure:
//! works on the request's text, so it is tested without a socket.

/// The text of a parsed request, as the validator sees it.
pub struct RequestText<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    /// False for any SIP version but 2.0.
    pub version_2_0: bool,
    /// `(name, value)` in order, names as the stack spells them.
    pub headers: Vec<(&'a str, &'a str)>,
    pub body_len: usize,
}

/// Why a request is refused: the status to answer and a reason for the
/// `Warning` header and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub status: u16,
    pub why: String,
}

fn bad(why: impl Into<String>) -> Invalid {
    Invalid {
        status: 400,
        why: why.into(),
    }
}

/// Header fields that may appear once only (RFC 3261 section 7.3.1).
const SINGLE: &[&str] = &[
    "call-id",
    "cseq",
    "from",
    "to",
    "max-forwards",
    "content-length",
    "content-type",
];

pub fn check(req: &RequestText<'_>) -> Result<(), Invalid> {
    if !req.version_2_0 {
        return Err(Invalid {
            status: 505,
            why: "SIP version not supported".into(),
        });
    }
    if req.uri.starts_with('<') || req.uri.contains(char::is_whitespace) {
        return Err(bad("malformed Request-URI"));
    }
    if req.uri.contains('?') {
        return Err(bad("escaped headers in the Request-URI"));
    }
    for name in SINGLE {
        if req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
            > 1
        {
            return Err(bad(format!("more than one {name} header")));
        }
    }
    for (name, value) in &req.headers {
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                let len: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("malformed Content-Length"))?;
                if len > req.body_len {
                    return Err(bad("Content-Length larger than the message"));
                }
            }
            "cseq" => {
                let mut parts = value.split_whitespace();
                let number = parts.next().unwrap_or_default();
                if number.parse::<u32>().is_err() {
                    return Err(bad("malformed CSeq number"));
                }
                if parts.next() != Some(req.method) {
                    return Err(bad("CSeq method does not match the request"));
                }
            }
            "from" | "to" | "contact" => check_name_addr(name, value)?,
            "via" => check_params(name, value)?,
            _ => {}
        }
    }
    Ok(())
}

fn check_name_addr(name: &str, value: &str) -> Result<(), Invalid> {
    if value.trim() == "*" {
        return Ok(());
    }
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    if quoted {
        return Err(bad(format!("unterminated quoted string in {name}")));
    }
    match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            if value[open + 1..close].contains(char::is_whitespace) {
                return Err(bad(format!("white space inside the URI of {name}")));
            }
            check_params(name, &value[close + 1..])
        }
        (Some(_), _) | (None, Some(_)) => Err(bad(format!("unbalanced <> in {name}"))),
        (None, None) => {
            // A bare addr-spec ends at the first ';': what follows are header
            // parameters, so the URI itself cannot carry '?' or ','.
            let uri = value.split(';').next().unwrap_or_default();
            if uri.contains(['?', ',']) {
                return Err(bad(format!(
                    "a URI with '?' or ',' must be enclosed in <> in {name}"
                )));
            }
            check_params(name, value)
        }
    }
}

/// Empty parameters (`;;`, `;,`, a trailing `;`) are not allowed.
fn check_params(name: &str, value: &str) -> Result<(), Invalid> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.contains(";;")
        || compact.contains(";,")
        || compact.ends_with(';')
        || compact.ends_with(',')
    {
        return Err(bad(format!("empty parameter in {name}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(headers: &[(&'a str, &'a str)], body_len: usize) -> RequestText<'a> {
        RequestText {
            method: "INVITE",
            uri: "sip:user@example.com",
            version_2_0: true,
            headers: headers.to_vec(),
            body_len,
        }
    }

    const GOOD: &[(&str, &str)] = &[
        ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1"),
        ("From", "\"J \\\"Quoted\\\" R\" <sip:a@example.com>;tag=1"),
        ("To", "sip:b@example.com"),
        ("Call-ID", "x@y"),
        ("CSeq", "1 INVITE"),
        ("Contact", "<sip:a@192.0.2.1?Route=x>"),
        ("Content-Length", "10"),
    ];

    #[test]
    fn accepts_a_well_formed_request() {
        assert_eq!(check(&request(GOOD, 10)), Ok(()));
    }

    #[test]
    fn refuses_what_rfc_4475_calls_invalid() {
        let with = |name: &'static str, value: &'static str| {
            let mut h: Vec<(&str, &str)> =
                GOOD.iter().copied().filter(|(n, _)| *n != name).collect();
            h.push((name, value));
            check(&request(&h, 10)).unwrap_err().why
        };
        assert!(with("Content-Length", "9999").contains("larger"));
        assert!(with("Content-Length", "-999").contains("malformed"));
        assert!(with("CSeq", "8 OPTIONS").contains("does not match"));
        assert!(with("To", "\"Mr. J. User <sip:j.user@example.com>").contains("unterminated"));
        assert!(with("To", "\"Watson\" < sip:t.watson@example.org >").contains("white space"));
        assert!(with("Contact", "sip:user@example.com?Route=%3Csip:x%3E").contains("enclosed"));
        assert!(with("Contact", "\"Joe\" <sip:joe@example.org>;;;;").contains("empty parameter"));
        assert!(with("Via", "SIP/2.0/UDP 192.0.2.15;;,;,,").contains("empty parameter"));

        let mut dup = GOOD.to_vec();
        dup.push(("Call-ID", "other"));
        assert!(check(&request(&dup, 10))
            .unwrap_err()
            .why
            .contains("call-id"));

        let mut r = request(GOOD, 10);
        r.uri = "<sip:user@example.com>";
        assert_eq!(check(&r).unwrap_err().status, 400);
        r.uri = "sip:user@example.com?Route=%3Csip:example.com%3E";
        assert_eq!(check(&r).unwrap_err().status, 400);
        let mut r = request(GOOD, 10);
        r.version_2_0 = false;
        assert_eq!(check(&r).unwrap_err().status, 505);
    }
}
