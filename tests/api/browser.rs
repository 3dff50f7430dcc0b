//! The browser tests' harness: Debian's Chromium, headless, driven over WebDriver by
//! fantoccini through Debian's chromedriver, against the real server on 127.0.0.1:0.
//!
//! Each test starts its own chromedriver; each [`Browser`] is a fresh Chromium with its own
//! profile (its own cookies), so two browsers are two users. Beyond the page, a browser
//! gives its network log (Chrome's performance log: every response, every EventSource
//! message, and response bodies through the DevTools protocol), its console (CSP violations
//! show there), axe-core's verdict on the page, and screenshots (`target/screenshots/`).
//!
//! Without chromium and chromedriver the browser tests skip with a loud note; in CI (`CI`
//! set) they fail instead (`scripts/test` installs both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WAIT: Duration = Duration::from_secs(15);

/// One chromedriver, ended with the test.
pub struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// A running chromedriver, or `None` (outside CI only) when Chromium is not installed.
    pub async fn start() -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            if std::env::var_os("CI").is_some() {
                panic!("CI must run the browser tests, but {CHROMIUM} or {CHROMEDRIVER} is missing (scripts/test installs them)");
            }
            eprintln!(
                "SKIPPED browser test: {CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver, or run scripts/test)."
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer on {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Self { child, url })
    }

    /// A new browser (its own profile) pointed at the server at `base`.
    pub async fn browser(&self, base: &str) -> Browser {
        self.browser_sized(base, 1280, 900).await
    }

    pub async fn browser_sized(&self, base: &str, width: u32, height: u32) -> Browser {
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run", "--disable-extensions",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "performance": "ALL", "browser": "ALL" }));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session");
        Browser { client, base: base.to_string() }
    }
}

/// A WebDriver command fantoccini has no method for: Chrome's logs and DevTools calls.
#[derive(Debug)]
pub struct Raw {
    path: &'static str,
    body: Value,
}

impl Raw {
    /// A DevTools protocol call (`Network.clearBrowserCache`, …).
    pub fn cdp(cmd: &str, params: Value) -> Self {
        Self { path: "goog/cdp/execute", body: json!({ "cmd": cmd, "params": params }) }
    }
}

impl WebDriverCompatibleCommand for Raw {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/{}", session.unwrap_or_default(), self.path))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}

/// One response the page received, with its body when Chrome still holds it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub url: String,
    pub kind: String,
    pub status: u64,
    pub body: String,
}

pub struct Browser {
    pub client: Client,
    pub base: String,
}

impl Browser {
    pub async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.expect("navigates");
    }

    pub async fn wait(&self, css: &str) -> fantoccini::elements::Element {
        self.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.wait(css).await;
        field.clear().await.expect("clears");
        field.send_keys(text).await.expect("types");
    }

    pub async fn click(&self, css: &str) {
        self.wait(css).await.click().await.unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    pub async fn select(&self, css: &str, value: &str) {
        let select = self.wait(css).await;
        select.select_by_value(value).await.unwrap_or_else(|e| panic!("cannot select {value} in {css}: {e}"));
    }

    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `condition` (a JavaScript expression) is truthy, and returns its value.
    pub async fn until(&self, condition: &str, what: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.eval(&format!("return ({condition});")).await;
            if !matches!(value, Value::Null | Value::Bool(false)) && value != json!(0) && value != json!("") {
                return value;
            }
            assert!(Instant::now() < deadline, "never: {what} ({condition})");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's text.
    pub async fn text(&self) -> String {
        self.eval("return document.body.innerText;").await.as_str().unwrap_or_default().to_string()
    }

    pub async fn until_text(&self, needle: &str) {
        let escaped = serde_json::to_string(needle).expect("json");
        self.until(&format!("document.body.innerText.includes({escaped})"), &format!("the page shows {needle:?}")).await;
    }

    /// Signs in through the sign-in screen and waits for the app behind it.
    pub async fn sign_in(&self, email: &str, password: &str) {
        self.goto("/login").await;
        self.fill("#login-email", email).await;
        self.fill("#login-password", password).await;
        self.click("form button[type=submit]").await;
        self.wait("header.top").await;
    }

    /// Everything Chrome logged since the last call: (method, params) of each DevTools event.
    pub async fn performance_log(&self) -> Vec<(String, Value)> {
        let entries = self.client.issue_cmd(Raw { path: "se/log", body: json!({ "type": "performance" }) }).await.expect("performance log");
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
            .filter_map(|m| Some((m["message"]["method"].as_str()?.to_string(), m["message"]["params"].clone())))
            .collect()
    }

    /// The responses in the network log since the last call, with their bodies, and the data of
    /// every EventSource message.
    pub async fn network(&self) -> (Vec<Exchange>, Vec<String>) {
        let mut exchanges = Vec::new();
        let mut messages = Vec::new();
        for (method, params) in self.performance_log().await {
            match method.as_str() {
                "Network.responseReceived" => {
                    let id = params["requestId"].as_str().unwrap_or_default().to_string();
                    let body = self
                        .client
                        .issue_cmd(Raw::cdp("Network.getResponseBody", json!({ "requestId": id })))
                        .await
                        .ok()
                        .and_then(|v| v["body"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    exchanges.push(Exchange {
                        url: params["response"]["url"].as_str().unwrap_or_default().to_string(),
                        kind: params["type"].as_str().unwrap_or_default().to_string(),
                        status: params["response"]["status"].as_u64().unwrap_or_default(),
                        body,
                    });
                }
                "Network.eventSourceMessageReceived" => messages.push(params["data"].as_str().unwrap_or_default().to_string()),
                _ => {}
            }
        }
        (exchanges, messages)
    }

    /// What each response since the last call cost on the wire: (url, resource type, bytes).
    pub async fn transfer_sizes(&self) -> Vec<(String, String, u64)> {
        let mut requests = std::collections::HashMap::new();
        let mut sizes = Vec::new();
        for (method, params) in self.performance_log().await {
            let id = params["requestId"].as_str().unwrap_or_default().to_string();
            match method.as_str() {
                "Network.responseReceived" => {
                    requests.insert(
                        id,
                        (
                            params["response"]["url"].as_str().unwrap_or_default().to_string(),
                            params["type"].as_str().unwrap_or_default().to_string(),
                        ),
                    );
                }
                "Network.loadingFinished" => {
                    if let Some((url, kind)) = requests.get(&id) {
                        sizes.push((url.clone(), kind.clone(), params["encodedDataLength"].as_f64().unwrap_or(0.0) as u64));
                    }
                }
                _ => {}
            }
        }
        sizes
    }

    /// The console's errors since the last call (a CSP violation or a script error is one;
    /// Chrome's line for each 4xx answer is not: the app asks and handles those on purpose).
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self.client.issue_cmd(Raw { path: "se/log", body: json!({ "type": "browser" }) }).await.expect("browser log");
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .filter(|m| !m.contains("Failed to load resource: the server responded with a status of 4"))
            .collect()
    }

    /// Light or dark, as the system would ask for it.
    pub async fn color_scheme(&self, scheme: &str) {
        self.client
            .issue_cmd(Raw::cdp("Emulation.setEmulatedMedia", json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] })))
            .await
            .expect("emulates the colour scheme");
    }

    /// axe-core on the page as it is: panics on any serious or critical violation.
    pub async fn axe(&self, screen: &str) {
        let source = std::fs::read_to_string(axe_path()).expect("axe-core is installed in console/node_modules (scripts/test does it)");
        self.client.execute(&format!("{source}\nreturn true;"), vec![]).await.expect("axe-core loads");
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] }).then(r => done(r.violations
                   .filter(v => v.impact === 'serious' || v.impact === 'critical')
                   .map(v => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ')) }))),
                   e => done([{ id: 'axe-error', help: String(e) }]));",
                vec![],
            )
            .await
            .expect("axe-core runs");
        assert_eq!(found, json!([]), "axe-core on {screen}: serious or critical violations");
    }

    /// Saves a PNG of the viewport as `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Whether the page scrolls sideways at its current width.
    pub async fn scrolls_sideways(&self) -> bool {
        self.eval("return document.documentElement.scrollWidth > window.innerWidth;").await == json!(true)
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

fn axe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("console/node_modules/axe-core/axe.min.js")
}
