//! The `cave` binary as an operator meets it: help, keygen, start-up errors and a clean shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;

/// Every flag `cave --help` must document.
const FLAGS: &[&str] = &[
    "--config",
    "--mode",
    "--http-addr",
    "--grpc-addr",
    "--advertise-addr",
    "--data-dir",
    "--peers",
    "--mdns",
    "--discovery-window",
    "--cluster-key",
    "--durability",
    "--max-value-bytes",
    "--max-request-bytes",
    "--anti-entropy-interval",
    "--max-clock-drift",
    "--tombstone-ttl",
    "--log-level",
];

/// The binary with an empty environment, so that the tester's own `CAVE_*` variables cannot leak in.
fn cave() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cave"));
    command.env_clear().stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().expect("cave runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

#[test]
fn help_lists_every_parameter_with_a_default() {
    let (output, stdout, _) = run(cave().arg("--help"));
    assert!(output.status.success());
    for flag in FLAGS {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(&format!("{flag} ")));
        let line = line.unwrap_or_else(|| panic!("{flag} missing from --help:\n{stdout}"));
        let described = stdout.split(line).nth(1).unwrap().split("\n  -").next().unwrap();
        assert!(
            format!("{line}{described}").contains("[default: "),
            "{flag} has no default in --help:\n{stdout}"
        );
    }
    assert!(stdout.contains("keygen"));
    let (output, stdout, _) = run(cave().arg("--version"));
    assert!(output.status.success());
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn keygen_prints_a_fresh_32_byte_base64_key() {
    let key = |_| {
        let (output, stdout, stderr) = run(cave().arg("keygen"));
        assert!(output.status.success(), "{stderr}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(stdout.trim())
            .expect("base64");
        assert_eq!(bytes.len(), 32);
        stdout
    };
    let keys: Vec<String> = (0..2).map(key).collect();
    assert_ne!(keys[0], keys[1]);
}

#[test]
fn bad_values_exit_2_naming_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("cave.toml");
    std::fs::write(&config_file, "http_adr = \"127.0.0.1:2001\"\n").unwrap();
    let config_file = config_file.to_str().unwrap();
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().unwrap();

    // (flags, environment, what stderr must name)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--http-addr", "nope"], &[], "http-addr"),
        (&["--durability", "sometimes"], &[], "durability"),
        (&["--max-value-bytes", "0"], &[], "max_value_bytes"),
        (&["--cluster-key", "short"], &[], "cluster_key"),
        (&["--peers", "a:99999"], &[], "peers"),
        (&["--log-level", "loud"], &[], "log_level"),
        (&["--anti-entropy-interval", "10"], &[], "anti_entropy_interval"),
        (&["--max-clock-drift", "1x"], &[], "max_clock_drift"),
        (&[], &[("CAVE_TOMBSTONE_TTL", "0d")], "tombstone_ttl"),
        (&["--discovery-window", "soon"], &[], "discovery_window"),
        (&["--mdns=maybe"], &[], "mdns"),
        (&["--advertise-addr", "0.0.0.0:2000"], &[], "advertise_addr"),
        (&[], &[("CAVE_DURABILITY", "bad")], "CAVE_DURABILITY"),
        (&["--config", config_file], &[], "http_adr"),
        (&["--config", "/nonexistent/cave.toml"], &[], "config"),
        (&["--no-such-flag"], &[], "--no-such-flag"),
    ];
    for (args, vars, name) in cases {
        let (output, _, stderr) = run(cave()
            .args(*args)
            .args(["--data-dir", data_dir])
            .envs(vars.iter().copied()));
        assert_eq!(output.status.code(), Some(2), "{args:?} {vars:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?} {vars:?}: {stderr}");
        assert!(
            stderr.contains(name),
            "{args:?} {vars:?}: {stderr:?} should name {name}"
        );
        assert!(!stderr.contains("panicked"), "{args:?} {vars:?}: {stderr}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "a rejected configuration must not touch the data directory"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_shuts_down_cleanly_with_status_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = cave()
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--log-level",
            "info",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The binary logs "starting cave" once its signal handlers are installed.
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("starting cave")) {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => log.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("cave did not start:\n{}", log.join("\n"));
            }
        }
    }
    // SAFETY: plain kill(2) on the pid of a child we own and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("cave did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    log.extend(lines.try_iter());
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));
    assert!(!log.iter().any(|l| l.contains("panicked")), "{}", log.join("\n"));
}

/// `cave healthcheck` exits 0 only when `/healthz` answers 200: against a live node (found by flag or by
/// `CAVE_HTTP_ADDR`, with `0.0.0.0` probed on loopback), and 1 against a closed port, an error status or
/// a server that never answers.
#[test]
fn healthcheck_exits_0_for_a_live_node_and_1_otherwise() {
    use std::io::{Read, Write};

    // Nothing listens on a port just released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (output, _, stderr) = run(cave().args(["healthcheck", "--http-addr", &closed.to_string()]));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("unhealthy: ") && stderr.contains("/healthz"),
        "{stderr}"
    );

    // A server that answers 503, and one that accepts and then says nothing.
    let answering = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let answering_addr = answering.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in answering.incoming().map_while(Result::ok) {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let (output, _, stderr) = run(cave().args(["healthcheck", "--http-addr", &answering_addr.to_string()]));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("503"), "{stderr}");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let (output, _, stderr) = run(cave().args(["healthcheck", "--timeout", "300ms", "--http-addr", &silent_addr]));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "the timeout is honoured");
    drop(silent);

    // A live node.
    let dir = tempfile::tempdir().unwrap();
    let mut child = cave()
        .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
        .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("cave did not start serving HTTP:\n{}", log.join("\n"));
        };
        if line.contains("serving HTTP") {
            let addr = line
                .split("addr=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next());
            break addr.expect("the log names the address").to_string();
        }
        log.push(line);
    };
    let port = addr.rsplit(':').next().unwrap();
    let by_flag = run(cave().args(["healthcheck", "--http-addr", &addr]));
    let by_env = run(cave()
        .arg("healthcheck")
        .env("CAVE_HTTP_ADDR", format!("0.0.0.0:{port}")));
    let _ = child.kill();
    let _ = child.wait();
    for (output, stdout, stderr) in [by_flag, by_env] {
        assert_eq!(output.status.code(), Some(0), "{stdout} {stderr}");
        assert!(
            stdout.starts_with("healthy: ") && stdout.contains(&format!("127.0.0.1:{port}")) && stdout.contains("200"),
            "{stdout}"
        );
    }

    // A bad command line is a usage error, like for every other command.
    let (output, _, stderr) = run(cave().args(["healthcheck", "--http-addr", "nope"]));
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--http-addr"), "{stderr}");
}
