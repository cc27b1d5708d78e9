//! A headless Chromium driven over WebDriver for the dashboard's tests
//! (Debian's `chromium` and `chromedriver`; scripts/test.sh installs them),
//! and a page of another origin to attack the relay from.

use crate::support::DEADLINE;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// Waits in the browser end here: a page update arrives through the stream
/// or a refresh of at most 15 s, so this bound holds on a busy machine.
pub const BROWSER_WAIT: Duration = Duration::from_secs(40);

/// chromedriver on a port it picks itself, and the browser session.
pub struct Browser {
    pub client: Client,
    _driver: Child,
    _profile: TempDir,
}

/// chromedriver on a port it picks itself, and that port. Once in a CI
/// run it exited without listening (with `--port=0` it binds IPv4, then
/// the same port on IPv6, while other tests open listeners beside it), so
/// a start that ends early is tried again on a port picked afresh, up to
/// three times; what each failed try printed goes into the panic.
async fn start_driver() -> (Child, u16) {
    let mut tries = Vec::new();
    for _ in 0..3 {
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (scripts/test.sh installs it)");
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        let port = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("on port ").nth(1) {
                    if let Ok(p) = rest.trim_end_matches('.').trim().parse::<u16>() {
                        if line.contains("successfully") {
                            return Some(p);
                        }
                    }
                }
                seen.push(line);
            }
            None
        })
        .await
        .expect("chromedriver starts");
        if let Some(port) = port {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (driver, port);
        }
        tries.push(seen.join(" | "));
    }
    panic!("chromedriver ended before it listened, three times: {tries:?}");
}

impl Browser {
    pub async fn start() -> Self {
        // fantoccini's TLS stack brings a second crypto provider; name one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (driver, port) = start_driver().await;
        let profile = TempDir::new().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,860",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": args}),
        );
        let client = ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(BROWSER_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("waiting for {css}: {e}"))
    }

    /// Click, finding the element again if a refresh of the page replaced
    /// it between the find and the click.
    pub async fn click(&self, css: &str) {
        for _ in 0..5 {
            if self.wait_for(css).await.click().await.is_ok() {
                return;
            }
        }
        panic!("could not click {css}");
    }

    pub async fn text_of(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.unwrap()
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }
}

/// A page on another port of the same host that submits a form to the
/// relay: same site (the cookie goes along), different origin.
pub async fn attacker_page(target: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let page = format!(
        "<!doctype html><form id=f method=post action=\"{target}\"></form><script>document.getElementById('f').submit()</script>"
    );
    let app = axum::Router::new().fallback(move || {
        let page = page.clone();
        async move { axum::response::Html(page) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
