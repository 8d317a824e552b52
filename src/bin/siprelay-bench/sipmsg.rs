//! SIP messages as plain RFC 3261 text: just enough parsing and building
//! for a UAC that places calls, ACKs, hangs up and answers the daemon's BYE.
//! Independent of the daemon's SIP stack on purpose.

use std::fmt::Write;
use std::net::SocketAddr;

/// A parsed message borrowing from the datagram's text.
pub struct Msg<'a> {
    pub start: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    pub body: &'a str,
}

fn long_name(name: &str) -> &str {
    match name {
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        other => other,
    }
}

impl<'a> Msg<'a> {
    pub fn parse(text: &'a str) -> Option<Msg<'a>> {
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let start = lines.next()?;
        let mut headers = Vec::with_capacity(12);
        for line in lines {
            let (name, value) = line.split_once(':')?;
            headers.push((long_name(name.trim()), value.trim()));
        }
        Some(Msg {
            start,
            headers,
            body,
        })
    }

    /// Status code of a response; `None` for a request.
    pub fn status(&self) -> Option<u16> {
        self.start.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    /// Method of a request; `None` for a response.
    pub fn method(&self) -> Option<&'a str> {
        if self.start.starts_with("SIP/2.0 ") {
            return None;
        }
        self.start.split(' ').next()
    }

    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.all(name).next()
    }

    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &'a str)> {
        let mut f = self.header("CSeq")?.split_ascii_whitespace();
        Some((f.next()?.parse().ok()?, f.next()?))
    }
}

/// The `tag` parameter of a From or To value.
pub fn tag_of(value: &str) -> Option<&str> {
    value
        .split(';')
        .skip(1)
        .find_map(|p| p.trim().strip_prefix("tag="))
}

/// The URI inside `<...>` of a Contact (or the bare URI).
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// Where an SDP body wants RTP, and its first payload type.
pub fn sdp_media(body: &str) -> Option<(SocketAddr, u8)> {
    let mut ip = None;
    let mut media = None;
    for line in body.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.split('/').next()?.trim().parse().ok();
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            let mut f = m.split_ascii_whitespace();
            let port: u16 = f.next()?.parse().ok()?;
            let pt: u8 = f.nth(1)?.parse().ok()?;
            media = Some((port, pt));
        }
    }
    let (port, pt) = media?;
    Some((SocketAddr::new(ip?, port), pt))
}

/// Call-ID of bench call `index` in run `run`.
pub fn call_id(index: usize, run: &str) -> String {
    format!("{index}-{run}@bench")
}

/// The call index in a Call-ID of this run.
pub fn index_of(call_id: &str, run: &str) -> Option<usize> {
    let (index, rest) = call_id.split_once('-')?;
    if rest.strip_suffix("@bench")? != run {
        return None;
    }
    index.parse().ok()
}

/// The identity of one call's dialog, from our side.
pub struct Dialog<'a> {
    pub local: SocketAddr,
    pub daemon: SocketAddr,
    pub index: usize,
    pub call_id: &'a str,
    pub from_tag: &'a str,
    /// The number called: the WebSocket client that takes it is offered the call.
    pub callee: &'a str,
}

impl Dialog<'_> {
    fn via(&self, out: &mut String, branch: &str) {
        let _ = write!(
            out,
            "Via: SIP/2.0/UDP {};branch={branch};rport\r\nMax-Forwards: 70\r\n",
            self.local
        );
    }

    fn from(&self, out: &mut String) {
        let _ = write!(
            out,
            "From: \"b{i}\" <sip:b{i}@{l}>;tag={t}\r\n",
            i = self.index,
            l = self.local,
            t = self.from_tag
        );
    }

    fn to(&self, out: &mut String, to_tag: Option<&str>) {
        let _ = write!(out, "To: <sip:{}@{}>", self.callee, self.daemon);
        if let Some(t) = to_tag {
            let _ = write!(out, ";tag={t}");
        }
        out.push_str("\r\n");
    }

    /// INVITE offering PCMU on `rtp_port`.
    pub fn invite(&self, branch: &str, rtp_port: u16) -> String {
        let body = format!(
            "v=0\r\no=bench {i} 1 IN IP4 127.0.0.1\r\ns=bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
            i = self.index
        );
        let mut m = String::with_capacity(700);
        let _ = write!(m, "INVITE sip:{}@{} SIP/2.0\r\n", self.callee, self.daemon);
        self.via(&mut m, branch);
        self.from(&mut m);
        self.to(&mut m, None);
        let _ = write!(
            m,
            "Call-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:b{}@{}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            self.call_id,
            self.index,
            self.local,
            body.len()
        );
        m
    }

    /// ACK: for a 2xx a new transaction to the remote target; for a failure
    /// the INVITE's branch and Request-URI and the response's To.
    pub fn ack(&self, branch: &str, target: &str, to_tag: Option<&str>) -> String {
        let mut m = String::with_capacity(400);
        let _ = write!(m, "ACK {target} SIP/2.0\r\n");
        self.via(&mut m, branch);
        self.from(&mut m);
        self.to(&mut m, to_tag);
        let _ = write!(
            m,
            "Call-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            self.call_id
        );
        m
    }

    pub fn bye(&self, branch: &str, target: &str, to_tag: &str) -> String {
        let mut m = String::with_capacity(400);
        let _ = write!(m, "BYE {target} SIP/2.0\r\n");
        self.via(&mut m, branch);
        self.from(&mut m);
        self.to(&mut m, Some(to_tag));
        let _ = write!(
            m,
            "Call-ID: {}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            self.call_id
        );
        m
    }

    /// The INVITE's Request-URI (for a failure's ACK).
    pub fn request_uri(&self) -> String {
        format!("sip:{}@{}", self.callee, self.daemon)
    }
}

/// A response to a request, copying Via, From, To, Call-ID and CSeq.
pub fn response(req: &Msg<'_>, status: u16, reason: &str) -> String {
    let mut m = format!("SIP/2.0 {status} {reason}\r\n");
    for v in req.all("Via") {
        let _ = write!(m, "Via: {v}\r\n");
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = req.header(name) {
            let _ = write!(m, "{name}: {v}\r\n");
        }
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_with_sdp() {
        let text = "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bKx\r\n\
                    To: <sip:bench@127.0.0.1:5060>;tag=abc\r\ni: 7-run@bench\r\nCSeq: 1 INVITE\r\n\
                    Contact: <sip:siprelay@127.0.0.1:5060>\r\n\r\n\
                    v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 20002 RTP/AVP 0 101\r\n";
        let m = Msg::parse(text).unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.method(), None);
        assert_eq!(m.cseq(), Some((1, "INVITE")));
        assert_eq!(tag_of(m.header("To").unwrap()), Some("abc"));
        assert_eq!(index_of(m.header("Call-ID").unwrap(), "run"), Some(7));
        assert_eq!(index_of("7-other@bench", "run"), None);
        assert_eq!(
            uri_of(m.header("Contact").unwrap()),
            "sip:siprelay@127.0.0.1:5060"
        );
        assert_eq!(
            sdp_media(m.body),
            Some(("127.0.0.1:20002".parse().unwrap(), 0))
        );
    }

    #[test]
    fn builds_parseable_requests_and_responses() {
        let d = Dialog {
            local: "127.0.0.1:4000".parse().unwrap(),
            daemon: "127.0.0.1:5060".parse().unwrap(),
            index: 3,
            call_id: "3-r@bench",
            from_tag: "ft",
            callee: "c3",
        };
        let inv = d.invite("z9hG4bK1", 30000);
        let m = Msg::parse(&inv).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(
            m.header("Content-Length")
                .unwrap()
                .parse::<usize>()
                .unwrap(),
            m.body.len()
        );
        assert_eq!(sdp_media(m.body).unwrap().0.port(), 30000);
        let bye = d.bye("z9hG4bK2", "sip:siprelay@127.0.0.1:5060", "tt");
        let b = Msg::parse(&bye).unwrap();
        assert_eq!(b.cseq(), Some((2, "BYE")));
        let ok = response(&b, 200, "OK");
        let r = Msg::parse(&ok).unwrap();
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.header("Call-ID"), Some("3-r@bench"));
        assert_eq!(tag_of(r.header("To").unwrap()), Some("tt"));
    }
}
