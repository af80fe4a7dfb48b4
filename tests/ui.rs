//! The web UI at `/ui/`: the embedded files as HTTP serves them, and the UI itself driven in real headless
//! Chromium over WebDriver (`chromedriver` + `fantoccini`) on a phone-sized window, every step checked against
//! the REST API.
//!
//! The browser test needs the Debian packages `chromium` and `chromium-driver`. Without them it prints a
//! "skipped" line and passes, unless `CAVE_REQUIRE_TOOLS=1` (CI sets it), where a missing tool fails the test.
//! Screenshots go to `target/ui-screenshots/`. Also here, as they need the same browser: the UI over HTTPS,
//! and stored `<script>` values (HTML, SVG) opened in the browser, which must run nothing.

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/tls.rs"]
mod tls_support;

use std::path::Path;
use std::time::{Duration, Instant};

use browser::{
    browser_tools, crumb, enc, header, is_stale, listed, session, Chromedriver, Ui, HEIGHT, POLL, WAIT, WIDTH,
};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{json, Value};

const MASK: &str = "••••••";
const ENVELOPE_PREFIX: &str = "cave-sealed:v1:";

/// A key that needs every kind of per-segment escaping: space, non-ASCII, '%', '?' and '#'.
const KEY: &str = "app/my folder/grüße 50%?#";
const SECRET_KEY: &str = "app/db/password";
const SECRET: &str = "hunter2-ZQX";

// ---------------------------------------------------------------- the files over HTTP (no browser needed)

#[tokio::test]
async fn ui_files_are_served_with_types_caching_and_a_strict_policy() {
    let (_dir, node) = common::start().await;
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(common::REQUEST_TIMEOUT)
        .build()
        .unwrap();

    // The UI's own address, and the node's bare address (as the original Cave served its UI there).
    for path in ["/ui", "/"] {
        let response = no_redirects.get(node.url(path)).send().await.unwrap();
        assert!(response.status().is_redirection(), "{path}: {}", response.status());
        assert_eq!(header(&response, "location").as_deref(), Some("/ui/"), "{path}");
    }

    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/index.html", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/nodes.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let response = node.client.get(node.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some(content_type),
            "{path}"
        );
        assert_eq!(
            header(&response, "cache-control").as_deref(),
            Some("no-cache"),
            "{path}"
        );
        assert_eq!(header(&response, "x-content-type-options").as_deref(), Some("nosniff"));
        let csp = header(&response, "content-security-policy").expect("a CSP");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        let etag = header(&response, "etag").expect("an ETag");
        assert!(!response.bytes().await.unwrap().is_empty());

        let again = node
            .client
            .get(node.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path} revalidates");
    }

    let index = node.text("/ui/").await;
    assert!(index.contains("name=\"viewport\""), "phone viewport meta");
    assert!(index.contains("<script src=\"app.js\""));

    for path in ["/ui/nope.js", "/ui/..%2Fsrc%2Fmain.rs", "/ui/app.js/x"] {
        let response = node.client.get(node.url(path)).send().await.unwrap();
        common::expect_error(response, 404, "not_found", "").await;
    }
    node.stop().await;
}

/// The shipped files keep the rules the CSP and the XSS policy rely on: no inline script or style, no
/// HTML parsing of strings in the script.
#[test]
fn ui_sources_have_no_inline_code_and_no_html_injection_sinks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let html = std::fs::read_to_string(root.join("index.html")).unwrap();
    let lower = html.to_ascii_lowercase();
    assert_eq!(
        lower.matches("<script").count(),
        lower.matches("<script src=").count(),
        "inline script"
    );
    assert!(!lower.contains("<style"), "inline style element");
    assert!(!lower.contains(" style="), "inline style attribute");
    assert!(!lower.contains("javascript:"), "javascript: URL");
    for handler in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        " onchange=",
        " oninput=",
    ] {
        assert!(!lower.contains(handler), "inline event handler {handler}");
    }
    let js = std::fs::read_to_string(root.join("app.js")).unwrap()
        + &std::fs::read_to_string(root.join("nodes.js")).unwrap();
    for sink in [
        ".innerHTML",
        ".outerHTML",
        "insertAdjacentHTML(",
        "document.write",
        "eval(",
        "new Function",
        "srcdoc",
    ] {
        assert!(!js.contains(sink), "the UI's script uses {sink}");
    }
}

// ---------------------------------------------------------------- the UI in headless Chromium

#[tokio::test]
async fn web_ui_in_headless_chromium() {
    let Some((driver_program, browser_program)) = browser_tools() else {
        return;
    };
    let (_dir, node) = common::start().await;
    let driver = Chromedriver::start(&driver_program).await;

    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": browser_program,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", format!("--window-size={WIDTH},{HEIGHT}")],
            // Headless Chromium keeps a window at least 500px wide: emulate the phone's viewport as well.
            "mobileEmulation": {"deviceMetrics": {"width": WIDTH, "height": HEIGHT, "pixelRatio": 2.0}},
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("WebDriver session: {e}; chromedriver log: {}", driver.log_tail()));

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let ui = Ui {
        c: client.clone(),
        node: &node,
        shots,
    };
    // Run the steps, then close the browser session whatever happened, then report.
    let outcome = std::panic::AssertUnwindSafe(steps(&ui)).catch_unwind().await;
    let closed = client.close().await;
    drop(driver);
    node.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    closed.expect("close the WebDriver session");
}

async fn steps(ui: &Ui<'_>) {
    let node = ui.node;
    // Some data to browse: JSON, binary, a nested folder.
    ui.api_put(
        "app/config.json",
        r#"{"debug":false,"ports":[80,443]}"#,
        "application/json",
    )
    .await;
    ui.api_put(
        "app/logo.bin",
        vec![0u8, 1, 0xfe, 0xff, b'A'],
        "application/octet-stream",
    )
    .await;
    ui.api_put("app/db/host", "db.internal", "text/plain").await;
    ui.api_put("readme", "top-level key", "text/plain").await;

    // ----- the page loads (through the /ui redirect) and the watch stream connects
    ui.c.goto(&node.url("/ui")).await.unwrap();
    assert_eq!(ui.c.title().await.unwrap(), "Cave");
    ui.wait_text("#live", |t| t == "live", "the live indicator").await;
    ui.wait_shown(&listed("app/")).await;
    ui.wait_shown(&listed("readme")).await;
    ui.assert_fits_width("root listing").await;

    // ----- create a key through the form; the API has it
    ui.click("#btn-new").await;
    ui.fill("#f-path", KEY).await;
    ui.fill("#f-value", "hello world").await;
    ui.click("#f-save").await;
    ui.wait_text("#notice", |t| t.contains("Created"), "the created notice")
        .await;
    assert_eq!(
        ui.api_value(KEY).await,
        Some(("hello world".into(), "text/plain; charset=utf-8".into())),
        "the API returns the key created in the UI"
    );
    ui.wait_text("#value-key", |t| t == KEY, "the new key's name").await;
    ui.wait_text("#value", |t| t == "hello world", "the new key's value")
        .await;
    let version = ui.wait_text("#value-version", |t| t.contains('-'), "a version").await;
    assert_eq!(
        header(&ui.api_get(&enc(KEY)).await, "x-cave-version").as_deref(),
        Some(version.as_str())
    );

    // ----- it is in the tree: up through the breadcrumbs, down through the listing
    ui.click(&crumb("app/")).await;
    ui.wait_gone("#value-view").await;
    ui.wait_shown(&listed("app/my folder/")).await;
    ui.wait_shown(&listed("app/db/")).await;
    ui.wait_shown(&listed("app/config.json")).await;
    ui.screenshot("ui-tree.png").await;
    ui.click(&crumb("")).await; // root
    ui.wait_shown(&listed("readme")).await;
    ui.click(&listed("app/")).await;
    ui.click(&listed("app/my folder/")).await;
    ui.click(&listed(KEY)).await;
    ui.wait_text("#value", |t| t == "hello world", "the value, opened from the tree")
        .await;
    let crumbs = ui
        .wait_text("#crumbs", |t| t.contains("my folder"), "the breadcrumbs")
        .await;
    assert!(crumbs.starts_with("root"), "{crumbs}");

    // ----- edit it: the API sees the new value; JSON is pretty-printed
    ui.click("#btn-edit").await;
    let current = ui.wait_shown("#f-value").await.prop("value").await.unwrap();
    assert_eq!(
        current.as_deref(),
        Some("hello world"),
        "the editor starts from the value"
    );
    let json_value = r#"{"greeting":"hi","n":[1,2]}"#;
    ui.fill("#f-value", json_value).await;
    ui.fill("#f-type", "application/json").await;
    ui.click("#f-save").await;
    ui.wait_text("#notice", |t| t.contains("Saved"), "the saved notice")
        .await;
    assert_eq!(
        ui.api_value(KEY).await,
        Some((json_value.into(), "application/json".into()))
    );
    let pretty = ui
        .wait_text("#value", |t| t.contains("\n  \"greeting\": \"hi\""), "pretty JSON")
        .await;
    assert!(pretty.contains("\"n\": [\n"), "{pretty}");
    ui.wait_text("#value-format", |t| t.contains("JSON"), "the JSON format label")
        .await;

    // ----- a concurrent change makes the edit a visible 412 conflict, and nothing is overwritten
    ui.click("#btn-edit").await;
    ui.fill("#f-value", "from the UI").await;
    ui.api_put(KEY, "from the API", "text/plain").await;
    ui.click("#f-save").await;
    let conflict = ui
        .wait_error(|t| t.contains("Conflict") && t.contains("412"), "the conflict banner")
        .await;
    assert!(conflict.contains("changed by someone else"), "{conflict}");
    assert_eq!(ui.api_value(KEY).await.unwrap().0, "from the API");
    ui.click("#f-cancel").await;
    ui.wait_gone("#error").await;
    ui.wait_text("#value", |t| t == "from the API", "the value changed by the API")
        .await;

    // ----- live: changes written through the API show up without a reload
    ui.js("window.__sameDocument = 42; return null;").await;
    ui.api_put("app/my folder/live key", "new", "text/plain").await;
    ui.wait_shown(&listed("app/my folder/live key")).await;
    ui.api_put(KEY, "written while the page is open", "text/plain").await;
    ui.wait_text("#value", |t| t == "written while the page is open", "the live value")
        .await;
    assert_eq!(ui.js("return window.__sameDocument;").await, json!(42), "no reload");

    // ----- delete through the UI (after a confirmation); the API answers 404
    ui.click("#btn-delete").await;
    ui.wait_text("#confirm-delete", |t| t.contains(KEY), "the confirmation")
        .await;
    ui.click("#btn-delete-yes").await;
    ui.wait_text("#notice", |t| t.contains("Deleted"), "the deleted notice")
        .await;
    assert_eq!(ui.api_value(KEY).await, None, "the API no longer has the deleted key");
    ui.wait_gone(&listed(KEY)).await;
    ui.wait_shown(&listed("app/my folder/live key")).await;
    ui.wait_gone("#value-view").await;

    // ----- a secret: sealed in the API, masked in the UI until "Reveal"
    ui.click("#btn-new").await;
    ui.fill("#f-path", SECRET_KEY).await;
    ui.fill("#f-value", SECRET).await;
    ui.click("#f-secret").await;
    ui.click("#f-save").await;
    ui.wait_text("#notice", |t| t.contains("Created"), "the created notice")
        .await;
    let sealed = ui.api_get(SECRET_KEY).await;
    assert_eq!(sealed.status(), 200);
    assert_eq!(header(&sealed, "x-cave-secret").as_deref(), Some("sealed"));
    let envelope = sealed.text().await.unwrap();
    assert!(envelope.starts_with(ENVELOPE_PREFIX), "{envelope}");
    assert!(!envelope.contains(SECRET));
    let opened = ui.api_get(&format!("{SECRET_KEY}?secret=true")).await;
    assert_eq!(opened.text().await.unwrap(), SECRET);
    ui.wait_text("#value-key", |t| t == SECRET_KEY, "the secret's name")
        .await;
    ui.wait_text("#value", |t| t == MASK, "the masked secret").await;
    assert!(
        !ui.c.source().await.unwrap().contains(SECRET),
        "the plaintext is nowhere in the page before Reveal"
    );
    ui.click("#btn-reveal").await;
    ui.wait_text("#value", |t| t == SECRET, "the revealed secret").await;
    ui.wait_shown("#btn-hide").await;
    ui.screenshot("ui-secret.png").await;
    ui.assert_fits_width("secret view").await;
    ui.click("#btn-hide").await;
    ui.wait_text("#value", |t| t == MASK, "the secret masked again").await;

    // ----- binary values as a hex dump; markup in keys and values is text, never HTML
    ui.c.goto(&format!("{}#/{}", node.url("/ui/"), enc("app/logo.bin")))
        .await
        .unwrap();
    let hex = ui
        .wait_text("#value", |t| t.contains("00 01 fe ff 41"), "the hex dump")
        .await;
    assert!(hex.contains("|....A|"), "{hex}");
    ui.wait_text("#value-format", |t| t.contains("hex"), "the hex label")
        .await;
    ui.assert_fits_width("hex dump").await;
    let evil_key = "app/<img src=x onerror=window.__xssKey=1>";
    let evil_value = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";
    ui.api_put(evil_key, evil_value, "text/html").await;
    ui.click(&crumb("app/")).await;
    ui.click(&listed(evil_key)).await;
    ui.wait_text("#value", |t| t == evil_value, "markup shown as text")
        .await;
    ui.wait_text("#value-key", |t| t == evil_key, "a key with markup as text")
        .await;
    assert_eq!(
        ui.js("return [typeof window.__xss, typeof window.__xssKey, document.querySelectorAll('main img').length];")
            .await,
        json!(["undefined", "undefined", 0]),
        "no markup from data was interpreted"
    );

    // ----- API errors are shown in the banner
    ui.click("#btn-new").await;
    ui.fill("#f-path", "a//b").await;
    ui.fill("#f-value", "x").await;
    ui.click("#f-save").await;
    let error = ui
        .wait_error(|t| t.contains("empty segment"), "the API's invalid-key error")
        .await;
    assert!(error.contains("400") && error.contains("invalid_input"), "{error}");
    assert_eq!(ui.api_get("a/b").await.status(), 404, "nothing was written");
    ui.click("#error-close").await;
    ui.wait_gone("#error").await;
    // The browser would silently resolve "..": the UI refuses such a key itself.
    ui.fill("#f-path", "app/../readme").await;
    ui.click("#f-save").await;
    ui.wait_error(|t| t.contains("\"..\" segment"), "the dot-segment error")
        .await;
    assert_eq!(ui.api_value("readme").await.unwrap().0, "top-level key");
    ui.click("#f-cancel").await;
    // A reserved key: 403 from the API.
    ui.click("#btn-new").await;
    ui.fill("#f-path", "_system/x").await;
    ui.click("#f-save").await;
    ui.wait_error(|t| t.contains("403") && t.contains("reserved"), "the forbidden error")
        .await;
    ui.click("#f-cancel").await;

    // ----- the node list: this node alone (from `/api/v1/cluster/nodes` with status "self", or, in a build
    // without that route, from `/api/v1/system/info` with status "up")
    let info = node.get_json("/api/v1/system/info").await;
    let node_id = info["node_id"].as_str().unwrap();
    ui.click("#tab-nodes").await;
    ui.wait_text(
        ".node h3",
        |t| t.contains(node_id) && t.contains("(this node)"),
        "this node in the node list",
    )
    .await;
    ui.wait_text(".node .status", |t| t == "up" || t == "self", "the node's status")
        .await;
    let card = ui
        .wait_text(
            ".node",
            |t| t.contains(&info["http_addr"].as_str().unwrap().to_string()),
            "addresses",
        )
        .await;
    assert!(card.contains(info["grpc_addr"].as_str().unwrap()), "{card}");
    ui.screenshot("ui-nodes.png").await;
    ui.assert_fits_width("node list").await;

    // A cluster's node list: its shape is rendered, and its errors are shown. The page's fetch answers that
    // one route from here (ages and skews as `GET /api/v1/cluster/nodes` reports them).
    let cluster = json!([
        {"id": "aaaa000000000001", "http_addr": "10.0.0.1:2001", "grpc_addr": "10.0.0.1:2000",
         "status": "self", "last_seen_ms": 0, "clock_skew_ms": 0},
        {"id": "bbbb000000000002", "http_addr": "10.0.0.2:2001", "grpc_addr": "10.0.0.2:2000",
         "status": "suspect", "last_seen_ms": 20_000, "clock_skew_ms": -12,
         "clock_offset_ms": 30_000, "clock_skewed": true},
        {"id": "cccc000000000003", "http_addr": "10.0.0.3:2001", "grpc_addr": "10.0.0.3:2000",
         "status": "dead", "last_seen_ms": 600_000, "clock_skew_ms": null},
    ]);
    ui.c.execute(
        "let [status, body] = arguments; const real = window.fetch;
         window.fetch = (url, opts) => String(url).startsWith('/api/v1/cluster/nodes')
           ? Promise.resolve(new Response(JSON.stringify(body), {status, headers: {'Content-Type': 'application/json'}}))
           : real(url, opts);
         window.__setNodes = (s, b) => { status = s; body = b; };
         return null;",
        vec![json!(200), cluster],
    )
    .await
    .unwrap();
    ui.click("#btn-nodes-refresh").await;
    ui.wait_text("#nodes", |t| t.contains("bbbb000000000002"), "the cluster's nodes")
        .await;
    let cards = ui.c.find_all(Locator::Css(".node")).await.unwrap();
    assert_eq!(cards.len(), 3);
    let texts = [
        cards[0].text().await.unwrap(),
        cards[1].text().await.unwrap(),
        cards[2].text().await.unwrap(),
    ];
    assert!(
        texts[0].contains("(this node)") && texts[0].contains("10.0.0.1:2000"),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].contains("suspect")
            && texts[1].contains("20 s ago")
            && texts[1].contains("-12 ms")
            && texts[1].contains("30000 ms skewed"),
        "{}",
        texts[1]
    );
    assert!(
        texts[2].contains("dead") && texts[2].contains("10 min ago") && texts[2].contains("unknown"),
        "{}",
        texts[2]
    );
    let classes = ui
        .js("return [...document.querySelectorAll('.node .status')].map(e => e.className);")
        .await;
    assert_eq!(
        classes,
        json!(["status up", "status suspect", "status down clock-skewed", "status down"])
    );
    ui.screenshot("ui-cluster.png").await;
    ui.js("window.__setNodes(503, {error: 'membership is starting', code: 'unavailable'}); return null;")
        .await;
    ui.click("#btn-nodes-refresh").await;
    let error = ui
        .wait_error(|t| t.contains("membership is starting"), "the node list's error")
        .await;
    assert!(error.contains("503") && error.contains("unavailable"), "{error}");
    ui.click("#error-close").await;
    // A build without the cluster route (404): this node from `/api/v1/system/info`.
    ui.js("window.__setNodes(404, {error: 'no such route', code: 'not_found'}); return null;")
        .await;
    ui.click("#btn-nodes-refresh").await;
    let card = ui
        .wait_text(
            ".node",
            |t| t.contains(node_id) && t.contains("Uptime"),
            "this node from its info",
        )
        .await;
    assert!(
        card.contains("(this node)") && card.contains(info["http_addr"].as_str().unwrap()),
        "{card}"
    );
    ui.wait_text(".node .status", |t| t == "up", "the local node's status")
        .await;
    assert!(
        !ui.try_find("#error").await.unwrap().is_displayed().await.unwrap(),
        "a 404 there is no error"
    );
    ui.click("#tab-keys").await;
    ui.wait_shown(&listed("app/")).await;
}

// ---------------------------------------------------------------- values served safely, the UI over TLS

/// A script that, if it ever runs on Cave's origin, writes `marker/{name}`.
fn payload(name: &str) -> String {
    format!("fetch('/api/v1/kv/marker/{name}', {{method: 'PUT', body: 'the stored script ran'}})")
}

#[tokio::test]
async fn stored_script_values_run_nothing_in_headless_chromium() {
    let Some((driver_program, browser_program)) = browser_tools() else {
        return;
    };
    let (_dir, node) = common::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let driver = Chromedriver::start(&driver_program).await;
    let client = session(&driver, &browser_program, &[], downloads.path()).await;
    let ui = Ui {
        c: client.clone(),
        node: &node,
        shots: Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots"),
    };
    let outcome = std::panic::AssertUnwindSafe(stored_scripts_steps(&ui))
        .catch_unwind()
        .await;
    let closed = client.close().await;
    drop(driver);
    node.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    closed.expect("close the WebDriver session");
}

async fn stored_scripts_steps(ui: &Ui<'_>) {
    let html = format!(
        "<!doctype html><html><body><h1>hi</h1><script>{}</script></body></html>",
        payload("html")
    );
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"><script>{}</script></svg>",
        payload("svg")
    );
    let xhtml = format!(
        "<html xmlns=\"http://www.w3.org/1999/xhtml\"><body><script>{}</script></body></html>",
        payload("xhtml")
    );
    let values = [
        ("evil/page", html.as_str(), "text/html; charset=utf-8", "html"),
        ("evil/image", svg.as_str(), "image/svg+xml", "svg"),
        ("evil/xhtml", xhtml.as_str(), "application/xhtml+xml", "xhtml"),
    ];
    for (key, body, content_type, _) in values {
        ui.api_put(key, body.to_string(), content_type).await;
        // The headers that keep it inert, on GET and HEAD alike; the stored type is served unchanged.
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let response = ui
                .node
                .client
                .request(method.clone(), ui.node.kv(key))
                .send()
                .await
                .unwrap();
            assert_eq!(
                header(&response, "content-type").as_deref(),
                Some(content_type),
                "{method} {key}"
            );
            assert_eq!(header(&response, "x-content-type-options").as_deref(), Some("nosniff"));
            let csp = header(&response, "content-security-policy").unwrap_or_default();
            assert!(
                csp.contains("sandbox") && csp.contains("default-src 'none'"),
                "{method} {key}: {csp}"
            );
            assert_eq!(header(&response, "content-disposition").as_deref(), Some("attachment"));
        }
    }
    let export = ui.node.client.get(ui.node.url("/api/v1/export")).send().await.unwrap();
    assert_eq!(header(&export, "x-content-type-options").as_deref(), Some("nosniff"));
    assert!(header(&export, "content-security-policy")
        .unwrap_or_default()
        .contains("sandbox"));

    // The marker mechanism works: the same script, run on Cave's origin (in the UI's page), writes its key.
    ui.c.goto(&ui.node.url("/ui/")).await.unwrap();
    let status =
        ui.c.execute_async(
            &format!(
                "const done = arguments[arguments.length - 1]; {}.then(r => done(r.status), e => done(String(e)));",
                payload("control")
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(200), "the control script could not write its marker");
    assert!(ui.api_value("marker/control").await.is_some());

    // Each stored value opened in the browser, as a page: nothing of it runs.
    for (key, _, _, _) in values {
        // A download ends the navigation without a page: the outcome of goto itself does not matter.
        let _ = ui.c.goto(&ui.node.kv(key)).await;
    }
    // Then a page that does run script, so that the browser has had time to run whatever it would have.
    ui.c.goto(&ui.node.url("/ui/")).await.unwrap();
    ui.wait_text("#live", |t| t == "live", "the UI after the stored values")
        .await;
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        for (_, _, _, marker) in values {
            assert_eq!(
                ui.api_value(&format!("marker/{marker}")).await,
                None,
                "the script stored as {marker} ran on Cave's origin"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn web_ui_over_tls_in_headless_chromium() {
    let Some((driver_program, browser_program)) = browser_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pair = tls_support::pair(2040);
    let (cert, key) = pair.write(dir.path());
    let api = tls_support::https_client(&[&pair]);
    let (cave, base) = tls_support::start_https(&dir.path().join("data"), &cert, &key, &[], &api).await;
    let put = api
        .put(format!("{base}/api/v1/kv/tls/hello"))
        .body("over https")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    let driver = Chromedriver::start(&driver_program).await;
    // The certificate is self-signed: the browser is told to accept it, as a user accepts it once.
    let client = session(&driver, &browser_program, &["--ignore-certificate-errors"], dir.path()).await;
    let outcome = std::panic::AssertUnwindSafe(tls_steps(&client, &base, &api))
        .catch_unwind()
        .await;
    let closed = client.close().await;
    drop(driver);
    cave.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    closed.expect("close the WebDriver session");
}

/// With access control on: the login screen, browsing with a narrow token (its write actions greyed out),
/// revealing a secret it may open, and signing out. The token stays in session storage and out of URLs.
#[tokio::test]
async fn web_ui_signs_in_with_a_token_and_out_again() {
    let Some((driver_program, browser_program)) = browser_tools() else {
        return;
    };
    let (_dir, node) = common::start_with(|c| c.acl = Some(true)).await;
    let json_put = |path: &str, body: &str| {
        node.client
            .request(
                reqwest::Method::from_bytes(if path.ends_with("tokens") { b"POST" } else { b"PUT" }).unwrap(),
                node.url(path),
            )
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let policy = json_put(
        "/api/v1/acl/policies/ui",
        r#"{"rules":[{"prefix":"app/","allow":["read","list","secret"]}]}"#,
    )
    .await
    .unwrap();
    assert_eq!(policy.status(), 200);
    let made: Value = json_put("/api/v1/acl/tokens", r#"{"policies":["ui"]}"#)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = made["token"].as_str().unwrap().to_string();
    node.put("app/visible", "hello").await;
    node.put_secret(SECRET_KEY, SECRET).await;
    node.put("private/hidden", "not for the ui token").await;

    let driver = Chromedriver::start(&driver_program).await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"binary": browser_program, "args": ["--headless=new", "--no-sandbox", "--disable-gpu"]}),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("WebDriver session: {e}; chromedriver log: {}", driver.log_tail()));
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let ui = Ui {
        c: client.clone(),
        node: &node,
        shots,
    };
    let outcome = std::panic::AssertUnwindSafe(async {
        ui.c.goto(&node.url("/ui/#/app/")).await.unwrap();
        ui.wait_shown("#view-login").await;
        ui.wait_gone("#view-keys").await;
        ui.fill("#login-token", "cave_not-a-real-token").await;
        ui.click("#login-submit").await;
        ui.wait_text("#login-note", |t| t.contains("refused"), "a wrong token refused")
            .await;
        ui.fill("#login-token", &token).await;
        ui.click("#login-submit").await;
        ui.wait_shown(&listed("app/visible")).await;
        ui.wait_text(
            "#whoami",
            |t| t == made["accessor"].as_str().unwrap(),
            "the accessor shown",
        )
        .await;
        assert!(
            !ui.try_find("#open-banner").await.unwrap().is_displayed().await.unwrap(),
            "no open-access banner"
        );
        // No write capability: the button to make a key is greyed out.
        let disabled = ui.js("return document.getElementById('btn-new').disabled;").await;
        assert_eq!(disabled, json!(true));
        // What the token may do here is shown, what it may not struck out; a folder delete is greyed out,
        // and the cluster tab says the member list needs admin.
        let caps = ui
            .js("return [...document.querySelectorAll('#perms .cap')].map((e) => [e.textContent, e.classList.contains('no')]);")
            .await;
        assert_eq!(
            caps,
            json!([["list", false], ["read", false], ["write", true], ["delete", true], ["secret", false]])
        );
        let greyed = ui
            .js("return [document.getElementById('btn-delete-folder').disabled, document.getElementById('tab-nodes').classList.contains('disabled')];")
            .await;
        assert_eq!(greyed, json!([true, true]));
        ui.c.goto(&node.url(&format!("/ui/#/{}", enc(SECRET_KEY))))
            .await
            .unwrap();
        ui.wait_text("#value", |t| t == MASK, "the masked secret").await;
        let edit_disabled = ui.js("return document.getElementById('btn-edit').disabled;").await;
        assert_eq!(edit_disabled, json!(true), "no write: Edit is greyed out");
        ui.click("#btn-reveal").await;
        ui.wait_text("#value", |t| t == SECRET, "the revealed secret").await;
        ui.screenshot("ui-acl-secret.png").await;
        // The token is in session storage only, and in no URL the page has.
        let stored = ui
            .js("return [sessionStorage.getItem('cave.token'), localStorage.length, document.cookie, location.href];")
            .await;
        assert_eq!(stored[0], json!(token));
        assert_eq!((stored[1].clone(), stored[2].clone()), (json!(0), json!("")));
        assert!(!stored[3].as_str().unwrap().contains(&token));
        let urls = ui
            .js("return performance.getEntriesByType('resource').map((e) => e.name).join(' ');")
            .await;
        assert!(!urls.as_str().unwrap().contains(&token), "{urls}");
        ui.click("#btn-signout").await;
        ui.wait_shown("#view-login").await;
        let after = ui.js("return sessionStorage.getItem('cave.token');").await;
        assert_eq!(after, Value::Null, "signing out forgets the token");
    })
    .catch_unwind()
    .await;
    let closed = client.close().await;
    drop(driver);
    node.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    closed.expect("close the WebDriver session");
}

/// The text of the displayed element `css` once `pred` holds for it.
async fn wait_for_text(c: &Client, css: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await {
            if el.is_displayed().await.unwrap_or(false) {
                let text = el.text().await.unwrap_or_default();
                if pred(&text) {
                    return text;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {css} at {:?}",
            c.current_url().await
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn click_when_shown(c: &Client, css: &str) {
    wait_for_text(c, css, |_| true).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match c.find(Locator::Css(css)).await.unwrap().click().await {
            Ok(()) => return,
            Err(e) if is_stale(&e) && Instant::now() < deadline => continue,
            Err(e) => panic!("click {css}: {e}"),
        }
    }
}

async fn tls_steps(c: &Client, base: &str, api: &reqwest::Client) {
    c.goto(&format!("{base}/ui/")).await.unwrap();
    assert!(c.current_url().await.unwrap().as_str().starts_with("https://"));
    assert_eq!(c.title().await.unwrap(), "Cave");
    // The watch stream (Server-Sent Events) connects over TLS too.
    wait_for_text(c, "#live", |t| t == "live").await;
    click_when_shown(c, &listed("tls/")).await;
    click_when_shown(c, &listed("tls/hello")).await;
    wait_for_text(c, "#value", |t| t == "over https").await;

    // A key created in the browser, over HTTPS, is in the API.
    click_when_shown(c, "#btn-new").await;
    for (css, text) in [("#f-path", "tls/from-browser"), ("#f-value", "typed over TLS")] {
        let el = c.find(Locator::Css(css)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }
    click_when_shown(c, "#f-save").await;
    wait_for_text(c, "#notice", |t| t.contains("Created")).await;
    let got = api
        .get(format!("{base}/api/v1/kv/tls/from-browser"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.text().await.unwrap(), "typed over TLS");
}
