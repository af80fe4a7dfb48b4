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
