//! The web interface in a real headless Chromium against a real `syncstore serve`, with a real
//! sync daemon on a folder: what a browser does reaches the folder, what the folder does shows
//! up in the open page, and the share links, CSRF checks and revocations hold.
//!
//! Screenshots of the main pages go to `$SYNCSTORE_SCREENSHOTS` when it is set:
//! `SYNCSTORE_SCREENSHOTS=$PWD/docs/screenshots cargo test -p syncstore --test tests web::`
//! renews the ones in docs/ (shown in the README).

use crate::browser::{Browser, Session, DESKTOP, PHONE};
use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const PASSWORD: &str = "correct horse battery";

/// `syncstore user passwd NAME` with the password on stdin.
fn set_password(server: &Server, user: &str, password: &str) {
    let out = server.admin_with_input(&["user", "passwd", user], &format!("{password}\n"));
    assert!(
        out.status.success(),
        "user passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs blocking test helpers (which have a runtime of their own) off the browser's runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(f).join().expect("helper thread"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn sign_in(session: &Session, base: &str, user: &str, password: &str) {
    session.goto(&format!("{base}/login")).await;
    session.fill("#user", user).await;
    session.fill("#password", password).await;
    session.click("form.login button[type=submit]").await;
    session.find("header nav").await;
}

fn is_read_only(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o222 == 0)
}

/// A user's edit of a read-only file: they make it writable first, as an editor would ask to.
fn force_write(path: &Path, text: &str) {
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    perms.set_mode(perms.mode() | 0o200);
    std::fs::set_permissions(path, perms).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The server's content hash of `path` as the device with `token` sees it.
fn server_hash(server: &Server, token: &str, path: &str) -> Option<String> {
    off_runtime(|| server.entry(token, path)).and_then(|entry| entry.hash)
}

/// A one-chunk file's content hash: BLAKE3 of its bytes.
fn hash_of(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// `fetch(url)` inside the page, with its cookies: `[status, text]`.
async fn fetch(session: &Session, url: &str, range: Option<&str>) -> (u64, String) {
    let value = session
        .script(
            "const [url, range] = arguments;
             const headers = range ? { Range: range } : {};
             return fetch(url, { headers }).then(async r => [r.status, await r.text()]);",
            vec![
                url.into(),
                range.map_or(serde_json::Value::Null, Into::into),
            ],
        )
        .await;
    (
        value[0].as_u64().expect("status"),
        value[1].as_str().expect("text").to_owned(),
    )
}

/// A confirm() the page asks before acting, accepted as a person would.
async fn accept_confirm(session: &Session) {
    let deadline = std::time::Instant::now() + crate::browser::UI_DEADLINE;
    while session.client.accept_alert().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no confirmation dialog appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[test]
fn browser_uploads_edits_renames_deletes_restores_and_locks_with_a_running_client() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let Some(browser) = Browser::start(&logs) else {
        return;
    };
    let server = Server::start(&logs, &tmp.path().join("data"));
    let token = server.token("me", "laptop");
    set_password(&server, "me", PASSWORD);
    let folder = tmp.path().join("laptop");
    std::fs::create_dir_all(&folder).unwrap();
    let _client = start_client("laptop", &logs, &folder, &server.url(), &token);
    let base = server.url();
    let file = folder.join("report.txt");
    let renamed = folder.join("renamed.txt");

    runtime().block_on(async {
        let s = browser.session(&tmp.path().join("profile"), DESKTOP).await;
        // Signed out, a page sends you to the login form.
        s.goto(&format!("{base}/files")).await;
        s.find("form.login").await;
        assert!(s.url().await.contains("/login?next="), "{}", s.url().await);
        s.screenshot("login").await;
        // A wrong password is refused with a message.
        s.fill("#user", "me").await;
        s.fill("#password", "not the password").await;
        s.click("form.login button[type=submit]").await;
        s.wait_for_text("Wrong user name or password").await;
        sign_in(&s, &base, "me", PASSWORD).await;
        s.goto(&format!("{base}/files")).await;
        s.wait_for_text("Nothing here yet").await;

        // Upload with the file picker: it reaches the running client's folder.
        let upload = tmp.path().join("report.txt");
        std::fs::write(&upload, "first version\n").unwrap();
        s.find("#files")
            .await
            .send_keys(upload.to_str().unwrap())
            .await
            .unwrap();
        s.click("#upload button[type=submit]").await;
        wait_until("the upload reaches the laptop's folder", || {
            read(&file).as_deref() == Some("first version\n")
        });
        s.wait_for_text("report.txt").await;

        // An edit on the client shows up in the open page, without a reload.
        s.script("window.stillTheSamePage = 'yes';", vec![]).await;
        let second = "second version ".repeat(200);
        write(&file, &second);
        s.wait_for_text("2.9 KiB").await;
        assert_eq!(
            s.script("return window.stillTheSamePage;", vec![]).await,
            "yes",
            "the page was reloaded instead of updated in place"
        );
        s.screenshot("files-desktop").await;

        // Downloaded back identical, and in part with a Range request.
        let (status, body) = fetch(&s, "/raw?path=report.txt&download=1", None).await;
        assert_eq!((status, body.as_str()), (200, second.as_str()));
        let (status, body) = fetch(&s, "/raw?path=report.txt", Some("bytes=7-13")).await;
        assert_eq!((status, body.as_str()), (206, &second[7..14]));

        // Rename on the file's page.
        s.goto(&format!("{base}/file?path=report.txt")).await;
        s.fill("#move-to", "renamed.txt").await;
        s.click("form.move button[type=submit]").await;
        s.wait_for_text("Versions").await;
        wait_until("the rename reaches the laptop's folder", || {
            read(&renamed).as_deref() == Some(second.as_str()) && !file.exists()
        });
        s.screenshot("file-desktop").await;

        // Restore the first version from the file's history (the oldest restore button).
        let buttons = s
            .client
            .find_all(fantoccini::Locator::Css("button.restore-version"))
            .await
            .unwrap();
        assert!(
            buttons.len() >= 2,
            "expected two older versions, found {}",
            buttons.len()
        );
        buttons.last().unwrap().clone().click().await.unwrap();
        s.wait_for_text("change(s) made").await;
        wait_until("the old version reaches the laptop's folder", || {
            read(&renamed).as_deref() == Some("first version\n")
        });

        // Lock from the browser: the client's copy turns read-only, and its edit is held back.
        s.goto(&format!("{base}/file?path=renamed.txt")).await;
        s.click("#lock").await;
        s.wait_for_text("Locked by web").await;
        wait_until("the laptop's copy is read-only under the web lock", || {
            is_read_only(&renamed)
        });
        force_write(&renamed, "edited on the laptop under the lock");
        wait_until("the laptop reports its edit blocked by the lock", || {
            let out = run(&["status", "-v", folder.to_str().unwrap()]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.contains("blocked") && l.contains("locked by web"))
        });
        assert_eq!(
            server_hash(&server, &token, "renamed.txt"),
            Some(hash_of("first version\n")),
            "a locked file changed on the server"
        );
        // Unlocked, the client's edit goes up.
        s.click("#unlock").await;
        s.wait_for_text("Not locked").await;
        wait_until(
            "the laptop's edit reaches the server after the unlock",
            || {
                server_hash(&server, &token, "renamed.txt")
                    == Some(hash_of("edited on the laptop under the lock"))
            },
        );

        // Delete to the trash, and restore from it.
        s.goto(&format!("{base}/file?path=renamed.txt")).await;
        s.click("#delete").await;
        accept_confirm(&s).await;
        s.wait_for_text("Nothing here yet").await;
        wait_until("the deletion reaches the laptop's folder", || {
            !renamed.exists()
        });
        s.goto(&format!("{base}/trash")).await;
        s.wait_for_text("renamed.txt").await;
        s.screenshot("trash-desktop").await;
        s.click("button.restore-deleted").await;
        s.wait_for_text("change(s) made").await;
        wait_until("the restored file reaches the laptop's folder", || {
            read(&renamed).as_deref() == Some("edited on the laptop under the lock")
        });
        s.close().await;
    });
}

#[test]
fn browser_devices_share_links_and_csrf() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let Some(browser) = Browser::start(&logs) else {
        return;
    };
    let server = Server::start(&logs, &tmp.path().join("data"));
    let laptop = server.token("me", "laptop");
    let phone = server.token("me", "phone");
    set_password(&server, "me", PASSWORD);
    let base = server.url();
    let whoami = |token: &str| {
        off_runtime(|| reqwest::send("GET", &format!("{base}/api/v1/whoami"), token, None).0)
    };

    runtime().block_on(async {
        let s = browser.session(&tmp.path().join("owner"), DESKTOP).await;
        sign_in(&s, &base, "me", PASSWORD).await;

        // A form post without the session's CSRF token is refused, and changes nothing.
        for body in ["dir=&name=evil", "dir=&name=evil&csrf=0123"] {
            let status = s
                .script(
                    "return fetch('/mkdir', { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: arguments[0] }).then(r => r.status);",
                    vec![body.into()],
                )
                .await;
            assert_eq!(status, 403, "{body}");
        }

        // A folder with a text file, and a picture, through the page.
        s.goto(&format!("{base}/files")).await;
        s.fill("#new-folder", "docs").await;
        s.click("form.mkdir button[type=submit]").await;
        s.wait_for_text("Nothing here yet").await;
        let notes = tmp.path().join("notes.txt");
        std::fs::write(&notes, "meeting at noon\n").unwrap();
        s.find("#files").await.send_keys(notes.to_str().unwrap()).await.unwrap();
        s.click("#upload button[type=submit]").await;
        s.wait_for_text("Uploaded notes.txt").await;
        let picture = tmp.path().join("screen.png");
        std::fs::write(&picture, s.client.screenshot().await.unwrap()).unwrap();
        s.goto(&format!("{base}/files")).await;
        s.find("#files").await.send_keys(picture.to_str().unwrap()).await.unwrap();
        s.click("#upload button[type=submit]").await;
        s.wait_for_text("Uploaded screen.png").await;
        assert!(off_runtime(|| server.entry(&laptop, "docs/notes.txt")).is_some());

        // Files dropped on the page upload too.
        s.goto(&format!("{base}/files")).await;
        s.script(
            "const drop = new DataTransfer();
             drop.items.add(new File(['dropped on the page'], 'dropped.txt'));
             document.dispatchEvent(new DragEvent('drop', { dataTransfer: drop, bubbles: true }));",
            vec![],
        )
        .await;
        s.wait_for_text("Uploaded dropped.txt").await;
        s.wait_for_text("dropped.txt").await;
        let dropped = off_runtime(|| server.entry(&laptop, "dropped.txt"));
        assert_eq!(
            dropped.and_then(|entry| entry.hash),
            Some(blake3::hash(b"dropped on the page").to_hex().to_string())
        );

        // Every control of the main pages has a name a screen reader can say.
        for page in ["/files", "/files?path=docs", "/file?path=docs/notes.txt", "/trash", "/devices", "/shares"] {
            s.goto(&format!("{base}{page}")).await;
            s.find("main h1").await;
            let unlabelled = s
                .script(
                    "return [...document.querySelectorAll('input:not([type=hidden]), button, select, textarea, a')]
                        .filter(e => !((e.labels && e.labels.length) || e.getAttribute('aria-label') || e.textContent.trim()))
                        .map(e => e.outerHTML);",
                    vec![],
                )
                .await;
            assert_eq!(unlabelled, serde_json::json!([]), "unlabelled controls on {page}");
        }

        // The devices page lists the devices; revoking the phone refuses its token.
        s.goto(&format!("{base}/devices")).await;
        s.wait_for_text("phone").await;
        s.screenshot("devices-desktop").await;
        assert_eq!(whoami(&phone), 200);
        s.click("button[aria-label='Revoke phone']").await;
        accept_confirm(&s).await;
        s.wait_for_text("is revoked").await;
        assert_eq!(whoami(&phone), 401, "a revoked device's token still works");
        assert_eq!(whoami(&laptop), 200);

        // A password-protected link to the folder.
        s.goto(&format!("{base}/files?path=docs")).await;
        s.fill("#share-password", "link password").await;
        s.click("#share-create").await;
        let url = s
            .find("input.share-url")
            .await
            .prop("value")
            .await
            .unwrap()
            .expect("the link");
        assert!(url.starts_with(&format!("{base}/s/")), "{url}");
        s.screenshot("shares-desktop").await;

        // A fresh browser, no cookies: a wrong password is refused, the right one opens it.
        let guest = browser.session(&tmp.path().join("guest"), DESKTOP).await;
        guest.goto(&url).await;
        guest.wait_for_text("This link is protected").await;
        guest.fill("#share-password", "wrong password").await;
        guest.click("form button[type=submit]").await;
        guest.wait_for_text("Wrong password").await;
        guest.fill("#share-password", "link password").await;
        guest.click("form button[type=submit]").await;
        guest.wait_for_text("notes.txt").await;
        guest.screenshot("share-link").await;
        let page = guest.text().await;
        assert!(!page.contains("screen.png"), "the link shows what is outside the folder:\n{page}");
        assert!(
            guest.client.find(fantoccini::Locator::Css("header nav")).await.is_err(),
            "a guest sees the owner's navigation"
        );
        let share_path = url.trim_start_matches(&base).to_owned();
        let (status, body) = fetch(&guest, &format!("{share_path}/raw?path=notes.txt&download=1"), None).await;
        assert_eq!((status, body.as_str()), (200, "meeting at noon\n"));
        // Nothing outside the shared folder is reachable through it.
        for outside in ["../screen.png", "%2E%2E/screen.png", "/screen.png", "docs/../../screen.png"] {
            let (status, body) = fetch(&guest, &format!("{share_path}/raw?path={outside}"), None).await;
            assert!((400..500).contains(&status), "{outside}: {status} {body}");
            assert!(!body.starts_with("\u{89}PNG"), "{outside} served the picture");
        }
        // The owner's pages need the owner's session: a guest is sent to the sign-in form.
        let (status, body) = fetch(&guest, "/raw?path=screen.png&download=1", None).await;
        assert_eq!(status, 200);
        assert!(body.contains("Sign in") && !body.starts_with("\u{89}PNG"), "{body}");

        // Revoked, the link is refused.
        s.goto(&format!("{base}/shares")).await;
        s.click("button.share-revoke").await;
        s.wait_for_text("revoked").await;
        let (status, body) = fetch(&guest, &share_path, None).await;
        assert_eq!(status, 410, "{body}");
        assert!(body.contains("revoked"), "{body}");

        // A link without a password opens at once in a fresh browser, and serves the picture.
        s.goto(&format!("{base}/file?path=screen.png")).await;
        s.find("figure.preview img").await;
        s.click("#share-create").await;
        let url = s.find("input.share-url").await.prop("value").await.unwrap().expect("the link");
        let stranger = browser.session(&tmp.path().join("stranger"), DESKTOP).await;
        stranger.goto(&url).await;
        stranger.wait_for_text("screen.png").await;
        let picture_path = url.trim_start_matches(&base).to_owned();
        let size = stranger
            .script(
                "return fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => b.byteLength);",
                vec![format!("{picture_path}/raw?download=1").into()],
            )
            .await;
        assert_eq!(size.as_u64(), Some(std::fs::metadata(&picture).unwrap().len()));

        // A link with an expiry: a day already over is refused; one through tomorrow works
        // until its expiry passes (moved into the past in the server's database, since
        // waiting out a day is not a test), then it is refused, and listed as expired.
        let set_expiry = |date: &str| {
            let js = "document.querySelector('#share-expires').value = arguments[0];";
            s.script(js, vec![date.into()])
        };
        s.goto(&format!("{base}/file?path=docs/notes.txt")).await;
        let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d");
        set_expiry(&yesterday.to_string()).await;
        s.click("#share-create").await;
        s.wait_for_text("the expiry date is in the past").await;
        s.goto(&format!("{base}/file?path=docs/notes.txt")).await;
        let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%d");
        set_expiry(&tomorrow.to_string()).await;
        s.click("#share-create").await;
        let url = s.find("input.share-url").await.prop("value").await.unwrap().expect("the link");
        let expiring = url.trim_start_matches(&base).to_owned();
        stranger.goto(&url).await;
        stranger.wait_for_text("notes.txt").await;
        let (status, body) = fetch(&stranger, &format!("{expiring}/raw?download=1"), None).await;
        assert_eq!((status, body.as_str()), (200, "meeting at noon\n"));
        let id = expiring.trim_start_matches("/s/").to_owned();
        let db = rusqlite::Connection::open(tmp.path().join("data/meta.sqlite")).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        let past = chrono::Utc::now().timestamp_millis() - 1;
        let changed = db
            .execute("UPDATE share_links SET expires_ms = ?1 WHERE id = ?2", rusqlite::params![past, id])
            .unwrap();
        assert_eq!(changed, 1, "no share link {id} in the database");
        for page in [expiring.clone(), format!("{expiring}/raw?download=1")] {
            let (status, body) = fetch(&stranger, &page, None).await;
            assert_eq!(status, 410, "{page}: {body}");
            assert!(body.contains("expired") && !body.contains("meeting at noon"), "{page}: {body}");
        }
        s.goto(&format!("{base}/shares")).await;
        s.wait_for_text("expired").await;

        // The phone-sized layout.
        let small = browser.session(&tmp.path().join("small"), PHONE).await;
        sign_in(&small, &base, "me", PASSWORD).await;
        small.goto(&format!("{base}/files")).await;
        small.wait_for_text("screen.png").await;
        small.screenshot("files-phone").await;
        small.goto(&format!("{base}/file?path=docs/notes.txt")).await;
        small.wait_for_text("meeting at noon").await;
        small.screenshot("file-phone").await;
        for session in [s, guest, stranger, small] {
            session.close().await;
        }
    });
}
