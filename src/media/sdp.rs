//! SDP offer/answer (RFC 3264) for one G.711 audio stream.
//!
//! Only what a G.711 bridge needs: the audio connection address and port,
//! the codec, and telephone-event. Everything else in an offer is ignored.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use super::g711::Law;

pub const PT_PCMU: u8 = 0;
pub const PT_PCMA: u8 = 8;
/// The payload type siprelay offers for telephone-event.
pub const PT_TELEPHONE_EVENT: u8 = 101;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("SDP body is not UTF-8")]
    NotUtf8,
    #[error("no m=audio line")]
    NoAudio,
    #[error("no usable connection address")]
    NoConnection,
    #[error("malformed m= line: {0}")]
    BadMedia(String),
    #[error("no common codec (PCMU or PCMA) in the offer")]
    NoCommonCodec,
}

/// The codec agreed for a call: the law and the payload type carrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    pub law: Law,
    pub payload_type: u8,
}

impl Codec {
    pub const PCMU: Codec = Codec {
        law: Law::Mu,
        payload_type: PT_PCMU,
    };
    pub const PCMA: Codec = Codec {
        law: Law::A,
        payload_type: PT_PCMA,
    };

    pub fn name(self) -> &'static str {
        match self.law {
            Law::Mu => "PCMU",
            Law::A => "PCMA",
        }
    }
}

/// What we learn from the far end's SDP (an offer or an answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Where the far end wants RTP; the port may be 0 (stream rejected).
    pub rtp: SocketAddr,
    /// The first G.711 codec in the far end's preference order.
    pub codec: Codec,
    /// The telephone-event payload type, if the far end supports it.
    pub telephone_event: Option<u8>,
    /// The events it named for it (`a=fmtp:`), echoed in our answer.
    pub telephone_events: Option<String>,
}

/// Parses an SDP body and picks the codec from the first audio stream.
pub fn parse(body: &[u8]) -> Result<RemoteMedia, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut audio: Option<(u16, Vec<u8>)> = None;
    let mut rtpmaps: Vec<(u8, String)> = Vec::new();
    let mut fmtps: Vec<(u8, String)> = Vec::new();
    let mut in_audio = false;
    let mut seen_audio = false;

    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match kind {
            "m" => {
                // Only the first audio stream counts; later streams are ignored.
                in_audio = !seen_audio && value.starts_with("audio ");
                if in_audio {
                    seen_audio = true;
                    audio = Some(parse_media_line(value)?);
                }
            }
            "c" => {
                let ip = parse_connection(value);
                if in_audio {
                    media_ip = ip.or(media_ip);
                } else if !seen_audio {
                    session_ip = ip;
                }
            }
            "a" if in_audio => {
                if let Some((pt, params)) =
                    value.strip_prefix("fmtp:").and_then(|r| r.split_once(' '))
                {
                    if let Ok(pt) = pt.trim().parse::<u8>() {
                        fmtps.push((pt, params.trim().to_string()));
                    }
                }
                if let Some(rest) = value.strip_prefix("rtpmap:") {
                    if let Some((pt, enc)) = rest.split_once(' ') {
                        if let Ok(pt) = pt.trim().parse::<u8>() {
                            rtpmaps.push((pt, enc.trim().to_ascii_uppercase()));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    let (port, formats) = audio.ok_or(SdpError::NoAudio)?;
    let ip = media_ip.or(session_ip).ok_or(SdpError::NoConnection)?;
    let encoding_of = |pt: u8| -> Option<&str> {
        rtpmaps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, e)| e.as_str())
    };
    let codec = formats
        .iter()
        .find_map(|&pt| match (pt, encoding_of(pt)) {
            (_, Some(e)) if e.starts_with("PCMU/8000") => Some(Codec {
                law: Law::Mu,
                payload_type: pt,
            }),
            (_, Some(e)) if e.starts_with("PCMA/8000") => Some(Codec {
                law: Law::A,
                payload_type: pt,
            }),
            (PT_PCMU, None) => Some(Codec::PCMU),
            (PT_PCMA, None) => Some(Codec::PCMA),
            _ => None,
        })
        .ok_or(SdpError::NoCommonCodec)?;
    let telephone_event = formats
        .iter()
        .copied()
        .find(|&pt| encoding_of(pt).is_some_and(|e| e.starts_with("TELEPHONE-EVENT/8000")));
    let telephone_events = telephone_event.and_then(|te| {
        fmtps
            .iter()
            .find(|(pt, _)| *pt == te)
            .map(|(_, events)| events.clone())
    });
    Ok(RemoteMedia {
        rtp: SocketAddr::new(ip, port),
        codec,
        telephone_event,
        telephone_events,
    })
}

fn parse_media_line(value: &str) -> Result<(u16, Vec<u8>), SdpError> {
    let bad = || SdpError::BadMedia(value.to_string());
    let mut fields = value.split_ascii_whitespace();
    let _media = fields.next().ok_or_else(bad)?;
    // "port" or "port/count"
    let port = fields.next().ok_or_else(bad)?;
    let port = port
        .split('/')
        .next()
        .unwrap_or(port)
        .parse::<u16>()
        .map_err(|_| bad())?;
    let proto = fields.next().ok_or_else(bad)?;
    if !proto.starts_with("RTP/") {
        return Err(bad());
    }
    let formats = fields
        .filter_map(|f| f.parse::<u8>().ok())
        .filter(|pt| *pt < 128)
        .collect();
    Ok((port, formats))
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    // c=IN IP4 192.0.2.1[/ttl]
    let mut fields = value.split_ascii_whitespace();
    if fields.next()? != "IN" {
        return None;
    }
    let _addrtype = fields.next()?;
    let addr = fields.next()?;
    addr.split('/').next()?.parse().ok()
}

/// siprelay's offer: PCMU, PCMA and telephone-event.
pub fn offer(session_id: u64, ip: IpAddr, rtp_port: u16) -> String {
    build(
        session_id,
        ip,
        rtp_port,
        None,
        Some((PT_TELEPHONE_EVENT, "0-16")),
    )
}

/// siprelay's answer to `remote`: the chosen codec, and telephone-event with
/// the events the offer named when it offered it.
pub fn answer(session_id: u64, ip: IpAddr, rtp_port: u16, remote: &RemoteMedia) -> String {
    let events = remote.telephone_events.as_deref().unwrap_or("0-15");
    let te = remote.telephone_event.map(|pt| (pt, events));
    build(session_id, ip, rtp_port, Some(remote.codec), te)
}

fn build(
    session_id: u64,
    ip: IpAddr,
    rtp_port: u16,
    codec: Option<Codec>,
    telephone_event: Option<(u8, &str)>,
) -> String {
    use std::fmt::Write;
    let ip_kind = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut formats: Vec<(u8, &str)> = match codec {
        None => vec![(PT_PCMU, "PCMU/8000"), (PT_PCMA, "PCMA/8000")],
        Some(c) => vec![(
            c.payload_type,
            if c.law == Law::Mu {
                "PCMU/8000"
            } else {
                "PCMA/8000"
            },
        )],
    };
    if let Some((te, _)) = telephone_event {
        formats.push((te, "telephone-event/8000"));
    }
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "v=0\r\no=siprelay {session_id} {session_id} IN {ip_kind} {ip}\r\ns=siprelay\r\nc=IN {ip_kind} {ip}\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP"
    );
    for (pt, _) in &formats {
        let _ = write!(s, " {pt}");
    }
    s.push_str("\r\n");
    for (pt, enc) in &formats {
        let _ = write!(s, "a=rtpmap:{pt} {enc}\r\n");
    }
    if let Some((te, events)) = telephone_event {
        let _ = write!(s, "a=fmtp:{te} {events}\r\n");
    }
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 18 8 0 96\r\na=rtpmap:18 G729/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n";

    #[test]
    fn picks_first_g711_in_offer_order_and_telephone_event() {
        let m = parse(OFFER.as_bytes()).unwrap();
        assert_eq!(m.rtp, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(m.codec, Codec::PCMA);
        assert_eq!(m.telephone_event, Some(96));
    }

    #[test]
    fn media_level_connection_overrides_session_level() {
        let sdp = "v=0\nc=IN IP4 10.0.0.1\nm=audio 5004 RTP/AVP 0\nc=IN IP4 127.0.0.9\n";
        let m = parse(sdp.as_bytes()).unwrap();
        assert_eq!(m.rtp, "127.0.0.9:5004".parse().unwrap());
        assert_eq!(m.codec, Codec::PCMU);
        assert_eq!(m.telephone_event, None);
    }

    #[test]
    fn dynamic_payload_type_mapped_to_pcmu() {
        let sdp =
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/AVP 97\r\na=rtpmap:97 pcmu/8000\r\n";
        let m = parse(sdp.as_bytes()).unwrap();
        assert_eq!(
            m.codec,
            Codec {
                law: Law::Mu,
                payload_type: 97
            }
        );
    }

    #[test]
    fn rejects_offers_without_a_usable_codec_or_address() {
        let g729 = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/AVP 18\r\n";
        assert_eq!(parse(g729.as_bytes()), Err(SdpError::NoCommonCodec));
        let video = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=video 5004 RTP/AVP 0\r\n";
        assert_eq!(parse(video.as_bytes()), Err(SdpError::NoAudio));
        let no_c = "v=0\r\nm=audio 5004 RTP/AVP 0\r\n";
        assert_eq!(parse(no_c.as_bytes()), Err(SdpError::NoConnection));
        assert!(matches!(
            parse(b"m=audio x RTP/AVP 0"),
            Err(SdpError::BadMedia(_))
        ));
        assert_eq!(parse(&[0xFF, 0xFE]), Err(SdpError::NotUtf8));
    }

    #[test]
    fn offer_and_answer_parse_back() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let our_offer = offer(7, ip, 31000);
        let m = parse(our_offer.as_bytes()).unwrap();
        assert_eq!(m.rtp, SocketAddr::new(ip, 31000));
        assert_eq!(m.codec, Codec::PCMU);
        assert_eq!(m.telephone_event, Some(PT_TELEPHONE_EVENT));
        assert_eq!(m.telephone_events.as_deref(), Some("0-16"));

        let theirs = parse(OFFER.as_bytes()).unwrap();
        let our_answer = answer(7, ip, 31002, &theirs);
        assert!(our_answer.contains("m=audio 31002 RTP/AVP 8 96\r\n"));
        assert!(
            our_answer.contains("a=fmtp:96 0-15\r\n"),
            "the offer's events are echoed"
        );
        let m = parse(our_answer.as_bytes()).unwrap();
        assert_eq!(m.codec, Codec::PCMA);
        assert_eq!(m.telephone_event, Some(96));
    }
}
