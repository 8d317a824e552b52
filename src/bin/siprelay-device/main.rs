//! `siprelay-device`: a device simulator. It connects to siprelay as a
//! board would (`/device/{id}`, protocol/DEVICE.md) and behaves as firmware
//! should: paced 20 ms frames from its own clock (with a drift you choose),
//! bursty sending, auto-answer or press-to-answer, dialling, reconnecting
//! with backoff. It plays a WAV into each call and records what it hears.
//!
//! ```text
//! siprelay-device --id door --token SECRET --answer auto \
//!     --play assets/greeting.wav --record heard.wav --drift-ppm 80 --burst 3
//! ```

mod board;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use siprelay::devices::AudioFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Answer {
    /// Answer every incoming call at once.
    Auto,
    /// Answer when Enter is pressed (a button).
    Press,
    /// Never answer (let it ring).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Pcmu,
    Pcma,
    L16,
}

impl From<Format> for AudioFormat {
    fn from(f: Format) -> AudioFormat {
        match f {
            Format::Pcmu => AudioFormat::Pcmu,
            Format::Pcma => AudioFormat::Pcma,
            Format::L16 => AudioFormat::L16,
        }
    }
}

#[derive(Debug, Clone, Parser)]
#[command(about = "Simulates a hardware device on siprelay's /device/{id} WebSocket")]
pub struct Options {
    /// siprelay's HTTP address.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// The device id (a [[devices]] entry of siprelay's config).
    #[arg(long)]
    pub id: String,
    /// The device's token.
    #[arg(long, env = "DEVICE_TOKEN")]
    pub token: String,
    /// The audio format configured for the device.
    #[arg(long, value_enum, default_value = "pcmu")]
    pub format: Format,
    /// How incoming calls are answered.
    #[arg(long, value_enum, default_value = "auto")]
    pub answer: Answer,
    /// Dial this number (or sip: URI) once connected.
    #[arg(long)]
    pub dial: Option<String>,
    /// Play this WAV (any format hound reads) into each call, from its start.
    #[arg(long)]
    pub play: Option<PathBuf>,
    /// Record what the device hears, 8 kHz mono, to this WAV (the last call).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Hang up this many seconds after a call connects.
    #[arg(long)]
    pub hangup_after: Option<f64>,
    /// Exit after this many calls have ended.
    #[arg(long)]
    pub calls: Option<u32>,
    /// How fast the board's clock runs, in parts per million (+: fast).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub drift_ppm: f64,
    /// Send frames in bursts of this many (Wi-Fi aggregation).
    #[arg(long, default_value_t = 1)]
    pub burst: u32,
    /// A JSON object sent as HELLO after connecting.
    #[arg(long, default_value = r#"{"firmware":"siprelay-device","rssi":-55}"#)]
    pub hello: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let options = Options::parse();
    if options.burst == 0 || options.drift_ppm.abs() > 10_000.0 {
        eprintln!("siprelay-device: --burst must be at least 1 and --drift-ppm within ±10000");
        return std::process::ExitCode::from(2);
    }
    let play = match &options.play {
        Some(path) => match std::fs::File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                siprelay::media::wav::decode_to_call_rate(std::io::BufReader::new(f))
                    .map_err(|e| e.to_string())
            }) {
            Ok(pcm) => pcm,
            Err(e) => {
                eprintln!("siprelay-device: {}: {e}", path.display());
                return std::process::ExitCode::from(2);
            }
        },
        None => Vec::new(),
    };
    let mut board = board::Board::new(options, play);
    let mut backoff = Duration::from_secs(1);
    loop {
        match board.run_connection().await {
            Ok(board::Ended::Done) => return std::process::ExitCode::SUCCESS,
            Ok(board::Ended::Refused(why)) => {
                eprintln!("siprelay-device: refused: {why}");
                return std::process::ExitCode::FAILURE;
            }
            // As DEVICE.md asks of firmware: a lost connection is retried at
            // once (a call waits only the grace window); only failures to
            // connect back off.
            Ok(board::Ended::Lost) => {
                backoff = Duration::from_secs(1);
                println!("[device] connection lost; reconnecting");
                continue;
            }
            Err(e) => println!("[device] cannot connect: {e}"),
        }
        println!("[device] reconnecting in {backoff:?}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
