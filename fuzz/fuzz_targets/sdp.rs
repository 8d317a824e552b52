//! SDP from the far end (an INVITE's offer or a 200 OK's answer):
//! `media::sdp::parse`, its `a=crypto` (SDES) lines included, then what
//! siprelay builds from the result: our answer (which echoes the offer's
//! telephone-event list), and, for a usable SDES key, the SRTP receive
//! context derived from it (the step `sip::sdes::answer`/`accepted` hand
//! over), which then checks a packet made of the same input.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use siprelay::media::sdp::{self, Crypto, Sdes};
use siprelay::media::srtp::SrtpKeys;

/// Our own key, fixed so that runs repeat.
const OURS: [u8; 30] = [7; 30];

fuzz_target!(|data: &[u8]| {
    let Ok(remote) = sdp::parse(data) else {
        return;
    };
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    let sdes = remote.crypto.first().map(|theirs| Sdes {
        ours: Crypto {
            tag: theirs.tag,
            suite: theirs.suite,
            key: OURS,
        },
        savp: remote.savp,
    });
    let answer = sdp::answer(1, ip, 40000, &remote, sdes.as_ref());
    // What we send must parse as SDP again, with the codec we chose.
    let again = sdp::parse(answer.as_bytes()).expect("siprelay's own answer parses");
    assert_eq!(again.codec, remote.codec);
    for theirs in &remote.crypto {
        let keys = SrtpKeys {
            suite: theirs.suite,
            ours: OURS,
            theirs: theirs.key,
        };
        let mut rx = keys.receiver();
        let mut packet = data.to_vec();
        let _ = rx.unprotect(&mut packet);
        let mut tx = keys.sender();
        let mut buf = vec![0u8; data.len().min(1024) + siprelay::media::srtp::MAX_TAG];
        let len = data.len().min(1024);
        buf[..len].copy_from_slice(&data[..len]);
        let _ = tx.protect(&mut buf, len);
    }
});
