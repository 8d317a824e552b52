//! Hardware endpoints: boards that keep one WebSocket to siprelay
//! (`/device/{id}`) and take part in calls as if they were extensions.
//!
//! Pure parts here (the configured devices, their audio framing); the
//! registry of who is online is in `registry.rs`, the WebSocket shell in
//! `http/device.rs`. The wire protocol for firmware is `protocol/DEVICE.md`.

pub mod registry;

use serde::Deserialize;

use crate::media::g711::{self, Law};
use crate::media::playout::FRAME_SAMPLES;

/// How a device's audio travels in binary WebSocket frames, 20 ms each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    /// G.711 µ-law, 160 bytes a frame.
    #[default]
    Pcmu,
    /// G.711 A-law, 160 bytes a frame.
    Pcma,
    /// 16-bit signed little-endian PCM, 320 bytes a frame.
    L16,
}

impl AudioFormat {
    pub fn name(self) -> &'static str {
        match self {
            AudioFormat::Pcmu => "pcmu",
            AudioFormat::Pcma => "pcma",
            AudioFormat::L16 => "l16",
        }
    }

    /// Bytes of one 20 ms frame.
    pub fn frame_bytes(self) -> usize {
        match self {
            AudioFormat::Pcmu | AudioFormat::Pcma => FRAME_SAMPLES,
            AudioFormat::L16 => FRAME_SAMPLES * 2,
        }
    }

    /// Appends `pcm` in this format to `out`.
    pub fn encode(self, pcm: &[i16], out: &mut Vec<u8>) {
        match self {
            AudioFormat::Pcmu | AudioFormat::Pcma => {
                let law = if self == AudioFormat::Pcmu {
                    Law::Mu
                } else {
                    Law::A
                };
                let start = out.len();
                out.resize(start + pcm.len(), 0);
                law.encode(pcm, &mut out[start..]);
            }
            AudioFormat::L16 => out.extend(pcm.iter().flat_map(|s| s.to_le_bytes())),
        }
    }

    /// Turns a frame from the device into 16-bit LE PCM bytes (what the
    /// playout queue takes), appended to `out`. An L16 frame of odd length
    /// is malformed.
    pub fn decode_to_pcm_bytes(self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), BadFrame> {
        match self {
            AudioFormat::L16 if !frame.len().is_multiple_of(2) => Err(BadFrame),
            AudioFormat::L16 => {
                out.extend_from_slice(frame);
                Ok(())
            }
            AudioFormat::Pcmu | AudioFormat::Pcma => {
                let decode = if self == AudioFormat::Pcmu {
                    g711::decode_mulaw
                } else {
                    g711::decode_alaw
                };
                out.extend(frame.iter().flat_map(|&b| decode(b).to_le_bytes()));
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an L16 frame must hold whole 16-bit samples")]
pub struct BadFrame;

/// One `[[devices]]` entry of the config file.
///
/// ```toml
/// [[devices]]
/// id = "door"
/// token = "long-random-secret"
/// extension = "2001"
/// format = "pcmu"      # or "pcma", "l16"
/// ```
///
/// The device's own side (its id, token and audio) is all a board ever
/// sees. With `account = "{name}"` the board is that SIP account on the
/// PBX: calls to the account's AOR ring it, and calls it places go out
/// through the account; that is siprelay's side only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub id: String,
    pub token: String,
    pub extension: String,
    #[serde(default)]
    pub format: AudioFormat,
    /// The `[[accounts]]` entry the device is on the PBX.
    #[serde(default)]
    pub account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceConfigError {
    #[error("device {0:?}: id must be 1 to 64 letters, digits, '-' or '_'")]
    BadId(String),
    #[error("device {0}: token must be at least 16 characters")]
    WeakToken(String),
    #[error("device {0}: extension must be 1 to 32 digits, letters, '+', '*' or '#'")]
    BadExtension(String),
    #[error("devices {0} and {1} share id, extension or account {2}")]
    Duplicate(String, String, String),
    #[error("device {0}: no account named {1}")]
    UnknownAccount(String, String),
}

/// Checks every entry, that no two share an id, an extension or an
/// account, and that the accounts they name exist.
pub fn validate(
    devices: &[DeviceConfig],
    accounts: &[crate::accounts::AccountConfig],
) -> Result<(), DeviceConfigError> {
    let id_ok = |s: &str| {
        (1..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let ext_ok = |s: &str| {
        (1..=32).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+*#".contains(c))
    };
    for (i, d) in devices.iter().enumerate() {
        if !id_ok(&d.id) {
            return Err(DeviceConfigError::BadId(d.id.clone()));
        }
        if d.token.chars().count() < 16 {
            return Err(DeviceConfigError::WeakToken(d.id.clone()));
        }
        if !ext_ok(&d.extension) {
            return Err(DeviceConfigError::BadExtension(d.id.clone()));
        }
        if let Some(account) = &d.account {
            if !accounts.iter().any(|a| &a.name == account) {
                return Err(DeviceConfigError::UnknownAccount(
                    d.id.clone(),
                    account.clone(),
                ));
            }
        }
        for other in &devices[..i] {
            let shared = if other.id == d.id {
                Some(&d.id)
            } else if other.extension == d.extension {
                Some(&d.extension)
            } else if other.account.is_some() && other.account == d.account {
                d.account.as_ref()
            } else {
                None
            };
            if let Some(what) = shared {
                return Err(DeviceConfigError::Duplicate(
                    other.id.clone(),
                    d.id.clone(),
                    what.clone(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, ext: &str) -> DeviceConfig {
        DeviceConfig {
            id: id.into(),
            token: "0123456789abcdef".into(),
            extension: ext.into(),
            format: AudioFormat::Pcmu,
            account: None,
        }
    }

    #[test]
    fn formats_round_trip_a_frame() {
        let pcm: Vec<i16> = (0..160)
            .map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16)
            .collect();
        for format in [AudioFormat::Pcmu, AudioFormat::Pcma, AudioFormat::L16] {
            let mut wire = Vec::new();
            format.encode(&pcm, &mut wire);
            assert_eq!(wire.len(), format.frame_bytes());
            let mut back = Vec::new();
            format.decode_to_pcm_bytes(&wire, &mut back).unwrap();
            let back: Vec<i16> = back
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            // G.711 keeps about 3% of the amplitude; L16 is exact.
            for (a, b) in pcm.iter().zip(&back) {
                assert!((a - b).abs() <= 260, "{format:?}: {a} became {b}");
            }
        }
        let mut out = Vec::new();
        assert_eq!(
            AudioFormat::L16.decode_to_pcm_bytes(&[1, 2, 3], &mut out),
            Err(BadFrame)
        );
    }

    #[test]
    fn a_device_names_an_account_that_exists_and_no_other_device_has() {
        let accounts = [crate::accounts::example("door-line", "2001")];
        let mut door = device("door", "2001");
        door.account = Some("door-line".into());
        assert_eq!(validate(std::slice::from_ref(&door), &accounts), Ok(()));
        assert!(matches!(
            validate(std::slice::from_ref(&door), &[]),
            Err(DeviceConfigError::UnknownAccount(..))
        ));
        let mut gate = device("gate", "2002");
        gate.account = Some("door-line".into());
        assert!(matches!(
            validate(&[door, gate], &accounts),
            Err(DeviceConfigError::Duplicate(..))
        ));
    }

    #[test]
    fn entries_are_checked() {
        assert_eq!(
            validate(&[device("door", "2001"), device("gate", "2002")], &[]),
            Ok(())
        );
        assert!(matches!(
            validate(&[device("door", "2001"), device("door", "2002")], &[]),
            Err(DeviceConfigError::Duplicate(..))
        ));
        assert!(matches!(
            validate(&[device("door", "2001"), device("gate", "2001")], &[]),
            Err(DeviceConfigError::Duplicate(..))
        ));
        assert!(matches!(
            validate(&[device("a b", "2001")], &[]),
            Err(DeviceConfigError::BadId(_))
        ));
        assert!(matches!(
            validate(&[device("door", "20@01")], &[]),
            Err(DeviceConfigError::BadExtension(_))
        ));
        let mut weak = device("door", "2001");
        weak.token = "short".into();
        assert!(matches!(
            validate(&[weak], &[]),
            Err(DeviceConfigError::WeakToken(_))
        ));
        let parsed: DeviceConfig = toml::from_str(
            "id = \"door\"\ntoken = \"0123456789abcdef\"\nextension = \"2001\"\nformat = \"l16\"",
        )
        .unwrap();
        assert_eq!(parsed.format, AudioFormat::L16);
        assert!(toml::from_str::<DeviceConfig>(
            "id = \"d\"\ntoken = \"x\"\nextension = \"1\"\nformat = \"opus\""
        )
        .is_err());
    }
}
