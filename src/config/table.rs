//! The machinery that turns the one table of settings (`settings.rs`) into everything a setting needs:
//! the [`Config`](super::Config) field, its default, the `--flag` of [`ServeArgs`](super::ServeArgs), the raw
//! value merged from the layers, the parser that validates it, its `--help` default, its JSON in
//! `/api/v1/system/config` and its field in the start-up log. Adding a setting is one row of the table.
//!
//! A row reads:
//!
//! ```text
//! /// What the setting means (the doc of the Config field).
//! key: FieldType {
//!     flag: FlagType [clap arg attributes] "the --help line",
//!     default: |mode| value,                // the default, given the final mode
//!     parse: parser,                        // fn(&figment::value::Value) -> Result<FieldType, String>
//!     help_default: |dev: &Config| text,    // optional: the default as --help shows it
//!     shown: |config: &Config| value,       // optional: what is shown instead of the field itself
//! }
//! ```
//!
//! Rows are grouped, and each group is one record of the start-up log (a record holds at most 32 fields).
//! Rules that involve two settings (`max_request_bytes` ≥ `max_value_bytes`, the TLS pair, the key and its
//! file) are checked after the table's parsers, in `layers.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::cli::enum_name;
use super::values::format_duration;
use super::Mode;
use crate::storage::Durability;

/// How a setting's value is shown: as JSON (`/api/v1/system/config`) and as text (`--help`, the log).
/// Secrets show as `<redacted>`, unset values as `null` / `none`.
pub trait Shown {
    /// The value as JSON.
    fn json(&self) -> Value;
    /// The value as plain text.
    fn text(&self) -> String;
}

/// Shown by their `Display`, as a JSON string.
macro_rules! shown_as_display {
    ($($ty:ty),*) => {$(
        impl Shown for $ty {
            fn json(&self) -> Value {
                Value::String(self.text())
            }
            fn text(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
shown_as_display!(String, SocketAddr, Mode);

impl Shown for bool {
    fn json(&self) -> Value {
        Value::Bool(*self)
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Shown for usize {
    fn json(&self) -> Value {
        Value::from(*self)
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

impl Shown for Duration {
    fn json(&self) -> Value {
        Value::String(self.text())
    }
    /// As configured: `10s`, `1500ms`.
    fn text(&self) -> String {
        format_duration(*self)
    }
}

impl Shown for PathBuf {
    fn json(&self) -> Value {
        Value::String(self.text())
    }
    fn text(&self) -> String {
        self.display().to_string()
    }
}

impl Shown for Durability {
    fn json(&self) -> Value {
        Value::String(self.text())
    }
    fn text(&self) -> String {
        enum_name(self)
    }
}

impl Shown for Vec<String> {
    fn json(&self) -> Value {
        Value::from(self.clone())
    }
    /// Comma-separated, as a flag takes it; `none` when empty.
    fn text(&self) -> String {
        if self.is_empty() {
            "none".to_string()
        } else {
            self.join(",")
        }
    }
}

impl<T: Shown> Shown for Option<T> {
    fn json(&self) -> Value {
        self.as_ref().map_or(Value::Null, Shown::json)
    }
    fn text(&self) -> String {
        self.as_ref().map_or_else(|| "none".to_string(), Shown::text)
    }
}

/// Never shown: the cluster key and the root token only say that they are set.
macro_rules! shown_redacted {
    ($($ty:ty),*) => {$(
        impl Shown for $ty {
            fn json(&self) -> Value {
                Value::String(self.text())
            }
            fn text(&self) -> String {
                "<redacted>".to_string()
            }
        }
    )*};
}
shown_redacted!(crate::secrets::MasterKey, crate::acl::token::SecretToken);

/// How a flag's value joins the flag layer: as the text the other layers would hold.
pub trait FlagText {
    /// The value as a config file or variable would spell it.
    fn flag_text(&self) -> String;
}

impl FlagText for String {
    fn flag_text(&self) -> String {
        self.clone()
    }
}

impl FlagText for Mode {
    fn flag_text(&self) -> String {
        enum_name(self)
    }
}

impl FlagText for Durability {
    fn flag_text(&self) -> String {
        enum_name(self)
    }
}

/// The first group of tokens when it is not empty, else the second: a row's optional override, else the
/// rule every row follows.
macro_rules! given_or {
    ({} { $($default:tt)* }) => { $($default)* };
    ({ $($given:tt)+ } { $($default:tt)* }) => { $($given)+ };
}

/// Expands the table of settings (see the module documentation) into the items of `config`.
macro_rules! settings {
    ($(
        group $group:literal {$(
            $(#[$meta:meta])*
            $key:ident: $ty:ty {
                flag: $flag_ty:ty [$($arg:tt)*] $help:literal,
                default: $default:expr,
                parse: $parse:expr
                $(, help_default: $help_default:expr)?
                $(, shown: $shown:expr)?
                $(,)?
            }
        )*}
    )*) => {
        /// Every configuration key, in the order of the table. A key's flag is `--` plus the key with dashes,
        /// its environment variable `CAVE_` plus the key in capitals.
        pub const KEYS: &[&str] = &[$($(stringify!($key)),*),*];

        /// The effective configuration of a node. `Debug` is safe to log: the cluster key and the root token
        /// redact themselves.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Config {$($(
            $(#[$meta])*
            pub $key: $ty,
        )*)*}

        impl Default for Config {
            /// The defaults of a dev node.
            fn default() -> Self {
                let mode = Mode::default();
                Config {$($(
                    $key: {
                        let default: fn(Mode) -> $ty = $default;
                        default(mode)
                    },
                )*)*}
            }
        }

        impl Config {
            /// Every setting as JSON, the cluster key and root token replaced by `"<redacted>"` (or `null` when
            /// unset): safe to serve from `/api/v1/system/config` and to log. Durations are written as they are
            /// configured (`"10s"`).
            pub fn redacted(&self) -> serde_json::Value {
                let mut settings = serde_json::Map::new();
                $($(
                    let shown = given_or!({ $(&($shown)(self))? } { &self.$key });
                    settings.insert(stringify!($key).to_string(), $crate::config::table::Shown::json(shown));
                )*)*
                serde_json::Value::Object(settings)
            }

            /// Log the effective configuration as structured fields, one field per setting, one record per
            /// group of the table. Secrets are only said to be set or not.
            pub fn log_effective(&self) {
                $(
                    tracing::info!(
                        $(
                            $key = %$crate::config::table::Shown::text(
                                given_or!({ $(&($shown)(self))? } { &self.$key })
                            ),
                        )*
                        $group
                    );
                )*
            }
        }

        /// Settings given as flags. Each is optional: only the flags present override the other layers, which
        /// is why none of them has a clap default or a clap `env` (the environment is a layer of its own,
        /// below flags). Values are kept as text and validated with the other layers, except the enums, whose
        /// possible values clap can then list. No `Debug`: it would print the cluster key.
        #[derive(clap::Args, Default)]
        pub struct ServeArgs {
            /// TOML file of settings, keys as in cave.example.toml
            #[arg(long, value_name = "FILE")]
            pub config: Option<PathBuf>,
            $($(
                #[doc = $help]
                #[arg(long, $($arg)*)]
                pub $key: Option<$flag_ty>,
            )*)*
        }

        /// The merged, not yet validated values. `deny_unknown_fields` is what turns a typo in the config file
        /// into an error instead of a silently ignored setting.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct Raw {$($(
            $key: Option<figment::value::Value>,
        )*)*}

        /// The flags that were given, as raw values.
        pub(super) fn given_flags(args: &ServeArgs) -> Vec<(&'static str, String)> {
            let mut given = Vec::new();
            $($(
                if let Some(value) = &args.$key {
                    given.push((stringify!($key), $crate::config::table::FlagText::flag_text(value)));
                }
            )*)*
            given
        }

        /// Every setting parsed from the merged layers, a default where none was given; `mode` is the final
        /// mode, which decides some defaults. `fields` says, in errors, where a bad value came from.
        pub(super) fn parse_raw(raw: Raw, fields: &Fields<'_>, mode: Mode) -> Result<Config> {
            Ok(Config {$($(
                $key: {
                    let parse: fn(&figment::value::Value) -> std::result::Result<$ty, String> = $parse;
                    let default: fn(Mode) -> $ty = $default;
                    fields.parse(stringify!($key), raw.$key, parse)?.unwrap_or_else(|| default(mode))
                },
            )*)*})
        }

        /// The default of `key` as shown by `--help`.
        pub(super) fn help_default(key: &str) -> String {
            let dev = Config::default();
            $($(
                if key == stringify!($key) {
                    return given_or!(
                        { $(($help_default)(&dev))? }
                        { $crate::config::table::Shown::text(&dev.$key) }
                    );
                }
            )*)*
            unreachable!("no default for unknown key {key}")
        }
    };
}

pub(super) use {given_or, settings};
