//! Unit tests of what the configuration shows: `--help`, the example file, the effective configuration's log
//! line, the redacted form, and the address and scheme `cave healthcheck` probes.

use super::*;

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
    let example = include_str!("../../../cave.example.toml");
    let mut uncommented = String::new();
    for key in KEYS {
        let prefix = format!("# {key} = ");
        let line = example.lines().find(|l| l.starts_with(&prefix));
        let line = line.unwrap_or_else(|| panic!("cave.example.toml lacks a `{prefix}...` line"));
        // The keys whose default is "none" show an example value instead.
        if ![
            "cluster_key",
            "cluster_key_file",
            "advertise_addr",
            "http_max_connections",
            "tls_cert",
            "tls_key",
            "acl",
            "acl_root_token",
        ]
        .contains(key)
        {
            uncommented.push_str(&line[2..]);
            uncommented.push('\n');
        }
    }
    let (_dir, path) = file(&uncommented);
    assert_eq!(ok(&["--config", &path], &[]), Config::default());
}

#[test]
fn healthcheck_speaks_tls_when_the_node_does_or_when_told() {
    let probe =
        |args: &[&str], vars: &[(&str, &str)]| match parse(["cave", "healthcheck"].iter().chain(args), &env(vars)) {
            Ok(Command::Healthcheck(probe)) => probe,
            other => panic!("{other:?}"),
        };
    assert!(!probe(&[], &[]).tls);
    assert!(probe(&["--tls"], &[]).tls);
    assert!(probe(&[], &[("CAVE_TLS_CERT", "/c.pem"), ("CAVE_TLS_KEY", "/k.pem")]).tls);
    let (_dir, path) = file("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n");
    assert!(probe(&["--config", &path], &[]).tls);
}

#[test]
fn the_effective_configuration_is_logged_as_one_field_per_setting() {
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Fields(Arc<Mutex<Vec<(String, String)>>>);
    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0
                .lock()
                .unwrap()
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Fields {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            event.record(&mut self.clone());
        }
    }

    let config = ok(
        &[
            "--cluster-key",
            KEY,
            "--peers",
            "a:1,b:2",
            "--cors-origins",
            "https://app.example",
        ],
        &[],
    );
    let fields = Fields::default();
    let subscriber = tracing_subscriber::registry().with(fields.clone());
    tracing::subscriber::with_default(subscriber, || config.log_effective());
    let logged = fields.0.lock().unwrap().clone();
    let value = |key: &str| logged.iter().find(|(name, _)| name == key).map(|(_, v)| v.clone());
    for key in KEYS {
        assert!(value(key).is_some(), "{key} is not logged: {logged:?}");
    }
    assert_eq!(
        value("peers").as_deref(),
        Some("a:1,b:2"),
        "a list is plain text, not an escaped string"
    );
    assert_eq!(value("cors_origins").as_deref(), Some("https://app.example"));
    assert_eq!(value("mdns").as_deref(), Some("false"));
    assert_eq!(value("max_clock_drift").as_deref(), Some("1s"));
    assert_eq!(value("cluster_key").as_deref(), Some("<redacted>"));
    assert_eq!(value("acl_root_token").as_deref(), Some("none"));
    assert!(
        logged.iter().all(|(_, v)| !v.contains(KEY)),
        "the key leaked: {logged:?}"
    );
}
