//! The JSON file beside each recording: who called whom, when, and how the
//! call ended. Written when recording starts and again when it ends.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sidecar {
    /// The recording's id: its file name without `.wav`.
    pub id: String,
    pub call_id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub from: String,
    pub to: String,
    /// `PCMU` or `PCMA`.
    pub codec: String,
    /// When the call began (INVITE received or sent), RFC 3339 UTC.
    pub started_at: String,
    /// When it was answered: where the recording starts.
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
    /// Length of the recorded audio, in seconds.
    pub duration_s: Option<f64>,
    /// `remote` (the far end), `local` (the client or API), `timeout`, `shutdown`.
    pub hangup_by: Option<String>,
    /// The INVITE's final status (200 for every recorded call).
    pub sip_status: Option<u16>,
    pub end_reason: Option<String>,
    /// The WAV, relative to the recordings directory.
    pub wav: String,
    #[serde(default)]
    pub recording_error: Option<String>,
    /// Set when siprelay found the recording unfinished at start and repaired it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repaired: bool,
}

impl Sidecar {
    pub fn read(path: &Path) -> io::Result<Sidecar> {
        let text = std::fs::read(path)?;
        serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes through a temporary file and a rename, so that a reader (or a
    /// crash) never sees half a sidecar.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        let temp = path.with_extension("json.tmp");
        std::fs::write(&temp, json)?;
        std::fs::rename(&temp, path)
    }
}
