//! A SIP peer for the tests, written from RFC 3261 with plain strings over
//! UDP (not siprelay's SIP stack): it places and answers calls and sends and
//! receives G.711 RTP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

use super::audio;

static NEXT: AtomicU32 = AtomicU32::new(1);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A parsed SIP message: start line, headers in order, body.
#[derive(Debug, Clone)]
pub struct SipMessage {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub raw: String,
}

impl SipMessage {
    pub fn parse(raw: &str) -> Option<SipMessage> {
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let start = lines.next()?.to_string();
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':')?;
            headers.push((expand(name.trim()), value.trim().to_string()));
        }
        Some(SipMessage {
            start,
            headers,
            body: body.to_string(),
            raw: raw.to_string(),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The status code of a response, or `None` for a request.
    pub fn status(&self) -> Option<u16> {
        self.start.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    pub fn method(&self) -> Option<&str> {
        if self.status().is_some() {
            return None;
        }
        self.start.split(' ').next()
    }

    pub fn cseq_method(&self) -> String {
        self.header("CSeq")
            .and_then(|c| c.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    }

    pub fn to_tag(&self) -> Option<String> {
        tag_of(self.header("To")?)
    }

    pub fn caller_tag(&self) -> Option<String> {
        tag_of(self.header("From")?)
    }
}

fn tag_of(value: &str) -> Option<String> {
    value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("tag="))
        .map(str::to_string)
}

fn expand(name: &str) -> String {
    match name {
        "v" => "Via",
        "f" => "From",
        "t" => "To",
        "i" => "Call-ID",
        "m" => "Contact",
        "l" => "Content-Length",
        "c" => "Content-Type",
        other => other,
    }
    .to_string()
}

/// Where the far end wants RTP and which payload type it chose.
pub fn sdp_media(body: &str) -> (SocketAddr, u8) {
    let ip = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line")
        .trim();
    let m = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .expect("m=audio line");
    let mut fields = m.split_whitespace();
    let port: u16 = fields.next().unwrap().parse().unwrap();
    let pt: u8 = fields.nth(1).unwrap().parse().unwrap();
    (format!("{ip}:{port}").parse().unwrap(), pt)
}

pub fn sdp_offer(rtp: SocketAddr, formats: &str) -> String {
    let mut s = format!(
        "v=0\r\no=peer 1 1 IN IP4 {ip}\r\ns=peer\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n",
        ip = rtp.ip(),
        port = rtp.port()
    );
    for f in formats.split_whitespace() {
        match f {
            "0" => s.push_str("a=rtpmap:0 PCMU/8000\r\n"),
            "8" => s.push_str("a=rtpmap:8 PCMA/8000\r\n"),
            "18" => s.push_str("a=rtpmap:18 G729/8000\r\n"),
            "101" => s.push_str("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"),
            _ => {}
        }
    }
    s.push_str("a=sendrecv\r\n");
    s
}

/// One SIP user agent on an ephemeral loopback port, with an RTP socket.
pub struct SipPeer {
    pub sock: UdpSocket,
    pub addr: SocketAddr,
    pub rtp: UdpSocket,
    pub rtp_addr: SocketAddr,
    pub daemon: SocketAddr,
    /// Messages read while waiting for something else.
    backlog: Vec<(SipMessage, SocketAddr)>,
}

/// The dialog state of a call the peer placed or answered.
#[derive(Debug, Clone, Default)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    pub local_uri: String,
    pub remote_uri: String,
    pub remote_target: String,
    pub cseq: u32,
    pub invite_branch: String,
    pub invite: Option<SipMessage>,
    /// Where the far end wants RTP, and the payload type agreed.
    pub media: Option<(SocketAddr, u8)>,
}

impl SipPeer {
    pub async fn new(daemon: SocketAddr) -> SipPeer {
        SipPeer::at("127.0.0.1", daemon).await
    }

    /// A peer on another loopback address (127.0.0.2 and up): a stranger
    /// to the daemon, which trusts only 127.0.0.1 by default.
    pub async fn at(ip: &str, daemon: SocketAddr) -> SipPeer {
        let sock = UdpSocket::bind((ip, 0)).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let rtp = UdpSocket::bind((ip, 0)).await.unwrap();
        let rtp_addr = rtp.local_addr().unwrap();
        SipPeer {
            sock,
            addr,
            rtp,
            rtp_addr,
            daemon,
            backlog: Vec::new(),
        }
    }

    pub async fn send_raw(&self, text: &str) {
        self.sock
            .send_to(text.as_bytes(), self.daemon)
            .await
            .unwrap();
    }

    async fn send_to(&self, text: &str, to: SocketAddr) {
        self.sock.send_to(text.as_bytes(), to).await.unwrap();
    }

    /// The next message, within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<(SipMessage, SocketAddr)> {
        if !self.backlog.is_empty() {
            return Some(self.backlog.remove(0));
        }
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + wait;
        loop {
            let (n, from) = timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.sock.recv_from(&mut buf),
            )
            .await
            .ok()?
            .ok()?;
            if let Some(m) = SipMessage::parse(&String::from_utf8_lossy(&buf[..n])) {
                return Some((m, from));
            }
        }
    }

    /// Waits for a message matching `pred`, keeping the others for later.
    pub async fn expect(
        &mut self,
        what: &str,
        pred: impl Fn(&SipMessage) -> bool,
    ) -> (SipMessage, SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut skipped = Vec::new();
        let mut kept = std::mem::take(&mut self.backlog);
        if let Some(i) = kept.iter().position(|(m, _)| pred(m)) {
            let hit = kept.remove(i);
            self.backlog = kept;
            return hit;
        }
        self.backlog = Vec::new();
        skipped.append(&mut kept);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some((m, from)) = self.recv(left).await else {
                let seen: Vec<&str> = skipped
                    .iter()
                    .map(|(m, _): &(SipMessage, SocketAddr)| m.start.as_str())
                    .collect();
                panic!("timed out waiting for {what}; saw {seen:?}");
            };
            if pred(&m) {
                self.backlog = skipped;
                return (m, from);
            }
            skipped.push((m, from));
        }
    }

    pub async fn expect_response(&mut self, method: &str, status: u16) -> SipMessage {
        let what = format!("{status} to {method}");
        self.expect(&what, |m| {
            m.status() == Some(status) && m.cseq_method() == method
        })
        .await
        .0
    }

    pub async fn expect_request(&mut self, method: &str) -> (SipMessage, SocketAddr) {
        self.expect(method, |m| m.method() == Some(method)).await
    }

    fn via(&self, branch: &str) -> String {
        format!("SIP/2.0/UDP {};branch={branch};rport", self.addr)
    }

    // ----- as a caller (UAC) -----

    /// Sends an INVITE to `user` at the daemon with an SDP offer of `formats`
    /// (`None`: no body).
    pub async fn invite(&self, from_user: &str, to_user: &str, formats: Option<&str>) -> Dialog {
        self.invite_with(from_user, to_user, formats, "").await
    }

    /// [`SipPeer::invite`] with `extra` header lines (each ending in CRLF).
    pub async fn invite_with(
        &self,
        from_user: &str,
        to_user: &str,
        formats: Option<&str>,
        extra: &str,
    ) -> Dialog {
        let d = Dialog {
            call_id: unique("call-"),
            local_tag: unique("tag"),
            local_uri: format!("sip:{from_user}@{}", self.addr),
            remote_uri: format!("sip:{to_user}@{}", self.daemon),
            remote_target: format!("sip:{to_user}@{}", self.daemon),
            cseq: 1,
            invite_branch: unique("z9hG4bK"),
            ..Dialog::default()
        };
        let body = formats
            .map(|f| sdp_offer(self.rtp_addr, f))
            .unwrap_or_default();
        let msg = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: \"Test Caller\" <{from}>;tag={tag}\r\n\
             To: <{to}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:{from_user}@{me}>\r\n\
             {extra}Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{body}",
            ruri = d.remote_uri,
            via = self.via(&d.invite_branch),
            from = d.local_uri,
            tag = d.local_tag,
            to = d.remote_uri,
            cid = d.call_id,
            me = self.addr,
            len = body.len(),
        );
        self.send_raw(&msg).await;
        d
    }

    /// After a 2xx to our INVITE: remember the dialog and ACK it.
    pub async fn ack(&self, d: &mut Dialog, ok: &SipMessage) {
        d.remote_tag = ok.to_tag().expect("To tag in 200");
        if let Some(contact) = ok.header("Contact") {
            d.remote_target = contact
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_string();
        }
        if !ok.body.is_empty() {
            d.media = Some(sdp_media(&ok.body));
        }
        let msg = format!(
            "ACK {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag={ltag}\r\n\
             To: <{to}>;tag={rtag}\r\nCall-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            target = d.remote_target,
            via = self.via(&unique("z9hG4bK")),
            from = d.local_uri,
            ltag = d.local_tag,
            to = d.remote_uri,
            rtag = d.remote_tag,
            cid = d.call_id,
        );
        self.send_raw(&msg).await;
    }

    pub async fn cancel(&self, d: &Dialog) {
        let msg = format!(
            "CANCEL {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: \"Test Caller\" <{from}>;tag={tag}\r\n\
             To: <{to}>\r\nCall-ID: {cid}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
            ruri = d.remote_uri,
            via = self.via(&d.invite_branch),
            from = d.local_uri,
            tag = d.local_tag,
            to = d.remote_uri,
            cid = d.call_id,
        );
        self.send_raw(&msg).await;
    }

    /// Acknowledges a non-2xx final response to our INVITE (same branch).
    pub async fn ack_failure(&self, d: &Dialog, resp: &SipMessage) {
        let msg = format!(
            "ACK {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: \"Test Caller\" <{from}>;tag={tag}\r\n\
             To: {to}\r\nCall-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            ruri = d.remote_uri,
            via = self.via(&d.invite_branch),
            from = d.local_uri,
            tag = d.local_tag,
            to = resp.header("To").unwrap(),
            cid = d.call_id,
        );
        self.send_raw(&msg).await;
    }

    /// Sends BYE in a dialog (either role) and waits for its 200.
    pub async fn bye(&mut self, d: &mut Dialog) {
        self.send_bye(d).await;
        self.expect_response("BYE", 200).await;
    }

    /// Sends BYE in a dialog (either role).
    pub async fn send_bye(&self, d: &mut Dialog) {
        self.send_in_dialog(d, "BYE", None).await;
    }

    /// Sends a request inside dialog `d` (a new CSeq, except for ACK, which
    /// acknowledges the last INVITE), with an SDP body if given.
    pub async fn send_in_dialog(&self, d: &mut Dialog, method: &str, sdp: Option<&str>) {
        self.send_in_dialog_with(d, method, "", sdp).await
    }

    /// [`SipPeer::send_in_dialog`] with `extra` header lines (each ending in CRLF).
    pub async fn send_in_dialog_with(
        &self,
        d: &mut Dialog,
        method: &str,
        extra: &str,
        sdp: Option<&str>,
    ) {
        if method != "ACK" {
            d.cseq += 1;
        }
        let body = sdp.unwrap_or("");
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        let msg = format!(
            "{method} {target} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag={ltag}\r\n\
             To: <{to}>;tag={rtag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:peer@{me}>\r\n\
             {extra}{content_type}Content-Length: {len}\r\n\r\n{body}",
            target = d.remote_target,
            via = self.via(&unique("z9hG4bK")),
            from = d.local_uri,
            ltag = d.local_tag,
            to = d.remote_uri,
            rtag = d.remote_tag,
            cid = d.call_id,
            cseq = d.cseq,
            me = self.addr,
            len = body.len(),
        );
        self.send_raw(&msg).await;
    }

    // ----- as a callee (UAS) -----

    /// Answers a request with `status`, copying Via/From/To/Call-ID/CSeq;
    /// `to_tag` is added to To when it has none.
    pub async fn respond(
        &self,
        req: &SipMessage,
        from: SocketAddr,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
        body: Option<&str>,
    ) {
        self.respond_with(req, from, status, reason, to_tag, "", body)
            .await
    }

    /// [`SipPeer::respond`] with `extra` header lines (each ending in CRLF).
    #[allow(clippy::too_many_arguments)]
    pub async fn respond_with(
        &self,
        req: &SipMessage,
        from: SocketAddr,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
        extra: &str,
        body: Option<&str>,
    ) {
        let mut out = format!("SIP/2.0 {status} {reason}\r\n");
        for v in req.all("Via") {
            out.push_str(&format!("Via: {v}\r\n"));
        }
        out.push_str(&format!("From: {}\r\n", req.header("From").unwrap()));
        let to = req.header("To").unwrap();
        match to_tag {
            Some(tag) if tag_of(to).is_none() => out.push_str(&format!("To: {to};tag={tag}\r\n")),
            _ => out.push_str(&format!("To: {to}\r\n")),
        }
        out.push_str(&format!(
            "Call-ID: {}\r\nCSeq: {}\r\n",
            req.header("Call-ID").unwrap(),
            req.header("CSeq").unwrap()
        ));
        out.push_str(&format!("Contact: <sip:peer@{}>\r\n", self.addr));
        out.push_str(extra);
        let body = body.unwrap_or("");
        if !body.is_empty() {
            out.push_str("Content-Type: application/sdp\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.send_to(&out, from).await;
    }

    /// Waits for an INVITE and returns it with a dialog for answering it.
    pub async fn accept_invite(&mut self) -> (Dialog, SocketAddr) {
        let (invite, from) = self.expect_request("INVITE").await;
        let contact = invite.header("Contact").unwrap_or_default();
        let d = Dialog {
            call_id: invite.header("Call-ID").unwrap().to_string(),
            local_tag: unique("uas"),
            remote_tag: invite.caller_tag().expect("From tag"),
            local_uri: invite
                .header("To")
                .unwrap()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_string(),
            remote_uri: invite
                .header("From")
                .unwrap()
                .split('<')
                .nth(1)
                .unwrap()
                .split('>')
                .next()
                .unwrap()
                .to_string(),
            remote_target: contact
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_string(),
            cseq: 100,
            media: Some(sdp_media(&invite.body)),
            invite: Some(invite),
            ..Dialog::default()
        };
        (d, from)
    }

    /// Sends 200 OK with our SDP to the INVITE of `d`, then waits for the ACK.
    pub async fn answer(&mut self, d: &Dialog, from: SocketAddr, pt: u8) {
        self.send_answer(d, from, pt).await;
        self.expect_request("ACK").await;
    }

    /// Sends 200 OK with our SDP (payload type `pt`) to the INVITE of `d`.
    pub async fn send_answer(&self, d: &Dialog, from: SocketAddr, pt: u8) {
        let body = sdp_offer(self.rtp_addr, &pt.to_string());
        let invite = d.invite.clone().unwrap();
        self.respond(&invite, from, 200, "OK", Some(&d.local_tag), Some(&body))
            .await;
    }

    // ----- media -----

    /// Sends `pcm` as 20 ms µ-law (PT 0) or A-law (PT 8) RTP packets, paced in real time.
    pub async fn send_tone(&self, to: SocketAddr, pt: u8, pcm: &[i16]) {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        let ssrc = 0x5EED_0001u32;
        for (i, frame) in pcm.chunks(160).enumerate() {
            ticker.tick().await;
            let mut pkt = vec![0x80, pt, 0, 0, 0, 0, 0, 0];
            pkt[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            pkt[4..8].copy_from_slice(&((i * 160) as u32).to_be_bytes());
            pkt.extend_from_slice(&ssrc.to_be_bytes());
            pkt.extend(frame.iter().map(|&s| {
                if pt == 0 {
                    audio::ulaw_encode(s)
                } else {
                    alaw_encode(s)
                }
            }));
            self.rtp.send_to(&pkt, to).await.unwrap();
        }
    }

    /// Collects RTP for `duration`: decoded PCM (µ-law only) and the packet count.
    pub async fn record(&self, duration: Duration) -> (Vec<i16>, usize, Option<SocketAddr>) {
        let mut pcm = Vec::new();
        let mut packets = 0;
        let mut source = None;
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + duration;
        while let Ok(Ok((n, from))) = timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.rtp.recv_from(&mut buf),
        )
        .await
        {
            if n < 12 || buf[0] >> 6 != 2 {
                continue;
            }
            packets += 1;
            source = Some(from);
            let pt = buf[1] & 0x7F;
            pcm.extend(buf[12..n].iter().map(|&b| {
                if pt == 0 {
                    audio::ulaw_decode(b)
                } else {
                    alaw_decode(b)
                }
            }));
        }
        (pcm, packets, source)
    }
}

fn alaw_encode(sample: i16) -> u8 {
    let mut pcm = (sample >> 3) as i32;
    let mask = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let ends = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let seg = ends.iter().position(|&e| pcm <= e).unwrap_or(8) as i32;
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut a = seg << 4;
    a |= if seg < 2 {
        (pcm >> 1) & 0xF
    } else {
        (pcm >> seg) & 0xF
    };
    (a ^ mask) as u8
}

fn alaw_decode(code: u8) -> i16 {
    let a = (code ^ 0x55) as i32;
    let mut t = (a & 0xF) << 4;
    let seg = (a & 0x70) >> 4;
    t += 8;
    if seg > 0 {
        t += 0x100;
    }
    if seg > 1 {
        t <<= seg - 1;
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

impl SipPeer {
    /// Collects RTP for `duration`, one entry per µ-law packet: when it
    /// arrived and its decoded samples.
    pub async fn record_packets(&self, duration: Duration) -> Vec<(Instant, Vec<i16>)> {
        let mut packets = Vec::new();
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + duration;
        while let Ok(Ok((n, _))) = timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.rtp.recv_from(&mut buf),
        )
        .await
        {
            if n < 12 || buf[0] >> 6 != 2 || buf[1] & 0x7F != 0 {
                continue;
            }
            let pcm = buf[12..n].iter().map(|&b| audio::ulaw_decode(b)).collect();
            packets.push((Instant::now(), pcm));
        }
        packets
    }
}
