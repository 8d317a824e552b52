use std::io::IsTerminal;

use clap::Parser;
use siprelay::config::{Config, LogFormat, Settings};
use siprelay::daemon::Daemon;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = Settings::parse();
    let config = match Config::resolve(&settings, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("siprelay: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if settings.check_config {
        print!("{}", config.redacted());
        return std::process::ExitCode::SUCCESS;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not for files or collectors.
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }

    if let Err(e) = run(config).await {
        tracing::error!("{e:#}");
        eprintln!("siprelay: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Listening before the daemon says it is ready: a SIGTERM right after
    // the ready line must shut it down cleanly, not kill it.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let daemon = Daemon::start(config).await?;
    wait_for_signal(&mut term).await?;
    daemon.shutdown().await;
    Ok(())
}

async fn wait_for_signal(term: &mut tokio::signal::unix::Signal) -> anyhow::Result<()> {
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
