//! The `cave` binary: parse the command line and configuration, then run a node until SIGINT or SIGTERM.
//!
//! Exit status: 0 after a clean shutdown (and for `--help`, `--version`, `keygen`, a healthy `healthcheck`); 2
//! for a bad command line or configuration, which includes a node refusing its configuration at start-up; 1
//! for any other failure, including an unhealthy `healthcheck`.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;

use anyhow::Context;
use cave::config::{self, Command, Config, Probe};
use cave::secrets::MasterKey;

/// Exit status of a usage or configuration error, as clap and most Unix tools use.
const USAGE_ERROR: u8 = 2;

/// mimalloc instead of glibc malloc: profiles of the write path showed ~15% of CPU in glibc's allocator
/// (consolidation and free-list work under many short-lived request allocations).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often [`Purger`] gives freed memory back to the operating system.
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Gives the memory the process freed back to the operating system every [`PURGE_INTERVAL`], until dropped.
///
/// mimalloc returns freed pages to the OS only after a delay (1 s), and it checks that delay only inside
/// later allocations: a node that loaded a million keys at start-up, or took a bulk import, and then idles
/// kept every page it had freed meanwhile (the load's vector, the import's buffers) resident, 127 MB of
/// 474 MB after a restart with 1 M keys. A forced collection on this thread purges them whatever the other
/// threads do; pages still in use are untouched.
///
/// SQLite allocates with the C library's `malloc`, not mimalloc, and glibc keeps what a thread's arena freed
/// resident too: the writer connection's page cache (64 MiB), released by `PRAGMA shrink_memory` after a bulk
/// import, stayed in the process's RSS as one fully touched 64 MiB arena. `malloc_trim` hands those pages back
/// in the same pass.
struct Purger {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Purger {
    fn start() -> std::io::Result<Purger> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("cave-purge".into()).spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PURGE_INTERVAL) {
                // SAFETY: `mi_collect` has no preconditions; it is safe to call from any thread at any time.
                unsafe { libmimalloc_sys::mi_collect(true) };
                // SAFETY: `malloc_trim` takes no pointers and locks each of glibc's arenas while it trims it.
                #[cfg(all(target_os = "linux", target_env = "gnu"))]
                unsafe {
                    libc::malloc_trim(0)
                };
            }
        })?;
        Ok(Purger {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        // Closing the channel ends the loop at once.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A runtime worker going idle collects its own mimalloc heap, at most once a [`PURGE_INTERVAL`].
///
/// The purger's forced collection reaches its own thread's heap and abandoned pages only. A block freed by
/// another thread (the writer task merging two runs of the map's B-tree built on another worker) goes back
/// to its owner's page lazily, when the owner next collects: an idle worker never did, and after an import of
/// 1 M keys ~8 MB of such pages stayed resident.
fn collect_when_idle() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    LAST.with(|last| {
        let now = std::time::Instant::now();
        if last.get().is_none_or(|at| now.duration_since(at) >= PURGE_INTERVAL) {
            last.set(Some(now));
            // SAFETY: as in the purger; this collects the calling thread's own heap.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
    });
}

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
        Command::Healthcheck(probe) => {
            let scheme = if probe.tls { "https" } else { "http" };
            match healthcheck(probe) {
                Ok(status) => {
                    println!("healthy: {scheme}://{}/healthz answered {status}", probe.addr);
                    ExitCode::SUCCESS
                }
                Err(reason) => {
                    eprintln!("unhealthy: {scheme}://{}/healthz: {reason}", probe.addr);
                    ExitCode::FAILURE
                }
            }
        }
        Command::Acl(request) => match acl(&request) {
            Ok(answer) => {
                println!("{answer:#}");
                ExitCode::SUCCESS
            }
            Err(err) => fail(&err, 1),
        },
        Command::RepairClock(config) => match repair_clock(&config) {
            Ok(0) => {
                println!("nothing to repair: no stored version is more than max_clock_drift ahead of the clock");
                ExitCode::SUCCESS
            }
            Ok(n) => {
                println!(
                    "restamped {n} entries at the current time; the old database is {}",
                    config.data_dir.join(cave::repair::BACKUP_FILE).display()
                );
                ExitCode::SUCCESS
            }
            Err(err) => fail(&err, 1),
        },
        Command::ResetNodeId(config) => match cave::node::reset_node_id(&config) {
            Ok((old, new)) => {
                println!(
                    "data_dir {} had node id {old} and now has {new}; its data is kept. Start the node: it joins \
                     as a new member and its peers forget {old} if no other node runs under it",
                    config.data_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                let status = if matches!(err, cave::Error::InvalidInput(_)) {
                    USAGE_ERROR
                } else {
                    1
                };
                fail(&err.into(), status)
            }
        },
        Command::Serve(config) => match serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                let config_error = matches!(err.downcast_ref(), Some(cave::Error::InvalidInput(_)));
                fail(&err, if config_error { USAGE_ERROR } else { 1 })
            }
        },
    }
}

/// `cave acl ...`: one request to the node; its JSON answer.
fn acl(request: &cave::acl::cli::AclRequest) -> anyhow::Result<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(request.run())?)
}

/// `cave repair-clock`: print each restamped entry; returns how many.
fn repair_clock(config: &cave::config::Config) -> anyhow::Result<usize> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let repaired = runtime.block_on(cave::node::repair_clock(config))?;
    for f in &repaired {
        println!("{} was at {} ({} ms ahead)", f.key, f.version, f.ahead_ms);
    }
    Ok(repaired.len())
}

/// Report `err` on one line (its causes joined) without a backtrace: these are operator errors, not bugs.
fn fail(err: &anyhow::Error, status: u8) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::from(status)
}

/// `GET /healthz` over an HTTP/1.1 connection, in TLS (rustls) if `probe.tls` (a client library would be a
/// large dependency for one request, and the image has no curl): the status line (`200 OK`) if the status
/// is 200, else why not.
fn healthcheck(probe: Probe) -> Result<String, String> {
    let stream = TcpStream::connect_timeout(&probe.addr, probe.timeout).map_err(|e| format!("cannot connect: {e}"))?;
    stream
        .set_read_timeout(Some(probe.timeout))
        .and_then(|()| stream.set_write_timeout(Some(probe.timeout)))
        .map_err(|e| e.to_string())?;
    if probe.tls {
        let tls = cave::api::tls::probe_connection().map_err(|e| format!("cannot set up TLS: {e}"))?;
        exchange(&mut tokio_rustls::rustls::StreamOwned::new(tls, stream), probe)
    } else {
        exchange(&mut { stream }, probe)
    }
}

/// The request and status line of [`healthcheck`] on a connected `stream`.
fn exchange(stream: &mut (impl Read + Write), probe: Probe) -> Result<String, String> {
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nUser-Agent: cave-healthcheck\r\nConnection: close\r\n\r\n",
        probe.addr
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // Only the status line matters; it is short, so a few hundred bytes are plenty.
    let mut answer = Vec::new();
    let mut buffer = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default().trim();
    // "HTTP/1.1 200 OK" -> "200 OK"
    let status = match status_line.split_once(' ') {
        Some((version, status)) if version.starts_with("HTTP/") => status.trim(),
        _ if answer.is_empty() => return Err("the connection closed without an answer".to_string()),
        _ => return Err(format!("not an HTTP answer: {status_line:?}")),
    };
    if status.split(' ').next() == Some("200") {
        Ok(status.to_string())
    } else {
        Err(format!("answered {status}"))
    }
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
        .on_thread_park(collect_when_idle)
        .build()
        .context("cannot start the async runtime")?;
    let _purger = Purger::start().context("cannot start the memory purger")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().context("cannot install signal handlers")?;
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting cave");
        config.log_effective();
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
