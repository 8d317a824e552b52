//! Whether a call's media is SRTP, pure: the SRTP mode of the call's
//! account (or of direct calls) and whether its signalling is TLS, against
//! the far end's SDP. SDES keys travel in the SDP, so they are only used
//! when the SDP itself travels encrypted.

use crate::config::SrtpMode;
use crate::media::sdp::{Crypto, RemoteMedia, Sdes};
use crate::media::srtp::{SrtpKeys, Suite};

/// Why an offer or answer cannot be taken (the call fails with 488).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpRefused {
    #[error("SRTP is required and the far end offers no key siprelay can use")]
    NoKey,
    #[error(
        "the far end requires SRTP (RTP/SAVP), which siprelay uses only over TLS with srtp on"
    )]
    NotHere,
}

fn effective(mode: SrtpMode, over_tls: bool) -> SrtpMode {
    if over_tls {
        mode
    } else {
        SrtpMode::Off
    }
}

/// As the answerer: our SDES answer (if any) and the keys, or a refusal.
pub fn answer(
    mode: SrtpMode,
    over_tls: bool,
    offer: &RemoteMedia,
) -> Result<Option<(Sdes, SrtpKeys)>, SrtpRefused> {
    let theirs = offer.crypto.first();
    match (effective(mode, over_tls), theirs) {
        (SrtpMode::Off, _) if offer.savp => Err(SrtpRefused::NotHere),
        (SrtpMode::Off, _) => Ok(None),
        (SrtpMode::Required, None) => Err(SrtpRefused::NoKey),
        (SrtpMode::Optional, None) if offer.savp => Err(SrtpRefused::NoKey),
        (SrtpMode::Optional, None) => Ok(None),
        (_, Some(theirs)) => {
            let ours = Crypto::generate(theirs.tag, theirs.suite);
            let keys = SrtpKeys {
                suite: theirs.suite,
                ours: ours.key,
                theirs: theirs.key,
            };
            Ok(Some((
                Sdes {
                    ours,
                    savp: offer.savp,
                },
                keys,
            )))
        }
    }
}

/// As the offerer: what our offer carries. `RTP/SAVP` when SRTP is
/// required; `RTP/AVP` with a key when it is optional, so that a far end
/// without SRTP still answers.
pub fn offer(mode: SrtpMode, over_tls: bool) -> Option<Sdes> {
    let savp = match effective(mode, over_tls) {
        SrtpMode::Off => return None,
        SrtpMode::Optional => false,
        SrtpMode::Required => true,
    };
    Some(Sdes {
        ours: Crypto::generate(1, Suite::AesCm128HmacSha1_80),
        savp,
    })
}

/// As the offerer, the far end's answer: the keys, none (plain RTP), or a refusal.
pub fn accepted(
    offered: Option<&Sdes>,
    mode: SrtpMode,
    answer: &RemoteMedia,
) -> Result<Option<SrtpKeys>, SrtpRefused> {
    let Some(offered) = offered else {
        return Ok(None);
    };
    let theirs = answer
        .crypto
        .iter()
        .find(|c| c.tag == offered.ours.tag && c.suite == offered.ours.suite);
    match theirs {
        Some(theirs) => Ok(Some(SrtpKeys {
            suite: theirs.suite,
            ours: offered.ours.key,
            theirs: theirs.key,
        })),
        None if mode == SrtpMode::Required || offered.savp => Err(SrtpRefused::NoKey),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sdp::Codec;

    fn remote(savp: bool, crypto: Vec<Crypto>) -> RemoteMedia {
        RemoteMedia {
            rtp: "127.0.0.1:5004".parse().unwrap(),
            codec: Codec::PCMU,
            telephone_event: None,
            telephone_events: None,
            savp,
            crypto,
        }
    }

    #[test]
    fn the_answerer_follows_mode_transport_and_offer() {
        let key = Crypto::generate(2, Suite::AesCm128HmacSha1_32);
        let with_key = remote(true, vec![key.clone()]);
        let (sdes, keys) = answer(SrtpMode::Required, true, &with_key)
            .unwrap()
            .unwrap();
        assert_eq!(
            (sdes.ours.tag, sdes.ours.suite, sdes.savp),
            (2, Suite::AesCm128HmacSha1_32, true)
        );
        assert_eq!(keys.theirs, key.key);
        assert_eq!(keys.ours, sdes.ours.key);
        assert_ne!(keys.ours, keys.theirs, "a fresh key of our own");

        assert_eq!(
            answer(SrtpMode::Required, true, &remote(false, vec![])),
            Err(SrtpRefused::NoKey)
        );
        assert_eq!(
            answer(SrtpMode::Optional, true, &remote(false, vec![])),
            Ok(None)
        );
        assert_eq!(
            answer(SrtpMode::Optional, true, &remote(true, vec![])),
            Err(SrtpRefused::NoKey)
        );
        // Not over TLS: keys in clear SDP are not used, and a SAVP offer cannot be taken.
        assert_eq!(
            answer(SrtpMode::Required, false, &with_key),
            Err(SrtpRefused::NotHere)
        );
        assert_eq!(
            answer(SrtpMode::Optional, false, &remote(false, vec![key])),
            Ok(None)
        );
        assert_eq!(
            answer(SrtpMode::Off, true, &remote(false, vec![])),
            Ok(None)
        );
    }

    #[test]
    fn the_offerer_offers_and_checks_the_answer() {
        assert_eq!(offer(SrtpMode::Required, false), None);
        assert_eq!(offer(SrtpMode::Off, true), None);
        let optional = offer(SrtpMode::Optional, true).unwrap();
        assert!(!optional.savp);
        let required = offer(SrtpMode::Required, true).unwrap();
        assert!(required.savp);

        let theirs = Crypto::generate(1, Suite::AesCm128HmacSha1_80);
        let keys = accepted(
            Some(&required),
            SrtpMode::Required,
            &remote(true, vec![theirs.clone()]),
        )
        .unwrap()
        .unwrap();
        assert_eq!((keys.ours, keys.theirs), (required.ours.key, theirs.key));
        assert_eq!(
            accepted(Some(&required), SrtpMode::Required, &remote(false, vec![])),
            Err(SrtpRefused::NoKey)
        );
        assert_eq!(
            accepted(Some(&optional), SrtpMode::Optional, &remote(false, vec![])),
            Ok(None)
        );
        let other_tag = Crypto { tag: 9, ..theirs };
        assert_eq!(
            accepted(
                Some(&required),
                SrtpMode::Required,
                &remote(true, vec![other_tag])
            ),
            Err(SrtpRefused::NoKey)
        );
        assert_eq!(
            accepted(None, SrtpMode::Off, &remote(false, vec![])),
            Ok(None)
        );
    }
}
