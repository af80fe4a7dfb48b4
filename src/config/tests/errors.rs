//! Unit tests of the error messages: each names the parameter, where its bad value came from, and never the
//! cluster key.

use super::*;

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
        (&["--audit-retention", "0s"], &[], &["audit_retention", "longer than 0"]),
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
            &["--mdns=ture"],
            &[],
            &[
                "mdns (--mdns / CAVE_MDNS)",
                "set by --mdns",
                "true/false, 1/0, yes/no or on/off",
            ],
        ),
        (
            &[],
            &[("CAVE_MDNS", "2")],
            &["mdns", "CAVE_MDNS", "`2` is not true/false"],
        ),
        (
            &["--allow-empty-start=maybe"],
            &[],
            &[
                "allow_empty_start (--allow-empty-start / CAVE_ALLOW_EMPTY_START)",
                "`maybe` is not true/false",
            ],
        ),
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
    let (_dir, path) = file("mdns = 2\n");
    let message = err(&["--config", &path], &[]);
    assert!(
        message.contains("mdns") && message.contains("found a number other than 0 or 1"),
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
