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
    "isolated_unready",
    "cluster_key",
    "cluster_key_file",
    "new_cluster",
    "durability",
    "allow_empty_start",
    "max_value_bytes",
    "max_request_bytes",
    "anti_entropy_interval",
    "max_clock_drift",
    "tombstone_ttl",
    "audit_retention",
    "shutdown_drain",
    "http_header_timeout",
    "http_idle_timeout",
    "http_body_timeout",
    "http_max_connections",
    "allowed_hosts",
    "tls_cert",
    "tls_key",
    "acl",
    "acl_root_token",
    "metrics_public",
    "cors_origins",
    "log_level",
    "access_log",
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
    /// Whether `/readyz` answers 503 (rather than 200) while the node is *isolated*: it has seeds (`peers`)
    /// but reaches none of them and knows no live member. Off by default: an isolated node still serves
    /// what it holds, and taking every node of a cluster split by a network fault out of a load balancer
    /// would turn a partition into an outage.
    pub isolated_unready: bool,
    /// The cluster key, shared by every member. `None` lets the node use (or create) the key in its data
    /// directory. Never printed: see [`Config::redacted`].
    pub cluster_key: Option<MasterKey>,
    /// The file `cluster_key` was read from (secrets managers mount keys as files), if it was. Setting both
    /// is an error.
    pub cluster_key_file: Option<PathBuf>,
    /// Let this start found a new cluster on a used data directory: make a new key although the data
    /// directory belongs to a cluster (no key is configured and its key file is gone), or adopt a
    /// configured key of another cluster than the one the data directory recorded. Off: such a node refuses
    /// to start (see `node`, "Cluster identity"). Meant for one start, not to be left on.
    pub new_cluster: bool,
    /// How hard a commit tries to reach the disk before a write is acknowledged.
    pub durability: Durability,
    /// Start even though the data directory has lost state it had: its database is missing or empty while
    /// `node.id` exists, or the key file (`node.key`, or `cluster.key` of a prod node without a configured
    /// key) is missing while the database holds sealed secrets. Off: such a node refuses to start, naming the
    /// file, rather than serve an empty database or make a new key that cannot open the old secrets.
    pub allow_empty_start: bool,
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
    /// Audit records older than this are deleted (see `crate::audit`). Never zero.
    pub audit_retention: Duration,
    /// How long a stopping node tries to hand what it holds to a peer (an anti-entropy round with an alive
    /// member) before it leaves the cluster. Zero leaves at once.
    pub shutdown_drain: Duration,
    /// A connection that has sent part of a request head is closed if the head is not complete this long
    /// after its first byte. Never zero.
    pub http_header_timeout: Duration,
    /// A connection with no request in progress is closed after this long. Never zero.
    pub http_idle_timeout: Duration,
    /// A request body must arrive in full within this long of its head, or the request fails. Never zero.
    pub http_body_timeout: Duration,
    /// Most HTTP connections open at once; more are accepted and closed at once. `None`: derived at start-up
    /// from the file descriptor limit, see [`Config::max_connections`].
    pub http_max_connections: Option<usize>,
    /// Host names (of the `Host` header) the REST API answers besides its own addresses, loopback names and
    /// this machine's name; `*` answers any. Guards against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// The certificate and private key the REST API serves HTTPS with (keys `tls_cert` and `tls_key`, set
    /// together). `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Whether every request needs a token (see docs/security.md). `None`: on in prod mode, off in dev
    /// mode; see [`Config::acl_enabled`].
    pub acl: Option<bool>,
    /// The root token, a management token this node accepts whatever the replicated ACL holds (Consul's
    /// initial management token). Never printed: it redacts itself.
    pub acl_root_token: Option<crate::acl::token::SecretToken>,
    /// Whether `/api/v1/perf/metrics` answers without a token while access control is on.
    pub metrics_public: bool,
    /// Origins (`https://app.example.com`, `http://localhost:3000`) of browser apps allowed to use the REST
    /// API across origins: their CORS preflights are answered and their writes are not refused as
    /// cross-site. Empty: no CORS, only the node's own pages may write from a browser.
    pub cors_origins: Vec<String>,
    /// A `tracing_subscriber::EnvFilter` directive string (`info`, `warn,cave=debug`).
    pub log_level: String,
    /// Log one line per HTTP request (target `cave::access`): method, route template, status, duration and
    /// bytes sent; never a key, a value or a query string.
    pub access_log: bool,
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
            isolated_unready: false,
            cluster_key: None,
            cluster_key_file: None,
            new_cluster: false,
            durability: Durability::default(),
            allow_empty_start: false,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            anti_entropy_interval: DEFAULT_ANTI_ENTROPY_INTERVAL,
            max_clock_drift: DEFAULT_MAX_CLOCK_DRIFT,
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL,
            audit_retention: DEFAULT_AUDIT_RETENTION,
            shutdown_drain: DEFAULT_SHUTDOWN_DRAIN,
            http_header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
            http_idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
            http_body_timeout: DEFAULT_HTTP_BODY_TIMEOUT,
            http_max_connections: None,
            allowed_hosts: Vec::new(),
            tls: None,
            acl: None,
            acl_root_token: None,
            metrics_public: false,
            cors_origins: Vec::new(),
            log_level: DEFAULT_LOG_LEVEL.to_string(),
            access_log: false,
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

    /// Whether access control is on: `acl` if set, else on in prod mode and off in dev mode.
    pub fn acl_enabled(&self) -> bool {
        self.acl.unwrap_or(self.mode == Mode::Prod)
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
            "isolated_unready": self.isolated_unready,
            "cluster_key": self.cluster_key.as_ref().map(|_| "<redacted>"),
            "cluster_key_file": self.cluster_key_file.as_ref().map(|p| p.display().to_string()),
            "new_cluster": self.new_cluster,
            "durability": self.durability,
            "allow_empty_start": self.allow_empty_start,
            "max_value_bytes": self.max_value_bytes,
            "max_request_bytes": self.max_request_bytes,
            "anti_entropy_interval": format_duration(self.anti_entropy_interval),
            "max_clock_drift": format_duration(self.max_clock_drift),
            "tombstone_ttl": format_duration(self.tombstone_ttl),
            "audit_retention": format_duration(self.audit_retention),
            "shutdown_drain": format_duration(self.shutdown_drain),
            "http_header_timeout": format_duration(self.http_header_timeout),
            "http_idle_timeout": format_duration(self.http_idle_timeout),
            "http_body_timeout": format_duration(self.http_body_timeout),
            "http_max_connections": self.http_max_connections,
            "allowed_hosts": self.allowed_hosts,
            "tls_cert": self.tls.as_ref().map(|tls| tls.cert.display().to_string()),
            "tls_key": self.tls.as_ref().map(|tls| tls.key.display().to_string()),
            "acl": self.acl_enabled(),
            "acl_root_token": self.acl_root_token.as_ref().map(|_| "<redacted>"),
            "metrics_public": self.metrics_public,
            "cors_origins": self.cors_origins,
            "log_level": self.log_level,
            "access_log": self.access_log,
        })
    }
}

impl Config {
    /// Log the effective configuration as structured fields, one field per setting, in three records
    /// (node, network, limits and timing; a record holds at most 32 fields). The cluster key is only said to
    /// be set or not. A test checks that every key of [`KEYS`] is logged.
    pub fn log_effective(&self) {
        let list = |items: &[String]| items.join(",");
        let none = |value: Option<String>| value.unwrap_or_else(|| "none".to_string());
        tracing::info!(
            mode = %self.mode,
            data_dir = %self.data_dir.display(),
            durability = %cli::enum_name(&self.durability),
            allow_empty_start = self.allow_empty_start,
            new_cluster = self.new_cluster,
            log_level = %self.log_level,
            access_log = self.access_log,
            "configuration: node"
        );
        tracing::info!(
            http_addr = %self.http_addr,
            grpc_addr = %self.grpc_addr,
            advertise_addr = %none(self.advertise_addr.clone()),
            peers = %list(&self.peers),
            mdns = self.mdns,
            discovery_window = %format_duration(self.discovery_window),
            isolated_unready = self.isolated_unready,
            cluster_key = if self.cluster_key.is_some() { "<redacted>" } else { "none" },
            cluster_key_file = %none(self.cluster_key_file.as_ref().map(|p| p.display().to_string())),
            allowed_hosts = %list(&self.allowed_hosts),
            cors_origins = %list(&self.cors_origins),
            tls_cert = %none(self.tls.as_ref().map(|tls| tls.cert.display().to_string())),
            tls_key = %none(self.tls.as_ref().map(|tls| tls.key.display().to_string())),
            "configuration: network"
        );
        tracing::info!(
            acl = self.acl_enabled(),
            acl_root_token = if self.acl_root_token.is_some() { "<redacted>" } else { "none" },
            metrics_public = self.metrics_public,
            audit_retention = %format_duration(self.audit_retention),
            "configuration: access"
        );
        tracing::info!(
            max_value_bytes = self.max_value_bytes,
            max_request_bytes = self.max_request_bytes,
            anti_entropy_interval = %format_duration(self.anti_entropy_interval),
            max_clock_drift = %format_duration(self.max_clock_drift),
            tombstone_ttl = %format_duration(self.tombstone_ttl),
            shutdown_drain = %format_duration(self.shutdown_drain),
            http_header_timeout = %format_duration(self.http_header_timeout),
            http_idle_timeout = %format_duration(self.http_idle_timeout),
            http_body_timeout = %format_duration(self.http_body_timeout),
            http_max_connections = %none(self.http_max_connections.map(|n| n.to_string())),
            "configuration: limits and timing"
        );
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
