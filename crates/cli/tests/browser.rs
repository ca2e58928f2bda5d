//! A real headless Chromium (Debian's `chromium` + `chromium-driver`) driven over WebDriver
//! by `fantoccini`, for the web interface's tests.
//!
//! Each [`Browser`] runs its own `chromedriver` on a free loopback port, and each session its
//! own Chromium with a fresh profile in a temp dir (so a new session has no cookies). Both are
//! killed on drop (the whole process group, Chromiums included). The client is async: a test makes a tokio runtime and `block_on`s its steps.
//! Without `chromedriver` the tests fail under `CI=true` (the test script installs it:
//! `scripts/browser install`) and are skipped with a banner otherwise.

use crate::util::{free_port, wait_until};
use fantoccini::{Client, ClientBuilder, Locator};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long an element or a text may take to show up.
pub const UI_DEADLINE: Duration = Duration::from_secs(30);

/// A desktop window and a phone-sized one.
pub const DESKTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (390, 844);

/// `chromedriver` on a free loopback port.
pub struct Browser {
    driver: Child,
    port: u16,
}

impl Browser {
    /// Starts chromedriver, or `None` (after a SKIPPED banner) when it is not installed and
    /// this is not CI.
    pub fn start(log_dir: &Path) -> Option<Browser> {
        let Some(driver) = which("chromedriver") else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but chromedriver is missing: run scripts/browser install (./scripts/test does)");
            }
            eprintln!("\n*** SKIPPED a browser test: chromedriver is not installed. Run scripts/browser install. ***\n");
            return None;
        };
        let port = free_port();
        let log =
            std::fs::File::create(log_dir.join("chromedriver.log")).expect("chromedriver log");
        // Its own process group, so the Chromiums it starts go with it on drop, even when a
        // test panics before closing its session.
        let child = Command::new(driver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start chromedriver");
        let browser = Browser {
            driver: child,
            port,
        };
        let status = format!("http://127.0.0.1:{port}/status");
        wait_until("chromedriver to answer /status", || {
            crate::util::reqwest::blocking_get_ok(&status)
        });
        Some(browser)
    }

    /// A new browser session with its own empty profile and the given window size.
    pub async fn session(&self, profile: &Path, size: (u32, u32)) -> Session {
        std::fs::create_dir_all(profile).expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": chromium_binary(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={},{}", size.0, size.1),
                ],
                "prefs": {
                    "download.default_directory": profile.join("downloads").display().to_string(),
                    "download.prompt_for_download": false,
                },
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a new chromium session");
        client
            .set_window_size(size.0, size.1)
            .await
            .expect("window size");
        Session { client }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(group) = i32::try_from(self.driver.id()) {
            // SAFETY: killpg only sends a signal; the group is the one chromedriver leads.
            unsafe {
                libc::killpg(group, libc::SIGKILL);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One Chromium, driven.
pub struct Session {
    pub client: Client,
}

impl Session {
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|err| panic!("open {url}: {err}"));
    }

    /// The first element matching `css`, waiting for it up to [`UI_DEADLINE`].
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(UI_DEADLINE)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(err) => panic!(
                "no element {css:?} on {}: {err}; the page shows:\n{}",
                self.url().await,
                self.text().await
            ),
        }
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|err| panic!("click {css:?}: {err}"));
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|err| panic!("clear {css:?}: {err}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("type into {css:?}: {err}"));
    }

    /// The page's visible text (empty while a new page is loading).
    pub async fn text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the page's text holds `needle`.
    pub async fn wait_for_text(&self, needle: &str) {
        let start = Instant::now();
        loop {
            if self.text().await.contains(needle) {
                return;
            }
            if start.elapsed() > UI_DEADLINE {
                panic!(
                    "the page {} never showed {needle:?}; it shows:\n{}",
                    self.url().await,
                    self.text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|url| url.to_string())
            .unwrap_or_default()
    }

    /// Writes a PNG of the window to `$SYNCSTORE_SCREENSHOTS/NAME.png` when that is set.
    pub async fn screenshot(&self, name: &str) {
        let Ok(dir) = std::env::var("SYNCSTORE_SCREENSHOTS") else {
            return;
        };
        let png = self.client.screenshot().await.expect("screenshot");
        let path = PathBuf::from(dir).join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    }

    /// Runs a script in the page and returns its value.
    pub async fn script(&self, js: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client
            .execute(js, args)
            .await
            .unwrap_or_else(|err| panic!("script {js:?}: {err}"))
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// Debian's Chromium binary.
fn chromium_binary() -> String {
    which("chromium")
        .or_else(|| which("chromium-browser"))
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "/usr/bin/chromium".to_owned())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}
