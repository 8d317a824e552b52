//! A device's `HELLO:{json}` text frame: the checks of
//! `http::device::hello` (private, repeated here: the size bound, a JSON
//! object or nothing), then what siprelay keeps and shows of it:
//! `DeviceSlot::set_info` and `info` on a slot from a real
//! `DeviceRegistry`, and the document `GET /devices` serialises.
//!
//! Input: the whole text frame (the `HELLO:` prefix is added when missing,
//! so the corpus may hold either form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use siprelay::devices::registry::DeviceRegistry;
use siprelay::devices::{AudioFormat, DeviceConfig};

/// `http::device::MAX_HELLO` (private).
const MAX_HELLO: usize = 4 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let json = text.strip_prefix("HELLO:").unwrap_or(text);
    if json.len() > MAX_HELLO {
        return;
    }
    let Some(info) = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .filter(serde_json::Value::is_object)
    else {
        return;
    };
    let registry = DeviceRegistry::new(&[DeviceConfig {
        id: "door".into(),
        token: "0123456789abcdef0123".into(),
        extension: "2001".into(),
        format: AudioFormat::Pcmu,
        account: None,
    }]);
    let slot = registry.get("door").expect("the configured device");
    slot.set_info(info.clone());
    let shown = slot.info().expect("the info just set");
    assert_eq!(shown, info);
    // `GET /devices` writes it out again; it must read back the same.
    let written = serde_json::to_string(&shown).expect("a Value serialises");
    let back: serde_json::Value = serde_json::from_str(&written).expect("our JSON parses");
    assert!(back.is_object());
});
