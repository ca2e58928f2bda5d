//! The conformance suite on every backend pair: SQLite + local disk always, and PostgreSQL + S3
//! when `scripts/services` has started them (`./scripts/test` does).
//!
//! Each test gets fresh stores: its own temp dir, or its own PostgreSQL database and bucket.

use std::future::Future;
use syncstore_store::{conformance, ChunkStore, FsChunkStore, MetaStore, SqliteMetaStore};

async fn with_fresh_stores<F, Fut>(test: F)
where
    F: FnOnce(Box<dyn MetaStore>, Box<dyn ChunkStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let meta = SqliteMetaStore::open(&dir.path().join("meta.sqlite"))
        .await
        .unwrap();
    let chunks = FsChunkStore::open(&dir.path().join("chunks"))
        .await
        .unwrap();
    test(Box::new(meta), Box::new(chunks)).await;
}

macro_rules! conformance_tests {
    ($with_stores:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                $with_stores(stringify!($name), |meta, chunks| async move {
                    conformance::$name(&*meta, &*chunks).await
                })
                .await;
            }
        )*
    };
}

/// Runs every function of the conformance suite through `$with_stores`.
macro_rules! all_conformance_tests {
    ($with_stores:path) => {
        conformance_tests!(
            $with_stores;
            users_tokens_auth,
            revisions,
            conditional_writes,
            implicit_parents,
            dir_move_moves_descendants,
            journal_paging,
            chunk_put_verify_missing,
            chunk_put_batch,
            per_user_isolation,
            lock_take_renew_release,
            lock_force_break,
            lock_covers_directory,
            lock_refuses_ops_of_other_devices,
            lock_expiry,
            lock_listed_in_tree,
            lock_race_has_one_winner,
        );
    };
}

mod embedded {
    use super::*;

    async fn with_stores<F, Fut>(_name: &str, test: F)
    where
        F: FnOnce(Box<dyn MetaStore>, Box<dyn ChunkStore>) -> Fut,
        Fut: Future<Output = ()>,
    {
        with_fresh_stores(test).await;
    }

    all_conformance_tests!(with_stores);
}

mod shared;

#[tokio::test]
async fn lock_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    conformance::lock_survives_reopen(|| async {
        let meta = SqliteMetaStore::open(&dir.path().join("meta.sqlite"))
            .await
            .unwrap();
        let chunks = FsChunkStore::open(&dir.path().join("chunks"))
            .await
            .unwrap();
        (
            Box::new(meta) as Box<dyn MetaStore>,
            Box::new(chunks) as Box<dyn ChunkStore>,
        )
    })
    .await;
}

mod sqlite {
    //! What only the SQLite backend has: its schema version check and reopening.

    use syncstore_proto::UserName;
    use syncstore_store::{MetaStore, SqliteMetaStore, StoreError};

    #[tokio::test]
    async fn reopen_keeps_data_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("meta.sqlite");
        {
            let meta = SqliteMetaStore::open(&db_path).await.unwrap();
            meta.create_user(&UserName::new("me").unwrap())
                .await
                .unwrap();
        }
        let meta = SqliteMetaStore::open(&db_path).await.unwrap();
        assert_eq!(meta.count_users().await.unwrap(), 1);
        drop(meta);

        let conn = rusqlite::Connection::open(&db_path).unwrap();
        conn.execute("INSERT INTO schema_version (version) VALUES (999)", [])
            .unwrap();
        drop(conn);
        let err = SqliteMetaStore::open(&db_path).await.unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("newer"), "{err}");
    }

    /// A database left at schema version 1 by the previous build gains the lock tables and
    /// keeps its data.
    #[tokio::test]
    async fn upgrade_from_version_1_adds_locks() {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("meta.sqlite");
        let conn = rusqlite::Connection::open(&db_path).unwrap();
        conn.execute_batch(include_str!("../migrations/sqlite/0001_init.sql"))
            .unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version (version) VALUES (1);
             INSERT INTO users (name) VALUES ('old');",
        )
        .unwrap();
        drop(conn);

        let meta = SqliteMetaStore::open(&db_path).await.unwrap();
        let user = meta
            .user_by_name(&UserName::new("old").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(meta.locks(user.id, 0).await.unwrap(), []);
        drop(meta);
        let conn = rusqlite::Connection::open(&db_path).unwrap();
        let version: i64 = conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(version, 2);
    }
}
