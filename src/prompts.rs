//! `PromptLibrary`: the greeting and the WAV files `PLAY` may name (shell:
//! it reads files). Each file is decoded and resampled once, then shared by
//! every call that plays it until the file changes.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use thiserror::Error;

use crate::config::Greeting;
use crate::media::prompt::Prompt;
use crate::media::wav::{decode_to_call_rate, WavError};

/// The greeting built into the binary.
const BUILT_IN_GREETING: &[u8] = include_bytes!("../assets/greeting.wav");
/// Prompts kept decoded; past this the cache starts over.
const CACHE_ENTRIES: usize = 64;

#[derive(Debug, Error)]
pub enum PromptError {
    #[error("invalid prompt name {0:?}: a .wav file inside the assets directory is expected")]
    BadName(String),
    #[error("no such prompt {0:?}")]
    Missing(String),
    #[error("{name}: {source}")]
    Unreadable {
        name: String,
        source: std::io::Error,
    },
    #[error("{name}: {source}")]
    NotWav { name: String, source: WavError },
}

impl PromptError {
    /// The protocol status for this failure.
    pub fn status(&self) -> u16 {
        match self {
            PromptError::BadName(_) => 400,
            PromptError::Missing(_) => 404,
            PromptError::Unreadable { .. } => 500,
            PromptError::NotWav { .. } => 415,
        }
    }
}

struct Cached {
    prompt: Prompt,
    modified: Option<SystemTime>,
    len: u64,
}

pub struct PromptLibrary {
    dir: PathBuf,
    greeting: Option<Prompt>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl PromptLibrary {
    /// Loads the greeting now, so that a bad one stops the daemon at start.
    pub fn new(dir: PathBuf, greeting: &Greeting) -> Result<PromptLibrary, PromptError> {
        let greeting = match greeting {
            Greeting::None => None,
            Greeting::BuiltIn => Some(decode("greeting.wav", BUILT_IN_GREETING)?),
            Greeting::File(path) => {
                let name = path.display().to_string();
                let bytes = std::fs::read(path).map_err(|source| PromptError::Unreadable {
                    name: name.clone(),
                    source,
                })?;
                Some(decode(&name, &bytes)?)
            }
        };
        Ok(PromptLibrary {
            dir,
            greeting,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn greeting(&self) -> Option<Prompt> {
        self.greeting.clone()
    }

    /// The prompt called `name` in the assets directory. Blocking (file IO
    /// and, the first time, resampling): call it off the async workers.
    pub fn load(&self, name: &str) -> Result<Prompt, PromptError> {
        let path = self.resolve(name)?;
        let meta = std::fs::metadata(&path).map_err(|source| PromptError::Unreadable {
            name: name.to_string(),
            source,
        })?;
        let modified = meta.modified().ok();
        if let Some(c) = self.cache().get(name) {
            if c.modified == modified && c.len == meta.len() {
                return Ok(c.prompt.clone());
            }
        }
        let bytes = std::fs::read(&path).map_err(|source| PromptError::Unreadable {
            name: name.to_string(),
            source,
        })?;
        let prompt = decode(name, &bytes)?;
        let mut cache = self.cache();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            name.to_string(),
            Cached {
                prompt: prompt.clone(),
                modified,
                len: meta.len(),
            },
        );
        Ok(prompt)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file `name` refers to, which must lie inside the assets
    /// directory even after symbolic links are followed.
    fn resolve(&self, name: &str) -> Result<PathBuf, PromptError> {
        let bad = || PromptError::BadName(crate::wire::truncate_for_error(name));
        let relative = Path::new(name);
        let plain = relative.components().all(
            |c| matches!(c, Component::Normal(part) if !part.to_string_lossy().starts_with('.')),
        );
        let is_wav = relative
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
        if name.is_empty() || name.len() > 255 || name.contains('\\') || !plain || !is_wav {
            return Err(bad());
        }
        let missing = || PromptError::Missing(crate::wire::truncate_for_error(name));
        let root = self.dir.canonicalize().map_err(|_| missing())?;
        let path = root.join(relative).canonicalize().map_err(|_| missing())?;
        if !path.starts_with(&root) || !path.is_file() {
            return Err(bad());
        }
        Ok(path)
    }
}

fn decode(name: &str, bytes: &[u8]) -> Result<Prompt, PromptError> {
    let samples =
        decode_to_call_rate(Cursor::new(bytes)).map_err(|source| PromptError::NotWav {
            name: name.to_string(),
            source,
        })?;
    Ok(Prompt {
        name: name.into(),
        samples: samples.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_greeting_is_speech_length_audio() {
        let lib = PromptLibrary::new(PathBuf::from("assets"), &Greeting::BuiltIn).unwrap();
        let g = lib.greeting().unwrap();
        let seconds = g.samples.len() as f64 / 8000.0;
        assert!((2.0..15.0).contains(&seconds), "{seconds} s");
        let loud = g.samples.iter().filter(|s| s.unsigned_abs() > 3000).count();
        assert!(loud > 1000, "the greeting is nearly silent");
    }

    #[test]
    fn names_that_escape_or_are_not_wav_are_refused() {
        let dir = std::env::temp_dir().join(format!("siprelay-prompts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("notes.txt"), b"hi").unwrap();
        std::fs::write(dir.join("fake.wav"), b"not a wav").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("sub/escape.wav")).unwrap();
        let lib = PromptLibrary::new(dir.clone(), &Greeting::None).unwrap();
        assert!(lib.greeting().is_none());
        for (name, status) in [
            ("../greeting.wav", 400),
            ("/etc/passwd.wav", 400),
            ("sub/../../x.wav", 400),
            (".hidden.wav", 400),
            ("notes.txt", 400),
            ("", 400),
            ("sub/escape.wav", 400),
            ("absent.wav", 404),
            ("fake.wav", 415),
        ] {
            let e = lib.load(name).unwrap_err();
            assert_eq!(e.status(), status, "{name}: {e}");
        }
    }
}
