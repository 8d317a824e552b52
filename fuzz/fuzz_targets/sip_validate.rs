//! SIP requests as they arrive: rsipstack parses the datagram
//! (`SipMessage::try_from(&[u8])`, as its UDP and stream transports do),
//! then siprelay's strict checks on the parsed request
//! (`sip::validate_request`: the stack's rendering of method, URI and each
//! header, then `sip::validate::check`), and the `Require` check
//! (`sip::session::unsupported`) `route` applies next.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsipstack::sip::SipMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(SipMessage::Request(req)) = SipMessage::try_from(data) else {
        return;
    };
    if siprelay::sip::validate_request(&req).is_ok() {
        let _ = siprelay::sip::session::unsupported(&req);
    }
});
