//! A headless Chromium driven through chromedriver (WebDriver) with fantoccini, for the web
//! page's browser tests. It starts chromedriver on a port it picks itself (`--port=0`, read
//! back from its first lines of output), opens one headless session, and ends both when
//! dropped.
//!
//! It must fail loudly, naming the missing package, when Chromium or chromedriver is not
//! installed: these tests are `#[ignore]`d and run only when asked for.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long any single wait for the page may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).map(PathBuf::from) {
        return Some(path);
    }
    let dirs = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&dirs) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A chromedriver process and one headless Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a `width`x`height` window.
    pub async fn start(width: u32, height: u32) -> Result<Browser> {
        let chromium = find_program(
            "MYCOPOD_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        )
        .context(
            "Chromium is not installed: the browser tests need Debian's `chromium` and \
                 `chromium-driver` packages (apt-get install -y chromium chromium-driver), or \
                 MYCOPOD_CHROMIUM and MYCOPOD_CHROMEDRIVER pointing at the binaries",
        )?;
        let chromedriver = find_program("MYCOPOD_CHROMEDRIVER", &["chromedriver"]).context(
            "chromedriver is not installed: apt-get install -y chromium-driver \
             (or set MYCOPOD_CHROMEDRIVER)",
        )?;
        let mut driver = Command::new(&chromedriver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", chromedriver.display()))?;
        let stdout = driver.stdout.take().context("chromedriver has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let port: u16 = rest.trim_end_matches('.').trim().parse()?;
                    return Ok::<u16, anyhow::Error>(port);
                }
            }
            bail!("chromedriver exited before saying its port")
        })
        .await
        .context("chromedriver did not start in time")??;
        // Keep draining its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--lang=en-US",
                    format!("--window-size={width},{height}"),
                ],
            }
        });
        let caps = match caps {
            serde_json::Value::Object(map) => map,
            _ => bail!("capabilities are an object"),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            WAIT,
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .context("Chromium did not start in time")?
        .context("open a Chromium session through chromedriver")?;
        client
            .set_window_size(width, height)
            .await
            .context("size the window")?;
        // The waits run as async scripts in the page; give them more than any bound we use.
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(Duration::from_secs(300)),
                Some(Duration::from_secs(60)),
                None,
            ))
            .await
            .context("set the script timeout")?;
        Ok(Browser { client, driver })
    }

    /// Waits until an element matching `css` exists.
    pub async fn wait_for(&self, css: &str) -> Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("wait for {css}"))
    }

    /// Waits until the element matching `css` shows `text` (the page redraws on its own):
    /// a MutationObserver in the page answers as soon as it does, without polling.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Result<()> {
        self.wait_for_text_within(css, text, WAIT).await
    }

    /// [`Browser::wait_for_text`] with a bound of its own (for work that takes a while, such
    /// as a reconcile applying a run).
    pub async fn wait_for_text_within(&self, css: &str, text: &str, bound: Duration) -> Result<()> {
        let script = "const [css, text, done] = arguments; \
            const ok = () => { const el = document.querySelector(css); \
                               return Boolean(el && el.textContent.includes(text)); }; \
            if (ok()) { done(true); return; } \
            const seen = new MutationObserver(() => { if (ok()) { seen.disconnect(); done(true); } }); \
            seen.observe(document.documentElement, \
                {subtree: true, childList: true, characterData: true, attributes: true});";
        let found = tokio::time::timeout(
            bound,
            self.client
                .execute_async(script, vec![json!(css), json!(text)]),
        )
        .await;
        match found {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err).with_context(|| format!("wait for {css} to show {text:?}")),
            Err(_) => {
                let now = self
                    .client
                    .execute(
                        "const el = document.querySelector(arguments[0]); \
                         return el ? el.textContent : null;",
                        vec![json!(css)],
                    )
                    .await
                    .unwrap_or_default();
                bail!("{css} never showed {text:?}; it shows {now}")
            }
        }
    }

    /// Waits until an element matching `css` exists, up to `bound`.
    pub async fn wait_for_within(
        &self,
        css: &str,
        bound: Duration,
    ) -> Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(bound)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("wait for {css}"))
    }

    /// Whether an element matching `css` exists now.
    pub async fn exists(&self, css: &str) -> Result<bool> {
        Ok(!self
            .client
            .find_all(Locator::Css(css))
            .await
            .with_context(|| format!("look for {css}"))?
            .is_empty())
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let png = self
            .client
            .screenshot()
            .await
            .context("take a screenshot")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) -> Result<()> {
        let closed = self.client.clone().close().await;
        let _ = self.driver.kill().await;
        closed.context("close the browser session")
    }
}
