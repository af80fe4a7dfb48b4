//! HTTPS for the REST API (`--tls-cert`, `--tls-key`), on real `cave` processes: served with a self-signed
//! certificate (ALPN h2 and http/1.1), nothing in clear to plain HTTP, the certificate swapped on SIGHUP while
//! an open keep-alive connection stays usable, a stalled handshake closed after the header timeout, a bad
//! pair refused at start with a message naming the file, and `cave healthcheck` over TLS.

mod common;
#[path = "common/tls.rs"]
mod tls_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::child::{free_port, launch, DEADLINE};
use tls_support::{https_client, pair, start_https, Pair};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

fn addr(base: &str) -> SocketAddr {
    base.trim_start_matches("https://").parse().unwrap()
}

/// A TLS connection to `addr` trusting `roots`, offering `alpn`.
async fn connect(addr: SocketAddr, roots: &[&Pair], alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut store = RootCertStore::empty();
    for pair in roots {
        store.add(CertificateDer::from(pair.der.clone())).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// The certificate the server presented on `stream`.
fn presented(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// `GET path` as HTTP/1.1 on an open (keep-alive) connection: status and body.
async fn get_on(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(common::REQUEST_TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "connection closed before the answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string(),
    )
}

/// The value of the sample `series` (name and labels exactly as exported) in `/api/v1/perf/metrics`.
async fn metric(client: &reqwest::Client, base: &str, series: &str) -> f64 {
    let text = client
        .get(format!("{base}/api/v1/perf/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Poll `condition` until it holds, failing after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hangup(pid: libc::pid_t) {
    // SAFETY: kill(2) on the pid of a child this test owns and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

/// `cave healthcheck ARGS` with exactly `env`: exit status and stdout + stderr.
fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cave"))
        .env_clear()
        .envs(env.iter().copied())
        .arg("healthcheck")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn https_serves_with_alpn_and_plain_http_gets_nothing_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let a = pair(2040);
    let (cert, key) = a.write(dir.path());
    let client = https_client(&[&a]);
    let (cave, base) = start_https(&dir.path().join("data"), &cert, &key, &[], &client).await;

    let put = client
        .put(format!("{base}/api/v1/kv/app/greeting"))
        .body("hello over TLS")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let got = client
        .get(format!("{base}/api/v1/kv/app/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.text().await.unwrap(), "hello over TLS");

    // ALPN: h2 when offered, else HTTP/1.1, which then serves.
    let h2 = connect(addr(&base), &[&a], &[b"h2", b"http/1.1"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h1 = connect(addr(&base), &[&a], &[b"http/1.1"]).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        get_on(&mut h1, "/api/v1/kv/app/greeting").await,
        (200, "hello over TLS".to_string())
    );

    // Plain HTTP to the HTTPS port: the request fails, and not one byte of HTTP comes back.
    let plain = common::client()
        .get(format!("http://{}/healthz", addr(&base)))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    let mut tcp = TcpStream::connect(addr(&base)).await.unwrap();
    tcp.write_all(b"GET /api/v1/kv/app/greeting HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(common::REQUEST_TIMEOUT, tcp.read_to_end(&mut answer)).await;
    assert!(
        !common::contains_bytes(&answer, b"HTTP/"),
        "answered in clear: {answer:?}"
    );
    assert!(
        !common::contains_bytes(&answer, b"hello"),
        "the value in clear: {answer:?}"
    );
    assert!(metric(&client, &base, "cave_tls_handshake_failures_total").await >= 2.0);
    let expiry = metric(&client, &base, "cave_tls_certificate_expiry_timestamp_seconds").await;
    assert_eq!(expiry, a.not_after_s as f64);
    assert!(cave.log_text().contains("serving HTTPS"), "{}", cave.log_text());

    // `cave healthcheck` speaks TLS when the node's settings name a certificate, or with --tls.
    let target = addr(&base).to_string();
    let node_env = [
        ("CAVE_TLS_CERT", cert.to_str().unwrap()),
        ("CAVE_TLS_KEY", key.to_str().unwrap()),
    ];
    let (status, out) = healthcheck(&["--http-addr", &target], &node_env);
    assert_eq!(status, Some(0), "{out}");
    assert!(
        out.contains(&format!("healthy: https://{target}/healthz answered 200 OK")),
        "{out}"
    );
    let (status, out) = healthcheck(&["--http-addr", &target, "--tls"], &[]);
    assert_eq!(status, Some(0), "{out}");
    let (status, out) = healthcheck(&["--http-addr", &target], &[]);
    assert_eq!(status, Some(1), "plain HTTP to a TLS node must be unhealthy: {out}");
    cave.stop().await;
}

#[tokio::test]
async fn sighup_swaps_the_certificate_while_an_open_connection_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pair(2040), pair(2041));
    let (cert, key) = a.write(dir.path());
    let client = https_client(&[&a, &b]);
    let (cave, base) = start_https(&dir.path().join("data"), &cert, &key, &[], &client).await;
    let served = || async { presented(&connect(addr(&base), &[&a, &b], &[b"http/1.1"]).await) };

    let mut kept = connect(addr(&base), &[&a, &b], &[b"http/1.1"]).await;
    assert_eq!(presented(&kept), a.der);
    assert_eq!(get_on(&mut kept, "/healthz").await.0, 200);

    b.write(dir.path());
    hangup(cave.pid());
    eventually("the new certificate to be served", || async { served().await == b.der }).await;
    // The connection opened before the swap still serves requests, on its old session.
    assert_eq!(get_on(&mut kept, "/healthz").await.0, 200);
    assert_eq!(presented(&kept), a.der);
    assert_eq!(
        metric(&client, &base, "cave_tls_reloads_total{result=\"ok\"}").await,
        1.0
    );
    let expiry = metric(&client, &base, "cave_tls_certificate_expiry_timestamp_seconds").await;
    assert_eq!(expiry, b.not_after_s as f64);

    // A bad new file is refused: logged, counted, and the previous certificate kept.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    hangup(cave.pid());
    eventually("the failed reload to be logged", || async {
        cave.log_text().contains("cannot reload the TLS certificate")
    })
    .await;
    assert_eq!(
        metric(&client, &base, "cave_tls_reloads_total{result=\"failed\"}").await,
        1.0
    );
    assert_eq!(served().await, b.der);
    assert_eq!(get_on(&mut kept, "/healthz").await.0, 200);
    drop(kept);
    cave.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let a = pair(2040);
    let (cert, key) = a.write(dir.path());
    let client = https_client(&[&a]);
    let timeouts = ["--http-header-timeout", "300ms", "--http-idle-timeout", "60s"];
    let (cave, base) = start_https(&dir.path().join("data"), &cert, &key, &timeouts, &client).await;

    // One client sends nothing, the other the first bytes of a ClientHello and then nothing.
    let mut closes = Vec::new();
    for opening in [&b""[..], &b"\x16\x03\x01\x00"[..]] {
        let started = Instant::now();
        let mut tcp = TcpStream::connect(addr(&base)).await.unwrap();
        tcp.write_all(opening).await.unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte)).await;
        let closed = matches!(read, Ok(Ok(0)) | Ok(Err(_)));
        assert!(closed, "a stalled handshake was not closed: {read:?}");
        closes.push(started.elapsed());
    }
    for took in &closes {
        assert!(
            *took >= Duration::from_millis(250) && *took < Duration::from_secs(5),
            "{closes:?}"
        );
    }
    let series = "cave_http_connection_timeouts_total{phase=\"handshake\"}";
    assert_eq!(metric(&client, &base, series).await, 2.0);
    cave.stop().await;
}

#[tokio::test]
async fn a_bad_certificate_or_key_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pair(2040), pair(2040));
    let files = dir.path();
    let write = |name: &str, text: &str| {
        let path = files.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (cert_a, key_a, key_b) = (
        write("a.crt", &a.cert_pem),
        write("a.key", &a.key_pem),
        write("b.key", &b.key_pem),
    );
    let garbage = write("garbage.pem", "this is not PEM\n");
    let secret_key = write("secret.key", "KEYMATERIAL-7f3a9 not a key\n");
    let missing = files.join("missing.pem").to_str().unwrap().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["--tls-cert", &missing, "--tls-key", &key_a], "cannot read tls_cert"),
        (
            &["--tls-cert", &garbage, "--tls-key", &key_a],
            "holds no PEM certificate",
        ),
        (
            &["--tls-cert", &cert_a, "--tls-key", &secret_key],
            "holds no PEM private key",
        ),
        (
            &["--tls-cert", &cert_a, "--tls-key", &key_b],
            "is not the private key of tls_cert",
        ),
        (
            &["--tls-cert", &cert_a],
            "HTTPS needs both the certificate and its private key",
        ),
    ];
    for (i, (args, needle)) in cases.iter().enumerate() {
        let mut cave = launch(&files.join(format!("data{i}")), free_port(), args);
        let (status, log) = cave.wait_exit().await;
        assert_eq!(status.code(), Some(2), "{args:?}: {log}");
        assert!(log.contains(needle), "{args:?} should say {needle:?}: {log}");
        assert!(!log.contains("KEYMATERIAL"), "the key file's content is quoted: {log}");
        assert!(!log.contains("panicked"), "{log}");
    }
    assert!(
        !Path::new(&files.join("data0")).join("cave.db").exists(),
        "refused before opening the data"
    );
}
