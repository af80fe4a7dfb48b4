//! The browser side of the web UI tests: `chromedriver` and headless Chromium driven over WebDriver
//! (`fantoccini`), and the waits, clicks and REST checks the UI tests share (tests/ui.rs, tests/ui_console.rs).
//!
//! Each test binary uses only part of this module, so unused items are expected.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{self, TestNode};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

/// Longest wait for any one condition in the browser.
pub const WAIT: Duration = Duration::from_secs(20);
/// How often a condition is re-checked while waiting.
pub const POLL: Duration = Duration::from_millis(50);
/// The browser's window: a phone.
pub const WIDTH: u64 = 390;
pub const HEIGHT: u64 = 844;

/// A key path as it appears in a URL: each segment percent-encoded on its own.
pub fn enc(key: &str) -> String {
    key.split('/')
        .map(|s| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

pub fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

/// Write a line past the test harness's output capture, so a skip is visible in `cargo test` output.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Where `name` is on `PATH`.
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// `(chromedriver, chromium)`, or `None` (after saying why) when the test must be skipped.
pub fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let driver = find_program(&["chromedriver"]);
    let browser = find_program(&["chromium", "chromium-browser"]);
    match (driver, browser) {
        (Some(driver), Some(browser)) => Some((driver, browser)),
        (driver, browser) => {
            let missing = format!(
                "chromedriver found: {}, chromium found: {}",
                driver.is_some(),
                browser.is_some()
            );
            if std::env::var("CAVE_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("CAVE_REQUIRE_TOOLS=1 but the browser tools are missing ({missing}): install Debian packages chromium chromium-driver");
            }
            say(&format!(
                "skipped: install Debian packages chromium chromium-driver ({missing}) to run the web UI browser test"
            ));
            None
        }
    }
}

/// A `chromedriver` child process in a process group of its own; dropping it kills the group (the driver and
/// every browser process it started), so a failing test leaves nothing running.
pub struct Chromedriver {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Chromedriver {
    pub async fn start(program: &Path) -> Chromedriver {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chromedriver.log");
        let port = crate::common::child::free_port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut driver = Chromedriver {
            child,
            port,
            log,
            _dir: dir,
        };
        driver.wait_ready().await;
        driver
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn wait_ready(&mut self) {
        let client = common::client();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("chromedriver exited early ({status}): {}", self.log_tail());
            }
            let probe = client
                .get(format!("{}/status", self.url()))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if let Ok(response) = probe {
                if let Ok(status) = response.json::<Value>().await {
                    if status["value"]["ready"] == true {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "chromedriver not ready: {}", self.log_tail());
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut start = text.len().saturating_sub(4000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_string()
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group this test created for the driver.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The browser session plus the node it looks at.
pub struct Ui<'a> {
    pub c: Client,
    pub node: &'a TestNode,
    pub shots: PathBuf,
}

impl Ui<'_> {
    /// The element if it exists now.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        self.c.find(Locator::Css(css)).await.ok()
    }

    /// What the page shows that helps to understand a failed wait.
    pub async fn context(&self) -> String {
        let url = self.c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        let mut error = String::new();
        if let Some(banner) = self.try_find("#error").await {
            if banner.is_displayed().await.unwrap_or(false) {
                error = banner.text().await.unwrap_or_default();
            }
        }
        format!("url {url}, error banner {error:?}")
    }

    /// Wait until `css` matches a displayed element whose text satisfies `pred`; returns the text.
    pub async fn wait_text(&self, css: &str, pred: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Some(el) = self.try_find(css).await {
                if el.is_displayed().await.unwrap_or(false) {
                    let text = el.text().await.unwrap_or_default();
                    if pred(&text) {
                        return text;
                    }
                    last = Some(text);
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what} ({css}); last text {last:?}; {}",
                    self.context().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Wait for a displayed element.
    pub async fn wait_shown(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(el) = self.try_find(css).await {
                if el.is_displayed().await.unwrap_or(false) {
                    return el;
                }
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {css} to be shown; {}", self.context().await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Wait until no element matches `css`, or none is displayed.
    pub async fn wait_gone(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let shown = match self.try_find(css).await {
                Some(el) => el.is_displayed().await.unwrap_or(false),
                None => false,
            };
            if !shown {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {css} to go away; {}", self.context().await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Click a displayed element; if the page re-rendered it between finding and clicking (a live refresh),
    /// find it again.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.wait_shown(css).await.click().await {
                Ok(()) => return,
                Err(e) if is_stale(&e) && Instant::now() < deadline => continue,
                Err(e) => panic!("click {css}: {e}; {}", self.context().await),
            }
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.wait_shown(css).await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
        let value = el.prop("value").await.unwrap().unwrap_or_default();
        assert_eq!(value, text, "typed into {css}");
    }

    pub async fn js(&self, script: &str) -> Value {
        self.c.execute(script, vec![]).await.unwrap()
    }

    /// Wait until `script` returns something other than `null`, `false`, `0` or `""`; returns it.
    pub async fn wait_js(&self, script: &str, what: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.js(script).await;
            let falsy = matches!(&value, Value::Null | Value::Bool(false))
                || value.as_f64() == Some(0.0)
                || value.as_str() == Some("");
            if !falsy {
                return value;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what} (last {value}); {}", self.context().await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn screenshot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = self.shots.join(name);
        std::fs::write(&path, png).unwrap();
        say(&format!("screenshot: {}", path.display()));
    }

    /// The error banner's text, once it is shown.
    pub async fn wait_error(&self, pred: impl Fn(&str) -> bool, what: &str) -> String {
        self.wait_text("#error", pred, what).await
    }

    /// The page must not scroll sideways on a phone.
    pub async fn assert_fits_width(&self, at: &str) {
        let widths = self
            .js("return [document.documentElement.scrollWidth, window.innerWidth];")
            .await;
        let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(inner <= WIDTH, "the window is phone-sized: {inner}");
        assert!(scroll <= inner, "{at}: page is {scroll}px wide in a {inner}px window");
    }

    // ----- REST checks

    pub async fn api_get(&self, key_and_query: &str) -> reqwest::Response {
        self.node.client.get(self.node.kv(key_and_query)).send().await.unwrap()
    }

    pub async fn api_value(&self, key: &str) -> Option<(String, String)> {
        let response = self.api_get(&enc(key)).await;
        match response.status().as_u16() {
            404 => None,
            200 => {
                let content_type = header(&response, "content-type").unwrap_or_default();
                Some((response.text().await.unwrap(), content_type))
            }
            other => panic!("GET {key}: {other} {}", response.text().await.unwrap()),
        }
    }

    pub async fn api_put(&self, key: &str, body: impl Into<reqwest::Body>, content_type: &str) -> String {
        let response = self
            .node
            .client
            .put(self.node.kv(&enc(key)))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["version"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

pub fn is_stale(e: &fantoccini::error::CmdError) -> bool {
    e.is_stale_element_reference()
}

/// CSS attribute selector for the listing link of `path`.
pub fn listed(path: &str) -> String {
    format!(
        "#listing a[data-path=\"{}\"]",
        path.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

pub fn crumb(path: &str) -> String {
    format!("#crumbs a[data-path=\"{path}\"]")
}

/// A WebDriver session of headless Chromium with `args` added to the usual ones; downloads go to
/// `downloads`.
pub async fn session(driver: &Chromedriver, browser: &Path, args: &[&str], downloads: &Path) -> Client {
    let mut all = vec![
        "--headless=new".to_string(),
        "--no-sandbox".to_string(),
        "--disable-gpu".to_string(),
        format!("--window-size={WIDTH},{HEIGHT}"),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": browser,
            "args": all,
            "prefs": {"download.default_directory": downloads, "download.prompt_for_download": false},
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("WebDriver session: {e}; chromedriver log: {}", driver.log_tail()))
}
