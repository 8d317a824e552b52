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
    // rsipstack logs every SIP message it sends or receives at INFO (about
    // a kilobyte a packet); siprelay's own INFO is one line per call event.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rsipstack=warn"));
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
        tracing::error!("{}", describe(e.as_ref()));
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

/// An error and its causes on one line, each cause once: errors that put
/// their source in their own message (as most here do) are not repeated.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = anyhow::Error::new(io).context("cannot bind SIP on 127.0.0.1:5060");
        assert_eq!(
            super::describe(e.as_ref()),
            "cannot bind SIP on 127.0.0.1:5060: Address already in use"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("I/O error: {0}")]
        struct Wrapped(#[source] std::io::Error);
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = Wrapped(io);
        assert_eq!(super::describe(&e), "I/O error: Address already in use");
    }
}
