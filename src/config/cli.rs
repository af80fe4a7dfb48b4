//! The command line: clap's definition of `cave` and its subcommands, the help text and [`parse`], which
//! turns a command line and an environment into a [`Command`].

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use super::layers::resolve;
use super::settings::help_default;
use super::values::parse_duration;
use super::{Config, ServeArgs, CONFIG_ENV, ENV_PREFIX, KEYS};
use crate::error::{Error, Result};

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
    /// Give this configuration's data directory a fresh node id (keeping its data), and exit.
    ResetNodeId(Config),
    /// Probe the `/healthz` endpoint of a node and exit 0 if it answers 200, 1 otherwise.
    Healthcheck(Probe),
    /// Restamp stored versions too far ahead of the clock in this configuration's data directory, and exit.
    RepairClock(Config),
    /// `--help` or `--version`: print this text to stdout and exit successfully.
    Print(String),
    /// Manage the tokens and policies of a running node (`cave acl ...`).
    Acl(crate::acl::cli::AclRequest),
}

/// What `cave healthcheck` probes: `GET /healthz` at `addr`, giving up after `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The node's REST API: its configured `http_addr`, with an unspecified IP replaced by loopback.
    pub addr: SocketAddr,
    /// How long to wait for the connection and for the answer, each.
    pub timeout: Duration,
    /// Whether to speak HTTPS: `--tls`, or the node's settings name a certificate. The server's certificate
    /// is not verified (see `cave::api::tls::probe_connection`).
    pub tls: bool,
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
        Some(CliCommand::RepairClock(args)) => return resolve(&args, env).map(Command::RepairClock),
        Some(CliCommand::ResetNodeId(args)) => return resolve(&args, env).map(Command::ResetNodeId),
        Some(CliCommand::Acl(args)) => return Ok(Command::Acl(crate::acl::cli::AclRequest::new(args, env))),
        Some(CliCommand::Serve(args)) => *args,
        None => cli.serve,
    };
    resolve(&args, env).map(Command::Serve)
}

/// The probe of `cave healthcheck`: the `http_addr` a node would use with this `--config`, `--http-addr` and
/// environment. Only the variables that decide that address are read, so that a setting the check does not
/// use cannot fail it.
fn probe(args: &HealthcheckArgs, env: &[(String, String)]) -> Result<Probe> {
    let relevant = [
        CONFIG_ENV.to_string(),
        env_name("http_addr"),
        env_name("mode"),
        env_name("tls_cert"),
        env_name("tls_key"),
    ];
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
    let node = resolve(&serve, &env)?;
    let mut addr = node.http_addr;
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
    Ok(Probe {
        addr,
        timeout,
        tls: args.tls || node.tls().is_some(),
    })
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
    /// With the node stopped: restamp stored versions more than max-clock-drift ahead of the clock at the
    /// current time (the node refuses to start while there are any), keeping the old database beside it
    RepairClock(Box<ServeArgs>),
    /// With the node stopped: give the data directory a fresh node id, keeping its data (for a copy of
    /// another node's data directory, which must not run under that node's id)
    ResetNodeId(Box<ServeArgs>),
    /// Manage tokens and policies of a running node over HTTP (--addr, token from CAVE_TOKEN)
    Acl(crate::acl::cli::AclArgs),
}

/// Options of `cave healthcheck`. The address is found as a node finds it (flag, environment, config file),
/// so the check run inside a container, which shares the node's environment, needs no arguments.
#[derive(Args, Default)]
pub struct HealthcheckArgs {
    /// TOML file of settings whose http_addr to probe [default: none] [env: CAVE_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the node's REST API; an unspecified IP (`0.0.0.0`, `[::]`) is probed on loopback
    /// [default: 127.0.0.1:2001] [env: CAVE_HTTP_ADDR]
    #[arg(long, value_name = "IP:PORT")]
    pub http_addr: Option<String>,
    /// How long to wait for the connection and for the answer [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Probe over HTTPS, without verifying the certificate (the probe sends nothing secret and reads only
    /// the status); on by itself when the settings (--config file, CAVE_TLS_CERT) name a certificate
    #[arg(long)]
    pub tls: bool,
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

/// The clap (and serde) name of a value of a `ValueEnum`.
pub(super) fn enum_name<E: ValueEnum>(value: &E) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// `--http-addr` for `http_addr`.
pub(super) fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// `CAVE_HTTP_ADDR` for `http_addr`.
pub(super) fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// A clap error as our error, without clap's leading `error: ` (the caller adds its own).
fn clap_error(err: &clap::Error) -> Error {
    let text = err.render().to_string();
    Error::invalid(text.strip_prefix("error: ").unwrap_or(&text).trim_end())
}
