//! The `cave` binary: parse the command line and configuration, then run a node until SIGINT or SIGTERM.
//!
//! Exit status: 0 after a clean shutdown (and for `--help`, `--version`, `keygen`); 2 for a bad command line
//! or configuration, which includes a node refusing its configuration at start-up; 1 for any other failure.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use cave::config::{self, Command, Config};
use cave::secrets::MasterKey;

/// Exit status of a usage or configuration error, as clap and most Unix tools use.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let command = match config::parse(std::env::args_os(), &config::process_env()) {
        Ok(command) => command,
        Err(err) => return fail(&err.into(), USAGE_ERROR),
    };
    match command {
        Command::Print(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::Keygen => {
            println!("{}", MasterKey::generate().to_base64());
            ExitCode::SUCCESS
        }
        Command::Serve(config) => match serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                let config_error = matches!(err.downcast_ref(), Some(cave::Error::InvalidInput(_)));
                fail(&err, if config_error { USAGE_ERROR } else { 1 })
            }
        },
    }
}

/// Report `err` on one line (its causes joined) without a backtrace: these are operator errors, not bugs.
fn fail(err: &anyhow::Error, status: u8) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::from(status)
}

fn serve(config: Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level).context("invalid log_level")?;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes only help a person at a terminal; in files and journald they are noise.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        // The same records (after the same filter) into the ring buffer behind /api/v1/perf/logs.
        .with(cave::telemetry::logs::layer())
        .try_init()
        .map_err(|err| anyhow::anyhow!("cannot set up logging: {err}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().context("cannot install signal handlers")?;
        tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config.redacted(), "starting cave");
        cave::node::run(config, shutdown).await?;
        Ok(())
    })
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed *now*, before the node starts, not
/// when the future is first polled: a signal that arrives while the node is still opening its data is then
/// remembered and shuts it down cleanly, instead of killing the process mid-start.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("shutdown requested");
        }
    })
}
