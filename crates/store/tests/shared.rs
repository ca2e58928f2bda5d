//! The conformance suite on PostgreSQL + S3, and what only shared stores have: a change feed
//! across processes, races between servers, the schema check, clear errors when unreachable.
//!
//! The services come from `scripts/services` through `SYNCSTORE_TEST_POSTGRES` and the AWS_*
//! variables. Unset, these tests skip loudly, except under `CI=true`, where they fail.

use super::*;
use std::time::Duration;
use syncstore_proto::{ChunkRef, ContentHash, DeviceName, Op, Precondition, RelPath, UserName};
use syncstore_store::postgres::create_test_database;
use syncstore_store::s3::{S3Endpoint, S3Location};
use syncstore_store::{apply_ops, OpOutcome, PgMetaStore, S3ChunkStore, StoreError};

/// The admin URL of the test PostgreSQL server, or `None` to skip.
fn services() -> Option<String> {
    match std::env::var("SYNCSTORE_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => {
            assert!(
                std::env::var("AWS_ENDPOINT_URL").is_ok(),
                "SYNCSTORE_TEST_POSTGRES is set but AWS_ENDPOINT_URL is not: eval \"$(scripts/services env)\""
            );
            Some(url)
        }
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "CI=true but SYNCSTORE_TEST_POSTGRES is not set: the PostgreSQL + S3 tests must run (use ./scripts/test)"
        ),
        _ => {
            eprintln!(
                "\n*** SKIPPED a PostgreSQL + S3 test: SYNCSTORE_TEST_POSTGRES is not set. \
                 Run ./scripts/test, or scripts/services start && eval \"$(scripts/services env)\". ***\n"
            );
            None
        }
    }
}

/// A fresh database on the test server.
async fn fresh_database(admin_url: &str, name: &str) -> String {
    create_test_database(admin_url, name)
        .await
        .unwrap_or_else(|err| panic!("could not create a test database on {admin_url}: {err}"))
}

/// A fresh bucket name.
fn fresh_bucket(name: &str) -> S3Location {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let short: String = name
        .chars()
        .take(30)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    S3Location {
        bucket: format!("t-{short}-{}-{nanos}", std::process::id()),
        prefix: "syncstore".into(),
    }
}

async fn with_stores<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Box<dyn MetaStore>, Box<dyn ChunkStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(admin_url) = services() else {
        return;
    };
    let url = fresh_database(&admin_url, name).await;
    let meta = PgMetaStore::open(&url).await.unwrap();
    let chunks = S3ChunkStore::open(&fresh_bucket(name), &S3Endpoint::from_env())
        .await
        .unwrap();
    test(Box::new(meta), Box::new(chunks)).await;
}

all_conformance_tests!(with_stores);

/// Garbage collection racing commits through two servers (two pools, two S3 clients) on one
/// database and bucket, as `serve` processes A and B.
#[tokio::test]
async fn gc_races_commits_through_two_servers() {
    let Some(admin_url) = services() else {
        return;
    };
    let name = "gc_races_two_servers";
    let url = fresh_database(&admin_url, name).await;
    let bucket = fresh_bucket(name);
    let meta_a = PgMetaStore::open(&url).await.unwrap();
    let meta_b = PgMetaStore::open(&url).await.unwrap();
    let chunks_a = S3ChunkStore::open(&bucket, &S3Endpoint::from_env())
        .await
        .unwrap();
    let chunks_b = S3ChunkStore::open(&bucket, &S3Endpoint::from_env())
        .await
        .unwrap();
    conformance::gc_races_commits_on([(&meta_a, &chunks_a), (&meta_b, &chunks_b)]).await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn path(text: &str) -> RelPath {
    RelPath::new(text).unwrap()
}

/// The principal of `user`'s `device` (the device id is not looked at by the ops).
fn principal(user: &syncstore_store::User, device: &DeviceName) -> syncstore_store::Principal {
    syncstore_store::Principal {
        user_id: user.id,
        user_name: user.name.clone(),
        namespace: user.namespace,
        device_id: syncstore_store::DeviceId(0),
        device_name: device.clone(),
    }
}

/// A `PutFile` of `bytes` stored as one chunk through `chunks`.
async fn put_op(
    chunks: &dyn ChunkStore,
    user: syncstore_proto::NamespaceId,
    at: &str,
    base: Precondition,
    bytes: &[u8],
) -> Op {
    let hash = syncstore_proto::ChunkHash(*blake3::hash(bytes).as_bytes());
    chunks
        .put(user, &hash, bytes::Bytes::copy_from_slice(bytes))
        .await
        .unwrap();
    Op::PutFile {
        path: path(at),
        base,
        size: bytes.len() as u64,
        mtime_ms: 1,
        hash: ContentHash(*blake3::hash(bytes).as_bytes()),
        chunks: vec![ChunkRef {
            hash,
            len: bytes.len() as u32,
        }],
        executable: false,
    }
}

/// Two stores on one database stand for two servers: a commit through one reaches the other's
/// change feed, and writes racing on one path through both give exactly one winner.
#[tokio::test]
async fn two_servers_see_one_namespace() {
    let Some(admin_url) = services() else {
        return;
    };
    let url = fresh_database(&admin_url, "two_servers").await;
    let server_a = PgMetaStore::open(&url).await.unwrap();
    let server_b = PgMetaStore::open(&url).await.unwrap();
    let chunks = S3ChunkStore::open(&fresh_bucket("two-servers"), &S3Endpoint::from_env())
        .await
        .unwrap();
    let feed_b = server_b.change_feed().await.unwrap();
    let mut notices = feed_b.subscribe();

    let user = server_a
        .create_user(&UserName::new("racer").unwrap())
        .await
        .unwrap();
    let device = DeviceName::new("dev").unwrap();
    let op = put_op(
        &chunks,
        user.namespace,
        "first.txt",
        Precondition::MustNotExist,
        b"one",
    )
    .await;
    let batch = apply_ops(
        &server_a,
        &chunks,
        &principal(&user, &device),
        vec![op],
        now_ms(),
    )
    .await
    .unwrap();
    let notice = tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .expect("a commit through A reaches B's feed")
        .unwrap();
    assert_eq!((notice.user_id, notice.cursor), (user.id, batch.cursor));
    assert_eq!(
        server_b
            .tree(user.id, now_ms())
            .await
            .unwrap()
            .entries
            .len(),
        1
    );

    // Creates racing through both servers: exactly one wins, the others conflict.
    let mut racers = Vec::new();
    for idx in 0..8 {
        let server = if idx % 2 == 0 {
            server_a.clone()
        } else {
            server_b.clone()
        };
        let op = put_op(
            &chunks,
            user.namespace,
            "race.txt",
            Precondition::MustNotExist,
            format!("v{idx}").as_bytes(),
        )
        .await;
        let (chunks, principal) = (chunks.clone(), principal(&user, &device));
        racers.push(tokio::spawn(async move {
            apply_ops(&server, &chunks, &principal, vec![op], now_ms())
                .await
                .unwrap()
                .outcomes
                .remove(0)
        }));
    }
    let (mut applied, mut conflicts) = (0, 0);
    for racer in racers {
        match racer.await.unwrap() {
            OpOutcome::Applied(_) => applied += 1,
            OpOutcome::Conflict { .. } => conflicts += 1,
            other => panic!("a racing create gave {other:?}"),
        }
    }
    assert_eq!((applied, conflicts), (1, 7));

    // Edits of the same revision racing through both servers: one wins.
    let rev = server_a
        .tree(user.id, now_ms())
        .await
        .unwrap()
        .entries
        .iter()
        .find(|e| e.path.as_str() == "race.txt")
        .unwrap()
        .rev;
    let mut racers = Vec::new();
    for idx in 0..8 {
        let server = if idx % 2 == 0 {
            server_a.clone()
        } else {
            server_b.clone()
        };
        let op = put_op(
            &chunks,
            user.namespace,
            "race.txt",
            Precondition::Rev(rev),
            format!("edit{idx}").as_bytes(),
        )
        .await;
        let (chunks, principal) = (chunks.clone(), principal(&user, &device));
        racers.push(tokio::spawn(async move {
            apply_ops(&server, &chunks, &principal, vec![op], now_ms())
                .await
                .unwrap()
                .outcomes
                .remove(0)
        }));
    }
    let mut applied = 0;
    for racer in racers {
        applied += usize::from(racer.await.unwrap().is_applied());
    }
    assert_eq!(applied, 1);

    // The journal has no gaps and no repeats: cursors were handed out one at a time.
    let page = server_b
        .changes_since(user.id, syncstore_proto::Cursor(0), 100)
        .await
        .unwrap();
    let cursors: Vec<u64> = page
        .changes
        .iter()
        .map(|change| change.cursor().0)
        .collect();
    assert_eq!(cursors, (1..=cursors.len() as u64).collect::<Vec<_>>());
    assert_eq!(page.cursor, server_a.current_cursor(user.id).await.unwrap());
}

#[tokio::test]
async fn lock_survives_reopen() {
    let Some(admin_url) = services() else {
        return;
    };
    let url = fresh_database(&admin_url, "lock_reopen").await;
    let location = fresh_bucket("lock-reopen");
    conformance::lock_survives_reopen(|| async {
        let meta = PgMetaStore::open(&url).await.unwrap();
        let chunks = S3ChunkStore::open(&location, &S3Endpoint::from_env())
            .await
            .unwrap();
        (
            Box::new(meta) as Box<dyn MetaStore>,
            Box::new(chunks) as Box<dyn ChunkStore>,
        )
    })
    .await;
}

#[tokio::test]
async fn postgres_reopen_keeps_data_and_refuses_newer_schema() {
    let Some(admin_url) = services() else {
        return;
    };
    let url = fresh_database(&admin_url, "reopen").await;
    {
        let meta = PgMetaStore::open(&url).await.unwrap();
        meta.create_user(&UserName::new("me").unwrap())
            .await
            .unwrap();
    }
    let meta = PgMetaStore::open(&url).await.unwrap();
    assert_eq!(meta.count_users().await.unwrap(), 1);

    let config: tokio_postgres::Config = url.parse().unwrap();
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("INSERT INTO schema_version (version) VALUES (999)")
        .await
        .unwrap();
    let err = PgMetaStore::open(&url).await.unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
}

/// Unreachable services give a clear error quickly, never a hang.
#[tokio::test]
async fn unreachable_services_fail_fast_and_clearly() {
    let dead_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = std::time::Instant::now();
    let err = PgMetaStore::open(&format!("postgres://me:secret@127.0.0.1:{dead_port}/db"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unavailable {
                service: syncstore_store::Service::Database,
                ..
            }
        ),
        "{err}"
    );
    assert!(!format!("{err:?}{err}").contains("secret"), "{err:?}");

    let endpoint = S3Endpoint {
        url: Some(format!("http://127.0.0.1:{dead_port}")),
        region: "us-east-1".into(),
    };
    let err = S3ChunkStore::open(&fresh_bucket("unreachable"), &endpoint).await;
    if std::env::var("AWS_ACCESS_KEY_ID").is_ok() {
        let err = err.unwrap_err();
        assert!(err.to_string().contains("could not reach"), "{err}");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A PostgreSQL of the test's own (`scripts/services pg-start`), for tests that stop or restart
/// it: the instance the other tests share is never touched. Removed on drop.
struct PrivatePostgres {
    dir: String,
    /// The admin URL.
    url: String,
}

impl PrivatePostgres {
    const SCRIPT: &'static str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services");

    fn start() -> PrivatePostgres {
        let out = std::process::Command::new(Self::SCRIPT)
            .arg("pg-start")
            .output()
            .expect("run scripts/services pg-start");
        assert!(
            out.status.success(),
            "scripts/services pg-start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (dir, url) = stdout
            .trim()
            .split_once(' ')
            .unwrap_or_else(|| panic!("pg-start printed {stdout:?}, not \"DIR URL\""));
        PrivatePostgres {
            dir: dir.to_owned(),
            url: url.to_owned(),
        }
    }

    /// `stop`, `start` or `restart` (stop and restart end every session at once).
    fn ctl(&self, action: &str) {
        let out = std::process::Command::new(Self::SCRIPT)
            .args(["pg-ctl", &self.dir, action])
            .output()
            .expect("run scripts/services pg-ctl");
        assert!(
            out.status.success(),
            "scripts/services pg-ctl {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::SCRIPT)
            .args(["pg-remove", &self.dir])
            .output();
    }
}

/// Issue 10: calls after PostgreSQL restarted succeed (the dead pooled connections are
/// replaced and the call run again, reads and writes alike); while it is down, calls fail with
/// `Unavailable`, whose message holds no password; the change feed says when it listens again.
#[tokio::test]
async fn postgres_restarts_are_survived_and_downtime_is_unavailable() {
    if services().is_none() {
        return;
    }
    let postgres = PrivatePostgres::start();
    // Trust authentication ignores the password, which must not show in any error.
    let url = postgres.url.replace("postgres@", "postgres:hunter2@");
    let store = PgMetaStore::open(&url).await.unwrap();
    let feed = store.change_feed().await.unwrap();
    let mut resumed = feed.resumed();
    resumed.borrow_and_update();
    let user = store
        .create_user(&UserName::new("restarted").unwrap())
        .await
        .unwrap();
    let device = DeviceName::new("dev").unwrap();

    for round in 0..3 {
        // Several calls at once, so the pool holds several connections when PostgreSQL goes.
        let cursors =
            futures::future::join_all((0..4).map(|_| store.current_cursor(user.id))).await;
        assert!(cursors.iter().all(Result::is_ok), "{cursors:?}");
        postgres.ctl("restart");

        // A read on a dead pooled connection.
        let cursor = store.current_cursor(user.id).await.unwrap();
        assert_eq!(cursor, syncstore_proto::Cursor(round));
        postgres.ctl("restart");
        // A write transaction on a dead pooled connection.
        let op = Op::MakeDir {
            path: path(&format!("dir-{round}")),
            mtime_ms: 1,
        };
        let batch = store
            .apply_ops(
                user.id,
                &device,
                vec![op],
                Default::default(),
                now_ms(),
                None,
            )
            .await
            .unwrap();
        assert!(batch.changed_anything(), "{batch:?}");
        assert_eq!(batch.cursor, syncstore_proto::Cursor(round + 1));
    }
    tokio::time::timeout(Duration::from_secs(10), resumed.changed())
        .await
        .expect("the change feed listens again after a restart")
        .unwrap();
    assert_eq!(
        store.tree(user.id, now_ms()).await.unwrap().entries.len(),
        3
    );

    postgres.ctl("stop");
    let started = std::time::Instant::now();
    for err in [
        store.current_cursor(user.id).await.unwrap_err(),
        store.ping().await.unwrap_err(),
        store
            .apply_ops(
                user.id,
                &device,
                Vec::new(),
                Default::default(),
                now_ms(),
                None,
            )
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                StoreError::Unavailable {
                    service: syncstore_store::Service::Database,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = format!("{err:?} {err}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(err.to_string().starts_with("database unavailable"), "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    postgres.ctl("start");
    store.ping().await.unwrap();
    assert_eq!(
        store.current_cursor(user.id).await.unwrap(),
        syncstore_proto::Cursor(3)
    );
}
