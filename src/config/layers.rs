//! The layers of settings (config file, environment, flags), merged by `figment` as raw values and then
//! validated into a [`Config`].

use std::fmt;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::cli::{env_name, flag_name};
use super::settings::{given_flags, parse_raw, Raw};
use super::values::parse_enum;
use super::{Config, Mode, ServeArgs, CONFIG_ENV, KEYS};
use crate::error::{Error, Result};

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

    // The mode comes first: it decides the defaults of the addresses and of mDNS.
    let mode = fields
        .parse("mode", raw_mode(&figment), parse_enum::<Mode>)?
        .unwrap_or_default();
    let mut config = parse_raw(raw, &fields, mode)?;
    check_together(&mut config, &fields)?;
    Ok(config)
}

/// The merged `mode`, read before the other settings.
fn raw_mode(figment: &Figment) -> Option<Value> {
    figment.find_value("mode").ok()
}

/// The rules between settings, once each is valid on its own.
fn check_together(config: &mut Config, fields: &Fields<'_>) -> Result<()> {
    if config.max_value_bytes == 0 {
        return Err(fields.error("max_value_bytes", "must be at least 1 byte"));
    }
    if config.max_request_bytes < config.max_value_bytes {
        let reason = format!(
            "{} bytes is less than max_value_bytes ({}); a request must be able to carry at least one value of \
             the largest size",
            config.max_request_bytes, config.max_value_bytes
        );
        return Err(fields.error("max_request_bytes", reason));
    }
    if config.max_ttl < config.min_ttl {
        let reason = format!("{:?} is less than min_ttl ({:?})", config.max_ttl, config.min_ttl);
        return Err(fields.error("max_ttl", reason));
    }
    match (&config.tls_cert, &config.tls_key) {
        (Some(_), None) => return Err(fields.error("tls_cert", both_tls("tls_key"))),
        (None, Some(_)) => return Err(fields.error("tls_key", both_tls("tls_cert"))),
        _ => {}
    }
    if let Some(path) = &config.cluster_key_file {
        if config.cluster_key.is_some() {
            return Err(fields.error(
                "cluster_key_file",
                "cluster_key is set too; give the key one way only (the file, for a secrets manager)",
            ));
        }
        config.cluster_key = Some(read_key_file(path).map_err(|reason| fields.error("cluster_key_file", reason))?);
    }
    Ok(())
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
    let values = given_flags(args)
        .into_iter()
        .map(|(key, value)| (key.to_string(), Value::from(value)))
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
pub(super) struct Fields<'a> {
    figment: &'a Figment,
}

impl Fields<'_> {
    pub(super) fn parse<T>(
        &self,
        key: &str,
        raw: Option<Value>,
        parse: impl FnOnce(&Value) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        raw.map(|value| parse(&value).map_err(|reason| self.error(key, reason)))
            .transpose()
    }

    pub(super) fn error(&self, key: &str, reason: impl fmt::Display) -> Error {
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
