//! The conformance suite on every backend pair: SQLite with local disk and the in-memory meta
//! store with local disk always, and PostgreSQL with S3 when `scripts/services` has started
//! them (`./scripts/test` does).
//!
//! Each test gets fresh stores: its own temp dir, or its own PostgreSQL database and bucket.

mod conformance;

use std::future::Future;
use syncstore_store::{ChunkStore, FsChunkStore, MetaStore, SqliteMetaStore};

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
            journal_tags,
            wanted_chunks,
            upload_streams,
            dead_props,
            lock_requests,
            lock_is_per_user,
            lock_refuses_ops_of_other_devices,
            lock_expiry,
            lock_listed_in_tree,
            lock_race_has_one_winner,
            mode_only_change,
            history_and_trash,
            restore_plans,
            gc_frees_what_retention_lets_go,
            gc_refuses_commits_of_doomed_chunks,
            gc_races_commits,
            quota_refuses_growth,
            devices_seen_and_revoked,
            users_renamed_and_removed,
            web_passwords_and_sessions,
            share_links,
            entries_under_a_folder,
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

mod mem {
    //! The in-memory meta store, beside chunks on local disk.

    use super::*;
    use syncstore_store::MemMetaStore;

    async fn with_stores<F, Fut>(_name: &str, test: F)
    where
        F: FnOnce(Box<dyn MetaStore>, Box<dyn ChunkStore>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let chunks = FsChunkStore::open(&dir.path().join("chunks"))
            .await
            .unwrap();
        test(Box::new(MemMetaStore::default()), Box::new(chunks)).await;
    }

    all_conformance_tests!(with_stores);

    /// "Reopening" is another handle on the same database.
    #[tokio::test]
    async fn lock_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MemMetaStore::default();
        conformance::lock_survives_reopen(|| async {
            let chunks = FsChunkStore::open(&dir.path().join("chunks"))
                .await
                .unwrap();
            (
                Box::new(meta.clone()) as Box<dyn MetaStore>,
                Box::new(chunks) as Box<dyn ChunkStore>,
            )
        })
        .await;
    }
}

#[cfg(all(feature = "postgres", feature = "s3"))]
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

    /// A database left at schema version 1 by an earlier build gains the lock tables, the
    /// server identity (a random namespace id for each existing user) and the executable bit
    /// (false for existing files), and keeps its data.
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
             INSERT INTO users (name) VALUES ('old');
             INSERT INTO nodes (user_id, node_id, path, kind, rev, size, mtime_ms, hash, chunks, device)
                 VALUES (1, 1, 'dir', 'dir', 1, 0, 0, NULL, x'', 'dev');
             INSERT INTO nodes (user_id, node_id, path, kind, rev, size, mtime_ms, hash, chunks, device)
                 VALUES (1, 2, 'dir/f', 'file', 2, 0, 0, zeroblob(32), x'', 'dev');
             INSERT INTO changes (user_id, cursor, node_id, kind, path, size, mtime_ms, hash, chunks, device)
                 VALUES (1, 2, 2, 'file', 'dir/f', 0, 0, zeroblob(32), x'', 'dev');",
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
        assert_ne!(user.namespace, syncstore_proto::NamespaceId::default());
        assert_eq!(
            meta.journal_tag(user.id, syncstore_proto::Cursor(0))
                .await
                .unwrap(),
            Some(syncstore_proto::JournalTag::default())
        );
        let tree = meta.tree(user.id, 0).await.unwrap();
        assert_eq!(tree.entries.len(), 2);
        assert!(!tree.entries[1].executable);
        // Rows journalled before history had times count as committed at the epoch.
        let history = meta.history(user.id, &tree.entries[1].path).await.unwrap();
        assert_eq!(history.versions.len(), 1);
        assert_eq!(history.versions[0].at_ms, 0);
        drop(meta);
        let conn = rusqlite::Connection::open(&db_path).unwrap();
        let version: i64 = conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(version, 10);
    }
}

mod fs_staging {
    //! What only the local-disk chunk store has: uploads are staged, and made durable under
    //! their names by `durable_chunk_lens`, which runs before a commit can name them.

    use bytes::Bytes;
    use syncstore_proto::ChunkHash;
    use syncstore_proto::NamespaceId;
    use syncstore_store::{ChunkStore, FsChunkStore};

    fn chunk(fill: u8, len: usize) -> (ChunkHash, Bytes) {
        let bytes = vec![fill; len];
        (
            ChunkHash(*blake3::hash(&bytes).as_bytes()),
            Bytes::from(bytes),
        )
    }

    /// Regular files under `dir`, at any depth.
    fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_under(&path));
            } else {
                found.push(path);
            }
        }
        found
    }

    #[tokio::test]
    async fn staged_chunks_are_readable_and_become_durable_under_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("chunks");
        let user = NamespaceId([1; 16]);
        // Few and small (fsync per file) and many (syncfs): both ways of settling.
        for (n, len) in [(2usize, 1000usize), (20, 100_000)] {
            let store = FsChunkStore::open(&root).await.unwrap();
            let chunks: Vec<(ChunkHash, Bytes)> =
                (0..n).map(|i| chunk(i as u8 + len as u8, len)).collect();
            let hashes: Vec<ChunkHash> = chunks.iter().map(|(hash, _)| *hash).collect();
            store.put_batch(user, chunks.clone()).await.unwrap();
            // Staged: present and readable, but no file carries a chunk's name yet.
            assert!(store.missing(user, &hashes).await.unwrap().is_empty());
            for (hash, bytes) in &chunks {
                assert_eq!(&store.get(user, hash).await.unwrap(), bytes);
            }
            let named = |hash: &ChunkHash| {
                files_under(&root)
                    .iter()
                    .any(|path| path.file_name().unwrap() == hash.to_hex().as_str())
            };
            assert!(!hashes.iter().any(named));
            assert_eq!(
                store.durable_chunk_lens(user, &hashes).await.unwrap().len(),
                hashes.len()
            );
            assert!(hashes.iter().all(named));
            // No temp file is left, and a new process finds every chunk.
            drop(store);
            let names: Vec<String> = files_under(&root)
                .iter()
                .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            assert!(names.iter().all(|name| !name.starts_with('.')), "{names:?}");
            let reopened = FsChunkStore::open(&root).await.unwrap();
            assert!(reopened.missing(user, &hashes).await.unwrap().is_empty());
            assert_eq!(reopened.get(user, &hashes[0]).await.unwrap(), chunks[0].1);
        }
    }

    #[tokio::test]
    async fn a_stored_chunk_is_trusted_by_name_and_damage_is_caught_when_verified() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("chunks");
        let user = NamespaceId([3; 16]);
        let (hash, bytes) = chunk(5, 4000);
        let store = FsChunkStore::open(&root).await.unwrap();
        store.put(user, &hash, bytes.clone()).await.unwrap();
        store.durable_chunk_lens(user, &[hash]).await.unwrap();
        let path = files_under(&root)
            .into_iter()
            .find(|path| path.file_name().unwrap() == hash.to_hex().as_str())
            .unwrap();
        let mut damaged = bytes.to_vec();
        damaged[0] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        // Served as stored, not hashed again (the client checks what it fetches)...
        assert_eq!(store.get(user, &hash).await.unwrap(), damaged);
        // ...but a verified read finds the damage, moves the chunk aside and reports it.
        let err = store.get_verified(user, &hash).await.unwrap_err();
        assert!(
            matches!(err, syncstore_store::StoreError::Corrupt(_)),
            "{err}"
        );
        assert!(!path.exists());
        assert_eq!(store.missing(user, &[hash]).await.unwrap(), vec![hash]);
        // The right bytes uploaded again replace it.
        store.put(user, &hash, bytes.clone()).await.unwrap();
        assert_eq!(store.get_verified(user, &hash).await.unwrap(), bytes);
    }

    #[tokio::test]
    async fn a_staged_chunk_lost_in_a_crash_is_missing_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("chunks");
        let user = NamespaceId([7; 16]);
        let (hash, bytes) = chunk(9, 5000);
        let store = FsChunkStore::open(&root).await.unwrap();
        store.put(user, &hash, bytes).await.unwrap();
        assert!(store.missing(user, &[hash]).await.unwrap().is_empty());
        // A killed process runs no destructor: its temp file stays on disk.
        std::mem::forget(store);
        assert!(files_under(&root).iter().any(|path| path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".tmp")));
        let reopened = FsChunkStore::open(&root).await.unwrap();
        assert_eq!(reopened.missing(user, &[hash]).await.unwrap(), vec![hash]);
        assert!(files_under(&root).is_empty(), "leftovers were removed");
        // durable_chunk_lens reports it missing too, so no commit can name it.
        assert!(reopened
            .durable_chunk_lens(user, &[hash])
            .await
            .unwrap()
            .is_empty());
    }
}

mod legacy_layout {
    //! Chunks stored before namespace ids, under the user's integer id, are found after the
    //! upgrade.

    use bytes::Bytes;
    use syncstore_proto::{ChunkHash, UserName};
    use syncstore_store::{ChunkStore, FsChunkStore, MetaStore, SqliteMetaStore};

    #[tokio::test]
    async fn chunks_under_a_user_id_move_to_its_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMetaStore::open(&dir.path().join("meta.sqlite"))
            .await
            .unwrap();
        let user = meta
            .create_user(&UserName::new("old").unwrap())
            .await
            .unwrap();
        let root = dir.path().join("chunks");
        let bytes = b"stored by an older build".to_vec();
        let hash = ChunkHash(*blake3::hash(&bytes).as_bytes());
        let hex = hash.to_hex();
        let legacy = root.join(user.id.0.to_string()).join(&hex[..2]);
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(legacy.join(&hex), &bytes).unwrap();

        let store = FsChunkStore::open(&root).await.unwrap();
        assert_eq!(
            store.missing(user.namespace, &[hash]).await.unwrap(),
            [hash]
        );
        store
            .adopt_legacy_dir(user.id, user.namespace)
            .await
            .unwrap();
        assert!(store
            .missing(user.namespace, &[hash])
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.get(user.namespace, &hash).await.unwrap(),
            Bytes::from(bytes)
        );
        // Twice is harmless.
        store
            .adopt_legacy_dir(user.id, user.namespace)
            .await
            .unwrap();
        assert!(!root.join(user.id.0.to_string()).exists());
    }
}
