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
mod values;

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::secrets::MasterKey;
use crate::storage::Durability;

pub use cli::{
    command, parse, process_env, Cli, CliCommand, Command, HealthcheckArgs, Probe, ServeArgs,
    DEFAULT_HEALTHCHECK_TIMEOUT,
};
pub use values::{format_duration, format_size, parse_duration, parse_size};

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
/// How long a stopping node tries to hand its writes to a peer before it leaves: a healthy peer answers in
/// milliseconds; with the 2 s the transport then takes to empty its queues, a stop stays within the 10 s
/// Docker waits before it kills.
pub const DEFAULT_SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// Longest duration any setting accepts (100 years): beyond it, adding the duration to a clock could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 24 * 3600);

/// Prefix of the environment variables Cave reads.
pub const ENV_PREFIX: &str = "CAVE_";
/// Environment variable naming the config file, the counterpart of `--config`.
pub const CONFIG_ENV: &str = "CAVE_CONFIG";

/// Every configuration key, in the order of [`Config`]'s fields. A key's flag is `--` plus the key with
/// dashes, its environment variable `CAVE_` plus the key in capitals.
pub const KEYS: &[&str] = &[
    "mode",
    "http_addr",
    "grpc_addr",
    "advertise_addr",
    "data_dir",
    "peers",
    "mdns",
    "discovery_window",
    "cluster_key",
    "durability",
    "max_value_bytes",
    "max_request_bytes",
    "anti_entropy_interval",
    "max_clock_drift",
    "tombstone_ttl",
    "shutdown_drain",
    "log_level",
];

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

/// The effective configuration of a node. `Debug` is safe to log: the cluster key redacts itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Dev or prod; decides the default bind addresses (see [`Mode::default_bind_ip`]).
    pub mode: Mode,
    /// Where the REST API and web UI listen. Port 0 picks a free port (tests).
    pub http_addr: SocketAddr,
    /// Where replication peers connect. Kept apart from `http_addr` so the API can be firewalled differently.
    pub grpc_addr: SocketAddr,
    /// The `host:port` peers use to reach `grpc_addr`, when that differs from what the node can work out
    /// (behind NAT, in a container). `None`: see [`Config::advertise_grpc`].
    pub advertise_addr: Option<String>,
    /// Database, node id and dev key live here; a relative path is relative to the working directory, also
    /// when it comes from a config file, so that every source means the same thing.
    pub data_dir: PathBuf,
    /// Seed peers (`host:port`) to join through; knowing one live member is enough to learn the others, so
    /// this needs no updating as the cluster grows.
    pub peers: Vec<String>,
    /// Whether to announce this node and find others with mDNS (`_cave._tcp.local.`) on the local network.
    pub mdns: bool,
    /// In prod mode, how long a node looks for peers (seeds, mDNS) before it considers itself the first node
    /// of a new cluster. May be zero.
    pub discovery_window: Duration,
    /// The cluster key, shared by every member. `None` lets the node use (or create) the key in its data
    /// directory. Never printed: see [`Config::redacted`].
    pub cluster_key: Option<MasterKey>,
    /// How hard a commit tries to reach the disk before a write is acknowledged.
    pub durability: Durability,
    /// Largest value a single key may hold; bounds memory per entry and replication message size.
    pub max_value_bytes: usize,
    /// Largest body of `POST /api/v1/query` and `/api/v1/import`, which carry many values at once; at least
    /// `max_value_bytes`, or a request could not carry even one maximal value.
    pub max_request_bytes: usize,
    /// Mean interval between two anti-entropy rounds started by this node (jittered). Never zero.
    pub anti_entropy_interval: Duration,
    /// A remote version stamped further than this ahead of the local clock waits until the clock catches up.
    /// May be zero.
    pub max_clock_drift: Duration,
    /// Tombstones older than this are purged. Never zero.
    pub tombstone_ttl: Duration,
    /// How long a stopping node tries to hand what it holds to a peer (an anti-entropy round with an alive
    /// member) before it leaves the cluster. Zero leaves at once.
    pub shutdown_drain: Duration,
    /// A `tracing_subscriber::EnvFilter` directive string (`info`, `warn,cave=debug`).
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        let mode = Mode::default();
        Config {
            mode,
            http_addr: mode.default_http_addr(),
            grpc_addr: mode.default_grpc_addr(),
            advertise_addr: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            peers: Vec::new(),
            mdns: mode.default_mdns(),
            discovery_window: DEFAULT_DISCOVERY_WINDOW,
            cluster_key: None,
            durability: Durability::default(),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            anti_entropy_interval: DEFAULT_ANTI_ENTROPY_INTERVAL,
            max_clock_drift: DEFAULT_MAX_CLOCK_DRIFT,
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL,
            shutdown_drain: DEFAULT_SHUTDOWN_DRAIN,
            log_level: DEFAULT_LOG_LEVEL.to_string(),
        }
    }
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
            Command::Keygen | Command::Healthcheck(_) | Command::RepairClock(_) | Command::Print(_) => {
                Err(Error::invalid("the command line does not describe a node to run"))
            }
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

    /// Every field as JSON, the cluster key replaced by `"<redacted>"` (or `null` when unset): safe to
    /// serve from `/api/v1/system/config` and to log. Durations are written as they are configured (`"10s"`).
    pub fn redacted(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode,
            "http_addr": self.http_addr.to_string(),
            "grpc_addr": self.grpc_addr.to_string(),
            "advertise_addr": self.advertise_addr,
            "data_dir": self.data_dir.display().to_string(),
            "peers": self.peers,
            "mdns": self.mdns,
            "discovery_window": format_duration(self.discovery_window),
            "cluster_key": self.cluster_key.as_ref().map(|_| "<redacted>"),
            "durability": self.durability,
            "max_value_bytes": self.max_value_bytes,
            "max_request_bytes": self.max_request_bytes,
            "anti_entropy_interval": format_duration(self.anti_entropy_interval),
            "max_clock_drift": format_duration(self.max_clock_drift),
            "tombstone_ttl": format_duration(self.tombstone_ttl),
            "shutdown_drain": format_duration(self.shutdown_drain),
            "log_level": self.log_level,
        })
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
fn hostname() -> String {
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
