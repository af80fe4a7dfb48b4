//! Unit tests of the configuration: defaults, layering, value syntax. The error messages have their own file,
//! `tests/errors.rs`; what the configuration shows (help, the example file, the log line, redaction) and
//! `cave healthcheck` theirs, `tests/surface.rs`.

mod errors;
mod surface;

use std::collections::BTreeSet;

use super::cli::{env_name, flag_name};
use super::*;
use crate::secrets::MasterKey;
use crate::storage::Durability;

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
    assert!(!config.allow_empty_start);
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
fn allow_empty_start_comes_from_every_layer() {
    assert!(
        ok(&["--allow-empty-start"], &[]).allow_empty_start,
        "the flag alone means true"
    );
    assert!(!ok(&["--allow-empty-start=false"], &[]).allow_empty_start);
    assert!(ok(&[], &[("CAVE_ALLOW_EMPTY_START", "true")]).allow_empty_start);
    let (_dir, path) = file("allow_empty_start = true\n");
    assert!(ok(&["--config", &path], &[]).allow_empty_start);
    assert!(!ok(&["--config", &path, "--allow-empty-start", "false"], &[]).allow_empty_start);
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
fn booleans_take_the_usual_spellings_in_every_layer() {
    for (word, want) in [
        ("yes", true),
        ("On", true),
        ("1", true),
        ("TRUE", true),
        ("no", false),
        ("OFF", false),
        ("0", false),
        ("false", false),
    ] {
        assert_eq!(ok(&[&format!("--mdns={word}")], &[]).mdns, want, "--mdns={word}");
        assert_eq!(ok(&[], &[("CAVE_MDNS", word)]).mdns, want, "CAVE_MDNS={word}");
        let (_dir, path) = file(&format!("allow_empty_start = \"{word}\"\n"));
        assert_eq!(ok(&["--config", &path], &[]).allow_empty_start, want, "file {word}");
    }
    let (_dir, path) = file("mdns = 1\n");
    assert!(ok(&["--config", &path], &[]).mdns, "a TOML 1 is true");
    assert_eq!(crate::config::parse_bool_text(" Yes "), Some(true));
    for bad in ["", "y", "ture", "2", "enabled"] {
        assert_eq!(crate::config::parse_bool_text(bad), None, "{bad:?}");
    }
}

#[test]
fn audit_retention_comes_from_every_layer() {
    assert_eq!(ok(&[], &[]).audit_retention, Duration::from_secs(30 * 86_400));
    let (_dir, path) = file("audit_retention = \"90d\"\n");
    assert_eq!(
        ok(&["--config", &path], &[]).audit_retention,
        Duration::from_secs(90 * 86_400)
    );
    let vars = [("CAVE_AUDIT_RETENTION", "12h")];
    assert_eq!(
        ok(&["--config", &path], &vars).audit_retention,
        Duration::from_secs(12 * 3600)
    );
    let flag = ok(&["--config", &path, "--audit-retention", "1s"], &vars);
    assert_eq!(flag.audit_retention, Duration::from_secs(1));
    assert_eq!(flag.redacted()["audit_retention"], "1s");
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
fn http_limits_and_allowed_hosts_parse_from_every_source() {
    let config = ok(&[], &[]);
    assert_eq!(config.http_header_timeout, Duration::from_secs(10));
    assert_eq!(config.http_idle_timeout, Duration::from_secs(75));
    assert_eq!(config.http_body_timeout, Duration::from_secs(60));
    assert_eq!(config.http_max_connections, None);
    assert!(config.allowed_hosts.is_empty());
    let (_dir, path) = file(
        "http_header_timeout = \"2s\"\nhttp_max_connections = 500\nallowed_hosts = [\"Cave.Example\", \"[::2]\"]\n",
    );
    let config = ok(
        &["--config", &path, "--http-idle-timeout", "500ms"],
        &[("CAVE_HTTP_BODY_TIMEOUT", "3s")],
    );
    assert_eq!(config.http_header_timeout, Duration::from_secs(2));
    assert_eq!(config.http_idle_timeout, Duration::from_millis(500));
    assert_eq!(config.http_body_timeout, Duration::from_secs(3));
    assert_eq!(config.http_max_connections, Some(500));
    assert_eq!(config.allowed_hosts, ["cave.example", "[::2]"]);
    let config = ok(
        &[
            "--allowed-hosts",
            "a.example, *,a.example",
            "--http-max-connections",
            "7",
        ],
        &[],
    );
    assert_eq!(config.allowed_hosts, ["a.example", "*"]);
    assert_eq!(config.http_max_connections, Some(7));
    assert_eq!(ok(&["--http-max-connections", ""], &[]).http_max_connections, None);

    let message = err(&["--http-max-connections", "0"], &[]);
    assert!(
        message.contains("--http-max-connections") && message.contains("at least 1"),
        "{message}"
    );
    let message = err(&[], &[("CAVE_HTTP_MAX_CONNECTIONS", "many")]);
    assert!(
        message.contains("CAVE_HTTP_MAX_CONNECTIONS") && message.contains("whole number"),
        "{message}"
    );
    let message = err(&["--http-header-timeout", "0s"], &[]);
    assert!(
        message.contains("http_header_timeout") && message.contains("longer than 0"),
        "{message}"
    );
    let message = err(&["--allowed-hosts", "evil.example:2001"], &[]);
    assert!(
        message.contains("--allowed-hosts") && message.contains("port"),
        "{message}"
    );
    let message = err(&["--allowed-hosts", "a/b"], &[]);
    assert!(message.contains("not a host name"), "{message}");
}

#[test]
fn the_connection_cap_is_derived_from_the_open_files_limit_unless_set() {
    let config = Config::default();
    assert_eq!(config.max_connections(Some(20_000)), 20_000 - HTTP_FD_HEADROOM as usize);
    assert_eq!(
        config.max_connections(Some(100)),
        1,
        "a tiny limit still lets one connection in"
    );
    assert_eq!(
        config.max_connections(None),
        (UNLIMITED_FD_LIMIT - HTTP_FD_HEADROOM) as usize,
        "no limit"
    );
    let config = Config {
        http_max_connections: Some(42),
        ..Config::default()
    };
    assert_eq!(config.max_connections(Some(20_000)), 42);
}

#[test]
fn the_cluster_key_comes_from_a_file_with_a_trailing_newline_but_not_from_both() {
    let key = crate::secrets::MasterKey::generate();
    let (_dir, path) = file(&format!("{}\n", key.to_base64()));
    let config = ok(&["--cluster-key-file", &path], &[]);
    assert_eq!(config.cluster_key, Some(key.clone()));
    assert_eq!(config.cluster_key_file.as_deref(), Some(std::path::Path::new(&path)));
    let env = ok(&[], &[("CAVE_CLUSTER_KEY_FILE", path.as_str())]);
    assert_eq!(env.cluster_key, Some(key.clone()));
    let both = err(&["--cluster-key-file", &path, "--cluster-key", &key.to_base64()], &[]);
    assert!(
        both.contains("cluster_key_file") && both.contains("one way only"),
        "{both}"
    );
    let (_bad_dir, bad) = file("not a key\n");
    let bad = err(&["--cluster-key-file", &bad], &[]);
    assert!(
        bad.contains("does not hold a cluster key") && !bad.contains("not a key\n"),
        "{bad}"
    );
    assert!(err(&["--cluster-key-file", "/nonexistent/key"], &[]).contains("cannot read"));
}

#[test]
fn dns_peers_take_a_default_port_and_must_name_a_host() {
    let config = ok(&["--peers", "dns:cave,dns:cave-headless.default.svc:2100,a:1"], &[]);
    assert_eq!(
        config.peers,
        ["dns:cave:2000", "dns:cave-headless.default.svc:2100", "a:1"]
    );
    assert!(err(&["--peers", "dns:"], &[]).contains("dns:NAME"));
    assert!(err(&["--peers", "dns:10.0.0.1:2000"], &[]).contains("IP address"));
    assert!(err(&["--peers", "dns:cave:x"], &[]).contains("dns:NAME"));
}

#[test]
fn new_cluster_and_isolated_unready_are_flags() {
    assert!(!ok(&[], &[]).new_cluster);
    assert!(ok(&["--new-cluster"], &[]).new_cluster);
    assert!(ok(&[], &[("CAVE_NEW_CLUSTER", "true")]).new_cluster);
    assert!(!ok(&[], &[]).isolated_unready);
    assert!(ok(&["--isolated-unready"], &[]).isolated_unready);
}

#[test]
fn tls_files_come_from_every_source_and_only_together() {
    let files = |cert: &str, key: &str| {
        Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        })
    };
    assert_eq!(ok(&[], &[]).tls(), None);
    assert_eq!(
        ok(&["--tls-cert", "c.pem", "--tls-key", "k.pem"], &[]).tls(),
        files("c.pem", "k.pem")
    );
    let vars = [("CAVE_TLS_CERT", "/e/c.pem"), ("CAVE_TLS_KEY", "/e/k.pem")];
    assert_eq!(ok(&[], &vars).tls(), files("/e/c.pem", "/e/k.pem"));
    let (_dir, path) = file("tls_cert = \"/f/c.pem\"\ntls_key = \"/f/k.pem\"\n");
    assert_eq!(ok(&["--config", &path], &[]).tls(), files("/f/c.pem", "/f/k.pem"));
    // Key by key: the flag's certificate with the file's key.
    let mixed = ok(&["--config", &path, "--tls-cert", "/x/c.pem"], &[]).tls();
    assert_eq!(mixed, files("/x/c.pem", "/f/k.pem"));
    // An empty value is unset, so an empty flag turns the file's HTTPS off only together with its pair.
    assert_eq!(
        ok(&["--config", &path, "--tls-cert", "", "--tls-key", ""], &[]).tls(),
        None
    );
    let json = ok(&["--tls-cert", "c.pem", "--tls-key", "k.pem"], &[]).redacted();
    assert_eq!(
        (json["tls_cert"].as_str(), json["tls_key"].as_str()),
        (Some("c.pem"), Some("k.pem"))
    );

    let lone_cert = err(&["--tls-cert", "c.pem"], &[]);
    for needle in [
        "tls_cert",
        "set by --tls-cert",
        "tls_key (--tls-key / CAVE_TLS_KEY) is not",
    ] {
        assert!(lone_cert.contains(needle), "{lone_cert}");
    }
    let lone_key = err(&[], &[("CAVE_TLS_KEY", "k.pem")]);
    for needle in [
        "tls_key",
        "CAVE_TLS_KEY",
        "tls_cert (--tls-cert / CAVE_TLS_CERT) is not",
    ] {
        assert!(lone_key.contains(needle), "{lone_key}");
    }
}

#[test]
fn cors_origins_and_access_log_parse_from_every_source() {
    let config = ok(&[], &[]);
    assert!(config.cors_origins.is_empty() && !config.access_log);
    let config = ok(
        &[
            "--cors-origins",
            "https://App.Example/, http://localhost:3000,https://x.example:443",
            "--access-log",
        ],
        &[],
    );
    assert_eq!(
        config.cors_origins,
        ["https://app.example", "http://localhost:3000", "https://x.example"]
    );
    assert!(config.access_log);
    let vars = [("CAVE_CORS_ORIGINS", "http://[::1]:8080"), ("CAVE_ACCESS_LOG", "yes")];
    let config = ok(&[], &vars);
    assert_eq!(config.cors_origins, ["http://[::1]:8080"]);
    assert!(config.access_log);
    let (_dir, path) = file("cors_origins = [\"https://a.example\"]\naccess_log = true\n");
    let config = ok(&["--config", &path], &[]);
    assert_eq!(config.cors_origins, ["https://a.example"]);
    assert!(config.access_log);
    for bad in [
        "*",
        "app.example",
        "ftp://a.example",
        "https://a.example/path",
        "https://",
        "https://a:99999",
    ] {
        let message = err(&["--cors-origins", bad], &[]);
        assert!(
            message.contains("cors_origins (--cors-origins / CAVE_CORS_ORIGINS)"),
            "{bad}: {message}"
        );
    }
    assert!(err(&["--access-log=sometimes"], &[]).contains("access_log"));
}
