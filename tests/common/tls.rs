//! Test certificates (rcgen) and a `cave` child process serving HTTPS with them. Included with
//! `#[path = "common/tls.rs"] mod tls_support;` by the test binaries that need it, beside `mod common;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::common::child::{free_port, launch, Cave, DEADLINE};

/// A self-signed certificate for `localhost` and `127.0.0.1` and its key, in PEM.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate in DER, to compare with what a server presents.
    pub der: Vec<u8>,
    /// `notAfter`, seconds since the Unix epoch.
    pub not_after_s: u64,
}

/// A fresh pair expiring on the first of January of `year`.
pub fn pair(year: i32) -> Pair {
    let key = rcgen::KeyPair::generate().expect("key pair");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
    params.not_after = rcgen::date_time_ymd(year, 1, 1);
    let cert = params.self_signed(&key).expect("self-signed certificate");
    Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
        not_after_s: u64::try_from(params.not_after.unix_timestamp()).unwrap(),
    }
}

impl Pair {
    /// Write `cert.pem` and `key.pem` into `dir` (replacing what is there); returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// A client that trusts exactly `roots` (and ignores proxy settings).
pub fn https_client(roots: &[&Pair]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .timeout(super::common::REQUEST_TIMEOUT);
    for pair in roots {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pair.cert_pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// A `cave` process serving HTTPS with the pair at `cert` and `key`, once `/healthz` answers over HTTPS to
/// `client`; with its `https://127.0.0.1:PORT` base.
pub async fn start_https(
    data_dir: &Path,
    cert: &Path,
    key: &Path,
    extra: &[&str],
    client: &reqwest::Client,
) -> (Cave, String) {
    let mut args = vec!["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    let port = free_port();
    let mut cave = launch(data_dir, port, &args);
    let base = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = cave.child.try_wait().unwrap() {
            panic!("cave exited before it was ready ({status}):\n{}", cave.finish_log());
        }
        let probe = client
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if probe.is_ok_and(|r| r.status() == 200) {
            return (cave, base);
        }
        assert!(
            Instant::now() < deadline,
            "cave not ready over HTTPS:\n{}",
            cave.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
