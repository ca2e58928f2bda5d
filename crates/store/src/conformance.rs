//! The contract suite every [`MetaStore`] + [`ChunkStore`] pair must pass.
//!
//! Each function is one test: it takes fresh stores (no users yet), panics on a broken
//! contract, and names its users after itself. `tests/tests.rs` runs them all on SQLite + fs;
//! another backend pair runs the same functions (garage's `src/db/test.rs` does the same).

use crate::{
    apply_ops, BatchOutcome, ChunkStore, MetaStore, OpOutcome, StoreError, TokenHash, User,
};
use bytes::Bytes;
use syncstore_proto::{
    Change, ChunkHash, ChunkRef, ContentHash, Cursor, DeviceName, EntryKind, Op, Precondition,
    RelPath, RemoteEntry, Revision, UserName, MAX_CHUNK_LEN,
};

/// Users, devices, tokens stored as hashes, and authentication.
pub async fn users_tokens_auth(meta: &dyn MetaStore, _chunks: &dyn ChunkStore) {
    let before = meta.count_users().await.unwrap();
    let alice = meta.create_user(&user_name("auth-alice")).await.unwrap();
    assert_eq!(alice.name.as_str(), "auth-alice");
    assert!(matches!(
        meta.create_user(&user_name("auth-alice")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(meta.count_users().await.unwrap(), before + 1);
    assert_eq!(
        meta.user_by_name(&user_name("auth-alice")).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        meta.user_by_name(&user_name("auth-nobody")).await.unwrap(),
        None
    );

    let token_hash = TokenHash::of_token("sst_auth_laptop");
    let device = meta
        .add_device(alice.id, &device_name("laptop"), &token_hash)
        .await
        .unwrap();
    assert_eq!(device.user_id, alice.id);
    assert_eq!(device.name.as_str(), "laptop");

    let principal = meta
        .authenticate(&token_hash)
        .await
        .unwrap()
        .expect("token is known");
    assert_eq!(principal.user_id, alice.id);
    assert_eq!(principal.user_name, alice.name);
    assert_eq!(principal.device_id, device.id);
    assert_eq!(principal.device_name.as_str(), "laptop");
    assert_eq!(
        meta.authenticate(&TokenHash::of_token("sst_auth_wrong"))
            .await
            .unwrap(),
        None
    );

    // A device name is unique per user, a token hash everywhere.
    assert!(matches!(
        meta.add_device(
            alice.id,
            &device_name("laptop"),
            &TokenHash::of_token("sst_other")
        )
        .await,
        Err(StoreError::AlreadyExists(_))
    ));
    let bob = meta.create_user(&user_name("auth-bob")).await.unwrap();
    assert!(matches!(
        meta.add_device(bob.id, &device_name("phone"), &token_hash)
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    let bob_laptop = meta
        .add_device(
            bob.id,
            &device_name("laptop"),
            &TokenHash::of_token("sst_auth_bob"),
        )
        .await
        .unwrap();
    let principal = meta
        .authenticate(&TokenHash::of_token("sst_auth_bob"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (principal.user_id, principal.device_id),
        (bob.id, bob_laptop.id)
    );

    assert!(matches!(
        meta.add_device(
            crate::UserId(i64::MAX),
            &device_name("x"),
            &TokenHash::of_token("sst_x")
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
}

/// Every change bumps the user's cursor from 1 up; a node's rev is the cursor that last touched
/// it; a modified file keeps its node id.
pub async fn revisions(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("rev-alice")).await.unwrap();
    assert_eq!(meta.current_cursor(user.id).await.unwrap(), Cursor(0));
    let tree = meta.tree(user.id).await.unwrap();
    assert_eq!((tree.cursor, tree.entries.len()), (Cursor(0), 0));

    let v1 = put_file(
        meta,
        chunks,
        &user,
        "notes.txt",
        Precondition::MustNotExist,
        b"one",
    )
    .await;
    assert_eq!(v1.rev, Revision(1));
    assert_eq!(v1.kind, EntryKind::File);
    assert_eq!(v1.size, 3);
    assert_eq!(v1.hash, Some(content_hash(b"one")));
    assert_eq!(v1.device.as_str(), "dev");

    let v2 = put_file(
        meta,
        chunks,
        &user,
        "notes.txt",
        Precondition::Rev(v1.rev),
        b"two!",
    )
    .await;
    assert_eq!(v2.rev, Revision(2));
    assert_eq!(v2.node_id, v1.node_id);
    assert_eq!(v2.size, 4);

    // An empty file has no chunks.
    let empty = put_file(
        meta,
        chunks,
        &user,
        "empty",
        Precondition::MustNotExist,
        b"",
    )
    .await;
    assert_eq!(
        (empty.rev, empty.size, empty.chunks.len()),
        (Revision(3), 0, 0)
    );
    assert_ne!(empty.node_id, v1.node_id);

    let tree = meta.tree(user.id).await.unwrap();
    assert_eq!(tree.cursor, Cursor(3));
    assert_eq!(tree.entries, vec![empty, v2.clone()]);

    let page = meta.changes_since(user.id, Cursor(0), 100).await.unwrap();
    assert_eq!(page.cursor, Cursor(3));
    assert!(!page.more && !page.reset);
    assert_eq!(page.changes.len(), 3);
    assert_eq!(
        page.changes[0],
        Change::Upsert {
            cursor: Cursor(1),
            entry: v1
        }
    );
    assert_eq!(
        page.changes[1],
        Change::Upsert {
            cursor: Cursor(2),
            entry: v2.clone()
        }
    );

    let deleted = apply_one(
        meta,
        chunks,
        &user,
        Op::Delete {
            path: path("notes.txt"),
            base: v2.rev,
        },
    )
    .await;
    assert_eq!(deleted, OpOutcome::Applied(Vec::new()));
    let page = meta.changes_since(user.id, Cursor(3), 100).await.unwrap();
    assert_eq!(
        page.changes,
        vec![Change::Delete {
            cursor: Cursor(4),
            node_id: v2.node_id,
            path: path("notes.txt"),
            device: device_name("dev"),
        }]
    );
    assert_eq!(meta.current_cursor(user.id).await.unwrap(), Cursor(4));
}

/// Failed preconditions answer 409 with the node now at the path, bad ops 400, unknown paths 404,
/// and a failed op leaves no trace while the others of its batch apply.
pub async fn conditional_writes(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("cond-alice")).await.unwrap();
    let file = put_file(meta, chunks, &user, "f", Precondition::MustNotExist, b"v1").await;
    let dir = apply_one(
        meta,
        chunks,
        &user,
        Op::MakeDir {
            path: path("d"),
            mtime_ms: 5,
        },
    )
    .await;
    let OpOutcome::Applied(dir) = dir else {
        panic!("mkdir failed: {dir:?}")
    };
    let dir = dir[0].clone();
    assert_eq!(
        (dir.kind, dir.rev, dir.size, dir.hash),
        (EntryKind::Dir, Revision(2), 0, None)
    );
    let _inner = put_file(
        meta,
        chunks,
        &user,
        "d/inner",
        Precondition::MustNotExist,
        b"x",
    )
    .await;
    let cursor = meta.current_cursor(user.id).await.unwrap();
    assert_eq!(cursor, Cursor(3));

    let content = store_chunk(chunks, &user, b"v2").await;
    let conflicts = [
        (
            put_op("f", Precondition::MustNotExist, &content),
            Some(file.clone()),
        ),
        (
            put_op("f", Precondition::Rev(Revision(99)), &content),
            Some(file.clone()),
        ),
        (
            put_op("nothing", Precondition::Rev(Revision(1)), &content),
            None,
        ),
        (
            put_op("d", Precondition::Rev(dir.rev), &content),
            Some(dir.clone()),
        ),
        (
            Op::Delete {
                path: path("f"),
                base: Revision(99),
            },
            Some(file.clone()),
        ),
        (
            Op::Delete {
                path: path("d"),
                base: dir.rev,
            },
            Some(dir.clone()),
        ),
        (
            Op::MakeDir {
                path: path("f"),
                mtime_ms: 0,
            },
            Some(file.clone()),
        ),
        (
            put_op("f/below", Precondition::MustNotExist, &content),
            Some(file.clone()),
        ),
        (
            Op::MakeDir {
                path: path("f/below"),
                mtime_ms: 0,
            },
            Some(file.clone()),
        ),
    ];
    for (op, current) in conflicts {
        match apply_one(meta, chunks, &user, op.clone()).await {
            OpOutcome::Conflict {
                current: got,
                message,
            } => {
                assert_eq!(got, current, "{op:?}");
                assert!(!message.is_empty());
            }
            other => panic!("{op:?} gave {other:?}, expected a conflict"),
        }
    }

    // The wrong size, an unknown chunk: 400.
    let mut wrong_size = put_op("g", Precondition::MustNotExist, &content);
    if let Op::PutFile { size, .. } = &mut wrong_size {
        *size += 1;
    }
    let unknown = chunk_ref(b"never uploaded");
    let missing_chunk = Op::PutFile {
        path: path("g"),
        base: Precondition::MustNotExist,
        size: u64::from(unknown.len),
        mtime_ms: 0,
        hash: content_hash(b"never uploaded"),
        chunks: vec![unknown],
    };
    for op in [wrong_size, missing_chunk] {
        let outcome = apply_one(meta, chunks, &user, op.clone()).await;
        assert!(
            matches!(outcome, OpOutcome::Invalid(_)),
            "{op:?} gave {outcome:?}"
        );
    }
    let outcome = apply_one(
        meta,
        chunks,
        &user,
        Op::Delete {
            path: path("nothing"),
            base: Revision(1),
        },
    )
    .await;
    assert!(matches!(outcome, OpOutcome::NotFound(_)), "{outcome:?}");

    // Nothing above changed anything.
    assert_eq!(meta.current_cursor(user.id).await.unwrap(), cursor);
    assert_eq!(
        meta.changes_since(user.id, cursor, 10)
            .await
            .unwrap()
            .changes,
        Vec::new()
    );

    // MakeDir of an existing directory succeeds without a change.
    let outcome = apply_one(
        meta,
        chunks,
        &user,
        Op::MakeDir {
            path: path("d"),
            mtime_ms: 9,
        },
    )
    .await;
    assert_eq!(outcome, OpOutcome::Applied(vec![dir.clone()]));
    assert_eq!(meta.current_cursor(user.id).await.unwrap(), cursor);

    // In one batch, a failing op in the middle leaves the others applied; the failed op's
    // implicit parents are undone with it.
    let batch = apply(
        meta,
        chunks,
        &user,
        vec![
            put_op("f", Precondition::Rev(file.rev), &content),
            put_op("new/dir/x", Precondition::Rev(Revision(1)), &content),
            Op::Delete {
                path: path("d/inner"),
                base: Revision(3),
            },
        ],
    )
    .await;
    assert_eq!(
        batch
            .outcomes
            .iter()
            .map(OpOutcome::status)
            .collect::<Vec<_>>(),
        [200, 409, 200]
    );
    assert_eq!(batch.cursor, Cursor(5));
    let tree = meta.tree(user.id).await.unwrap();
    let paths: Vec<&str> = tree
        .entries
        .iter()
        .map(|entry| entry.path.as_str())
        .collect();
    assert_eq!(paths, ["d", "f"]);
    assert_eq!(tree.entries[1].rev, Revision(4));
    assert_eq!(tree.entries[1].hash, Some(content_hash(b"v2")));

    // The wire form of a conflict carries the current entry.
    let wire = OpOutcome::Conflict {
        current: Some(file.clone()),
        message: "m".into(),
    }
    .into_wire();
    assert_eq!((wire.status, wire.entries.len()), (409, 1));
}

/// Missing parent directories are created, outermost first, each with its own journal row.
pub async fn implicit_parents(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("parents-alice")).await.unwrap();
    let content = store_chunk(chunks, &user, b"deep").await;
    let outcome = apply_one(
        meta,
        chunks,
        &user,
        put_op("a/b/c.txt", Precondition::MustNotExist, &content),
    )
    .await;
    let OpOutcome::Applied(produced) = outcome else {
        panic!("{outcome:?}")
    };
    let summary: Vec<(&str, EntryKind, Revision)> = produced
        .iter()
        .map(|entry| (entry.path.as_str(), entry.kind, entry.rev))
        .collect();
    assert_eq!(
        summary,
        [
            ("a", EntryKind::Dir, Revision(1)),
            ("a/b", EntryKind::Dir, Revision(2)),
            ("a/b/c.txt", EntryKind::File, Revision(3)),
        ]
    );
    let page = meta.changes_since(user.id, Cursor(0), 10).await.unwrap();
    let journal: Vec<Change> = produced
        .iter()
        .map(|entry| Change::Upsert {
            cursor: entry.rev.as_cursor(),
            entry: entry.clone(),
        })
        .collect();
    assert_eq!(page.changes, journal);

    // Existing parents are reused.
    let outcome = apply_one(
        meta,
        chunks,
        &user,
        Op::MakeDir {
            path: path("a/b/e"),
            mtime_ms: 1,
        },
    )
    .await;
    let OpOutcome::Applied(produced) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(produced.len(), 1);
    assert_eq!(produced[0].rev, Revision(4));

    // A file in the way of a parent is a conflict.
    let outcome = apply_one(
        meta,
        chunks,
        &user,
        Op::MakeDir {
            path: path("a/b/c.txt/x/y"),
            mtime_ms: 1,
        },
    )
    .await;
    assert!(
        matches!(&outcome, OpOutcome::Conflict { current: Some(entry), .. } if entry.path.as_str() == "a/b/c.txt")
    );
}

/// Moving a directory moves everything inside it in one batch, one journal row per node, and
/// every node keeps its id.
pub async fn dir_move_moves_descendants(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("move-alice")).await.unwrap();
    let x = put_file(meta, chunks, &user, "d/x", Precondition::MustNotExist, b"x").await;
    let y = put_file(
        meta,
        chunks,
        &user,
        "d/e/y",
        Precondition::MustNotExist,
        b"y",
    )
    .await;
    let _sibling = put_file(
        meta,
        chunks,
        &user,
        "d-sibling",
        Precondition::MustNotExist,
        b"s",
    )
    .await;
    let before = meta.tree(user.id).await.unwrap();
    let d = entry_at(&before.entries, "d");
    let e = entry_at(&before.entries, "d/e");
    let cursor = before.cursor;

    // Into itself: 400; onto something: 409; stale: 409.
    let into_itself = Op::Move {
        from: path("d"),
        to: path("d/e/z"),
        base: d.rev,
    };
    assert!(matches!(
        apply_one(meta, chunks, &user, into_itself).await,
        OpOutcome::Invalid(_)
    ));
    let onto = Op::Move {
        from: path("d"),
        to: path("d-sibling"),
        base: d.rev,
    };
    assert!(matches!(
        apply_one(meta, chunks, &user, onto).await,
        OpOutcome::Conflict { current: Some(entry), .. } if entry.path.as_str() == "d-sibling"
    ));
    let stale = Op::Move {
        from: path("d"),
        to: path("m"),
        base: Revision(99),
    };
    assert!(matches!(
        apply_one(meta, chunks, &user, stale).await,
        OpOutcome::Conflict { current: Some(entry), .. } if entry.node_id == d.node_id
    ));
    let gone = Op::Move {
        from: path("nothing"),
        to: path("m"),
        base: Revision(1),
    };
    assert!(matches!(
        apply_one(meta, chunks, &user, gone).await,
        OpOutcome::NotFound(_)
    ));
    assert_eq!(meta.current_cursor(user.id).await.unwrap(), cursor);

    let outcome = apply_one(
        meta,
        chunks,
        &user,
        Op::Move {
            from: path("d"),
            to: path("m/n"),
            base: d.rev,
        },
    )
    .await;
    let OpOutcome::Applied(produced) = outcome else {
        panic!("{outcome:?}")
    };
    let summary: Vec<&str> = produced.iter().map(|entry| entry.path.as_str()).collect();
    assert_eq!(summary, ["m", "m/n", "m/n/e", "m/n/x", "m/n/e/y"]);

    let after = meta.tree(user.id).await.unwrap();
    assert_eq!(after.cursor, Cursor(cursor.0 + 5));
    let paths: Vec<&str> = after
        .entries
        .iter()
        .map(|entry| entry.path.as_str())
        .collect();
    assert_eq!(
        paths,
        ["d-sibling", "m", "m/n", "m/n/e", "m/n/e/y", "m/n/x"]
    );
    assert_eq!(entry_at(&after.entries, "m/n").node_id, d.node_id);
    assert_eq!(entry_at(&after.entries, "m/n/e").node_id, e.node_id);
    let moved_y = entry_at(&after.entries, "m/n/e/y");
    assert_eq!(
        (moved_y.node_id, moved_y.hash, &moved_y.chunks),
        (y.node_id, y.hash, &y.chunks)
    );
    assert_eq!(entry_at(&after.entries, "m/n/x").node_id, x.node_id);

    let page = meta.changes_since(user.id, cursor, 100).await.unwrap();
    assert_eq!(page.changes.len(), 5);
    for (change, entry) in page.changes.iter().zip(&produced) {
        assert_eq!(
            change,
            &Change::Upsert {
                cursor: entry.rev.as_cursor(),
                entry: entry.clone()
            }
        );
    }

    // A single file moves too, and the old path is free again.
    let moved_x = entry_at(&after.entries, "m/n/x");
    let outcome = apply_one(
        meta,
        chunks,
        &user,
        Op::Move {
            from: path("m/n/x"),
            to: path("d"),
            base: moved_x.rev,
        },
    )
    .await;
    let OpOutcome::Applied(produced) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(produced.len(), 1);
    assert_eq!(
        (produced[0].path.as_str(), produced[0].node_id),
        ("d", x.node_id)
    );
}

/// The journal pages with `more`, and a cursor ahead of it asks for a reset.
pub async fn journal_paging(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("paging-alice")).await.unwrap();
    for idx in 0..5 {
        let name = format!("f{idx}");
        put_file(
            meta,
            chunks,
            &user,
            &name,
            Precondition::MustNotExist,
            name.as_bytes(),
        )
        .await;
    }
    let mut since = Cursor(0);
    let mut seen = Vec::new();
    loop {
        let page = meta.changes_since(user.id, since, 2).await.unwrap();
        assert!(!page.reset);
        assert!(page.changes.len() <= 2);
        seen.extend(page.changes.iter().map(Change::cursor));
        since = page.cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, (1..=5).map(Cursor).collect::<Vec<_>>());
    assert_eq!(since, Cursor(5));

    let page = meta.changes_since(user.id, Cursor(5), 2).await.unwrap();
    assert_eq!(
        (page.cursor, page.changes.len(), page.more, page.reset),
        (Cursor(5), 0, false, false)
    );
    let page = meta.changes_since(user.id, Cursor(9), 2).await.unwrap();
    assert_eq!(
        (page.cursor, page.changes.len(), page.more, page.reset),
        (Cursor(5), 0, false, true)
    );
    let page = meta.changes_since(user.id, Cursor(3), 2).await.unwrap();
    assert_eq!((page.cursor, page.more), (Cursor(5), false));
}

/// Chunks are verified against their hash before anything is written, are idempotent, and
/// `missing` lists exactly the absent ones.
pub async fn chunk_put_verify_missing(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("chunk-alice")).await.unwrap();
    let good = Bytes::from_static(b"good bytes");
    let good_hash = chunk_hash(&good);
    let other_hash = chunk_hash(b"other");
    assert_eq!(
        chunks
            .missing(user.id, &[good_hash, other_hash, good_hash])
            .await
            .unwrap(),
        [good_hash, other_hash]
    );

    // Bytes under the wrong name: refused, nothing stored.
    let err = chunks
        .put(user.id, &other_hash, good.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::HashMismatch { claimed, actual } if claimed == other_hash && actual == good_hash)
    );
    assert_eq!(
        chunks.missing(user.id, &[other_hash]).await.unwrap(),
        [other_hash]
    );
    assert!(matches!(
        chunks.get(user.id, &other_hash).await,
        Err(StoreError::NotFound(_))
    ));

    chunks.put(user.id, &good_hash, good.clone()).await.unwrap();
    chunks.put(user.id, &good_hash, good.clone()).await.unwrap();
    assert_eq!(
        chunks
            .missing(user.id, &[good_hash, other_hash])
            .await
            .unwrap(),
        [other_hash]
    );
    assert_eq!(chunks.get(user.id, &good_hash).await.unwrap(), good);

    let empty = Bytes::new();
    chunks
        .put(user.id, &chunk_hash(&empty), empty.clone())
        .await
        .unwrap();
    assert_eq!(
        chunks.get(user.id, &chunk_hash(&empty)).await.unwrap(),
        empty
    );

    let too_big = Bytes::from(vec![7u8; MAX_CHUNK_LEN as usize + 1]);
    let err = chunks
        .put(user.id, &chunk_hash(&too_big), too_big)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ChunkTooLarge { .. }), "{err}");
    let largest = Bytes::from(vec![7u8; MAX_CHUNK_LEN as usize]);
    chunks
        .put(user.id, &chunk_hash(&largest), largest.clone())
        .await
        .unwrap();
    assert_eq!(
        chunks
            .get(user.id, &chunk_hash(&largest))
            .await
            .unwrap()
            .len(),
        largest.len()
    );
}

/// Nothing is shared between users: not chunks, not paths, not cursors.
pub async fn per_user_isolation(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let alice = meta.create_user(&user_name("iso-alice")).await.unwrap();
    let bob = meta.create_user(&user_name("iso-bob")).await.unwrap();
    let secret = put_file(
        meta,
        chunks,
        &alice,
        "secret.txt",
        Precondition::MustNotExist,
        b"alice only",
    )
    .await;
    let secret_hash = chunk_hash(b"alice only");

    assert_eq!(
        chunks.missing(bob.id, &[secret_hash]).await.unwrap(),
        [secret_hash]
    );
    assert!(matches!(
        chunks.get(bob.id, &secret_hash).await,
        Err(StoreError::NotFound(_))
    ));
    // Bob cannot name Alice's chunk in a file either.
    let outcome = apply_one(
        meta,
        chunks,
        &bob,
        Op::PutFile {
            path: path("stolen"),
            base: Precondition::MustNotExist,
            size: secret.size,
            mtime_ms: 0,
            hash: secret.hash.unwrap_or_else(ContentHash::of_empty),
            chunks: secret.chunks.clone(),
        },
    )
    .await;
    assert!(matches!(outcome, OpOutcome::Invalid(_)), "{outcome:?}");

    let tree = meta.tree(bob.id).await.unwrap();
    assert_eq!((tree.cursor, tree.entries.len()), (Cursor(0), 0));
    assert_eq!(
        meta.changes_since(bob.id, Cursor(0), 10)
            .await
            .unwrap()
            .changes,
        Vec::new()
    );

    // The same path is independent per user, and cursors count per user.
    let bobs = put_file(
        meta,
        chunks,
        &bob,
        "secret.txt",
        Precondition::MustNotExist,
        b"bob's",
    )
    .await;
    assert_eq!(bobs.rev, Revision(1));
    let tree = meta.tree(alice.id).await.unwrap();
    assert_eq!(tree.entries, vec![secret]);
    assert_eq!(meta.current_cursor(alice.id).await.unwrap(), Cursor(1));
    let outcome = apply_one(
        meta,
        chunks,
        &bob,
        Op::Delete {
            path: path("secret.txt"),
            base: bobs.rev,
        },
    )
    .await;
    assert!(outcome.is_applied());
    assert_eq!(meta.tree(alice.id).await.unwrap().entries.len(), 1);
}

// Helpers. The device of every write is "dev".

fn user_name(text: &str) -> UserName {
    UserName::new(text).unwrap()
}

fn device_name(text: &str) -> DeviceName {
    DeviceName::new(text).unwrap()
}

fn path(text: &str) -> RelPath {
    RelPath::new(text).unwrap()
}

fn chunk_hash(bytes: &[u8]) -> ChunkHash {
    ChunkHash(*blake3::hash(bytes).as_bytes())
}

fn content_hash(bytes: &[u8]) -> ContentHash {
    ContentHash(*blake3::hash(bytes).as_bytes())
}

fn chunk_ref(bytes: &[u8]) -> ChunkRef {
    ChunkRef {
        hash: chunk_hash(bytes),
        len: bytes.len() as u32,
    }
}

fn entry_at(entries: &[RemoteEntry], at: &str) -> RemoteEntry {
    entries
        .iter()
        .find(|entry| entry.path.as_str() == at)
        .cloned()
        .unwrap_or_else(|| panic!("no entry at {at}"))
}

/// File content stored as one chunk (none when empty).
struct Content {
    bytes: Vec<u8>,
}

async fn store_chunk(chunks: &dyn ChunkStore, user: &User, bytes: &[u8]) -> Content {
    if !bytes.is_empty() {
        chunks
            .put(user.id, &chunk_hash(bytes), Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
    }
    Content {
        bytes: bytes.to_vec(),
    }
}

fn put_op(at: &str, base: Precondition, content: &Content) -> Op {
    let chunks = if content.bytes.is_empty() {
        Vec::new()
    } else {
        vec![chunk_ref(&content.bytes)]
    };
    Op::PutFile {
        path: path(at),
        base,
        size: content.bytes.len() as u64,
        mtime_ms: 1_700_000_000_000,
        hash: content_hash(&content.bytes),
        chunks,
    }
}

async fn apply(
    meta: &dyn MetaStore,
    chunks: &dyn ChunkStore,
    user: &User,
    ops: Vec<Op>,
) -> BatchOutcome {
    apply_ops(meta, chunks, user.id, &device_name("dev"), ops)
        .await
        .unwrap()
}

async fn apply_one(
    meta: &dyn MetaStore,
    chunks: &dyn ChunkStore,
    user: &User,
    op: Op,
) -> OpOutcome {
    let mut batch = apply(meta, chunks, user, vec![op]).await;
    assert_eq!(batch.outcomes.len(), 1);
    batch.outcomes.remove(0)
}

/// Stores `bytes` and puts them at `at`; returns the file's entry.
async fn put_file(
    meta: &dyn MetaStore,
    chunks: &dyn ChunkStore,
    user: &User,
    at: &str,
    base: Precondition,
    bytes: &[u8],
) -> RemoteEntry {
    let content = store_chunk(chunks, user, bytes).await;
    match apply_one(meta, chunks, user, put_op(at, base, &content)).await {
        OpOutcome::Applied(produced) => produced.last().cloned().unwrap(),
        other => panic!("put {at} failed: {other:?}"),
    }
}
