//! SDP offer/answer (RFC 3264) for one G.711 audio stream.
//!
//! Only what a G.711 bridge needs: the audio connection address and port,
//! the codec, telephone-event, and SRTP keys (SDES, RFC 4568: the
//! `RTP/SAVP` profile and `a=crypto` lines). Everything else in an offer is
//! ignored.

use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use base64::Engine;

use super::g711::Law;
use super::srtp::{Suite, MASTER_LEN};

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
    /// The stream's profile is `RTP/SAVP`: SRTP or nothing.
    pub savp: bool,
    /// Its `a=crypto` lines siprelay can use, in its order.
    pub crypto: Vec<Crypto>,
}

/// One SDES key (`a=crypto:{tag} {suite} inline:{base64 key||salt}`): the
/// key its sender encrypts with.
#[derive(Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: Suite,
    pub key: [u8; MASTER_LEN],
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        write!(f, "Crypto({} {})", self.tag, self.suite.name())
    }
}

impl Crypto {
    /// A fresh key for `suite` from the operating system's random source.
    pub fn generate(tag: u32, suite: Suite) -> Crypto {
        let mut key = [0u8; MASTER_LEN];
        getrandom::fill(&mut key).expect("the operating system's random source");
        Crypto { tag, suite, key }
    }

    fn parse(value: &str) -> Option<Crypto> {
        // crypto:<tag> <suite> inline:<key>[|lifetime][|mki:len] [params]
        let mut fields = value.split_ascii_whitespace();
        let tag = fields.next()?.parse().ok()?;
        let suite = Suite::parse(fields.next()?)?;
        let params = fields.next()?.strip_prefix("inline:")?;
        let mut parts = params.split('|');
        let key_b64 = parts.next()?;
        // A master key index (`|1:4`) needs MKI handling siprelay lacks.
        if parts.any(|p| p.contains(':')) {
            return None;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key_b64)
            .ok()?;
        let key = bytes.try_into().ok()?;
        Some(Crypto { tag, suite, key })
    }

    fn line(&self) -> String {
        let key = base64::engine::general_purpose::STANDARD.encode(self.key);
        format!(
            "a=crypto:{} {} inline:{key}\r\n",
            self.tag,
            self.suite.name()
        )
    }
}

/// Parses an SDP body and picks the codec from the first audio stream.
pub fn parse(body: &[u8]) -> Result<RemoteMedia, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut audio: Option<(u16, bool, Vec<u8>)> = None;
    let mut crypto = Vec::new();
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
                if let Some(c) = value.strip_prefix("crypto:").and_then(Crypto::parse) {
                    crypto.push(c);
                }
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

    let (port, savp, formats) = audio.ok_or(SdpError::NoAudio)?;
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
        savp,
        crypto,
    })
}

/// `(port, RTP/SAVP, formats)` of an `m=` line's value.
fn parse_media_line(value: &str) -> Result<(u16, bool, Vec<u8>), SdpError> {
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
    let savp = proto.eq_ignore_ascii_case("RTP/SAVP");
    let formats = fields
        .filter_map(|f| f.parse::<u8>().ok())
        .filter(|pt| *pt < 128)
        .collect();
    Ok((port, savp, formats))
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

/// The SRTP part of our SDP: our key, and whether the profile is
/// `RTP/SAVP` (SRTP required) or `RTP/AVP` with keys (SRTP if the far end
/// takes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdes {
    pub ours: Crypto,
    pub savp: bool,
}

/// siprelay's offer: PCMU, PCMA and telephone-event, with our key when `sdes`.
pub fn offer(session_id: u64, ip: IpAddr, rtp_port: u16, sdes: Option<&Sdes>) -> String {
    build(
        session_id,
        ip,
        rtp_port,
        None,
        Some((PT_TELEPHONE_EVENT, "0-16")),
        sdes,
    )
}

/// siprelay's answer to `remote`: the chosen codec, telephone-event with
/// the events the offer named when it offered it, and our key when `sdes`.
pub fn answer(
    session_id: u64,
    ip: IpAddr,
    rtp_port: u16,
    remote: &RemoteMedia,
    sdes: Option<&Sdes>,
) -> String {
    let events = remote.telephone_events.as_deref().unwrap_or("0-15");
    let te = remote.telephone_event.map(|pt| (pt, events));
    build(session_id, ip, rtp_port, Some(remote.codec), te, sdes)
}

fn build(
    session_id: u64,
    ip: IpAddr,
    rtp_port: u16,
    codec: Option<Codec>,
    telephone_event: Option<(u8, &str)>,
    sdes: Option<&Sdes>,
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
        "v=0\r\no=siprelay {session_id} {session_id} IN {ip_kind} {ip}\r\ns=siprelay\r\nc=IN {ip_kind} {ip}\r\nt=0 0\r\nm=audio {rtp_port} {}",
        if sdes.is_some_and(|s| s.savp) { "RTP/SAVP" } else { "RTP/AVP" }
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
    if let Some(sdes) = sdes {
        s.push_str(&sdes.ours.line());
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
        let our_offer = offer(7, ip, 31000, None);
        let m = parse(our_offer.as_bytes()).unwrap();
        assert_eq!(m.rtp, SocketAddr::new(ip, 31000));
        assert_eq!(m.codec, Codec::PCMU);
        assert_eq!(m.telephone_event, Some(PT_TELEPHONE_EVENT));
        assert_eq!(m.telephone_events.as_deref(), Some("0-16"));

        let theirs = parse(OFFER.as_bytes()).unwrap();
        let our_answer = answer(7, ip, 31002, &theirs, None);
        assert!(our_answer.contains("m=audio 31002 RTP/AVP 8 96\r\n"));
        assert!(
            our_answer.contains("a=fmtp:96 0-15\r\n"),
            "the offer's events are echoed"
        );
        let m = parse(our_answer.as_bytes()).unwrap();
        assert_eq!(m.codec, Codec::PCMA);
        assert_eq!(m.telephone_event, Some(96));
        assert!(!m.savp && m.crypto.is_empty());
    }

    #[test]
    fn sdes_keys_are_offered_parsed_and_answered() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let ours = Crypto::generate(1, Suite::AesCm128HmacSha1_80);
        let sdes = Sdes {
            ours: ours.clone(),
            savp: true,
        };
        let text = offer(7, ip, 31000, Some(&sdes));
        assert!(
            text.contains("m=audio 31000 RTP/SAVP 0 8 101\r\n"),
            "{text}"
        );
        assert!(text.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"));
        let m = parse(text.as_bytes()).unwrap();
        assert!(m.savp);
        assert_eq!(m.crypto, [ours]);
        assert!(
            !format!("{:?}", m.crypto).contains("inline"),
            "keys stay out of logs"
        );

        // A baresip-style best-effort offer: RTP/AVP with two suites, one with a lifetime.
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 30]);
        let best_effort = format!(
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/AVP 0\r\n\
             a=crypto:3 AES_CM_256_HMAC_SHA1_80 inline:{key}\r\n\
             a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:{key}|2^20\r\n\
             a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4\r\n"
        );
        let m = parse(best_effort.as_bytes()).unwrap();
        assert!(!m.savp);
        assert_eq!(m.crypto.len(), 1, "unknown suites and MKIs are skipped");
        assert_eq!(
            (m.crypto[0].tag, m.crypto[0].suite),
            (4, Suite::AesCm128HmacSha1_32)
        );
        assert_eq!(m.crypto[0].key, [7u8; 30]);
        let reply = Sdes {
            ours: Crypto::generate(4, Suite::AesCm128HmacSha1_32),
            savp: false,
        };
        let text = answer(8, ip, 31002, &m, Some(&reply));
        assert!(text.contains("m=audio 31002 RTP/AVP 0\r\n"));
        assert!(text.contains("a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:"));
    }
}
