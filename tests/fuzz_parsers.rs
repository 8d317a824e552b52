//! Every parser against a stream of random and mutated inputs: it may
//! refuse them, but it must never panic. Deterministic (seeded), so a
//! failure reproduces.

use siprelay::media::rtp::RtpPacket;
use siprelay::media::sdp;
use siprelay::sip::validate::{self, RequestText};
use siprelay::wire::{Command, Dialect};

/// xorshift64*: enough randomness to explore, and reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A mutation of `seed`: bytes flipped, inserted, deleted, or spliced
    /// from a dictionary of the grammar's own tokens.
    fn mutate(&mut self, seed: &[u8], dictionary: &[&[u8]]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + self.below(6) {
            let at = if v.is_empty() {
                0
            } else {
                self.below(v.len() + 1)
            };
            match self.below(4) {
                0 if at < v.len() => v[at] = self.next() as u8,
                1 => v.insert(at, self.next() as u8),
                2 if at < v.len() => {
                    v.remove(at);
                }
                _ => {
                    let word = dictionary[self.below(dictionary.len())];
                    v.splice(at..at, word.iter().copied());
                }
            }
        }
        v
    }
}

const ROUNDS: usize = 50_000;

#[test]
fn wire_commands() {
    let seeds: &[&[u8]] = &[
        b"CALL:1002",
        b"RTP:abc##AAEC",
        b"RTP:00ff",
        b"CALL_ANS:0123456789abcdef",
        b"BYE",
        b"PING",
    ];
    let dict: &[&[u8]] = &[
        b"##",
        b":",
        b"RTP",
        b"CALL",
        b"=",
        b"\xF0\x9F\x8E\xB5",
        b"sip:",
        b"\r\n",
        b"%",
    ];
    let mut rng = Rng(1);
    let mut buf = Vec::new();
    for i in 0..ROUNDS {
        let input = rng.mutate(seeds[i % seeds.len()], dict);
        let text = String::from_utf8_lossy(&input);
        for dialect in [Dialect::V1, Dialect::Legacy] {
            if let Ok(Command::Audio { payload, .. }) = Command::parse(dialect, &text) {
                let _ = payload.decode_into(&mut buf);
            }
        }
    }
}

#[test]
fn sdp_bodies() {
    let seed = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    let dict: &[&[u8]] = &[
        b"m=audio ",
        b"c=IN IP6 ::1",
        b"a=rtpmap:",
        b"/",
        b" ",
        b"65536",
        b"\r\n",
        b"PCMA/8000",
    ];
    let mut rng = Rng(2);
    for _ in 0..ROUNDS {
        let _ = sdp::parse(&rng.mutate(seed, dict));
    }
}

#[test]
fn rtp_packets() {
    let seed = [
        0x80u8, 0x00, 0x12, 0x34, 0, 0, 0, 160, 1, 2, 3, 4, 0xFF, 0xFF, 0xFF, 0xFF,
    ];
    let dict: &[&[u8]] = &[&[0xBF], &[0x9F], &[0xFF, 0xFF], &[0x00]];
    let mut rng = Rng(3);
    for _ in 0..ROUNDS {
        let _ = RtpPacket::parse(&rng.mutate(&seed, dict));
    }
}

#[test]
fn sip_request_checks() {
    let dict: &[&[u8]] = &[
        b"<",
        b">",
        b"\"",
        b";",
        b";;",
        b"?",
        b",",
        b" ",
        b"-1",
        b"99999999999",
    ];
    let mut rng = Rng(4);
    for _ in 0..ROUNDS {
        let from = String::from_utf8_lossy(&rng.mutate(b"\"A\" <sip:a@b>;tag=1", dict)).to_string();
        let cseq = String::from_utf8_lossy(&rng.mutate(b"1 INVITE", dict)).to_string();
        let length = String::from_utf8_lossy(&rng.mutate(b"10", dict)).to_string();
        let uri = String::from_utf8_lossy(&rng.mutate(b"sip:user@host", dict)).to_string();
        let _ = validate::check(&RequestText {
            method: "INVITE",
            uri: &uri,
            version_2_0: true,
            headers: vec![
                ("From", &from),
                ("CSeq", &cseq),
                ("Content-Length", &length),
                ("Via", &from),
            ],
            body_len: rng.below(20),
        });
    }
}
