//! SRTP (RFC 3711) for the suites SDES (RFC 4568) offers most:
//! AES_CM_128_HMAC_SHA1_80 and _32. Pure: packets in, packets out; the
//! AES block cipher and HMAC-SHA1 are RustCrypto's, the rest (session key
//! derivation, the packet index with its rollover counter, the replay
//! window) is here. RTCP is not sent by siprelay, so SRTCP is not needed.

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::Aes128;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Master key (16 bytes) and master salt (14 bytes), as SDES carries them.
pub const MASTER_LEN: usize = 30;
const KEY_LEN: usize = 16;
const SALT_LEN: usize = 14;
const AUTH_KEY_LEN: usize = 20;
/// Packets older than this many behind the newest are refused as replays.
const REPLAY_WINDOW: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    pub fn parse(name: &str) -> Option<Suite> {
        match name {
            "AES_CM_128_HMAC_SHA1_80" => Some(Suite::AesCm128HmacSha1_80),
            "AES_CM_128_HMAC_SHA1_32" => Some(Suite::AesCm128HmacSha1_32),
            _ => None,
        }
    }

    /// Bytes of authentication tag each packet carries.
    pub fn tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// The most tag any suite adds: room to leave after a packet to protect.
pub const MAX_TAG: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("packet too short for RTP and its SRTP tag")]
    TooShort,
    #[error("authentication tag does not match")]
    Forged,
    #[error("replayed or too old")]
    Replayed,
}

/// One direction of one SRTP stream (RFC 3711 cryptographic context, one SSRC).
pub struct SrtpContext {
    suite: Suite,
    cipher: Aes128,
    salt: [u8; SALT_LEN],
    auth: Hmac<Sha1>,
    /// Rollover counter and highest sequence number seen or sent.
    roc: u32,
    last_seq: u16,
    started: bool,
    /// Receiving: bit i set = index (highest - i) was received.
    window: u64,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("roc", &self.roc)
            .finish_non_exhaustive()
    }
}

/// AES-CM keystream from `iv`, XORed into `data` (RFC 3711 4.1.1).
fn aes_cm(cipher: &Aes128, iv: [u8; 16], data: &mut [u8]) {
    let base = u128::from_be_bytes(iv);
    for (i, chunk) in data.chunks_mut(16).enumerate() {
        let mut block = (base.wrapping_add(i as u128)).to_be_bytes().into();
        cipher.encrypt_block(&mut block);
        for (d, k) in chunk.iter_mut().zip(block.iter()) {
            *d ^= k;
        }
    }
}

/// A session key (RFC 3711 4.3.1 with a key derivation rate of 0).
fn derive(master: &Aes128, master_salt: &[u8; SALT_LEN], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..SALT_LEN].copy_from_slice(master_salt);
    // key_id = label || r (r = 0), XORed into the salt's low 56 bits.
    iv[7] ^= label;
    out.fill(0);
    aes_cm(master, iv, out);
}

/// The length of an RTP header with its CSRCs and extension, if it fits.
fn header_len(packet: &[u8]) -> Option<usize> {
    if packet.len() < 12 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(packet[0] & 0x0F);
    if packet[0] & 0x10 != 0 {
        let words = u16::from_be_bytes([*packet.get(len + 2)?, *packet.get(len + 3)?]);
        len += 4 + 4 * usize::from(words);
    }
    (len <= packet.len()).then_some(len)
}

impl SrtpContext {
    pub fn new(suite: Suite, master: &[u8; MASTER_LEN]) -> SrtpContext {
        let key: [u8; KEY_LEN] = master[..KEY_LEN].try_into().unwrap();
        let master_salt: [u8; SALT_LEN] = master[KEY_LEN..].try_into().unwrap();
        let kdf = Aes128::new(&key.into());
        let mut session_key = [0u8; KEY_LEN];
        let mut auth_key = [0u8; AUTH_KEY_LEN];
        let mut salt = [0u8; SALT_LEN];
        derive(&kdf, &master_salt, 0x00, &mut session_key);
        derive(&kdf, &master_salt, 0x01, &mut auth_key);
        derive(&kdf, &master_salt, 0x02, &mut salt);
        SrtpContext {
            suite,
            cipher: Aes128::new(&session_key.into()),
            salt,
            auth: <Hmac<Sha1> as hmac::KeyInit>::new_from_slice(&auth_key)
                .expect("HMAC takes any key"),
            roc: 0,
            last_seq: 0,
            started: false,
            window: 0,
        }
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    fn iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..SALT_LEN].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        iv
    }

    fn tag(&self, authenticated: &[u8], roc: u32) -> [u8; 20] {
        let mut mac = self.auth.clone();
        mac.update(authenticated);
        mac.update(&roc.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Encrypts and authenticates the RTP packet in `buf[..len]` in place,
    /// appending its tag: the SRTP packet's length. `buf` must have room
    /// for the tag ([`MAX_TAG`] bytes past `len`).
    pub fn protect(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.suite.tag_len();
        let header = header_len(&buf[..len]).ok_or(SrtpError::TooShort)?;
        if buf.len() < len + tag_len {
            return Err(SrtpError::TooShort);
        }
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = u32::from_be_bytes(buf[8..12].try_into().unwrap());
        if self.started && seq < self.last_seq && self.last_seq - seq > 0x8000 {
            self.roc = self.roc.wrapping_add(1);
        }
        if !self.started || seq.wrapping_sub(self.last_seq) < 0x8000 {
            self.last_seq = seq;
        }
        self.started = true;
        let index = (u64::from(self.roc) << 16) | u64::from(seq);
        aes_cm(&self.cipher, self.iv(ssrc, index), &mut buf[header..len]);
        let tag = self.tag(&buf[..len], self.roc);
        buf[len..len + tag_len].copy_from_slice(&tag[..tag_len]);
        Ok(len + tag_len)
    }

    /// The packet index a received sequence number stands for, and its ROC
    /// (RFC 3711 Appendix A).
    fn estimate(&self, seq: u16) -> (u64, u32) {
        if !self.started {
            return (u64::from(seq), 0);
        }
        let (s_l, roc) = (self.last_seq, self.roc);
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                roc.wrapping_sub(1)
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc.wrapping_add(1)
        } else {
            roc
        };
        ((u64::from(v) << 16) | u64::from(seq), v)
    }

    fn highest(&self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.last_seq)
    }

    /// Checks and decrypts the SRTP packet `buf` in place: the length of the
    /// plain RTP packet at its start. Forged, replayed and too old packets
    /// are refused and change nothing.
    pub fn unprotect(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.tag_len();
        if buf.len() < 12 + tag_len {
            return Err(SrtpError::TooShort);
        }
        let len = buf.len() - tag_len;
        let header = header_len(&buf[..len]).ok_or(SrtpError::TooShort)?;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = u32::from_be_bytes(buf[8..12].try_into().unwrap());
        let (index, roc) = self.estimate(seq);
        if self.started {
            let highest = self.highest();
            if index <= highest {
                let behind = highest - index;
                if behind >= REPLAY_WINDOW || self.window & (1 << behind) != 0 {
                    return Err(SrtpError::Replayed);
                }
            }
        }
        let tag = self.tag(&buf[..len], roc);
        // Constant time: a forger learns nothing from how long this takes.
        let diff = tag[..tag_len]
            .iter()
            .zip(&buf[len..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(SrtpError::Forged);
        }
        aes_cm(&self.cipher, self.iv(ssrc, index), &mut buf[header..len]);
        if !self.started || index > self.highest() {
            let ahead = if self.started {
                index - self.highest()
            } else {
                0
            };
            self.window = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.window << ahead
            };
            self.window |= 1;
            self.roc = roc;
            self.last_seq = seq;
            self.started = true;
        } else {
            self.window |= 1 << (self.highest() - index);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn keystream_matches_rfc_3711_appendix_b2() {
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let cipher = Aes128::new(&key.into());
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
        let mut stream = [0u8; 48];
        aes_cm(&cipher, iv, &mut stream);
        assert_eq!(&stream[..16], &hex("E03EAD0935C95E80E166B16DD92B4EB4")[..]);
        assert_eq!(
            &stream[16..32],
            &hex("D23513162B02D0F72A43A2FE4A5F97AB")[..]
        );
        assert_eq!(
            &stream[32..48],
            &hex("41E95B3BB0A2E8DD477901E4FCA894C0")[..]
        );
    }

    #[test]
    fn session_keys_match_rfc_3711_appendix_b3() {
        let key: [u8; 16] = hex("E1F97A0D3E018BE0D64FA32C06DE4139").try_into().unwrap();
        let salt: [u8; 14] = hex("0EC675AD498AFEEBB6960B3AABE6").try_into().unwrap();
        let kdf = Aes128::new(&key.into());
        let mut out = [0u8; 16];
        derive(&kdf, &salt, 0, &mut out);
        assert_eq!(&out[..], &hex("C61E7A93744F39EE10734AFE3FF7A087")[..]);
        let mut auth = [0u8; 20];
        derive(&kdf, &salt, 1, &mut auth);
        assert_eq!(
            &auth[..],
            &hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")[..]
        );
        let mut s = [0u8; 14];
        derive(&kdf, &salt, 2, &mut s);
        assert_eq!(&s[..], &hex("30CBBC08863D8C85D49DB34A9AE1")[..]);
    }

    fn master() -> [u8; MASTER_LEN] {
        let mut m = [0u8; MASTER_LEN];
        for (i, b) in m.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        m
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0xDE, 0xAD, 0xBE, 0xEF];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
        p
    }

    fn protect(tx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        buf.resize(plain.len() + MAX_TAG, 0);
        let n = tx.protect(&mut buf, plain.len()).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn round_trip_across_the_sequence_wrap_with_reordering() {
        for suite in [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32] {
            let mut tx = SrtpContext::new(suite, &master());
            let mut rx = SrtpContext::new(suite, &master());
            let seqs: Vec<u16> = (65500..=65535).chain(0..40).collect();
            let mut sent: Vec<(u16, Vec<u8>)> = seqs
                .iter()
                .map(|&s| (s, protect(&mut tx, &rtp(s))))
                .collect();
            assert_eq!(sent[0].1.len(), 12 + 160 + suite.tag_len());
            assert_ne!(
                &sent[0].1[12..172],
                &rtp(65500)[12..],
                "the payload is encrypted"
            );
            // Swap neighbours: reordering within the window is fine.
            for pair in sent.chunks_mut(2) {
                pair.reverse();
            }
            for (seq, packet) in sent {
                let mut buf = packet.clone();
                let n = rx
                    .unprotect(&mut buf)
                    .unwrap_or_else(|e| panic!("{seq}: {e}"));
                assert_eq!(&buf[..n], &rtp(seq)[..], "{seq}");
            }
            assert_eq!(rx.roc, 1, "the rollover was followed");
        }
    }

    #[test]
    fn replays_forgeries_and_old_packets_are_refused() {
        let mut tx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &master());
        let mut rx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &master());
        let packets: Vec<Vec<u8>> = (1000..1100).map(|s| protect(&mut tx, &rtp(s))).collect();
        for p in &packets {
            rx.unprotect(&mut p.clone()).unwrap();
        }
        assert_eq!(
            rx.unprotect(&mut packets[99].clone()),
            Err(SrtpError::Replayed)
        );
        assert_eq!(
            rx.unprotect(&mut packets[10].clone()),
            Err(SrtpError::Replayed),
            "outside the window"
        );
        let mut forged = protect(&mut tx, &rtp(1100));
        forged[20] ^= 1;
        assert_eq!(rx.unprotect(&mut forged), Err(SrtpError::Forged));
        // A forgery changes nothing: the genuine packet still goes through.
        let mut other = SrtpContext::new(Suite::AesCm128HmacSha1_80, &[9u8; MASTER_LEN]);
        let wrong_key = protect(&mut other, &rtp(1101));
        assert_eq!(rx.unprotect(&mut wrong_key.clone()), Err(SrtpError::Forged));
        let mut genuine = protect(&mut tx, &rtp(1101));
        assert!(rx.unprotect(&mut genuine).is_ok());
        assert_eq!(rx.unprotect(&mut [0u8; 8]), Err(SrtpError::TooShort));
    }

    #[test]
    fn headers_with_csrcs_and_extensions_stay_in_the_clear() {
        let mut tx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &master());
        let mut rx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &master());
        let mut p = vec![
            0x91, 0, 0, 5, 0, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9, 0xBE, 0xDE, 0, 1, 7, 7, 7, 7,
        ];
        p.extend([0x55u8; 40]);
        let s = protect(&mut tx, &p);
        assert_eq!(&s[..24], &p[..24]);
        assert_ne!(&s[24..64], &p[24..]);
        let mut buf = s.clone();
        let n = rx.unprotect(&mut buf).unwrap();
        assert_eq!(&buf[..n], &p[..]);
    }
}

/// The SRTP keys agreed for a call: the suite, the key siprelay encrypts
/// with (sent in its SDP) and the far end's (from its SDP).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: Suite,
    pub ours: [u8; MASTER_LEN],
    pub theirs: [u8; MASTER_LEN],
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrtpKeys({})", self.suite.name())
    }
}

impl SrtpKeys {
    /// The context that protects what siprelay sends.
    pub fn sender(&self) -> SrtpContext {
        SrtpContext::new(self.suite, &self.ours)
    }

    /// The context that checks what the far end sends.
    pub fn receiver(&self) -> SrtpContext {
        SrtpContext::new(self.suite, &self.theirs)
    }
}
