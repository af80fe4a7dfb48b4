//! The layers of settings (config file, environment, flags), merged by `figment` as raw values and then
//! validated into a [`Config`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;

use super::cli::{enum_name, env_name, flag_name, ServeArgs};
use super::values::{
    parse_addr, parse_advertise_addr, parse_allowed_hosts, parse_bool, parse_cors_origins, parse_dir,
    parse_duration_value, parse_enum, parse_file, parse_key, parse_log_level, parse_max_connections, parse_peers,
    parse_root_token, parse_size_value,
};
use super::{Config, Mode, TlsFiles, CONFIG_ENV, KEYS};
use crate::error::{Error, Result};
use crate::storage::Durability;

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
    isolated_unready: Option<Value>,
    cluster_key: Option<Value>,
    cluster_key_file: Option<Value>,
    new_cluster: Option<Value>,
    durability: Option<Value>,
    allow_empty_start: Option<Value>,
    max_value_bytes: Option<Value>,
    max_request_bytes: Option<Value>,
    anti_entropy_interval: Option<Value>,
    max_clock_drift: Option<Value>,
    tombstone_ttl: Option<Value>,
    audit_retention: Option<Value>,
    shutdown_drain: Option<Value>,
    http_header_timeout: Option<Value>,
    http_idle_timeout: Option<Value>,
    http_body_timeout: Option<Value>,
    http_max_connections: Option<Value>,
    allowed_hosts: Option<Value>,
    tls_cert: Option<Value>,
    tls_key: Option<Value>,
    acl: Option<Value>,
    acl_root_token: Option<Value>,
    metrics_public: Option<Value>,
    cors_origins: Option<Value>,
    log_level: Option<Value>,
    access_log: Option<Value>,
}

/// Merge the layers of `args` and `env` over the defaults and validate the result.
pub(super) fn resolve(args: &ServeArgs, env: &[(String, String)]) -> Result<Config> {
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
    let tls_cert = fields.parse("tls_cert", raw.tls_cert, parse_file)?.flatten();
    let tls_key = fields.parse("tls_key", raw.tls_key, parse_file)?.flatten();
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => return Err(fields.error("tls_cert", both_tls("tls_key"))),
        (None, Some(_)) => return Err(fields.error("tls_key", both_tls("tls_cert"))),
    };
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
    let cluster_key_file = fields.parse("cluster_key_file", raw.cluster_key_file, parse_dir)?;
    let cluster_key = match (raw.cluster_key, &cluster_key_file) {
        (Some(_), Some(_)) => {
            return Err(fields.error(
                "cluster_key_file",
                "cluster_key is set too; give the key one way only (the file, for a secrets manager)",
            ))
        }
        (Some(raw), None) => Some(fields.parse("cluster_key", Some(raw), parse_key)?.expect("given")),
        (None, Some(path)) => Some(read_key_file(path).map_err(|reason| fields.error("cluster_key_file", reason))?),
        (None, None) => None,
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
        isolated_unready: fields
            .parse("isolated_unready", raw.isolated_unready, parse_bool)?
            .unwrap_or(defaults.isolated_unready),
        cluster_key,
        cluster_key_file,
        new_cluster: fields
            .parse("new_cluster", raw.new_cluster, parse_bool)?
            .unwrap_or(defaults.new_cluster),
        durability: fields
            .parse("durability", raw.durability, parse_enum::<Durability>)?
            .unwrap_or(defaults.durability),
        allow_empty_start: fields
            .parse("allow_empty_start", raw.allow_empty_start, parse_bool)?
            .unwrap_or(defaults.allow_empty_start),
        max_value_bytes,
        max_request_bytes,
        anti_entropy_interval: nonzero(
            "anti_entropy_interval",
            raw.anti_entropy_interval,
            defaults.anti_entropy_interval,
        )?,
        max_clock_drift: duration("max_clock_drift", raw.max_clock_drift, defaults.max_clock_drift)?,
        tombstone_ttl: nonzero("tombstone_ttl", raw.tombstone_ttl, defaults.tombstone_ttl)?,
        audit_retention: nonzero("audit_retention", raw.audit_retention, defaults.audit_retention)?,
        shutdown_drain: duration("shutdown_drain", raw.shutdown_drain, defaults.shutdown_drain)?,
        http_header_timeout: nonzero(
            "http_header_timeout",
            raw.http_header_timeout,
            defaults.http_header_timeout,
        )?,
        http_idle_timeout: nonzero("http_idle_timeout", raw.http_idle_timeout, defaults.http_idle_timeout)?,
        http_body_timeout: nonzero("http_body_timeout", raw.http_body_timeout, defaults.http_body_timeout)?,
        http_max_connections: fields
            .parse("http_max_connections", raw.http_max_connections, parse_max_connections)?
            .flatten(),
        allowed_hosts: fields
            .parse("allowed_hosts", raw.allowed_hosts, parse_allowed_hosts)?
            .unwrap_or(defaults.allowed_hosts),
        tls,
        acl: fields.parse("acl", raw.acl, parse_bool)?,
        acl_root_token: fields.parse("acl_root_token", raw.acl_root_token, parse_root_token)?,
        metrics_public: fields
            .parse("metrics_public", raw.metrics_public, parse_bool)?
            .unwrap_or(defaults.metrics_public),
        cors_origins: fields
            .parse("cors_origins", raw.cors_origins, parse_cors_origins)?
            .unwrap_or(defaults.cors_origins),
        log_level: fields
            .parse("log_level", raw.log_level, parse_log_level)?
            .unwrap_or(defaults.log_level),
        access_log: fields
            .parse("access_log", raw.access_log, parse_bool)?
            .unwrap_or(defaults.access_log),
    })
}

/// The key in a key file (`cluster_key_file`): base64 as `cave keygen` prints it, surrounding whitespace and
/// a trailing newline allowed (secrets managers and `echo` add one). The key is never quoted in an error.
fn read_key_file(path: &Path) -> std::result::Result<crate::secrets::MasterKey, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    crate::secrets::MasterKey::from_base64(text.trim()).map_err(|err| {
        format!(
            "{} does not hold a cluster key: {err} (generate one with `cave keygen`)",
            path.display()
        )
    })
}

/// Why a lone `tls_cert` or `tls_key` is refused, naming the `missing` one.
fn both_tls(missing: &str) -> String {
    format!(
        "is set but {missing} ({} / {}) is not: HTTPS needs both the certificate and its private key",
        flag_name(missing),
        env_name(missing)
    )
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
        ("isolated_unready", args.isolated_unready.clone()),
        ("cluster_key", args.cluster_key.clone()),
        ("cluster_key_file", args.cluster_key_file.clone()),
        ("new_cluster", args.new_cluster.clone()),
        ("durability", args.durability.as_ref().map(enum_name)),
        ("allow_empty_start", args.allow_empty_start.clone()),
        ("max_value_bytes", args.max_value_bytes.clone()),
        ("max_request_bytes", args.max_request_bytes.clone()),
        ("anti_entropy_interval", args.anti_entropy_interval.clone()),
        ("max_clock_drift", args.max_clock_drift.clone()),
        ("tombstone_ttl", args.tombstone_ttl.clone()),
        ("audit_retention", args.audit_retention.clone()),
        ("shutdown_drain", args.shutdown_drain.clone()),
        ("http_header_timeout", args.http_header_timeout.clone()),
        ("http_idle_timeout", args.http_idle_timeout.clone()),
        ("http_body_timeout", args.http_body_timeout.clone()),
        ("http_max_connections", args.http_max_connections.clone()),
        ("allowed_hosts", args.allowed_hosts.clone()),
        ("tls_cert", args.tls_cert.clone()),
        ("tls_key", args.tls_key.clone()),
        ("acl", args.acl.clone()),
        ("acl_root_token", args.acl_root_token.clone()),
        ("metrics_public", args.metrics_public.clone()),
        ("cors_origins", args.cors_origins.clone()),
        ("log_level", args.log_level.clone()),
        ("access_log", args.access_log.clone()),
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
