//! The parsers and validators of single setting values, the same whichever layer a value comes from, and
//! the formatting of sizes and durations.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use figment::value::Value;

use super::cli::enum_name;
use super::MAX_DURATION;
use crate::error::Result;
use crate::secrets::MasterKey;

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

pub(super) fn parse_enum<E: ValueEnum>(value: &Value) -> std::result::Result<E, String> {
    let text = as_text(value)?.trim();
    E::from_str(text, true).map_err(|_| {
        let names: Vec<String> = E::value_variants().iter().map(enum_name).collect();
        format!("`{text}` is not one of {}", names.join(", "))
    })
}

pub(super) fn parse_addr(value: &Value) -> std::result::Result<SocketAddr, String> {
    let text = as_text(value)?.trim();
    text.parse()
        .map_err(|_| format!("`{text}` is not an IP address with a port, such as 127.0.0.1:2001 or [::1]:2001"))
}

/// The spellings of a boolean Cave accepts wherever it reads one (query parameters, config file,
/// environment, flags), compared without case and surrounding space: `true`/`false`, `1`/`0`, `yes`/`no`,
/// `on`/`off`. `None` for anything else, which callers refuse naming the parameter: a typo such as `ture`
/// must not silently mean `false`.
pub fn parse_bool_text(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The accepted spellings, for messages.
pub const BOOL_SPELLINGS: &str = "true/false, 1/0, yes/no or on/off";

/// A TOML boolean, or one of the words of [`parse_bool_text`] (flags, environment, file).
pub(super) fn parse_bool(value: &Value) -> std::result::Result<bool, String> {
    if let Value::Bool(_, flag) = value {
        return Ok(*flag);
    }
    if let Value::Num(_, num) = value {
        return match num.to_u128_lossy() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(format!("expected {BOOL_SPELLINGS}, found a number other than 0 or 1")),
        };
    }
    let text = as_text(value).map_err(|_| format!("expected {BOOL_SPELLINGS}, found {}", kind(value)))?;
    parse_bool_text(text).ok_or_else(|| format!("`{}` is not {BOOL_SPELLINGS}", text.trim()))
}

pub(super) fn parse_dir(value: &Value) -> std::result::Result<PathBuf, String> {
    let text = as_text(value)?;
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(PathBuf::from(text))
}

/// A file's path. Empty means unset, so that an empty flag or `${CAVE_X:-}` in a compose file undoes it.
pub(super) fn parse_file(value: &Value) -> std::result::Result<Option<PathBuf>, String> {
    let text = as_text(value)?;
    Ok((!text.trim().is_empty()).then(|| PathBuf::from(text)))
}

/// The items of a list setting: a comma-separated string (flags, environment, file) or an array of strings
/// (file), each trimmed, empty ones skipped (so a trailing comma or an empty value is harmless).
fn text_items(value: &Value) -> std::result::Result<Vec<String>, String> {
    let items: Vec<String> = match value {
        Value::Array(_, items) => items
            .iter()
            .map(|item| as_text(item).map(str::to_string))
            .collect::<Result<_, _>>()?,
        other => as_text(other)?.split(',').map(str::to_string).collect(),
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_string())
        .filter(|item| !item.is_empty())
        .collect())
}

/// Peers as a comma-separated string (flags, environment, file) or an array of strings (file). Empty items
/// are skipped so that a trailing comma or an empty value (no peers) is harmless.
pub(super) fn parse_peers(value: &Value) -> std::result::Result<Vec<String>, String> {
    let items = text_items(value)?;
    let mut peers = Vec::new();
    let mut seen = BTreeSet::new();
    for item in items.iter().map(String::as_str) {
        let peer = match item.strip_prefix(crate::discovery::dns::PREFIX) {
            Some(name) => dns_peer(item, name)?,
            None => {
                validate_peer(item)?;
                item.to_string()
            }
        };
        if seen.insert(peer.clone()) {
            peers.push(peer);
        }
    }
    Ok(peers)
}

/// `dns:NAME[:PORT]` (the port defaults to the replication port), written in full as `dns:NAME:PORT`.
fn dns_peer(item: &str, name: &str) -> std::result::Result<String, String> {
    let with_port = if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:{}", super::DEFAULT_GRPC_PORT)
    };
    validate_peer(&with_port).map_err(|why| format!("`{item}` is not dns:NAME[:PORT] ({why})"))?;
    if with_port.starts_with('[')
        || with_port
            .rsplit_once(':')
            .is_some_and(|(h, _)| h.parse::<std::net::IpAddr>().is_ok())
    {
        return Err(format!("`{item}` names an IP address; give it without `dns:`"));
    }
    Ok(format!("{}{with_port}", crate::discovery::dns::PREFIX))
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
pub(super) fn parse_advertise_addr(value: &Value) -> std::result::Result<Option<String>, String> {
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

/// A whole number of connections, at least 1, as a TOML number or a string. Empty means unset (the cap is
/// then derived from the open-files limit).
/// A cluster size: a whole number, 0 for "the members known".
pub(super) fn parse_cluster_size(value: &Value) -> std::result::Result<usize, String> {
    let parsed = match value {
        Value::Num(_, num) => num.to_u128_lossy().and_then(|n| usize::try_from(n).ok()),
        other => as_text(other)?.trim().parse::<usize>().ok(),
    };
    parsed
        .filter(|&n| n <= 10_000)
        .ok_or_else(|| "expected a whole number of members (0 to 10000), such as 3".into())
}

pub(super) fn parse_max_connections(value: &Value) -> std::result::Result<Option<usize>, String> {
    let parsed = match value {
        Value::Num(_, num) => num.to_u128_lossy().and_then(|n| usize::try_from(n).ok()),
        other => {
            let text = as_text(other)?.trim();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse::<usize>().ok()
        }
    };
    match parsed {
        Some(0) => Err("must be at least 1".into()),
        Some(n) => Ok(Some(n)),
        None => Err("expected a whole number of connections, such as 10000".into()),
    }
}

/// Host names as a comma-separated string or an array of strings: names or IP addresses without a port
/// (IPv6 in brackets), or `*` for any. Lower-cased, as host names compare without case.
pub(super) fn parse_allowed_hosts(value: &Value) -> std::result::Result<Vec<String>, String> {
    let items = text_items(value)?;
    let mut hosts = Vec::new();
    for item in items.iter().map(String::as_str) {
        let host = item.to_ascii_lowercase();
        let bracketed = host.starts_with('[') && host.ends_with(']');
        if bracketed {
            host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("`{item}` is not an IPv6 address in brackets"))?;
        } else if host.contains(':') {
            return Err(format!(
                "`{item}` has a port or is an IPv6 address without brackets: give the host name alone, as in \
                 cave.example.com or [fd00::1]"
            ));
        } else if host != "*" && !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
            return Err(format!("`{item}` is not a host name"));
        }
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Ok(hosts)
}

/// Browser origins as a comma-separated string or an array of strings: `http` or `https`, a host and an
/// optional port, nothing after (`https://app.example.com`, `http://localhost:3000`), as a browser sends
/// them in `Origin`. Lower-cased (browsers send them so) and without a final `/`. `*` is refused: an origin
/// allowed by CORS may also write, so "any website may change data" must not be one character away.
pub(super) fn parse_cors_origins(value: &Value) -> std::result::Result<Vec<String>, String> {
    let items = text_items(value)?;
    let mut origins = Vec::new();
    for item in items.iter().map(String::as_str) {
        if item == "*" {
            return Err("`*` is not accepted: list the origins of the apps, such as https://app.example.com".into());
        }
        let origin = item.trim_end_matches('/').to_ascii_lowercase();
        let bad = || format!("`{item}` is not an origin such as https://app.example.com or http://localhost:3000");
        let (scheme, authority) = origin.split_once("://").ok_or_else(bad)?;
        if !matches!(scheme, "http" | "https") || authority.is_empty() {
            return Err(bad());
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(rest) => {
                let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
                ip.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
                (ip, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
        let port_ok =
            port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0) && p.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok || !port_ok {
            return Err(bad());
        }
        // Browsers leave a scheme's default port out of `Origin`.
        let origin = match (scheme, port) {
            ("http", Some("80")) | ("https", Some("443")) => format!(
                "{scheme}://{}",
                authority.rsplit_once(':').map_or(authority, |(h, _)| h)
            ),
            _ => origin.clone(),
        };
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

/// The key's own messages never quote it, and neither does this.
pub(super) fn parse_key(value: &Value) -> std::result::Result<MasterKey, String> {
    let text = as_text(value)?;
    MasterKey::from_base64(text).map_err(|err| format!("{err} (generate one with `cave keygen`)"))
}

pub(super) fn parse_root_token(value: &Value) -> std::result::Result<crate::acl::token::SecretToken, String> {
    crate::acl::token::SecretToken::parse(as_text(value)?)
}

pub(super) fn parse_size_value(value: &Value) -> std::result::Result<usize, String> {
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
pub(super) fn parse_duration_value(value: &Value) -> std::result::Result<Duration, String> {
    match value {
        Value::Num(..) => {
            Err("a bare number has no unit: write a string such as \"10s\" (units ms, s, m, h, d)".into())
        }
        other => parse_duration(as_text(other)?),
    }
}

/// A duration that must not be zero (an interval, a timeout, an age).
pub(super) fn parse_nonzero_duration(value: &Value) -> std::result::Result<Duration, String> {
    let duration = parse_duration_value(value)?;
    if duration.is_zero() {
        return Err("must be longer than 0".into());
    }
    Ok(duration)
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
pub(super) fn parse_log_level(value: &Value) -> std::result::Result<String, String> {
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
