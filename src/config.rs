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

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::secrets::MasterKey;
use crate::storage::Durability;

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
            Command::Keygen | Command::Healthcheck(_) | Command::Print(_) => {
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

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "made once per process and moved straight into the node; a Box would only add noise"
)]
pub enum Command {
    /// Run a node with this configuration.
    Serve(Config),
    /// Print a fresh cluster key and exit.
    Keygen,
    /// Probe the `/healthz` endpoint of a node and exit 0 if it answers 200, 1 otherwise.
    Healthcheck(Probe),
    /// `--help` or `--version`: print this text to stdout and exit successfully.
    Print(String),
}

/// What `cave healthcheck` probes: `GET /healthz` at `addr`, giving up after `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The node's REST API: its configured `http_addr`, with an unspecified IP replaced by loopback.
    pub addr: SocketAddr,
    /// How long to wait for the connection and for the answer, each.
    pub timeout: Duration,
}

/// How long `cave healthcheck` waits unless told otherwise: well under Docker's default health check
/// timeout (30 s), long enough for a node busy with a large import.
pub const DEFAULT_HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Parse a command line (`args[0]` is the program name) against an environment.
///
/// Every failure, of the command line or of a configuration value, is an [`Error::InvalidInput`] whose
/// message names the parameter; the caller prints it and exits with a usage status.
pub fn parse<I, T>(args: I, env: &[(String, String)]) -> Result<Command>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = match command().try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(err) if !err.use_stderr() => return Ok(Command::Print(err.render().to_string())),
        Err(err) => return Err(clap_error(&err)),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|err| clap_error(&err))?;
    let args = match cli.command {
        // The key generator must work whatever the environment holds, even a broken configuration.
        Some(CliCommand::Keygen) => return Ok(Command::Keygen),
        Some(CliCommand::Healthcheck(args)) => return probe(&args, env).map(Command::Healthcheck),
        Some(CliCommand::Serve(args)) => *args,
        None => cli.serve,
    };
    resolve(&args, env).map(Command::Serve)
}

/// The probe of `cave healthcheck`: the `http_addr` a node would use with this `--config`, `--http-addr` and
/// environment. Only the variables that decide that address are read, so that a setting the check does not
/// use cannot fail it.
fn probe(args: &HealthcheckArgs, env: &[(String, String)]) -> Result<Probe> {
    let relevant = [CONFIG_ENV.to_string(), env_name("http_addr"), env_name("mode")];
    let env: Vec<(String, String)> = env
        .iter()
        .filter(|(name, _)| relevant.contains(name))
        .cloned()
        .collect();
    let serve = ServeArgs {
        config: args.config.clone(),
        http_addr: args.http_addr.clone(),
        ..ServeArgs::default()
    };
    let mut addr = resolve(&serve, &env)?.http_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    if addr.port() == 0 {
        return Err(Error::invalid(format!(
            "cannot probe {addr}: port 0 means a node picked a free port; pass its port with --http-addr"
        )));
    }
    let timeout = match &args.timeout {
        Some(text) => {
            parse_duration(text).map_err(|reason| Error::invalid(format!("invalid value for --timeout: {reason}")))?
        }
        None => DEFAULT_HEALTHCHECK_TIMEOUT,
    };
    if timeout.is_zero() {
        return Err(Error::invalid("invalid value for --timeout: must be longer than 0"));
    }
    Ok(Probe { addr, timeout })
}

/// The `CAVE_*` variables of this process. Values that are not UTF-8 are kept lossily, so that they fail
/// validation with a message rather than being skipped.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with(ENV_PREFIX)
                .then(|| (name, value.to_string_lossy().into_owned()))
        })
        .collect()
}

/// Cave, a master-less key-value database with secrets.
#[derive(Parser)]
#[command(
    name = "cave",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Settings are layered: defaults < --config file < CAVE_* environment < flags.\n\
                  Sizes are bytes, optionally with a KiB, MiB or GiB suffix.\n\
                  Durations are a whole number with a unit: ms, s, m, h or d (500ms, 10s, 7d)."
)]
pub struct Cli {
    /// What to do; running a node when absent.
    #[command(subcommand)]
    pub command: Option<CliCommand>,
    /// The node's settings when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands of `cave`.
#[derive(Subcommand)]
pub enum CliCommand {
    /// Run a node (the default)
    Serve(Box<ServeArgs>),
    /// Print a fresh random cluster key (base64) and exit
    Keygen,
    /// Exit 0 if the node on this host answers GET /healthz with 200, 1 if not (for container health checks)
    Healthcheck(HealthcheckArgs),
}

/// Options of `cave healthcheck`. The address is found as a node finds it (flag, environment, config file),
/// so the check run inside a container, which shares the node's environment, needs no arguments.
#[derive(Args, Default)]
pub struct HealthcheckArgs {
    /// TOML file of settings whose http_addr to probe [default: none] [env: CAVE_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the node's REST API; an unspecified IP (0.0.0.0, [::]) is probed on loopback
    /// [default: 127.0.0.1:2001] [env: CAVE_HTTP_ADDR]
    #[arg(long, value_name = "IP:PORT")]
    pub http_addr: Option<String>,
    /// How long to wait for the connection and for the answer [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

/// Settings given as flags. Each is optional: only the flags present override the other layers, which is
/// why none of them has a clap default or a clap `env` (the environment is a layer of its own, below flags).
/// Values are kept as text and validated with the other layers, except the enums, whose possible values
/// clap can then list. No `Debug`: it would print the cluster key.
#[derive(Args, Default)]
pub struct ServeArgs {
    /// TOML file of settings, keys as in cave.example.toml
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// dev binds to loopback only; prod binds to every interface
    #[arg(long, value_enum, value_name = "dev|prod", hide_possible_values = true)]
    pub mode: Option<Mode>,
    /// Address of the REST API and web UI
    #[arg(long, value_name = "IP:PORT")]
    pub http_addr: Option<String>,
    /// Address of the replication (gRPC) endpoint
    #[arg(long, value_name = "IP:PORT")]
    pub grpc_addr: Option<String>,
    /// Address peers use to reach the replication endpoint, if not grpc-addr (NAT, containers)
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_addr: Option<String>,
    /// Directory of the database, node id and local key
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Seed peers to join, comma-separated replication addresses
    #[arg(long, value_name = "HOST:PORT,...")]
    pub peers: Option<String>,
    /// Find peers and announce this node with mDNS on the local network; --mdns alone means true
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub mdns: Option<String>,
    /// In prod mode, how long to look for peers before founding a new cluster
    #[arg(long, value_name = "DURATION")]
    pub discovery_window: Option<String>,
    /// Cluster key from `cave keygen` (prefer CAVE_CLUSTER_KEY: flags are visible in ps)
    #[arg(long, value_name = "BASE64")]
    pub cluster_key: Option<String>,
    /// normal survives a process crash; fsync also a power loss, at a cost per commit
    #[arg(long, value_enum, value_name = "normal|fsync", hide_possible_values = true)]
    pub durability: Option<Durability>,
    /// Largest value of one key
    #[arg(long, value_name = "SIZE")]
    pub max_value_bytes: Option<String>,
    /// Largest body of a /api/v1/query or /api/v1/import request
    #[arg(long, value_name = "SIZE")]
    pub max_request_bytes: Option<String>,
    /// Mean interval between anti-entropy rounds with a random peer
    #[arg(long, value_name = "DURATION")]
    pub anti_entropy_interval: Option<String>,
    /// Versions stamped further ahead of the local clock wait until it catches up
    #[arg(long, value_name = "DURATION")]
    pub max_clock_drift: Option<String>,
    /// Age at which tombstones (deleted keys) are purged
    #[arg(long, value_name = "DURATION")]
    pub tombstone_ttl: Option<String>,
    /// Log filter: a level (trace, debug, info, warn, error, off) and/or target=level, comma-separated
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// The clap command of [`Cli`], its help completed with each parameter's default and environment variable
/// (computed here from the one set of defaults rather than repeated in attributes).
pub fn command() -> clap::Command {
    fn annotate(mut cmd: clap::Command) -> clap::Command {
        let config_default = ("config", "none".to_string(), CONFIG_ENV.to_string());
        let params = KEYS.iter().map(|key| (*key, help_default(key), env_name(key)));
        for (id, default, env) in std::iter::once(config_default).chain(params) {
            cmd = cmd.mut_arg(id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {default}] [env: {env}]"))
            });
        }
        cmd
    }
    annotate(Cli::command()).mut_subcommand("serve", annotate)
}

/// The default of `key` as shown by `--help`.
fn help_default(key: &str) -> String {
    let dev = Config::default();
    match key {
        "mode" => dev.mode.to_string(),
        "http_addr" => format!(
            "{} in dev mode, {} in prod",
            dev.http_addr,
            Mode::Prod.default_http_addr()
        ),
        "grpc_addr" => format!(
            "{} in dev mode, {} in prod",
            dev.grpc_addr,
            Mode::Prod.default_grpc_addr()
        ),
        "advertise_addr" => "grpc-addr, with this host's name if its IP is unspecified".to_string(),
        "data_dir" => dev.data_dir.display().to_string(),
        "peers" | "cluster_key" => "none".to_string(),
        "mdns" => format!("{} in dev mode, {} in prod", dev.mdns, Mode::Prod.default_mdns()),
        "discovery_window" => format_duration(dev.discovery_window),
        "durability" => enum_name(&dev.durability),
        "max_value_bytes" => format_size(dev.max_value_bytes),
        "max_request_bytes" => format_size(dev.max_request_bytes),
        "anti_entropy_interval" => format_duration(dev.anti_entropy_interval),
        "max_clock_drift" => format_duration(dev.max_clock_drift),
        "tombstone_ttl" => format_duration(dev.tombstone_ttl),
        "log_level" => dev.log_level,
        other => unreachable!("no default for unknown key {other}"),
    }
}

/// The clap (and serde) name of a value of a `ValueEnum`.
fn enum_name<E: ValueEnum>(value: &E) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// `--http-addr` for `http_addr`.
fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// `CAVE_HTTP_ADDR` for `http_addr`.
fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// A clap error as our error, without clap's leading `error: ` (the caller adds its own).
fn clap_error(err: &clap::Error) -> Error {
    let text = err.render().to_string();
    Error::invalid(text.strip_prefix("error: ").unwrap_or(&text).trim_end())
}

/// Where a layer's values came from; also the figment provider of that layer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    File(PathBuf),
    Env,
    Flags,
}

/// One layer of raw values, as a figment provider (figment does the merging and records, per key, which
/// layer the winning value came from).
struct Layer {
    origin: Origin,
    values: Dict,
}

impl Layer {
    const FILE: &'static str = "config file";
    const ENV: &'static str = "environment";
    const FLAGS: &'static str = "command line";
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        match &self.origin {
            Origin::File(path) => Metadata::named(Layer::FILE).source(path.as_path()),
            Origin::Env => Metadata::named(Layer::ENV),
            Origin::Flags => Metadata::named(Layer::FLAGS),
        }
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

/// The merged, not yet validated values. `deny_unknown_fields` is what turns a typo in the config file into
/// an error instead of a silently ignored setting.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    mode: Option<Value>,
    http_addr: Option<Value>,
    grpc_addr: Option<Value>,
    advertise_addr: Option<Value>,
    data_dir: Option<Value>,
    peers: Option<Value>,
    mdns: Option<Value>,
    discovery_window: Option<Value>,
    cluster_key: Option<Value>,
    durability: Option<Value>,
    max_value_bytes: Option<Value>,
    max_request_bytes: Option<Value>,
    anti_entropy_interval: Option<Value>,
    max_clock_drift: Option<Value>,
    tombstone_ttl: Option<Value>,
    log_level: Option<Value>,
}

/// Merge the layers of `args` and `env` over the defaults and validate the result.
fn resolve(args: &ServeArgs, env: &[(String, String)]) -> Result<Config> {
    let config_file = args.config.clone().or_else(|| {
        env.iter()
            .find(|(name, value)| name == CONFIG_ENV && !value.is_empty())
            .map(|(_, path)| path.into())
    });
    let mut figment = Figment::new();
    if let Some(path) = &config_file {
        figment = figment.merge(file_layer(path)?);
    }
    let figment = figment.merge(env_layer(env)).merge(flag_layer(args));
    let raw: Raw = figment.extract().map_err(|err| figment_error(&err))?;
    let fields = Fields { figment: &figment };

    let defaults = Config::default();
    let mode = fields
        .parse("mode", raw.mode, parse_enum::<Mode>)?
        .unwrap_or(defaults.mode);
    let max_value_bytes = fields.parse("max_value_bytes", raw.max_value_bytes, parse_size_value)?;
    let max_value_bytes = max_value_bytes.unwrap_or(defaults.max_value_bytes);
    if max_value_bytes == 0 {
        return Err(fields.error("max_value_bytes", "must be at least 1 byte"));
    }
    let max_request_bytes = fields.parse("max_request_bytes", raw.max_request_bytes, parse_size_value)?;
    let max_request_bytes = max_request_bytes.unwrap_or(defaults.max_request_bytes);
    if max_request_bytes < max_value_bytes {
        let reason = format!(
            "{max_request_bytes} bytes is less than max_value_bytes ({max_value_bytes}); a request must be able to \
             carry at least one value of the largest size"
        );
        return Err(fields.error("max_request_bytes", reason));
    }
    let duration = |key: &str, raw: Option<Value>, default: Duration| {
        Ok::<_, Error>(fields.parse(key, raw, parse_duration_value)?.unwrap_or(default))
    };
    let nonzero = |key: &str, raw: Option<Value>, default: Duration| {
        let value = duration(key, raw, default)?;
        if value.is_zero() {
            return Err(fields.error(key, "must be longer than 0"));
        }
        Ok(value)
    };
    Ok(Config {
        mode,
        http_addr: fields
            .parse("http_addr", raw.http_addr, parse_addr)?
            .unwrap_or(mode.default_http_addr()),
        grpc_addr: fields
            .parse("grpc_addr", raw.grpc_addr, parse_addr)?
            .unwrap_or(mode.default_grpc_addr()),
        advertise_addr: fields
            .parse("advertise_addr", raw.advertise_addr, parse_advertise_addr)?
            .flatten(),
        data_dir: fields
            .parse("data_dir", raw.data_dir, parse_dir)?
            .unwrap_or(defaults.data_dir),
        peers: fields.parse("peers", raw.peers, parse_peers)?.unwrap_or(defaults.peers),
        mdns: fields
            .parse("mdns", raw.mdns, parse_bool)?
            .unwrap_or(mode.default_mdns()),
        discovery_window: duration("discovery_window", raw.discovery_window, defaults.discovery_window)?,
        cluster_key: fields.parse("cluster_key", raw.cluster_key, parse_key)?,
        durability: fields
            .parse("durability", raw.durability, parse_enum::<Durability>)?
            .unwrap_or(defaults.durability),
        max_value_bytes,
        max_request_bytes,
        anti_entropy_interval: nonzero(
            "anti_entropy_interval",
            raw.anti_entropy_interval,
            defaults.anti_entropy_interval,
        )?,
        max_clock_drift: duration("max_clock_drift", raw.max_clock_drift, defaults.max_clock_drift)?,
        tombstone_ttl: nonzero("tombstone_ttl", raw.tombstone_ttl, defaults.tombstone_ttl)?,
        log_level: fields
            .parse("log_level", raw.log_level, parse_log_level)?
            .unwrap_or(defaults.log_level),
    })
}

/// Reads the config file. The TOML is parsed here rather than by figment's provider so that a missing file is
/// an error (figment's `Toml::file` treats it as empty) and so that a syntax error is reported by position
/// only: the TOML library quotes the offending line, which could be the one holding the cluster key.
fn file_layer(path: &Path) -> Result<Layer> {
    let names = format!("config file {} (--config / {CONFIG_ENV})", path.display());
    let text = std::fs::read_to_string(path).map_err(|err| Error::invalid(format!("cannot read {names}: {err}")))?;
    let table: toml::Table = toml::from_str(&text).map_err(|err| {
        let at = err
            .span()
            .map(|span| line_and_column(&text, span.start))
            .unwrap_or_default();
        Error::invalid(format!("{names} is not valid TOML{at}: {}", err.message()))
    })?;
    let values = Value::serialize(&table)
        .ok()
        .and_then(Value::into_dict)
        .ok_or_else(|| Error::invalid(format!("{names} could not be read as a table of settings")))?;
    Ok(Layer {
        origin: Origin::File(path.to_path_buf()),
        values,
    })
}

/// ` at line L, column C` of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" at line {line}, column {column}")
}

/// The `CAVE_*` variables that name a configuration key. Other `CAVE_*` variables are ignored rather than
/// rejected: orchestrators inject their own (Kubernetes defines `CAVE_PORT`, `CAVE_SERVICE_HOST`, ... for a
/// service named `cave`), and refusing to start because of them would be worse than missing a typo. An
/// empty variable counts as unset, as compose files commonly pass `${CAVE_X:-}` for "not configured".
fn env_layer(env: &[(String, String)]) -> Layer {
    let mut values = Dict::new();
    for key in KEYS {
        let name = env_name(key);
        if let Some((_, value)) = env.iter().rev().find(|(n, v)| *n == name && !v.is_empty()) {
            values.insert(key.to_string(), Value::from(value.clone()));
        }
    }
    Layer {
        origin: Origin::Env,
        values,
    }
}

/// The flags that were given.
fn flag_layer(args: &ServeArgs) -> Layer {
    let given = [
        ("mode", args.mode.as_ref().map(enum_name)),
        ("http_addr", args.http_addr.clone()),
        ("grpc_addr", args.grpc_addr.clone()),
        ("advertise_addr", args.advertise_addr.clone()),
        ("data_dir", args.data_dir.clone()),
        ("peers", args.peers.clone()),
        ("mdns", args.mdns.clone()),
        ("discovery_window", args.discovery_window.clone()),
        ("cluster_key", args.cluster_key.clone()),
        ("durability", args.durability.as_ref().map(enum_name)),
        ("max_value_bytes", args.max_value_bytes.clone()),
        ("max_request_bytes", args.max_request_bytes.clone()),
        ("anti_entropy_interval", args.anti_entropy_interval.clone()),
        ("max_clock_drift", args.max_clock_drift.clone()),
        ("tombstone_ttl", args.tombstone_ttl.clone()),
        ("log_level", args.log_level.clone()),
    ];
    let values = given
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_string(), Value::from(value?))))
        .collect();
    Layer {
        origin: Origin::Flags,
        values,
    }
}

/// A figment failure as our error. With every field an optional raw value, the one expected failure is an
/// unknown key, which can only come from the file (the other layers hold known keys only).
fn figment_error(err: &figment::Error) -> Error {
    let source = err.metadata.as_ref().and_then(|m| m.source.as_ref());
    let file = source
        .and_then(figment::Source::file_path)
        .map(|p| p.display().to_string());
    let location = file.map_or_else(|| "the configuration".to_string(), |p| format!("config file {p}"));
    match &err.kind {
        figment::error::Kind::UnknownField(key, _) => Error::invalid(format!(
            "unknown key `{key}` in {location}; the known keys are {}",
            KEYS.join(", ")
        )),
        // Not expected. Only the path is shown: other kinds quote the value, which may be the key.
        _ => Error::invalid(format!("cannot read {location} at `{}`", err.path.join("."))),
    }
}

/// Validation of the merged values, with errors that name the parameter and where its value came from.
struct Fields<'a> {
    figment: &'a Figment,
}

impl Fields<'_> {
    fn parse<T>(
        &self,
        key: &str,
        raw: Option<Value>,
        parse: impl FnOnce(&Value) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        raw.map(|value| parse(&value).map_err(|reason| self.error(key, reason)))
            .transpose()
    }

    fn error(&self, key: &str, reason: impl fmt::Display) -> Error {
        let metadata = self.figment.find_metadata(key);
        let origin = match metadata.map(|m| (m.name.as_ref(), m.source.as_ref().and_then(figment::Source::file_path))) {
            Some((Layer::FILE, Some(path))) => format!(", set in config file {}", path.display()),
            Some((Layer::ENV, _)) => format!(", set by environment variable {}", env_name(key)),
            Some((Layer::FLAGS, _)) => format!(", set by {}", flag_name(key)),
            _ => String::new(),
        };
        Error::invalid(format!(
            "invalid value for {key} ({} / {}){origin}: {reason}",
            flag_name(key),
            env_name(key)
        ))
    }
}

/// What kind of value this is, for messages that must not quote the value itself.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(..) => "a string",
        Value::Char(..) => "a character",
        Value::Bool(..) => "a boolean",
        Value::Num(..) => "a number",
        Value::Empty(..) => "an empty value",
        Value::Dict(..) => "a table",
        Value::Array(..) => "an array",
    }
}

fn as_text(value: &Value) -> std::result::Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("expected a string, found {}", kind(value)))
}

fn parse_enum<E: ValueEnum>(value: &Value) -> std::result::Result<E, String> {
    let text = as_text(value)?.trim();
    E::from_str(text, true).map_err(|_| {
        let names: Vec<String> = E::value_variants().iter().map(enum_name).collect();
        format!("`{text}` is not one of {}", names.join(", "))
    })
}

fn parse_addr(value: &Value) -> std::result::Result<SocketAddr, String> {
    let text = as_text(value)?.trim();
    text.parse()
        .map_err(|_| format!("`{text}` is not an IP address with a port, such as 127.0.0.1:2001 or [::1]:2001"))
}

/// `true` or `false`: a TOML boolean, or that word in any case (flags, environment, file).
fn parse_bool(value: &Value) -> std::result::Result<bool, String> {
    if let Value::Bool(_, flag) = value {
        return Ok(*flag);
    }
    let text = as_text(value).map_err(|_| format!("expected true or false, found {}", kind(value)))?;
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("`{}` is not true or false", text.trim())),
    }
}

fn parse_dir(value: &Value) -> std::result::Result<PathBuf, String> {
    let text = as_text(value)?;
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(PathBuf::from(text))
}

/// Peers as a comma-separated string (flags, environment, file) or an array of strings (file). Empty items
/// are skipped so that a trailing comma or an empty value (no peers) is harmless.
fn parse_peers(value: &Value) -> std::result::Result<Vec<String>, String> {
    let items: Vec<String> = match value {
        Value::Array(_, items) => items
            .iter()
            .map(|item| as_text(item).map(str::to_string))
            .collect::<Result<_, _>>()?,
        other => as_text(other)?.split(',').map(str::to_string).collect(),
    };
    let mut peers = Vec::new();
    let mut seen = BTreeSet::new();
    for item in items.iter().map(|item| item.trim()).filter(|item| !item.is_empty()) {
        validate_peer(item)?;
        if seen.insert(item) {
            peers.push(item.to_string());
        }
    }
    Ok(peers)
}

/// A peer is `host:port`: a non-empty host name or IPv4 address, or a bracketed IPv6 address, and a port in
/// 1..=65535. Resolution is left to connection time, where a name may legitimately not resolve yet.
fn validate_peer(peer: &str) -> std::result::Result<(), String> {
    let bad = |why: &str| format!("`{peer}` is not HOST:PORT ({why})");
    let (host, port) = peer.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ip = inner.strip_suffix(']').ok_or_else(|| bad("unclosed `[`"))?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad("not an IPv6 address in brackets"))?;
    } else if host.contains(':') {
        return Err(bad("an IPv6 address must be in brackets, as in [::1]:2000"));
    } else if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/[]@?#".contains(c))
    {
        return Err(bad("invalid character in the host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p >= 1 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(bad("the port must be a number from 1 to 65535")),
    }
}

/// A peer address (see [`validate_peer`]) that is not an unspecified IP, which no peer could connect to.
/// Empty means unset, so that an empty flag can undo the file's setting.
fn parse_advertise_addr(value: &Value) -> std::result::Result<Option<String>, String> {
    let text = as_text(value)?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    validate_peer(text)?;
    if text.parse::<SocketAddr>().is_ok_and(|addr| addr.ip().is_unspecified()) {
        return Err(format!(
            "`{text}` is not HOST:PORT that peers can connect to (an unspecified IP); give this node's name or IP"
        ));
    }
    Ok(Some(text.to_string()))
}

/// The key's own messages never quote it, and neither does this.
fn parse_key(value: &Value) -> std::result::Result<MasterKey, String> {
    let text = as_text(value)?;
    MasterKey::from_base64(text).map_err(|err| format!("{err} (generate one with `cave keygen`)"))
}

fn parse_size_value(value: &Value) -> std::result::Result<usize, String> {
    match value {
        Value::Num(_, num) => num
            .to_u128_lossy()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| "expected a whole, non-negative number of bytes".to_string()),
        other => parse_size(as_text(other)?),
    }
}

/// Bytes, optionally suffixed with `B`, `KiB`, `MiB` or `GiB` (case-insensitive, space allowed). Decimal
/// suffixes (`KB`, `MB`) are refused rather than guessed: people mean either.
pub fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a size: expected bytes, optionally with a KiB, MiB or GiB suffix"
        ));
    }
    let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit: use bytes or a KiB, MiB or GiB suffix"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// The shortest exact form of a size (`1MiB` for 1048576), for help texts.
pub fn format_size(bytes: usize) -> String {
    for (shift, name) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.trailing_zeros() >= shift {
            return format!("{}{name}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A duration as a string (a bare TOML number has no unit, and is refused like a bare number anywhere).
fn parse_duration_value(value: &Value) -> std::result::Result<Duration, String> {
    match value {
        Value::Num(..) => {
            Err("a bare number has no unit: write a string such as \"10s\" (units ms, s, m, h, d)".into())
        }
        other => parse_duration(as_text(other)?),
    }
}

/// A whole number with a unit: `ms`, `s`, `m`, `h` or `d` (`500ms`, `10s`, `7d`; a space before the unit is
/// allowed). A bare number is refused rather than guessed: seconds and milliseconds are both common.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let millis_per_unit: u64 = match unit.trim_start() {
        _ if number.is_empty() => {
            return Err(format!(
                "`{text}` is not a duration: expected a whole number with a unit ms, s, m, h or d, such as 10s"
            ))
        }
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "`{text}` has no unit: write {text}s for seconds, or use ms, m, h or d"
            ))
        }
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit: use a whole number with ms, s, m, h or d, such as 500ms or 10s"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .filter(|duration| *duration <= MAX_DURATION)
        .ok_or_else(|| format!("`{text}` is too long: at most {}", format_duration(MAX_DURATION)))
}

/// The shortest exact form of a duration in the syntax of [`parse_duration`] (`7d` for a week, `0s` for
/// zero). A duration that is not a whole number of milliseconds, which no setting can hold, is written in
/// `Debug` form.
pub fn format_duration(duration: Duration) -> String {
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{duration:?}");
    }
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    for (per, unit) in [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")] {
        if millis.is_multiple_of(per) {
            return format!("{}{unit}", millis / per);
        }
    }
    format!("{millis}ms")
}

/// A filter as `tracing_subscriber` reads it, with one extra rule: a bare word must be a level. The library
/// reads any bare word as a target name with every level enabled, so `debgu` would silently mean "only
/// logs of a target called debgu", i.e. no logs at all. Write `target=trace` to filter by target.
fn parse_log_level(value: &Value) -> std::result::Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let text = as_text(value)?.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains(['=', '[']) && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}` is not a level ({}); to filter by target write `{directive}=LEVEL`",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map_err(|err| format!("`{text}` is not a log filter: {err}"))?;
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn ok(args: &[&str], vars: &[(&str, &str)]) -> Config {
        let argv = std::iter::once("cave").chain(args.iter().copied());
        Config::from_args_and_env(argv, &env(vars)).unwrap()
    }

    fn err(args: &[&str], vars: &[(&str, &str)]) -> String {
        let argv = std::iter::once("cave").chain(args.iter().copied());
        match Config::from_args_and_env(argv, &env(vars)) {
            Err(Error::InvalidInput(message)) => message,
            other => panic!("expected InvalidInput for {args:?} {vars:?}, got {other:?}"),
        }
    }

    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cave.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path.to_str().unwrap().to_string())
    }

    #[test]
    fn no_settings_means_the_dev_defaults() {
        let config = ok(&[], &[]);
        assert_eq!(config, Config::default());
        assert_eq!(config.mode, Mode::Dev);
        assert_eq!(config.http_addr, "127.0.0.1:2001".parse().unwrap());
        assert_eq!(config.grpc_addr, "127.0.0.1:2000".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./cave-data"));
        assert!(config.peers.is_empty());
        assert_eq!(config.cluster_key, None);
        assert_eq!(config.durability, Durability::Normal);
        assert_eq!(config.max_value_bytes, 1_048_576);
        assert_eq!(config.max_request_bytes, 64 * 1_048_576);
        assert_eq!(config.log_level, "info");
        assert_eq!(config.advertise_addr, None);
        assert!(!config.mdns);
        assert_eq!(config.discovery_window, Duration::from_secs(3));
        assert_eq!(config.anti_entropy_interval, Duration::from_secs(10));
        assert_eq!(config.max_clock_drift, Duration::from_secs(1));
        assert_eq!(config.tombstone_ttl, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(ok(&["serve"], &[]), config);
    }

    #[test]
    fn mdns_is_on_by_default_in_prod_mode_only() {
        assert!(!ok(&[], &[]).mdns);
        assert!(ok(&["--mode", "prod"], &[]).mdns);
        assert!(!ok(&["--mode", "prod", "--mdns=false"], &[]).mdns);
        assert!(!ok(&["--mode", "prod", "--mdns", "FALSE"], &[]).mdns);
        assert!(ok(&["--mdns"], &[]).mdns, "--mdns alone means true");
        assert!(ok(&["--mdns=true"], &[]).mdns);
        assert!(ok(&[], &[("CAVE_MDNS", "true")]).mdns);
        assert!(!ok(&["--mode", "prod"], &[("CAVE_MDNS", "false")]).mdns);
        // The default follows the *final* mode, whichever layer set it.
        let (_dir, path) = file("mode = \"dev\"\n");
        assert!(ok(&["--config", &path], &[("CAVE_MODE", "prod")]).mdns);
        let (_dir, path) = file("mode = \"prod\"\nmdns = false\n");
        assert!(!ok(&["--config", &path], &[]).mdns);
        assert!(ok(&["--config", &path, "--mdns", "true"], &[]).mdns);
        let (_dir, path) = file("mdns = \"true\"\n");
        assert!(ok(&["--config", &path], &[]).mdns);
    }

    #[test]
    fn durations_layer_like_every_other_setting() {
        let (_dir, path) = file("anti_entropy_interval = \"1m\"\ntombstone_ttl = \"30d\"\n");
        let config = ok(&["--config", &path], &[]);
        assert_eq!(config.anti_entropy_interval, Duration::from_secs(60));
        assert_eq!(config.tombstone_ttl, Duration::from_secs(30 * 86_400));
        let vars = [("CAVE_ANTI_ENTROPY_INTERVAL", "30s")];
        let config = ok(&["--config", &path], &vars);
        assert_eq!(config.anti_entropy_interval, Duration::from_secs(30));
        assert_eq!(
            config.tombstone_ttl,
            Duration::from_secs(30 * 86_400),
            "a key set by no later layer keeps the file's value"
        );
        let config = ok(&["--config", &path, "--anti-entropy-interval", "500ms"], &vars);
        assert_eq!(config.anti_entropy_interval, Duration::from_millis(500));
        // Zero is allowed where it means "no tolerance" or "do not wait".
        let config = ok(&["--max-clock-drift", "0s", "--discovery-window", "0ms"], &[]);
        assert_eq!(
            (config.max_clock_drift, config.discovery_window),
            (Duration::ZERO, Duration::ZERO)
        );
        let config = ok(
            &[],
            &[("CAVE_DISCOVERY_WINDOW", "2h"), ("CAVE_MAX_CLOCK_DRIFT", "250 ms")],
        );
        assert_eq!(config.discovery_window, Duration::from_secs(7200));
        assert_eq!(config.max_clock_drift, Duration::from_millis(250));
    }

    #[test]
    fn durations_take_a_unit_and_print_back_the_same_way() {
        for (text, duration) in [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7200)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("0s", Duration::ZERO),
            ("1500ms", Duration::from_millis(1500)),
            ("90s", Duration::from_secs(90)),
        ] {
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
            assert_eq!(format_duration(duration), text);
        }
        assert_eq!(parse_duration(" 10 s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("60m"), Ok(Duration::from_secs(3600)));
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        for bad in [
            "",
            "s",
            "-1s",
            "1.5s",
            "10S",
            "10sec",
            "1w",
            "5M",
            "10 s s",
            "36501d",
            "99999999999999999999ms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn advertised_addresses_are_reachable_ones() {
        let config = ok(&[], &[]);
        assert_eq!(config.advertise_grpc(), "127.0.0.1:2000");
        assert_eq!(config.advertise_http(), "127.0.0.1:2001");
        let config = ok(&["--grpc-addr", "[::1]:7000", "--http-addr", "10.1.2.3:7001"], &[]);
        assert_eq!(config.advertise_grpc(), "[::1]:7000");
        assert_eq!(config.advertise_http(), "10.1.2.3:7001");
        // Unspecified IPs are replaced by this host's name.
        let config = ok(&["--mode", "prod", "--grpc-addr", "[::]:7000"], &[]);
        let host = hostname();
        assert!(!host.is_empty() && !host.contains(char::is_whitespace), "{host:?}");
        assert_eq!(config.advertise_grpc(), format!("{host}:7000"));
        assert_eq!(config.advertise_http(), format!("{host}:2001"));
        // An advertised address wins as given.
        let config = ok(&["--mode", "prod", "--advertise-addr", "node1.example:2000"], &[]);
        assert_eq!(config.advertise_addr.as_deref(), Some("node1.example:2000"));
        assert_eq!(config.advertise_grpc(), "node1.example:2000");
        let config = ok(&[], &[("CAVE_ADVERTISE_ADDR", " [fd00::1]:2000 ")]);
        assert_eq!(config.advertise_grpc(), "[fd00::1]:2000");
        // An empty flag undoes the file's setting.
        let (_dir, path) = file("advertise_addr = \"10.0.0.1:2000\"\n");
        assert_eq!(ok(&["--config", &path], &[]).advertise_grpc(), "10.0.0.1:2000");
        assert_eq!(
            ok(&["--config", &path, "--advertise-addr", ""], &[]).advertise_addr,
            None
        );
    }

    #[test]
    fn prod_mode_binds_every_interface_unless_an_address_is_given() {
        let config = ok(&["--mode", "prod"], &[]);
        assert_eq!(config.http_addr, "0.0.0.0:2001".parse().unwrap());
        assert_eq!(config.grpc_addr, "0.0.0.0:2000".parse().unwrap());
        let config = ok(&["--mode", "prod", "--http-addr", "127.0.0.1:9001"], &[]);
        assert_eq!(config.http_addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(config.grpc_addr, "0.0.0.0:2000".parse().unwrap());
        // The default follows the *final* mode, whichever layer set it.
        let (_dir, path) = file("mode = \"dev\"\n");
        let config = ok(&["--config", &path], &[("CAVE_MODE", "prod")]);
        assert_eq!(
            (config.mode, config.http_addr.ip()),
            (Mode::Prod, Mode::Prod.default_bind_ip())
        );
        let config = ok(&["serve", "--mode", "dev"], &[("CAVE_MODE", "prod")]);
        assert_eq!(config.http_addr, "127.0.0.1:2001".parse().unwrap());
    }

    #[test]
    fn file_then_environment_then_flags() {
        let (_dir, path) =
            file("http_addr = \"127.0.0.1:1\"\nmax_value_bytes = 1024\npeers = [\"file:1\"]\nlog_level = \"warn\"\n");
        let all = [
            ("CAVE_HTTP_ADDR", "127.0.0.1:2"),
            ("CAVE_MAX_VALUE_BYTES", "2KiB"),
            ("CAVE_PEERS", "env:1,env:2"),
        ];
        let flags = [
            "--config",
            &path,
            "--http-addr",
            "127.0.0.1:3",
            "--max-value-bytes",
            "3072",
            "--peers",
            "flag:1",
        ];

        let config = ok(&["--config", &path], &[]);
        assert_eq!(config.http_addr.port(), 1);
        assert_eq!(config.max_value_bytes, 1024);
        assert_eq!(config.peers, ["file:1"]);
        assert_eq!(config.log_level, "warn");

        let config = ok(&["--config", &path], &all);
        assert_eq!(config.http_addr.port(), 2);
        assert_eq!(config.max_value_bytes, 2048);
        assert_eq!(config.peers, ["env:1", "env:2"]);
        assert_eq!(
            config.log_level, "warn",
            "a key set by no later layer keeps the file's value"
        );

        let config = ok(&flags, &all);
        assert_eq!(config.http_addr.port(), 3);
        assert_eq!(config.max_value_bytes, 3072);
        assert_eq!(config.peers, ["flag:1"]);
    }

    #[test]
    fn config_file_comes_from_cave_config_unless_the_flag_names_one() {
        let (_a, first) = file("grpc_addr = \"127.0.0.1:11\"\n");
        let (_b, second) = file("grpc_addr = \"127.0.0.1:12\"\n");
        assert_eq!(ok(&[], &[("CAVE_CONFIG", &first)]).grpc_addr.port(), 11);
        assert_eq!(
            ok(&["--config", &second], &[("CAVE_CONFIG", &first)]).grpc_addr.port(),
            12
        );
    }

    #[test]
    fn empty_and_unrelated_environment_variables_are_ignored() {
        let vars = [
            ("CAVE_CLUSTER_KEY", ""),
            ("CAVE_PORT", "tcp://10.0.0.1:2001"),
            ("CAVE_SERVICE_HOST", "x"),
        ];
        assert_eq!(ok(&[], &vars), Config::default());
        // An empty flag is explicit, though: no peers.
        let (_dir, path) = file("peers = \"a:1\"\n");
        assert!(ok(&["--config", &path, "--peers", ""], &[]).peers.is_empty());
    }

    #[test]
    fn every_value_parses_from_every_source() {
        let (_dir, path) = file(&format!(
            "mode = \"prod\"\ndata_dir = \"/var/lib/cave\"\ncluster_key = \"{KEY}\"\ndurability = \"fsync\"\n\
             max_request_bytes = \"1 GiB\"\nlog_level = \"warn,cave=debug\"\n"
        ));
        let config = ok(&["--config", &path], &[]);
        assert_eq!(config.mode, Mode::Prod);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/cave"));
        assert_eq!(config.cluster_key, Some(MasterKey::from_base64(KEY).unwrap()));
        assert_eq!(config.durability, Durability::Fsync);
        assert_eq!(config.max_request_bytes, 1 << 30);
        assert_eq!(config.log_level, "warn,cave=debug");
        let config = ok(
            &[
                "--durability",
                "fsync",
                "--cluster-key",
                KEY,
                "--peers",
                "a.example:2000, [::1]:2000,",
            ],
            &[],
        );
        assert_eq!(config.durability, Durability::Fsync);
        assert!(config.cluster_key.is_some());
        assert_eq!(config.peers, ["a.example:2000", "[::1]:2000"]);
        let config = ok(
            &[],
            &[
                ("CAVE_DURABILITY", "fsync"),
                ("CAVE_MODE", "Prod"),
                ("CAVE_DATA_DIR", "/d"),
            ],
        );
        assert_eq!(
            (config.durability, config.mode, config.data_dir),
            (Durability::Fsync, Mode::Prod, "/d".into())
        );
    }

    #[test]
    fn sizes_take_binary_suffixes_only() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2 gib"), Ok(2 << 30));
        assert_eq!(parse_size("10B"), Ok(10));
        for bad in ["", "MiB", "1MB", "1.5MiB", "-1", "1 TiB", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1000), "1000");
    }

    #[test]
    fn every_bad_value_names_its_parameter() {
        // (flags, environment, what the message must contain)
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                &["--http-addr", "nope"],
                &[],
                &["http_addr", "--http-addr", "CAVE_HTTP_ADDR", "set by --http-addr"],
            ),
            (
                &[],
                &[("CAVE_GRPC_ADDR", "localhost")],
                &["grpc_addr", "set by environment variable CAVE_GRPC_ADDR"],
            ),
            (&["--durability", "sometimes"], &[], &["--durability"]),
            (
                &[],
                &[("CAVE_DURABILITY", "bad")],
                &["durability", "CAVE_DURABILITY", "normal, fsync"],
            ),
            (&["--mode", "staging"], &[], &["--mode"]),
            (
                &[],
                &[("CAVE_MODE", "staging")],
                &["mode (--mode / CAVE_MODE)", "dev, prod"],
            ),
            (&["--max-value-bytes", "0"], &[], &["max_value_bytes", "at least 1"]),
            (&["--max-value-bytes", "1MB"], &[], &["max_value_bytes", "unit"]),
            (
                &["--max-request-bytes", "1KiB"],
                &[],
                &["max_request_bytes", "less than max_value_bytes"],
            ),
            (&["--cluster-key", "short"], &[], &["cluster_key", "--cluster-key"]),
            (&[], &[("CAVE_CLUSTER_KEY", "c2hvcnQ=")], &["cluster_key", "32 bytes"]),
            (&["--peers", "nohost"], &[], &["peers", "no port"]),
            (&["--peers", "a:1,:2000"], &[], &["peers", "no host"]),
            (&["--peers", "a:0"], &[], &["peers", "1 to 65535"]),
            (&["--peers", "a:65536"], &[], &["peers", "1 to 65535"]),
            (&["--peers", "a:x"], &[], &["peers", "1 to 65535"]),
            (&["--peers", "::1:2000"], &[], &["peers", "brackets"]),
            (&["--peers", "a b:1"], &[], &["peers", "invalid character"]),
            (
                &["--log-level", "verbose"],
                &[],
                &["log_level", "--log-level", "not a level"],
            ),
            (&["--log-level", "cave=loud"], &[], &["log_level", "not a log filter"]),
            (&["--log-level", ""], &[], &["log_level", "empty"]),
            (&["--data-dir", " "], &[], &["data_dir", "empty"]),
            (
                &["--anti-entropy-interval", "10"],
                &[],
                &["anti_entropy_interval", "--anti-entropy-interval", "no unit", "10s"],
            ),
            (
                &["--anti-entropy-interval", "0ms"],
                &[],
                &["anti_entropy_interval", "longer than 0"],
            ),
            (
                &[],
                &[("CAVE_TOMBSTONE_TTL", "0d")],
                &[
                    "tombstone_ttl",
                    "set by environment variable CAVE_TOMBSTONE_TTL",
                    "longer than 0",
                ],
            ),
            (&["--tombstone-ttl", "1w"], &[], &["tombstone_ttl", "unknown unit"]),
            (
                &["--max-clock-drift", "1.5s"],
                &[],
                &["max_clock_drift", "unknown unit"],
            ),
            (&["--max-clock-drift=-1s"], &[], &["max_clock_drift", "not a duration"]),
            (
                &["--discovery-window", "99999d"],
                &[],
                &["discovery_window", "too long"],
            ),
            (
                &["--mdns=yes"],
                &[],
                &["mdns (--mdns / CAVE_MDNS)", "set by --mdns", "true or false"],
            ),
            (&[], &[("CAVE_MDNS", "1")], &["mdns", "CAVE_MDNS", "true or false"]),
            (
                &["--advertise-addr", "nohost"],
                &[],
                &["advertise_addr", "--advertise-addr", "no port"],
            ),
            (&["--advertise-addr", "::1:2000"], &[], &["advertise_addr", "brackets"]),
            (&["--advertise-addr", "a:0"], &[], &["advertise_addr", "1 to 65535"]),
            (
                &[],
                &[("CAVE_ADVERTISE_ADDR", "0.0.0.0:2000")],
                &["advertise_addr", "CAVE_ADVERTISE_ADDR", "unspecified"],
            ),
            (
                &["--advertise-addr", "[::]:2000"],
                &[],
                &["advertise_addr", "unspecified"],
            ),
            (
                &["--config", "/nonexistent/cave.toml"],
                &[],
                &["config file /nonexistent/cave.toml", "--config"],
            ),
            (&["--no-such-flag"], &[], &["--no-such-flag"]),
        ];
        for (args, vars, needles) in cases {
            let message = err(args, vars);
            for needle in *needles {
                assert!(
                    message.contains(needle),
                    "{args:?} {vars:?}: {message:?} should contain {needle:?}"
                );
            }
        }
    }

    #[test]
    fn bad_values_in_the_file_name_the_file_and_the_key() {
        let (_dir, path) = file("max_value_bytes = -1\n");
        let message = err(&["--config", &path], &[]);
        assert!(
            message.contains("max_value_bytes") && message.contains(&path),
            "{message}"
        );
        let (_dir, path) = file("max_value_bytes = 1.5\n");
        assert!(err(&["--config", &path], &[]).contains("whole, non-negative number"));
        let (_dir, path) = file("http_addr = 2001\n");
        let message = err(&["--config", &path], &[]);
        assert!(
            message.contains("http_addr") && message.contains("expected a string"),
            "{message}"
        );
        let (_dir, path) = file("peers = [1]\n");
        assert!(err(&["--config", &path], &[]).contains("peers"));
        let (_dir, path) = file("tombstone_ttl = 7\n");
        let message = err(&["--config", &path], &[]);
        assert!(
            message.contains("tombstone_ttl") && message.contains(&path) && message.contains("\"10s\""),
            "{message}"
        );
        let (_dir, path) = file("max_clock_drift = \"1\"\n");
        assert!(err(&["--config", &path], &[]).contains("no unit"));
        let (_dir, path) = file("mdns = 1\n");
        let message = err(&["--config", &path], &[]);
        assert!(
            message.contains("mdns") && message.contains("expected true or false, found a number"),
            "{message}"
        );
        let (_dir, path) = file("advertise_addr = [\"a:1\"]\n");
        assert!(err(&["--config", &path], &[]).contains("advertise_addr"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let (_dir, path) = file("htp_addr = \"127.0.0.1:1\"\n");
        let message = err(&["--config", &path], &[]);
        assert!(
            message.contains("unknown key `htp_addr`") && message.contains(&path),
            "{message}"
        );
        let (_dir, path) = file("[server]\nport = 1\n");
        assert!(err(&["--config", &path], &[]).contains("`server`"));
    }

    #[test]
    fn a_toml_syntax_error_gives_a_position_but_never_the_line() {
        let (_dir, path) = file(&format!("mode = \"dev\"\ncluster_key = \"{KEY}\n"));
        let message = err(&["--config", &path], &[]);
        assert!(message.contains("not valid TOML at line 2"), "{message}");
        assert!(!message.contains(KEY), "{message}");
    }

    #[test]
    fn the_key_is_never_shown() {
        let config = ok(&["--cluster-key", KEY], &[]);
        let shown = format!("{} {:?}", config.redacted(), config);
        assert!(!shown.contains(KEY) && !shown.contains(&KEY[..12]), "{shown}");
        assert_eq!(config.redacted()["cluster_key"], "<redacted>");
        assert_eq!(Config::default().redacted()["cluster_key"], serde_json::Value::Null);
        // A key one byte short is rejected without being quoted.
        let short = MasterKey::generate().to_base64()[..40].to_string();
        let message = err(&[], &[("CAVE_CLUSTER_KEY", &short)]);
        assert!(!message.contains(&short[..20]), "{message}");
        let message = err(&["--cluster-key", &short], &[]);
        assert!(!message.contains(&short[..20]), "{message}");
    }

    #[test]
    fn redacted_lists_every_field() {
        let json = ok(&["--peers", "a:1"], &[]).redacted();
        let object = json.as_object().unwrap();
        assert_eq!(
            object.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            KEYS.iter().copied().collect()
        );
        assert_eq!(json["mode"], "dev");
        assert_eq!(json["http_addr"], "127.0.0.1:2001");
        assert_eq!(json["durability"], "normal");
        assert_eq!(json["max_value_bytes"], 1_048_576);
        assert_eq!(json["peers"], serde_json::json!(["a:1"]));
        assert_eq!(json["advertise_addr"], serde_json::Value::Null);
        assert_eq!(json["mdns"], false);
        assert_eq!(json["discovery_window"], "3s");
        assert_eq!(json["anti_entropy_interval"], "10s");
        assert_eq!(json["max_clock_drift"], "1s");
        assert_eq!(json["tombstone_ttl"], "7d");
        let json = ok(
            &[
                "--advertise-addr",
                "n1:2000",
                "--mode",
                "prod",
                "--max-clock-drift",
                "1500ms",
            ],
            &[],
        )
        .redacted();
        assert_eq!(json["advertise_addr"], "n1:2000");
        assert_eq!(json["mdns"], true);
        assert_eq!(json["max_clock_drift"], "1500ms");
    }

    #[test]
    fn help_lists_every_parameter_with_its_default_and_version_and_keygen_are_commands() {
        let Command::Print(help) = parse(["cave", "--help"], &[]).unwrap() else {
            panic!("help is printed")
        };
        for key in KEYS.iter().chain(&["config"]) {
            assert!(help.contains(&flag_name(key)), "{key} missing from help:\n{help}");
            assert!(
                help.contains(&env_name(key)),
                "{key}'s variable missing from help:\n{help}"
            );
        }
        assert!(help.contains("[default: 1MiB]"), "{help}");
        assert!(
            help.contains("[default: 127.0.0.1:2001 in dev mode, 0.0.0.0:2001 in prod]"),
            "{help}"
        );
        assert!(help.contains("[default: 10s]"), "{help}");
        assert!(help.contains("[default: 7d]"), "{help}");
        assert!(help.contains("[default: false in dev mode, true in prod]"), "{help}");
        assert!(help.contains("Durations are a whole number with a unit"), "{help}");
        assert!(help.contains("keygen"));
        let Command::Print(help) = parse(["cave", "serve", "--help"], &[]).unwrap() else {
            panic!()
        };
        assert!(help.contains("[default: ./cave-data]"), "{help}");
        let Command::Print(version) = parse(["cave", "--version"], &[]).unwrap() else {
            panic!()
        };
        assert!(version.contains(env!("CARGO_PKG_VERSION")));
        // keygen works whatever the environment holds.
        assert_eq!(
            parse(["cave", "keygen"], &env(&[("CAVE_MODE", "bad")])).unwrap(),
            Command::Keygen
        );
        assert!(parse(["cave", "--mode", "prod", "keygen"], &[]).is_err());
    }

    #[test]
    fn healthcheck_probes_the_http_addr_a_node_would_use_on_loopback() {
        let probe = |args: &[&str], vars: &[(&str, &str)]| {
            let args = ["cave", "healthcheck"].iter().chain(args);
            match parse(args, &env(vars)) {
                Ok(Command::Healthcheck(probe)) => Ok(probe),
                Ok(other) => panic!("{other:?}"),
                Err(err) => Err(err.to_string()),
            }
        };
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let default = probe(&[], &[]).unwrap();
        assert_eq!(default.addr, local(2001));
        assert_eq!(default.timeout, DEFAULT_HEALTHCHECK_TIMEOUT);
        // A prod node binds 0.0.0.0, which is probed on loopback; the flag wins over the environment.
        assert_eq!(probe(&[], &[("CAVE_MODE", "prod")]).unwrap().addr, local(2001));
        assert_eq!(
            probe(&[], &[("CAVE_HTTP_ADDR", "0.0.0.0:7001")]).unwrap().addr,
            local(7001)
        );
        let flag = probe(
            &["--http-addr", "127.0.0.2:7002"],
            &[("CAVE_HTTP_ADDR", "0.0.0.0:7001")],
        );
        assert_eq!(flag.unwrap().addr, "127.0.0.2:7002".parse().unwrap());
        assert_eq!(
            probe(&["--http-addr", "[::]:7003"], &[]).unwrap().addr,
            "[::1]:7003".parse().unwrap()
        );
        let (_dir, path) = file("http_addr = \"0.0.0.0:7004\"\n");
        assert_eq!(probe(&["--config", &path], &[]).unwrap().addr, local(7004));
        assert_eq!(probe(&[], &[("CAVE_CONFIG", &path)]).unwrap().addr, local(7004));
        let timeout = probe(&["--timeout", "250ms"], &[]).unwrap().timeout;
        assert_eq!(timeout, Duration::from_millis(250));
        // Settings the check does not use cannot fail it; the ones it uses are validated as for a node.
        assert!(probe(&[], &[("CAVE_LOG_LEVEL", "loud"), ("CAVE_CLUSTER_KEY", "short")]).is_ok());
        assert!(probe(&["--http-addr", "nope"], &[])
            .unwrap_err()
            .contains("--http-addr"));
        assert!(probe(&["--http-addr", "127.0.0.1:0"], &[])
            .unwrap_err()
            .contains("port 0"));
        assert!(probe(&["--timeout", "0s"], &[]).unwrap_err().contains("--timeout"));
        assert!(probe(&["--timeout", "5"], &[]).unwrap_err().contains("no unit"));
        assert!(probe(&["--peers", "a:1"], &[]).is_err());
    }

    #[test]
    fn the_example_file_lists_every_key_with_its_default() {
        let example = include_str!("../cave.example.toml");
        let mut uncommented = String::new();
        for key in KEYS {
            let prefix = format!("# {key} = ");
            let line = example.lines().find(|l| l.starts_with(&prefix));
            let line = line.unwrap_or_else(|| panic!("cave.example.toml lacks a `{prefix}...` line"));
            // The keys whose default is "none" show an example value instead.
            if !["cluster_key", "advertise_addr"].contains(key) {
                uncommented.push_str(&line[2..]);
                uncommented.push('\n');
            }
        }
        let (_dir, path) = file(&uncommented);
        assert_eq!(ok(&["--config", &path], &[]), Config::default());
    }
}
