//! The recordings directory: where each recording lives, listing and
//! deleting them, and the start-up repair of recordings left unfinished.
//!
//! Layout: `{dir}/{YYYY-MM-DD}/{YYYYMMDDTHHMMSSZ}_{call_id}.wav` and `.json`
//! beside it. Ids are checked character by character before any path is
//! built from them, so no request can name a file outside the directory.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use thiserror::Error;

use super::sidecar::Sidecar;
use super::wavfile::{self, BLOCK_ALIGN, HEADER_LEN, RATE};
use crate::clock_time::Utc;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid recording id: expected YYYYMMDDTHHMMSSZ_ and 16 hex digits")]
pub struct BadId;

/// A validated recording id, e.g. `20261122T151500Z_0123456789abcdef`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingId(String);

impl RecordingId {
    pub fn parse(text: &str) -> Result<RecordingId, BadId> {
        let b = text.as_bytes();
        let ok = b.len() == 33
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'Z'
            && b[16] == b'_'
            && b[17..]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        ok.then(|| RecordingId(text.to_string())).ok_or(BadId)
    }

    pub fn new(start: &Utc, call_id: &str) -> Result<RecordingId, BadId> {
        Self::parse(&format!("{}_{call_id}", start.compact()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `YYYY-MM-DD`: the directory it lives in.
    pub fn date_dir(&self) -> String {
        let s = &self.0;
        format!("{}-{}-{}", &s[0..4], &s[4..6], &s[6..8])
    }

    /// The WAV's path relative to the recordings directory.
    pub fn wav_name(&self) -> String {
        format!("{}/{}.wav", self.date_dir(), self.0)
    }
}

/// What `GET /recordings` filters on.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Compact times (`YYYYMMDDTHHMMSS`) bounding the start, inclusive.
    pub from: Option<String>,
    pub to: Option<String>,
    /// A substring of either party.
    pub number: Option<String>,
    pub limit: usize,
}

/// A listed recording: its sidecar and the WAV's current size.
#[derive(Debug, Clone)]
pub struct Listed {
    pub sidecar: Sidecar,
    pub wav_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    pub fn wav_path(&self, id: &RecordingId) -> PathBuf {
        self.dir.join(id.date_dir()).join(format!("{}.wav", id.0))
    }

    pub fn sidecar_path(&self, id: &RecordingId) -> PathBuf {
        self.dir.join(id.date_dir()).join(format!("{}.json", id.0))
    }

    pub fn get(&self, id: &RecordingId) -> io::Result<Listed> {
        let sidecar = Sidecar::read(&self.sidecar_path(id))?;
        let wav_bytes = std::fs::metadata(self.wav_path(id)).map_or(0, |m| m.len());
        Ok(Listed { sidecar, wav_bytes })
    }

    /// Removes the WAV and its sidecar.
    pub fn delete(&self, id: &RecordingId) -> io::Result<()> {
        let wav = std::fs::remove_file(self.wav_path(id));
        let json = std::fs::remove_file(self.sidecar_path(id));
        match (wav, json) {
            (Err(a), Err(_)) => Err(a),
            _ => Ok(()),
        }
    }

    /// Newest first. Unreadable sidecars are skipped (and logged).
    pub fn list(&self, filter: &ListFilter) -> io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        for day in sorted_entries(&self.dir, true)? {
            if out.len() >= filter.limit {
                break;
            }
            let Some(day_name) = day.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if !is_date_dir(&day_name) || !day.is_dir() {
                continue;
            }
            let compact_day = day_name.replace('-', "");
            if filter
                .to
                .as_ref()
                .is_some_and(|to| compact_day.as_str() > &to[..8])
            {
                continue;
            }
            if filter
                .from
                .as_ref()
                .is_some_and(|from| compact_day.as_str() < &from[..8])
            {
                break;
            }
            for file in sorted_entries(&day, true)? {
                if out.len() >= filter.limit {
                    break;
                }
                let Some(id) = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".json"))
                    .and_then(|n| RecordingId::parse(n).ok())
                else {
                    continue;
                };
                let start = &id.0[..15];
                if filter.from.as_ref().is_some_and(|f| start < f.as_str())
                    || filter.to.as_ref().is_some_and(|t| start > t.as_str())
                {
                    continue;
                }
                let listed = match self.get(&id) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(path = %file.display(), error = %e, "unreadable recording sidecar skipped");
                        continue;
                    }
                };
                if let Some(n) = &filter.number {
                    if !listed.sidecar.from.contains(n.as_str())
                        && !listed.sidecar.to.contains(n.as_str())
                    {
                        continue;
                    }
                }
                out.push(listed);
            }
        }
        Ok(out)
    }

    /// Repairs every recording a previous run left unfinished: the WAV
    /// header fixed from the file's size, the sidecar completed and marked
    /// `repaired`. Returns the ids repaired.
    pub fn repair_unfinished(&self) -> io::Result<Vec<RecordingId>> {
        let mut repaired = Vec::new();
        if !self.dir.exists() {
            return Ok(repaired);
        }
        for day in sorted_entries(&self.dir, false)? {
            let is_day = day
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_date_dir);
            if !is_day || !day.is_dir() {
                continue;
            }
            for file in sorted_entries(&day, false)? {
                let Some(id) = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".wav"))
                    .and_then(|n| RecordingId::parse(n).ok())
                else {
                    continue;
                };
                match self.repair_one(&id) {
                    Ok(true) => repaired.push(id),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(path = %file.display(), error = %e, "recording could not be repaired")
                    }
                }
            }
        }
        Ok(repaired)
    }

    fn repair_one(&self, id: &RecordingId) -> io::Result<bool> {
        let wav = self.wav_path(id);
        // Before the repair writes the header: then it is the last frame's time.
        let last_written = std::fs::metadata(&wav)?
            .modified()
            .unwrap_or(SystemTime::now());
        let fixed = wavfile::repair(&wav)?;
        let sidecar_path = self.sidecar_path(id);
        let sidecar = Sidecar::read(&sidecar_path).ok();
        let unfinished = sidecar.as_ref().is_none_or(|s| s.ended_at.is_none());
        if fixed.is_none() && !unfinished {
            return Ok(false);
        }
        let len = std::fs::metadata(&wav)?.len();
        let seconds = (len.saturating_sub(HEADER_LEN) / BLOCK_ALIGN) as f64 / RATE as f64;
        let mut s = sidecar.unwrap_or_else(|| Sidecar {
            id: id.0.clone(),
            call_id: id.0[17..].to_string(),
            direction: String::new(),
            from: String::new(),
            to: String::new(),
            codec: String::new(),
            started_at: String::new(),
            answered_at: None,
            ended_at: None,
            duration_s: None,
            hangup_by: None,
            sip_status: None,
            end_reason: None,
            wav: id.wav_name(),
            recording_error: None,
            repaired: false,
        });
        if s.ended_at.is_none() {
            // The audio's first sample is the answer: the call ended where
            // the recorded audio does, not when siprelay came back.
            let ended = s
                .answered_at
                .as_deref()
                .and_then(crate::clock_time::parse_rfc3339)
                .map(|answered| answered + std::time::Duration::from_secs_f64(seconds))
                .unwrap_or(last_written);
            s.ended_at = Some(Utc::from_system(ended).rfc3339());
            s.end_reason = Some("siprelay stopped during the call".into());
        }
        s.duration_s = Some((seconds * 100.0).round() / 100.0);
        s.repaired = true;
        s.write(&sidecar_path)?;
        tracing::warn!(
            recording = %id.0,
            claimed_bytes = fixed.as_ref().map(|f| f.claimed),
            actual_bytes = fixed.as_ref().map(|f| f.actual),
            seconds,
            "repaired unfinished recording"
        );
        Ok(true)
    }
}

fn is_date_dir(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// A directory's entries sorted by name (newest first when `reverse`, as
/// names sort by time).
fn sorted_entries(dir: &Path, reverse: bool) -> io::Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    entries.sort();
    if reverse {
        entries.reverse();
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated_before_any_path_is_built() {
        let good = "20261122T151500Z_0123456789abcdef";
        let id = RecordingId::parse(good).unwrap();
        assert_eq!(id.date_dir(), "2026-11-22");
        assert_eq!(
            id.wav_name(),
            "2026-11-22/20261122T151500Z_0123456789abcdef.wav"
        );
        for bad in [
            "",
            "../../etc/passwd",
            "20261122T151500Z_0123456789abcde",
            "20261122T151500Z_0123456789abcdeF",
            "20261122T151500Z_0123456789abcdef0",
            "20261122T151500Z/0123456789abcdef",
            "2026112/T151500Z_0123456789abcdef",
            "20261122T151500Z_..3456789abcdef",
            "20261122T151500Z_0123456789abcd%2f",
            "20261122T151500Z_0123456789abcdé",
        ] {
            assert_eq!(RecordingId::parse(bad), Err(BadId), "{bad:?}");
        }
    }
}
