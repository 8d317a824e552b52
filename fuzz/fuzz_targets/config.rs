//! The `--config` TOML file: `toml::from_str::<config::Settings>` as
//! `Config::resolve` does it, then the whole resolution and validation
//! (`Config::resolve`: the merge with flags, accounts and devices checks,
//! access checks) and `Config::redacted` (`--check-config`).
//!
//! `Config::resolve` reads the file itself (its in-memory step,
//! `from_settings`, is private), so text that parses as `Settings` is
//! written to one temporary file per fuzzing process and resolved from
//! there, with no environment variables.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use siprelay::config::{Config, Settings};

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("siprelay-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir.join("siprelay.toml")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if toml::from_str::<Settings>(text).is_err() {
        return;
    }
    let path = scratch();
    std::fs::write(path, text).expect("the scratch file is writable");
    let flags = Settings {
        config: Some(path.clone()),
        ..Settings::default()
    };
    if let Ok(config) = Config::resolve(&flags, |_| None) {
        let _ = config.redacted();
    }
});
