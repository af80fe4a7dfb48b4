//! The node's configuration: one typed [`Config`], its defaults, and the command line that produces it.
//!
//! Sources are layered, each overriding the one before it, key by key:
//!
//! ```text
//! defaults  <  --config FILE (TOML)  <  CAVE_* environment  <  command-line flags
//! ```
//!
//! The layers are merged by `figment` as *raw* values and only then validated, by the same code whatever
//! their source, so a value is judged the same way in a file, a variable or a flag, and an error can say
//! where the bad value came from. Addresses and `mdns` have no fixed default: theirs depends on the *final*
//! mode, so `CAVE_MODE=prod` with no address set binds every interface even if the file said `mode = "dev"`.
//!
//! Environment variables are passed in explicitly ([`parse`], [`Config::from_args_and_env`]) rather than
//! read from the process, so tests are deterministic and can run in parallel.

mod cli;
mod layers;
mod settings;
mod table;
mod values;

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use cli::{
    command, parse, process_env, Cli, CliCommand, Command, HealthcheckArgs, Probe, DEFAULT_HEALTHCHECK_TIMEOUT,
};
pub use settings::{Config, ServeArgs, KEYS};
pub use values::{format_duration, format_size, parse_bool_text, parse_duration, parse_size, BOOL_SPELLINGS};

/// Port of the REST API (and web UI) unless configured otherwise.
pub const DEFAULT_HTTP_PORT: u16 = 2001;
/// Port of the replication (gRPC) endpoint unless configured otherwise.
pub const DEFAULT_GRPC_PORT: u16 = 2000;
/// Data directory unless configured otherwise: relative, so a first `cave` in a scratch directory just works.
pub const DEFAULT_DATA_DIR: &str = "./cave-data";
/// 1 MiB: the original Cave's limit, large enough for configuration blobs and certificates.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;
/// 64 MiB: room for a batch or an import of many maximal values without letting one request exhaust memory.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 << 20;
/// Log filter unless configured otherwise.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// How long a prod node looks for peers before it founds a new cluster: a few mDNS query rounds, short enough
/// not to delay the first start noticeably.
pub const DEFAULT_DISCOVERY_WINDOW: Duration = Duration::from_secs(3);
/// Mean interval between two anti-entropy rounds started by a node.
pub const DEFAULT_ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(10);
/// How far ahead of the local clock a remote version may be stamped and still be applied at once.
pub const DEFAULT_MAX_CLOCK_DRIFT: Duration = Duration::from_secs(1);
/// How long a tombstone is kept before it is purged: a week, so a node can be down over a long weekend and
/// still learn of the deletes it missed.
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The shortest TTL a write may ask for: below it, clock differences between nodes (up to
/// `max_clock_drift`) are a large share of the key's life.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
/// The longest TTL a write may ask for: a year (a longer-lived key is better written permanent).
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long audit records are kept: 30 days, the span of a monthly review.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a stopping node tries to hand its writes to a peer before it leaves: a healthy peer answers in
/// milliseconds; with the 2 s the transport then takes to empty its queues, a stop stays within the 10 s
/// Docker waits before it kills.
pub const DEFAULT_SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// How long a client may take to send a request head once it has sent its first byte: generous for any real
/// client, short enough that a slowloris trickle cannot hold a connection for long.
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may stay open without a request: longer than the keep-alive of common clients
/// (browsers keep idle connections up to a minute or so), so they rarely find one closed under them.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// How long a request body may take to arrive in full: a 64 MiB import needs about 1 MB/s.
pub const DEFAULT_HTTP_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// File descriptors kept free of HTTP connections when the cap is derived from `RLIMIT_NOFILE`: SQLite (the
/// database, its WAL and shared memory, the read pool), gRPC connections to and from peers, mDNS sockets and
/// the listeners.
pub const HTTP_FD_HEADROOM: u64 = 512;
/// The open-files limit assumed when the process has none: Linux's default ceiling (`fs.nr_open`).
pub const UNLIMITED_FD_LIMIT: u64 = 1 << 20;
/// Longest duration any setting accepts (100 years): beyond it, adding the duration to a clock could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 24 * 3600);

/// Prefix of the environment variables Cave reads.
pub const ENV_PREFIX: &str = "CAVE_";
/// Environment variable naming the config file, the counterpart of `--config`.
pub const CONFIG_ENV: &str = "CAVE_CONFIG";

/// How a node presents itself to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Loopback only, local key
    #[default]
    Dev,
    /// All interfaces, for clusters
    Prod,
}

impl Mode {
    /// The IP that addresses bind to unless configured: a dev node must not be reachable from the network by
    /// accident, a prod node exists to be reached.
    pub fn default_bind_ip(self) -> IpAddr {
        match self {
            Mode::Dev => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Mode::Prod => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }

    /// Default address of the REST API in this mode.
    pub fn default_http_addr(self) -> SocketAddr {
        SocketAddr::new(self.default_bind_ip(), DEFAULT_HTTP_PORT)
    }

    /// Default address of the replication endpoint in this mode.
    pub fn default_grpc_addr(self) -> SocketAddr {
        SocketAddr::new(self.default_bind_ip(), DEFAULT_GRPC_PORT)
    }

    /// Whether mDNS discovery is on unless configured: a dev node keeps to itself, a prod node looks for its
    /// cluster on the local network.
    pub fn default_mdns(self) -> bool {
        self == Mode::Prod
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Dev => "dev",
            Mode::Prod => "prod",
        })
    }
}

/// The PEM files of the REST API's HTTPS: read at start-up and again on SIGHUP (see [`crate::api::tls`]).
/// Relative paths are relative to the working directory, as `data_dir` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first (`tls_cert`).
    pub cert: PathBuf,
    /// The certificate's private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (`tls_key`).
    pub key: PathBuf,
}

impl Config {
    /// The configuration of `cave [serve] ...` from these arguments (`args[0]` is the program name) and
    /// environment. Help, version and other subcommands are errors here; use [`parse`] to handle them.
    pub fn from_args_and_env<I, T>(args: I, env: &[(String, String)]) -> Result<Config>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        match parse(args, env)? {
            Command::Serve(config) => Ok(config),
            Command::Keygen
            | Command::Healthcheck(_)
            | Command::RepairClock(_)
            | Command::ResetNodeId(_)
            | Command::Print(_)
            | Command::Acl(_) => Err(Error::invalid("the command line does not describe a node to run")),
        }
    }

    /// The configuration from this process's command line and environment.
    pub fn load() -> Result<Config> {
        Config::from_args_and_env(std::env::args_os(), &process_env())
    }

    /// The `host:port` this node tells peers to reach its replication endpoint at: `advertise_addr` if set,
    /// else `grpc_addr` unless its IP is unspecified (`0.0.0.0`, `[::]`), which no peer can connect to, and
    /// then this host's name with `grpc_addr`'s port.
    pub fn advertise_grpc(&self) -> String {
        match &self.advertise_addr {
            Some(addr) => addr.clone(),
            None => advertised(self.grpc_addr),
        }
    }

    /// The `host:port` of this node's REST API as shown to peers and clients: `http_addr` unless its IP is
    /// unspecified, and then this host's name with `http_addr`'s port.
    pub fn advertise_http(&self) -> String {
        advertised(self.http_addr)
    }

    /// The cap on open HTTP connections: `http_max_connections` if set, else the soft limit on open files
    /// (`fd_limit`, which start-up raises to the hard limit; `None` when unlimited, then Linux's ceiling
    /// [`UNLIMITED_FD_LIMIT`]) less [`HTTP_FD_HEADROOM`], and at least 1. Below the limit, so that accepting
    /// never fails for lack of descriptors, which would stall the accept loop.
    pub fn max_connections(&self, fd_limit: Option<u64>) -> usize {
        self.http_max_connections.unwrap_or_else(|| {
            let limit = fd_limit.unwrap_or(UNLIMITED_FD_LIMIT);
            usize::try_from(limit.saturating_sub(HTTP_FD_HEADROOM).max(1)).unwrap_or(usize::MAX)
        })
    }

    /// The HTTPS certificate and key, when both are set (start-up refuses one without the other).
    pub fn tls(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// Whether access control is on: `acl` if set, else on in prod mode and off in dev mode.
    pub fn acl_enabled(&self) -> bool {
        self.acl.unwrap_or(self.mode == Mode::Prod)
    }
}

/// `addr` as peers can reach it: itself, or this host's name with its port when its IP is unspecified.
pub fn advertised(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("{}:{}", hostname(), addr.port())
    } else {
        addr.to_string()
    }
}

/// This host's name, read when asked (it can change at run time): the kernel's, else `$HOSTNAME`, else
/// `localhost`.
pub(crate) fn hostname() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    kernel
        .into_iter()
        .chain(std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_string())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests;
