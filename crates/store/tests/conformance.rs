//! The contract suite every [`MetaStore`] + [`ChunkStore`] pair must pass.
//!
//! Each function is one test: it takes fresh stores (no users yet), panics on a broken
//! contract, and names its users after itself. [`lock_survives_reopen`] instead takes a function
//! that opens the same stores again. `tests/tests.rs` runs them all on SQLite + fs and on the
//! in-memory store, and `tests/shared.rs` on PostgreSQL + S3 (garage's `src/db/test.rs` does the
//! same). Test code only: nothing here is compiled into the library.

use bytes::Bytes;
use std::future::Future;
use syncstore_proto::{
    Change, ChunkHash, ChunkRef, ContentHash, Cursor, DeviceName, EntryKind, JournalTag, LockInfo,
    NodeId, Op, Precondition, RelPath, RemoteEntry, RestoreAction, RestoreTarget, Revision,
    TrashQuery, UserName, VersionKind, MAX_CHUNK_LEN, MAX_LOCK_TTL_SECS,
};
use syncstore_store::gc::{self, GcPolicy};
use syncstore_store::{
    apply_ops, web_device, Account, BatchOutcome, ChunkStore, DeviceId, LockOutcome, MetaStore,
    NewSession, OpOutcome, Principal, RemovedUser, Retention, Revocation, ShareId, ShareRecord,
    StoreError, TokenHash, User, UserId, WEB_DEVICE,
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
        .add_device(alice.id, &device_name("laptop"), &token_hash, NOW)
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
            &TokenHash::of_token("sst_other"),
            NOW
        )
        .await,
        Err(StoreError::AlreadyExists(_))
    ));
    let bob = meta.create_user(&user_name("auth-bob")).await.unwrap();
    assert!(matches!(
        meta.add_device(bob.id, &device_name("phone"), &token_hash, NOW)
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    let bob_laptop = meta
        .add_device(
            bob.id,
            &device_name("laptop"),
            &TokenHash::of_token("sst_auth_bob"),
            NOW,
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
            UserId(i64::MAX),
            &device_name("x"),
            &TokenHash::of_token("sst_x"),
            NOW
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
    let tree = meta.tree(user.id, NOW).await.unwrap();
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

    let tree = meta.tree(user.id, NOW).await.unwrap();
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

/// A mode-only change (`SetMode`) keeps the node's id and content, takes a new revision, is
/// journalled as an upsert, is conditional like every write, and the bit survives in the tree,
/// the journal and a `PutFile` that sets it.
pub async fn mode_only_change(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("mode-alice")).await.unwrap();
    let v1 = put_file(
        meta,
        chunks,
        &user,
        "run.sh",
        Precondition::MustNotExist,
        b"#!/bin/sh\n",
    )
    .await;
    assert!(!v1.executable);

    let outcome = apply_one(
        meta,
        chunks,
        &user,
        Op::SetMode {
            path: path("run.sh"),
            base: v1.rev,
            executable: true,
        },
    )
    .await;
    let OpOutcome::Applied(produced) = outcome else {
        panic!("set mode gave {outcome:?}");
    };
    let v2 = entry_at(&produced, "run.sh");
    assert!(v2.executable);
    assert!(v2.rev > v1.rev);
    assert_eq!(
        (v2.node_id, v2.hash, &v2.chunks, v2.size, v2.mtime_ms),
        (v1.node_id, v1.hash, &v1.chunks, v1.size, v1.mtime_ms)
    );
    let tree = meta.tree(user.id, NOW).await.unwrap();
    assert_eq!(tree.entries, vec![v2.clone()]);
    let page = meta.changes_since(user.id, Cursor(0), 100).await.unwrap();
    assert_eq!(
        page.changes.last(),
        Some(&Change::Upsert {
            cursor: Cursor(v2.rev.0),
            entry: v2.clone()
        })
    );

    // Conditional: a stale revision is 409 with the current node, and changes nothing.
    for stale in [v1.rev, Revision(v2.rev.0 + 10)] {
        let outcome = apply_one(
            meta,
            chunks,
            &user,
            Op::SetMode {
                path: path("run.sh"),
                base: stale,
                executable: false,
            },
        )
        .await;
        match outcome {
            OpOutcome::Conflict { current, .. } => assert_eq!(current, Some(v2.clone())),
            other => panic!("stale set mode gave {other:?}"),
        }
    }
    // Nothing there, or a directory: 409.
    put_file(
        meta,
        chunks,
        &user,
        "dir/inner",
        Precondition::MustNotExist,
        b"x",
    )
    .await;
    let dir = entry_at(&meta.tree(user.id, NOW).await.unwrap().entries, "dir");
    for (at, base) in [("missing", v2.rev), ("dir", dir.rev)] {
        let outcome = apply_one(
            meta,
            chunks,
            &user,
            Op::SetMode {
                path: path(at),
                base,
                executable: true,
            },
        )
        .await;
        assert!(
            matches!(outcome, OpOutcome::Conflict { .. }),
            "set mode of {at} gave {outcome:?}"
        );
    }

    // Another device's lock refuses it (423), the holder's own passes.
    assert!(matches!(
        take(meta, &user, "other", "run.sh", None, NOW).await,
        LockOutcome::Done { .. }
    ));
    let set_mode = Op::SetMode {
        path: path("run.sh"),
        base: v2.rev,
        executable: false,
    };
    let batch = apply_as(meta, chunks, &user, "dev", vec![set_mode.clone()], NOW).await;
    assert!(
        matches!(batch.outcomes[0], OpOutcome::Locked(_)),
        "{:?}",
        batch.outcomes
    );
    let batch = apply_as(meta, chunks, &user, "other", vec![set_mode], NOW).await;
    let OpOutcome::Applied(produced) = &batch.outcomes[0] else {
        panic!("the holder's set mode gave {:?}", batch.outcomes);
    };
    assert!(!produced[0].executable);

    // A `PutFile` carries the bit, and a new version without it clears it.
    let content = store_chunk(chunks, &user, b"#!/bin/sh\necho hi\n").await;
    let mut put = put_op("tool", Precondition::MustNotExist, &content);
    if let Op::PutFile { executable, .. } = &mut put {
        *executable = true;
    }
    let OpOutcome::Applied(produced) = apply_one(meta, chunks, &user, put).await else {
        panic!("put of an executable failed");
    };
    let tool = entry_at(&produced, "tool");
    assert!(tool.executable);
    assert!(entry_at(&meta.tree(user.id, NOW).await.unwrap().entries, "tool").executable);
    let plain = put_file(
        meta,
        chunks,
        &user,
        "tool",
        Precondition::Rev(tool.rev),
        b"plain",
    )
    .await;
    assert!(!plain.executable);
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
        executable: false,
    };
    // A content hash that is not the one its chunks give: 400, also for a file of two stored
    // chunks whose hash is the BLAKE3 of its bytes (only a one-chunk file's is).
    let mut wrong_hash = put_op("g", Precondition::MustNotExist, &content);
    if let Op::PutFile { hash, .. } = &mut wrong_hash {
        *hash = content_hash(b"something else");
    }
    store_chunk(chunks, &user, b"first part").await;
    store_chunk(chunks, &user, b"second part").await;
    let two_chunks = vec![chunk_ref(b"first part"), chunk_ref(b"second part")];
    let two_chunk_op = |hash| Op::PutFile {
        path: path("two"),
        base: Precondition::MustNotExist,
        size: 21,
        mtime_ms: 0,
        hash,
        chunks: two_chunks.clone(),
        executable: false,
    };
    let two_chunks_bytes_hash = two_chunk_op(content_hash(b"first partsecond part"));
    for op in [wrong_size, missing_chunk, wrong_hash, two_chunks_bytes_hash] {
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
    assert!(
        matches!(
            &batch.outcomes[..],
            [
                OpOutcome::Applied(_),
                OpOutcome::Conflict { .. },
                OpOutcome::Applied(_)
            ]
        ),
        "{:?}",
        batch.outcomes
    );
    assert_eq!(batch.cursor, Cursor(5));
    let tree = meta.tree(user.id, NOW).await.unwrap();
    let paths: Vec<&str> = tree
        .entries
        .iter()
        .map(|entry| entry.path.as_str())
        .collect();
    assert_eq!(paths, ["d", "f"]);
    assert_eq!(tree.entries[1].rev, Revision(4));
    assert_eq!(tree.entries[1].hash, Some(content_hash(b"v2")));

    // The same two chunks with the hash they give are a valid file.
    let outcome = apply_one(
        meta,
        chunks,
        &user,
        two_chunk_op(ContentHash::of_chunks(&two_chunks)),
    )
    .await;
    assert!(matches!(outcome, OpOutcome::Applied(_)), "{outcome:?}");
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
    let before = meta.tree(user.id, NOW).await.unwrap();
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

    let after = meta.tree(user.id, NOW).await.unwrap();
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
            .missing(user.namespace, &[good_hash, other_hash, good_hash])
            .await
            .unwrap(),
        [good_hash, other_hash]
    );

    // Bytes under the wrong name: refused, nothing stored.
    let err = chunks
        .put(user.namespace, &other_hash, good.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::HashMismatch { claimed, actual } if claimed == other_hash && actual == good_hash)
    );
    assert_eq!(
        chunks.missing(user.namespace, &[other_hash]).await.unwrap(),
        [other_hash]
    );
    assert!(matches!(
        chunks.get(user.namespace, &other_hash).await,
        Err(StoreError::NotFound(_))
    ));

    chunks
        .put(user.namespace, &good_hash, good.clone())
        .await
        .unwrap();
    chunks
        .put(user.namespace, &good_hash, good.clone())
        .await
        .unwrap();
    assert_eq!(
        chunks
            .missing(user.namespace, &[good_hash, other_hash])
            .await
            .unwrap(),
        [other_hash]
    );
    assert_eq!(chunks.get(user.namespace, &good_hash).await.unwrap(), good);

    let empty = Bytes::new();
    chunks
        .put(user.namespace, &chunk_hash(&empty), empty.clone())
        .await
        .unwrap();
    assert_eq!(
        chunks
            .get(user.namespace, &chunk_hash(&empty))
            .await
            .unwrap(),
        empty
    );

    let too_big = Bytes::from(vec![7u8; MAX_CHUNK_LEN as usize + 1]);
    let err = chunks
        .put(user.namespace, &chunk_hash(&too_big), too_big)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ChunkTooLarge { .. }), "{err}");
    let largest = Bytes::from(vec![7u8; MAX_CHUNK_LEN as usize]);
    chunks
        .put(user.namespace, &chunk_hash(&largest), largest.clone())
        .await
        .unwrap();
    assert_eq!(
        chunks
            .get(user.namespace, &chunk_hash(&largest))
            .await
            .unwrap()
            .len(),
        largest.len()
    );
}

/// `put_batch` stores small batches and large ones (many chunks, or many bytes) like `put` each
/// chunk: verified, idempotent, readable at once.
pub async fn chunk_put_batch(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("batch-alice")).await.unwrap();
    let stored_before = Bytes::from_static(b"stored before");
    chunks
        .put(
            user.namespace,
            &chunk_hash(&stored_before),
            stored_before.clone(),
        )
        .await
        .unwrap();
    let small: Vec<Bytes> = vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")];
    let many: Vec<Bytes> = (0..40)
        .map(|idx| Bytes::from(format!("chunk number {idx}")))
        .collect();
    let large: Vec<Bytes> = (0..3u8)
        .map(|idx| Bytes::from(vec![idx; 300_000]))
        .collect();
    for batch in [small, many, large] {
        let mut named: Vec<(ChunkHash, Bytes)> = batch
            .iter()
            .map(|bytes| (chunk_hash(bytes), bytes.clone()))
            .collect();
        // A repeat within the batch and a chunk stored before are no trouble.
        named.push(named[0].clone());
        named.push((chunk_hash(&stored_before), stored_before.clone()));
        let hashes: Vec<ChunkHash> = named.iter().map(|(hash, _)| *hash).collect();
        chunks.put_batch(user.namespace, named).await.unwrap();
        assert_eq!(chunks.missing(user.namespace, &hashes).await.unwrap(), []);
        for bytes in &batch {
            assert_eq!(
                &chunks
                    .get(user.namespace, &chunk_hash(bytes))
                    .await
                    .unwrap(),
                bytes
            );
        }
    }

    // Bytes under the wrong name fail the batch and are not stored under that name.
    let forged_hash = chunk_hash(b"claimed");
    let mut forged: Vec<(ChunkHash, Bytes)> = (0..20)
        .map(|idx| {
            let bytes = Bytes::from(format!("honest {idx}"));
            (chunk_hash(&bytes), bytes)
        })
        .collect();
    forged.insert(10, (forged_hash, Bytes::from_static(b"other bytes")));
    let err = chunks.put_batch(user.namespace, forged).await.unwrap_err();
    assert!(
        matches!(err, StoreError::HashMismatch { claimed, .. } if claimed == forged_hash),
        "{err}"
    );
    assert_eq!(
        chunks
            .missing(user.namespace, &[forged_hash])
            .await
            .unwrap(),
        [forged_hash]
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
        chunks.missing(bob.namespace, &[secret_hash]).await.unwrap(),
        [secret_hash]
    );
    assert!(matches!(
        chunks.get(bob.namespace, &secret_hash).await,
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
            executable: false,
        },
    )
    .await;
    assert!(matches!(outcome, OpOutcome::Invalid(_)), "{outcome:?}");

    let tree = meta.tree(bob.id, NOW).await.unwrap();
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
    let tree = meta.tree(alice.id, NOW).await.unwrap();
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
    assert_eq!(meta.tree(alice.id, NOW).await.unwrap().entries.len(), 1);
}

/// One lock request, on a fresh user whose tree holds the files `f`, `d/e/f` and `d-sibling`.
#[derive(Debug)]
struct LockCase {
    /// The locks in force before the request, taken at [`NOW`]: (device, path, TTL in seconds).
    held: &'static [(&'static str, &'static str, Option<u64>)],
    /// The device that asks.
    asker: &'static str,
    /// What it asks for.
    request: LockRequest,
    /// The path it names.
    path: &'static str,
    /// When it asks, in milliseconds after [`NOW`].
    after_ms: i64,
    /// What it gets.
    expect: Expect,
}

/// A take (with its TTL) or a release (with `force`).
#[derive(Clone, Copy, Debug)]
enum LockRequest {
    Take { ttl_secs: Option<u64> },
    Release { force: bool },
}

/// The expected outcome of a [`LockCase`].
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The asker holds the lock on the path, since and until these times after [`NOW`].
    Taken {
        since_after_ms: i64,
        expires_after_ms: Option<i64>,
    },
    /// The lock `holder` held on the path ended; by another device than the holder when
    /// `broken`.
    Released { holder: &'static str, broken: bool },
    /// Refused: a bad TTL.
    Invalid,
    /// Refused: nothing to lock, or no lock in force to release.
    NotFound,
    /// Refused by the lock `holder` holds on `path`, as it was taken.
    LockedBy {
        holder: &'static str,
        path: &'static str,
    },
}

/// Every rule of taking, renewing, releasing and breaking a lock, one row a case.
#[rustfmt::skip]
const LOCK_CASES: &[LockCase] = {
    use Expect::{Invalid, NotFound};
    use LockRequest::{Release, Take};
    const FOREVER: Option<u64> = None;
    const TAKE: LockRequest = Take { ttl_secs: FOREVER };
    const TAKE_60: LockRequest = Take { ttl_secs: Some(60) };
    const TAKE_0: LockRequest = Take { ttl_secs: Some(0) };
    const TAKE_MAX: LockRequest = Take { ttl_secs: Some(MAX_LOCK_TTL_SECS) };
    const TAKE_OVER_MAX: LockRequest = Take { ttl_secs: Some(MAX_LOCK_TTL_SECS + 1) };
    const RELEASE: LockRequest = Release { force: false };
    const BREAK: LockRequest = Release { force: true };
    const MAX_TTL_MS: i64 = MAX_LOCK_TTL_SECS as i64 * 1000;
    const fn taken(since_after_ms: i64, expires_after_ms: Option<i64>) -> Expect {
        Expect::Taken { since_after_ms, expires_after_ms }
    }
    const fn released(holder: &'static str, broken: bool) -> Expect {
        Expect::Released { holder, broken }
    }
    const fn by(holder: &'static str, path: &'static str) -> Expect {
        Expect::LockedBy { holder, path }
    }
    const fn case(
        held: &'static [(&'static str, &'static str, Option<u64>)],
        asker: &'static str,
        request: LockRequest,
        path: &'static str,
        after_ms: i64,
        expect: Expect,
    ) -> LockCase {
        LockCase { held, asker, request, path, after_ms, expect }
    }
    &[
        //   held (device, path, TTL s)       asker     request        path         after ms  expected
        // Taking a free path, with or without a TTL; bad TTLs; nothing there.
        case(&[],                             "laptop", TAKE,          "f",         0,        taken(0, None)),
        case(&[],                             "laptop", TAKE_MAX,      "f",         0,        taken(0, Some(MAX_TTL_MS))),
        case(&[],                             "laptop", TAKE_0,        "f",         0,        Invalid),
        case(&[],                             "laptop", TAKE_OVER_MAX, "f",         0,        Invalid),
        case(&[],                             "laptop", TAKE,          "nothing",   0,        NotFound),
        // Another device's lock in the way: at the path, above it, beneath it.
        case(&[("laptop", "f", FOREVER)],     "phone",  TAKE,          "f",         5,        by("laptop", "f")),
        case(&[("laptop", "d", FOREVER)],     "phone",  TAKE,          "d/e",       0,        by("laptop", "d")),
        case(&[("laptop", "d", FOREVER)],     "phone",  TAKE,          "d/e/f",     0,        by("laptop", "d")),
        case(&[("laptop", "d/e/f", FOREVER)], "phone",  TAKE,          "d",         0,        by("laptop", "d/e/f")),
        // A sibling whose name merely starts with "d" is not covered.
        case(&[("laptop", "d", FOREVER)],     "phone",  TAKE,          "d-sibling", 0,        taken(0, None)),
        // The holder locks inside its own lock, and renews: a new TTL, the same start.
        case(&[("laptop", "d", FOREVER)],     "laptop", TAKE,          "d/e/f",     0,        taken(0, None)),
        case(&[("laptop", "f", FOREVER)],     "laptop", TAKE_60,       "f",         60_000,   taken(0, Some(120_000))),
        case(&[("laptop", "f", Some(60))],    "laptop", TAKE,          "f",         1,        taken(0, None)),
        // A lock with a TTL is in the way until its `expires_ms`, and absent from then on.
        case(&[("laptop", "f", Some(60))],    "phone",  TAKE,          "f",         59_999,   by("laptop", "f")),
        case(&[("laptop", "f", Some(60))],    "phone",  TAKE,          "f",         60_000,   taken(60_000, None)),
        // Releasing one's own lock, with or without force; nothing to release.
        case(&[("laptop", "f", FOREVER)],     "laptop", RELEASE,       "f",         0,        released("laptop", false)),
        case(&[("laptop", "f", FOREVER)],     "laptop", BREAK,         "f",         0,        released("laptop", false)),
        case(&[],                             "laptop", RELEASE,       "f",         0,        NotFound),
        case(&[("laptop", "f", Some(60))],    "laptop", RELEASE,       "f",         60_000,   NotFound),
        // Only a lock on exactly the path is released, not one above it.
        case(&[("laptop", "d", FOREVER)],     "laptop", RELEASE,       "d/e",       0,        NotFound),
        // Another device's lock: refused without force; with it, any device of the user breaks it.
        case(&[("laptop", "f", FOREVER)],     "phone",  RELEASE,       "f",         0,        by("laptop", "f")),
        case(&[("laptop", "f", FOREVER)],     "phone",  BREAK,         "f",         1,        released("laptop", true)),
        case(&[("laptop", "f", Some(60))],    "phone",  BREAK,         "f",         60_000,   NotFound),
    ]
};

/// Runs every row of [`LOCK_CASES`], each on a fresh user: the outcome, the journal row a
/// change writes (and that a refusal writes none), and the locks in force afterwards.
pub async fn lock_requests(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    for (idx, case) in LOCK_CASES.iter().enumerate() {
        let user = meta
            .create_user(&user_name(&format!("lockcase-{idx}")))
            .await
            .unwrap();
        for at in ["f", "d/e/f", "d-sibling"] {
            put_file(
                meta,
                chunks,
                &user,
                at,
                Precondition::MustNotExist,
                at.as_bytes(),
            )
            .await;
        }
        let mut held = Vec::new();
        for &(device, at, ttl_secs) in case.held {
            match take(meta, &user, device, at, ttl_secs, NOW).await {
                LockOutcome::Done { lock, .. } => held.push(lock),
                other => panic!("case {idx}: taking {at} for {device} gave {other:?}"),
            }
        }
        let before = meta.current_cursor(user.id).await.unwrap();
        let now_ms = NOW + case.after_ms;
        let outcome = match case.request {
            LockRequest::Take { ttl_secs } => {
                take(meta, &user, case.asker, case.path, ttl_secs, now_ms).await
            }
            LockRequest::Release { force } => {
                release(meta, &user, case.asker, case.path, force, now_ms).await
            }
        };
        let held_at = |holder: &str, at: &str| {
            held.iter()
                .find(|lock| lock.device.as_str() == holder && lock.path.as_str() == at)
                .cloned()
                .unwrap_or_else(|| panic!("case {idx}: {holder} held no lock on {at}"))
        };
        let journal = meta
            .changes_since(user.id, before, 10)
            .await
            .unwrap()
            .changes;
        let in_force = meta.locks(user.id, now_ms).await.unwrap();
        let context = format!("case {idx} ({case:?}) gave {outcome:?}");
        match case.expect {
            Expect::Taken {
                since_after_ms,
                expires_after_ms,
            } => {
                let lock = LockInfo {
                    path: path(case.path),
                    device: device_name(case.asker),
                    since_ms: NOW + since_after_ms,
                    expires_ms: expires_after_ms.map(|after_ms| NOW + after_ms),
                };
                let cursor = Cursor(before.0 + 1);
                assert_eq!(
                    outcome,
                    LockOutcome::Done {
                        lock: lock.clone(),
                        cursor
                    },
                    "{context}"
                );
                assert_eq!(
                    journal,
                    [Change::Lock {
                        cursor,
                        lock: lock.clone()
                    }],
                    "{context}"
                );
                assert!(in_force.contains(&lock), "{context}: {in_force:?}");
            }
            Expect::Released { holder, broken } => {
                let lock = held_at(holder, case.path);
                let cursor = Cursor(before.0 + 1);
                assert_eq!(
                    outcome,
                    LockOutcome::Done {
                        lock: lock.clone(),
                        cursor
                    },
                    "{context}"
                );
                assert_eq!(
                    journal,
                    [Change::Unlock {
                        cursor,
                        path: lock.path.clone(),
                        device: lock.device.clone(),
                        broken_by: broken.then(|| device_name(case.asker)),
                    }],
                    "{context}"
                );
                assert!(
                    !in_force.iter().any(|other| other.path == lock.path),
                    "{context}: {in_force:?}"
                );
            }
            Expect::Invalid | Expect::NotFound | Expect::LockedBy { .. } => {
                match (case.expect, &outcome) {
                    (Expect::Invalid, LockOutcome::Invalid(message)) => {
                        assert!(message.contains("TTL"), "{context}");
                    }
                    (Expect::NotFound, LockOutcome::NotFound(message)) => {
                        assert!(message.contains(case.path), "{context}");
                    }
                    (Expect::LockedBy { holder, path }, LockOutcome::Locked(lock)) => {
                        assert_eq!(*lock, held_at(holder, path), "{context}");
                    }
                    _ => panic!("{context}"),
                }
                assert_eq!(journal, [], "{context}");
                assert_eq!(
                    meta.current_cursor(user.id).await.unwrap(),
                    before,
                    "{context}"
                );
                let expected: Vec<LockInfo> = held
                    .iter()
                    .filter(|lock| lock.in_force(now_ms))
                    .cloned()
                    .collect();
                assert_eq!(in_force, expected, "{context}");
            }
        }
    }
}

/// A lock of one user is nothing to another: the same path and device name lock freely.
pub async fn lock_is_per_user(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let alice = meta.create_user(&user_name("peruser-alice")).await.unwrap();
    let bob = meta.create_user(&user_name("peruser-bob")).await.unwrap();
    for user in [&alice, &bob] {
        put_file(meta, chunks, user, "f", Precondition::MustNotExist, b"f").await;
    }
    take(meta, &alice, "laptop", "f", None, NOW).await;
    assert!(matches!(
        take(meta, &bob, "phone", "f", None, NOW).await,
        LockOutcome::Done { .. }
    ));
    let bobs = meta.tree(bob.id, NOW).await.unwrap();
    let batch = apply_as(
        meta,
        chunks,
        &bob,
        "laptop",
        vec![Op::Delete {
            path: path("f"),
            base: entry_at(&bobs.entries, "f").rev,
        }],
        NOW,
    )
    .await;
    // Bob's own lock, held by his phone, refuses his laptop; Alice's laptop lock plays no part.
    assert!(
        matches!(&batch.outcomes[0], OpOutcome::Locked(lock) if lock.device.as_str() == "phone"),
        "{:?}",
        batch.outcomes
    );
    assert_eq!(meta.locks(alice.id, NOW).await.unwrap().len(), 1);
    assert_eq!(meta.locks(bob.id, NOW).await.unwrap().len(), 1);
}

/// Every journal position has a tag: all zero at cursor 0, a fresh one for each new position
/// (file and lock changes alike), kept for good; trees and pages name the tag of their cursor.
pub async fn journal_tags(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("tags-alice")).await.unwrap();
    assert_eq!(
        meta.journal_tag(user.id, Cursor(0)).await.unwrap(),
        Some(JournalTag::default())
    );
    assert_eq!(meta.journal_tag(user.id, Cursor(1)).await.unwrap(), None);
    let tree = meta.tree(user.id, NOW).await.unwrap();
    assert_eq!(tree.cursor_tag, JournalTag::default());

    let content = store_chunk(chunks, &user, b"tagged").await;
    let first = apply(
        meta,
        chunks,
        &user,
        vec![put_op("f", Precondition::MustNotExist, &content)],
    )
    .await;
    assert_eq!(first.cursor, Cursor(1));
    assert_ne!(first.cursor_tag, JournalTag::default());
    assert_eq!(
        meta.journal_tag(user.id, Cursor(1)).await.unwrap(),
        Some(first.cursor_tag)
    );
    assert_eq!(meta.journal_tag(user.id, Cursor(2)).await.unwrap(), None);

    let LockOutcome::Done { cursor, .. } = take(meta, &user, "laptop", "f", None, NOW).await else {
        panic!("lock refused");
    };
    assert_eq!(cursor, Cursor(2));
    let lock_tag = meta.journal_tag(user.id, cursor).await.unwrap().unwrap();
    // A batch that applies nothing leaves the journal as it was.
    let refused = apply(
        meta,
        chunks,
        &user,
        vec![put_op("f", Precondition::MustNotExist, &content)],
    )
    .await;
    assert_eq!((refused.cursor, refused.cursor_tag), (cursor, lock_tag));
    let second = apply(
        meta,
        chunks,
        &user,
        vec![Op::MakeDir {
            path: path("d"),
            mtime_ms: 1,
        }],
    )
    .await;
    let tags = [
        JournalTag::default(),
        first.cursor_tag,
        lock_tag,
        second.cursor_tag,
    ];
    for (idx, tag) in tags.iter().enumerate() {
        assert!(!tags[..idx].contains(tag), "tag {idx} repeats: {tags:?}");
        assert_eq!(
            meta.journal_tag(user.id, Cursor(idx as u64)).await.unwrap(),
            Some(*tag)
        );
    }

    let tree = meta.tree(user.id, NOW).await.unwrap();
    assert_eq!(
        (tree.cursor, tree.cursor_tag),
        (Cursor(3), second.cursor_tag)
    );
    let page = meta.changes_since(user.id, Cursor(0), 1).await.unwrap();
    assert_eq!(
        (page.cursor, page.cursor_tag, page.more),
        (Cursor(1), first.cursor_tag, true)
    );
    let page = meta.changes_since(user.id, Cursor(2), 10).await.unwrap();
    assert_eq!(
        (page.cursor, page.cursor_tag),
        (Cursor(3), second.cursor_tag)
    );
    let page = meta.changes_since(user.id, Cursor(3), 10).await.unwrap();
    assert_eq!(
        (page.cursor, page.cursor_tag),
        (Cursor(3), second.cursor_tag)
    );
    let reset = meta.changes_since(user.id, Cursor(9), 10).await.unwrap();
    assert_eq!(
        (reset.reset, reset.cursor, reset.cursor_tag),
        (true, Cursor(3), second.cursor_tag)
    );

    // Tags are per user: another user's journal is not reached by this one's cursor.
    let bob = meta.create_user(&user_name("tags-bob")).await.unwrap();
    assert_eq!(meta.journal_tag(bob.id, Cursor(1)).await.unwrap(), None);
    assert!(matches!(
        meta.journal_tag(UserId(i64::MAX), Cursor(0)).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Upload streams: parts in order per stream, refused when they do not continue it, hidden
/// from their own device, ended by a commit of the path, dead once idle.
pub async fn upload_streams(meta: &dyn MetaStore, _chunks: &dyn ChunkStore) {
    use syncstore_proto::StreamPart;
    use syncstore_store::streams::{PartRefused, STREAM_IDLE_MS};
    let user = meta.create_user(&user_name("streams-alice")).await.unwrap();
    let laptop = meta
        .add_device(
            user.id,
            &device_name("laptop"),
            &TokenHash::of_token("sst_streams_a"),
            NOW,
        )
        .await
        .unwrap();
    let desktop = meta
        .add_device(
            user.id,
            &device_name("desktop"),
            &TokenHash::of_token("sst_streams_b"),
            NOW,
        )
        .await
        .unwrap();
    let one = chunk_ref(b"first chunk");
    let two = chunk_ref(b"second chunk");
    let part = |stream: &str, offset: u64, chunks: Vec<ChunkRef>| StreamPart {
        path: path("big.bin"),
        stream: stream.to_string(),
        size: 100,
        offset,
        chunks,
    };
    let s1 = "11111111111111111111111111111111";
    let first = meta
        .add_stream_part(user.id, laptop.id, part(s1, 0, vec![one]), NOW)
        .await
        .unwrap()
        .unwrap();
    // A part must continue the stream where it ended, from the same device.
    assert_eq!(
        meta.add_stream_part(user.id, laptop.id, part(s1, 5, vec![two]), NOW)
            .await
            .unwrap(),
        Err(PartRefused::NotContinuing {
            stream: s1.into(),
            end: u64::from(one.len),
            offset: 5
        })
    );
    assert!(matches!(
        meta.add_stream_part(
            user.id,
            desktop.id,
            part(s1, u64::from(one.len), vec![two]),
            NOW
        )
        .await
        .unwrap(),
        Err(PartRefused::NotYours { .. })
    ));
    assert!(matches!(
        meta.add_stream_part(
            user.id,
            laptop.id,
            part("22222222222222222222222222222222", 7, vec![two]),
            NOW
        )
        .await
        .unwrap(),
        Err(PartRefused::UnknownStream { .. })
    ));
    let second = meta
        .add_stream_part(
            user.id,
            laptop.id,
            part(s1, u64::from(one.len), vec![two]),
            NOW + 1,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(second > first);
    // The other device sees both parts in order; the uploader sees none of its own.
    let page = meta
        .stream_parts(user.id, desktop.id, 0, 10, NOW + 2)
        .await
        .unwrap();
    assert_eq!(page.live, vec![s1.to_string()]);
    let seqs: Vec<u64> = page.parts.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, vec![first, second]);
    assert_eq!(page.parts[0].device_name.as_str(), "laptop");
    assert_eq!(page.parts[1].part.chunks, vec![two]);
    assert_eq!(page.seq, second);
    let after = meta
        .stream_parts(user.id, desktop.id, first, 1, NOW + 2)
        .await
        .unwrap();
    assert_eq!(after.parts.len(), 1);
    assert!(!after.more);
    let own = meta
        .stream_parts(user.id, laptop.id, 0, 10, NOW + 2)
        .await
        .unwrap();
    assert!(own.parts.is_empty() && own.live.is_empty());
    // A commit of the path by its device ends the stream.
    meta.end_streams(user.id, laptop.id, vec![path("big.bin")])
        .await
        .unwrap();
    let ended = meta
        .stream_parts(user.id, desktop.id, 0, 10, NOW + 3)
        .await
        .unwrap();
    assert!(ended.parts.is_empty() && ended.live.is_empty());
    // Positions are never handed out twice, even after every part went.
    let s3 = "33333333333333333333333333333333";
    let third = meta
        .add_stream_part(user.id, laptop.id, part(s3, 0, vec![one]), NOW + 4)
        .await
        .unwrap()
        .unwrap();
    assert!(third > second);
    // A stream idle for long is not live, and its parts go at the next write.
    let late = NOW + 5 + STREAM_IDLE_MS;
    let idle = meta
        .stream_parts(user.id, desktop.id, 0, 10, late)
        .await
        .unwrap();
    assert!(idle.live.is_empty() && idle.parts.is_empty());
    let s4 = "44444444444444444444444444444444";
    meta.add_stream_part(user.id, desktop.id, part(s4, 0, vec![two]), late)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        meta.add_stream_part(
            user.id,
            laptop.id,
            part(s3, u64::from(one.len), vec![two]),
            late
        )
        .await
        .unwrap(),
        Err(PartRefused::UnknownStream { .. })
    ));
    let from_laptop = meta
        .stream_parts(user.id, laptop.id, 0, 10, late)
        .await
        .unwrap();
    assert_eq!(from_laptop.live, vec![s4.to_string()]);
    assert_eq!(from_laptop.parts.len(), 1);
}

/// The wanted list: chunks added once, listed by hash up to a limit, dropped when stored again,
/// and per user.
pub async fn wanted_chunks(meta: &dyn MetaStore, _chunks: &dyn ChunkStore) {
    let alice = meta.create_user(&user_name("wanted-alice")).await.unwrap();
    let bob = meta.create_user(&user_name("wanted-bob")).await.unwrap();
    let mut hashes: Vec<ChunkHash> = [b"one".as_slice(), b"two", b"three"]
        .iter()
        .map(|bytes| chunk_hash(bytes))
        .collect();
    assert_eq!(meta.wanted_chunks(alice.id, 10).await.unwrap(), []);
    assert_eq!(
        meta.want_chunks(alice.id, &[hashes[0], hashes[1], hashes[0]])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        meta.want_chunks(alice.id, &[hashes[1], hashes[2]])
            .await
            .unwrap(),
        1
    );
    assert_eq!(meta.want_chunks(alice.id, &[]).await.unwrap(), 0);
    hashes.sort();
    assert_eq!(meta.wanted_chunks(alice.id, 10).await.unwrap(), hashes);
    assert_eq!(meta.wanted_chunks(alice.id, 2).await.unwrap(), hashes[..2]);
    assert_eq!(meta.wanted_chunks(bob.id, 10).await.unwrap(), []);

    meta.unwant_chunks(alice.id, &[hashes[1], chunk_hash(b"never wanted")])
        .await
        .unwrap();
    assert_eq!(
        meta.wanted_chunks(alice.id, 10).await.unwrap(),
        [hashes[0], hashes[2]]
    );
    assert_eq!(meta.want_chunks(bob.id, &[hashes[1]]).await.unwrap(), 1);
    assert_eq!(meta.wanted_chunks(bob.id, 10).await.unwrap(), [hashes[1]]);
    assert_eq!(
        meta.wanted_chunks(alice.id, 10).await.unwrap(),
        [hashes[0], hashes[2]]
    );
}

/// WebDAV dead properties: set, replaced and removed per node in one call, listed sorted by
/// namespace and name, per user, and gone with the node's `remove_dead_props` or the account.
pub async fn dead_props(meta: &dyn MetaStore, _chunks: &dyn ChunkStore) {
    use syncstore_store::DeadProp;
    let alice = meta.create_user(&user_name("props-alice")).await.unwrap();
    let bob = meta.create_user(&user_name("props-bob")).await.unwrap();
    let prop = |namespace: &str, name: &str, xml: Option<&str>| DeadProp {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        prefix: Some("ns".to_owned()),
        xml: xml.map(|xml| xml.as_bytes().to_vec()),
    };
    let (node, other) = (NodeId(7), NodeId(8));
    assert_eq!(meta.dead_props(alice.id, node).await.unwrap(), []);
    meta.patch_dead_props(
        alice.id,
        node,
        vec![
            (
                true,
                prop("urn:b", "color", Some("<ns:color>red</ns:color>")),
            ),
            (true, prop("urn:a", "size", Some("<ns:size>9</ns:size>"))),
            (true, prop("", "empty", None)),
        ],
    )
    .await
    .unwrap();
    meta.patch_dead_props(
        alice.id,
        node,
        vec![
            (
                true,
                prop("urn:b", "color", Some("<ns:color>blue</ns:color>")),
            ),
            (false, prop("urn:a", "size", None)),
            (false, prop("urn:a", "never-set", None)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        meta.dead_props(alice.id, node).await.unwrap(),
        [
            prop("", "empty", None),
            prop("urn:b", "color", Some("<ns:color>blue</ns:color>"))
        ]
    );
    assert_eq!(meta.dead_props(alice.id, other).await.unwrap(), []);
    assert_eq!(meta.dead_props(bob.id, node).await.unwrap(), []);
    meta.patch_dead_props(bob.id, node, vec![(true, prop("urn:a", "size", Some("1")))])
        .await
        .unwrap();
    meta.remove_dead_props(alice.id, node).await.unwrap();
    assert_eq!(meta.dead_props(alice.id, node).await.unwrap(), []);
    assert_eq!(meta.dead_props(bob.id, node).await.unwrap().len(), 1);
    meta.remove_user(bob.id, NOW).await.unwrap();
    assert_eq!(meta.dead_props(bob.id, node).await.unwrap(), []);
}

/// Another device's ops on covered paths get 423 and change nothing; the holder's pass, and its
/// delete ends the lock while its move carries the lock along.
pub async fn lock_refuses_ops_of_other_devices(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("lockops-alice")).await.unwrap();
    let file = put_file(meta, chunks, &user, "f", Precondition::MustNotExist, b"f").await;
    let inner = put_file(
        meta,
        chunks,
        &user,
        "d/inner",
        Precondition::MustNotExist,
        b"i",
    )
    .await;
    let x = put_file(meta, chunks, &user, "x", Precondition::MustNotExist, b"x").await;
    let tree = meta.tree(user.id, NOW).await.unwrap();
    let d = entry_at(&tree.entries, "d");
    apply_one(
        meta,
        chunks,
        &user,
        Op::MakeDir {
            path: path("locked-dir"),
            mtime_ms: 1,
        },
    )
    .await;
    for at in ["f", "d/inner", "locked-dir"] {
        assert!(matches!(
            take(meta, &user, "laptop", at, None, NOW).await,
            LockOutcome::Done { .. }
        ));
    }
    let cursor = meta.current_cursor(user.id).await.unwrap();
    let content = store_chunk(chunks, &user, b"phone's edit").await;

    let refused = [
        put_op("f", Precondition::Rev(file.rev), &content),
        put_op("locked-dir/new", Precondition::MustNotExist, &content),
        put_op("d/inner", Precondition::Rev(inner.rev), &content),
        Op::MakeDir {
            path: path("locked-dir/sub"),
            mtime_ms: 1,
        },
        Op::MakeDir {
            path: path("locked-dir"),
            mtime_ms: 1,
        },
        Op::Delete {
            path: path("f"),
            base: file.rev,
        },
        // Not empty either, but the lock beneath is the first reason.
        Op::Delete {
            path: path("d"),
            base: d.rev,
        },
        Op::Move {
            from: path("f"),
            to: path("g"),
            base: file.rev,
        },
        Op::Move {
            from: path("d"),
            to: path("e"),
            base: d.rev,
        },
        Op::Move {
            from: path("x"),
            to: path("locked-dir/x"),
            base: x.rev,
        },
    ];
    for op in refused {
        let batch = apply_as(meta, chunks, &user, "phone", vec![op.clone()], NOW).await;
        let outcome = &batch.outcomes[0];
        assert!(
            matches!(outcome, OpOutcome::Locked(lock) if lock.device.as_str() == "laptop" && lock.since_ms == NOW),
            "{op:?} gave {outcome:?}"
        );
    }
    assert_eq!(meta.current_cursor(user.id).await.unwrap(), cursor);
    // Paths nobody locked are still free for the phone.
    let batch = apply_as(
        meta,
        chunks,
        &user,
        "phone",
        vec![put_op("elsewhere", Precondition::MustNotExist, &content)],
        NOW,
    )
    .await;
    assert!(batch.outcomes[0].is_applied(), "{:?}", batch.outcomes[0]);

    // The holder's own edit passes, and the lock stays.
    let batch = apply_as(
        meta,
        chunks,
        &user,
        "laptop",
        vec![put_op("f", Precondition::Rev(file.rev), &content)],
        NOW,
    )
    .await;
    let OpOutcome::Applied(produced) = &batch.outcomes[0] else {
        panic!("{:?}", batch.outcomes[0])
    };
    let file = produced[0].clone();
    assert_eq!(meta.locks(user.id, NOW).await.unwrap().len(), 3);

    // The holder deletes its locked file: the lock ends with it.
    let before = meta.current_cursor(user.id).await.unwrap();
    let batch = apply_as(
        meta,
        chunks,
        &user,
        "laptop",
        vec![Op::Delete {
            path: path("f"),
            base: file.rev,
        }],
        NOW,
    )
    .await;
    assert!(batch.outcomes[0].is_applied(), "{:?}", batch.outcomes[0]);
    let page = meta.changes_since(user.id, before, 10).await.unwrap();
    assert_eq!(
        page.changes,
        [
            Change::Delete {
                cursor: Cursor(before.0 + 1),
                node_id: file.node_id,
                path: path("f"),
                device: device_name("laptop"),
            },
            Change::Unlock {
                cursor: Cursor(before.0 + 2),
                path: path("f"),
                device: device_name("laptop"),
                broken_by: None,
            },
        ]
    );

    // The holder moves the directory holding its locked file: the lock moves along, journalled
    // as Unlock at the old path and Lock at the new one, after the nodes.
    let before = meta.current_cursor(user.id).await.unwrap();
    let batch = apply_as(
        meta,
        chunks,
        &user,
        "laptop",
        vec![Op::Move {
            from: path("d"),
            to: path("moved"),
            base: d.rev,
        }],
        NOW,
    )
    .await;
    assert!(batch.outcomes[0].is_applied(), "{:?}", batch.outcomes[0]);
    let page = meta.changes_since(user.id, before, 10).await.unwrap();
    let kinds: Vec<String> = page
        .changes
        .iter()
        .map(|change| match change {
            Change::Upsert { entry, .. } => format!("upsert {}", entry.path),
            Change::Delete { path, .. } => format!("delete {path}"),
            Change::Lock { lock, .. } => format!("lock {} {}", lock.path, lock.device),
            Change::Unlock { path, device, .. } => format!("unlock {path} {device}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "upsert moved",
            "upsert moved/inner",
            "unlock d/inner laptop",
            "lock moved/inner laptop"
        ]
    );
    let locks = meta.locks(user.id, NOW).await.unwrap();
    assert_eq!(
        locks
            .iter()
            .map(|lock| lock.path.as_str())
            .collect::<Vec<_>>(),
        ["locked-dir", "moved/inner"]
    );
    assert_eq!(locks[1].since_ms, NOW);
    // And the moved lock still holds the phone off.
    let moved = entry_at(
        &meta.tree(user.id, NOW).await.unwrap().entries,
        "moved/inner",
    );
    let batch = apply_as(
        meta,
        chunks,
        &user,
        "phone",
        vec![Op::Delete {
            path: path("moved/inner"),
            base: moved.rev,
        }],
        NOW,
    )
    .await;
    assert!(
        matches!(&batch.outcomes[0], OpOutcome::Locked(lock) if lock.path.as_str() == "moved/inner"),
        "{:?}",
        batch.outcomes[0]
    );
}

/// A lock with a TTL counts as absent from its `expires_ms` on, for ops and listings (for lock
/// requests, see [`LOCK_CASES`]); its end is not journalled.
pub async fn lock_expiry(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("expiry-alice")).await.unwrap();
    let file = put_file(meta, chunks, &user, "f", Precondition::MustNotExist, b"f").await;
    take(meta, &user, "laptop", "f", Some(60), NOW).await;
    let end = NOW + 60_000;
    assert_eq!(meta.locks(user.id, end - 1).await.unwrap().len(), 1);
    assert_eq!(meta.tree(user.id, end - 1).await.unwrap().locks.len(), 1);
    let content = store_chunk(chunks, &user, b"phone's").await;
    let edit = put_op("f", Precondition::Rev(file.rev), &content);
    let batch = apply_as(meta, chunks, &user, "phone", vec![edit.clone()], end - 1).await;
    assert!(
        matches!(batch.outcomes[0], OpOutcome::Locked(_)),
        "{:?}",
        batch.outcomes[0]
    );

    // At `expires_ms` it is gone: not listed, not in the way.
    assert_eq!(meta.locks(user.id, end).await.unwrap(), []);
    assert_eq!(meta.tree(user.id, end).await.unwrap().locks, []);
    let cursor = meta.current_cursor(user.id).await.unwrap();
    let batch = apply_as(meta, chunks, &user, "phone", vec![edit], end).await;
    assert!(batch.outcomes[0].is_applied(), "{:?}", batch.outcomes[0]);
    // Expiry itself is not journalled.
    assert_eq!(
        meta.changes_since(user.id, cursor, 10)
            .await
            .unwrap()
            .changes
            .len(),
        1
    );
}

/// `tree` returns the locks in force with the entries, sorted by path.
pub async fn lock_listed_in_tree(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta
        .create_user(&user_name("treelock-alice"))
        .await
        .unwrap();
    put_file(meta, chunks, &user, "b", Precondition::MustNotExist, b"b").await;
    put_file(meta, chunks, &user, "a/x", Precondition::MustNotExist, b"x").await;
    take(meta, &user, "phone", "b", Some(10), NOW).await;
    take(meta, &user, "laptop", "a", None, NOW).await;
    let tree = meta.tree(user.id, NOW).await.unwrap();
    assert_eq!(tree.cursor, meta.current_cursor(user.id).await.unwrap());
    let locks: Vec<(&str, &str, Option<i64>)> = tree
        .locks
        .iter()
        .map(|lock| (lock.path.as_str(), lock.device.as_str(), lock.expires_ms))
        .collect();
    assert_eq!(
        locks,
        [("a", "laptop", None), ("b", "phone", Some(NOW + 10_000))]
    );
    assert_eq!(tree.locks, meta.locks(user.id, NOW).await.unwrap());
}

/// Fifty devices race to lock one file: exactly one wins, the others get 423 naming it.
pub async fn lock_race_has_one_winner(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("race-alice")).await.unwrap();
    put_file(
        meta,
        chunks,
        &user,
        "race.txt",
        Precondition::MustNotExist,
        b"r",
    )
    .await;
    let cursor = meta.current_cursor(user.id).await.unwrap();
    let devices: Vec<DeviceName> = (0..50)
        .map(|idx| device_name(&format!("racer-{idx}")))
        .collect();
    let target = path("race.txt");
    // Polled concurrently within this task; the store's calls run on its own workers.
    let attempts = devices
        .iter()
        .map(|device| meta.take_lock(user.id, device, &target, None, NOW));
    let outcomes = futures::future::join_all(attempts).await;
    let mut winners = Vec::new();
    for (device, outcome) in devices.iter().zip(outcomes) {
        match outcome.unwrap() {
            LockOutcome::Done { lock, .. } => {
                assert_eq!(&lock.device, device);
                winners.push(lock);
            }
            LockOutcome::Locked(lock) => {
                assert!(lock.device.as_str().starts_with("racer-"), "{lock:?}");
            }
            other => panic!("{device}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(meta.locks(user.id, NOW).await.unwrap(), winners);
    let page = meta.changes_since(user.id, cursor, 100).await.unwrap();
    assert_eq!(page.changes.len(), 1);
    assert!(matches!(&page.changes[0], Change::Lock { lock, .. } if *lock == winners[0]));
}

/// A lock is stored, not remembered: it outlives the store handle. `open` opens the same
/// backend again (the same file, the same database) and may be called many times.
pub async fn lock_survives_reopen<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Box<dyn MetaStore>, Box<dyn ChunkStore>)>,
{
    let (lock, user) = {
        let (meta, chunks) = open().await;
        let user = meta.create_user(&user_name("reopen-alice")).await.unwrap();
        put_file(
            &*meta,
            &*chunks,
            &user,
            "f",
            Precondition::MustNotExist,
            b"f",
        )
        .await;
        let LockOutcome::Done { lock, .. } = take(&*meta, &user, "laptop", "f", None, NOW).await
        else {
            panic!("lock refused")
        };
        (lock, user)
    };
    let (meta, chunks) = open().await;
    assert_eq!(
        meta.locks(user.id, NOW).await.unwrap(),
        std::slice::from_ref(&lock)
    );
    assert_eq!(
        meta.tree(user.id, NOW).await.unwrap().locks,
        std::slice::from_ref(&lock)
    );
    let content = store_chunk(&*chunks, &user, b"edit").await;
    let batch = apply_as(
        &*meta,
        &*chunks,
        &user,
        "phone",
        vec![put_op("f", Precondition::Rev(Revision(1)), &content)],
        NOW,
    )
    .await;
    assert_eq!(batch.outcomes[0], OpOutcome::Locked(lock));
}

// Helpers. The device of every write is "dev", unless a test names another.

/// The time every call that needs one is made at, unless a test says otherwise.
const NOW: i64 = 1_700_000_000_000;

/// Stores `bytes` and puts them at `at` as `device` at `now_ms`; returns the file's entry.
async fn put_at(
    meta: &dyn MetaStore,
    chunks: &dyn ChunkStore,
    user: &User,
    (device, now_ms): (&str, i64),
    at: &str,
    base: Precondition,
    bytes: &[u8],
) -> RemoteEntry {
    let content = store_chunk(chunks, user, bytes).await;
    let mut batch = apply_as(
        meta,
        chunks,
        user,
        device,
        vec![put_op(at, base, &content)],
        now_ms,
    )
    .await;
    match batch.outcomes.remove(0) {
        OpOutcome::Applied(produced) => produced.last().cloned().unwrap(),
        other => panic!("put {at} failed: {other:?}"),
    }
}

/// Every version of a path with its commit time and device; the trash with its filters.
pub async fn history_and_trash(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("history-alice")).await.unwrap();
    let v1 = put_at(
        meta,
        chunks,
        &user,
        ("laptop", 1_000),
        "notes.txt",
        Precondition::MustNotExist,
        b"one",
    )
    .await;
    let v2 = put_at(
        meta,
        chunks,
        &user,
        ("desktop", 2_000),
        "notes.txt",
        Precondition::Rev(v1.rev),
        b"two",
    )
    .await;
    let v3 = put_at(
        meta,
        chunks,
        &user,
        ("laptop", 3_000),
        "notes.txt",
        Precondition::Rev(v2.rev),
        b"three",
    )
    .await;
    let other = put_at(
        meta,
        chunks,
        &user,
        ("laptop", 3_500),
        "docs/a.txt",
        Precondition::MustNotExist,
        b"aaa",
    )
    .await;

    let history = meta.history(user.id, &path("notes.txt")).await.unwrap();
    let seen: Vec<(Revision, i64, &str, Option<ContentHash>, bool)> = history
        .versions
        .iter()
        .map(|v| (v.rev, v.at_ms, v.device.as_str(), v.hash, v.current))
        .collect();
    assert_eq!(
        seen,
        vec![
            (v1.rev, 1_000, "laptop", Some(content_hash(b"one")), false),
            (v2.rev, 2_000, "desktop", Some(content_hash(b"two")), false),
            (v3.rev, 3_000, "laptop", Some(content_hash(b"three")), true),
        ]
    );
    assert!(meta
        .history(user.id, &path("nothing"))
        .await
        .unwrap()
        .versions
        .is_empty());

    // A delete is a version; the file is in the trash with its last content.
    let deleted = apply_as(
        meta,
        chunks,
        &user,
        "phone",
        vec![Op::Delete {
            path: path("docs/a.txt"),
            base: other.rev,
        }],
        5_000,
    )
    .await;
    assert!(deleted.outcomes[0].is_applied());
    let trash = meta.trash(user.id, &TrashQuery::default()).await.unwrap();
    assert_eq!(trash.entries.len(), 1);
    let entry = &trash.entries[0];
    assert_eq!(entry.path, path("docs/a.txt"));
    assert_eq!(
        (entry.deleted_at_ms, entry.deleted_by.as_str()),
        (5_000, "phone")
    );
    assert_eq!(
        (entry.rev, entry.size, entry.hash),
        (other.rev, 3, content_hash(b"aaa"))
    );
    let a_history = meta.history(user.id, &path("docs/a.txt")).await.unwrap();
    assert_eq!(
        a_history.versions.last().unwrap().kind,
        VersionKind::Deleted
    );

    // Filters: since, by, prefix.
    let query = |since_ms: Option<i64>, by: Option<&str>, prefix: Option<&str>| TrashQuery {
        since_ms,
        by: by.map(device_name),
        prefix: prefix.map(path),
    };
    for (q, expected) in [
        (query(Some(5_000), None, None), 1),
        (query(Some(5_001), None, None), 0),
        (query(None, Some("phone"), None), 1),
        (query(None, Some("laptop"), None), 0),
        (query(None, None, Some("docs")), 1),
        (query(None, None, Some("other")), 0),
    ] {
        assert_eq!(
            meta.trash(user.id, &q).await.unwrap().entries.len(),
            expected,
            "{q:?}"
        );
    }
    // A path that holds a file again is not in the trash.
    put_at(
        meta,
        chunks,
        &user,
        ("laptop", 6_000),
        "docs/a.txt",
        Precondition::MustNotExist,
        b"new",
    )
    .await;
    assert!(meta
        .trash(user.id, &TrashQuery::default())
        .await
        .unwrap()
        .entries
        .is_empty());
}

/// Restores plan ordinary conditional ops: a version, the trash, a moment (in place and
/// beside), and refusals.
pub async fn restore_plans(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("restore-alice")).await.unwrap();
    let dev = ("laptop", 1_000);
    let v1 = put_at(
        meta,
        chunks,
        &user,
        dev,
        "notes.txt",
        Precondition::MustNotExist,
        b"one",
    )
    .await;
    let keep = put_at(
        meta,
        chunks,
        &user,
        dev,
        "d/keep.txt",
        Precondition::MustNotExist,
        b"keep",
    )
    .await;
    let gone = put_at(
        meta,
        chunks,
        &user,
        dev,
        "d/gone.txt",
        Precondition::MustNotExist,
        b"gone",
    )
    .await;
    // The moment: 1,500. Then everything changes.
    let v2 = put_at(
        meta,
        chunks,
        &user,
        ("laptop", 2_000),
        "notes.txt",
        Precondition::Rev(v1.rev),
        b"encrypted",
    )
    .await;
    let _ = keep;
    let deleted = apply_as(
        meta,
        chunks,
        &user,
        "laptop",
        vec![Op::Delete {
            path: path("d/gone.txt"),
            base: gone.rev,
        }],
        2_000,
    )
    .await;
    assert!(deleted.outcomes[0].is_applied());
    put_at(
        meta,
        chunks,
        &user,
        ("laptop", 2_000),
        "d/new.txt",
        Precondition::MustNotExist,
        b"new",
    )
    .await;

    let plan_of =
        |target: RestoreTarget| async move { meta.plan_restore(user.id, &target).await.unwrap() };
    // Whole namespace at 1,500.
    let plan = plan_of(RestoreTarget::Moment {
        path: None,
        at_ms: 1_500,
        to: None,
    })
    .await
    .unwrap();
    let steps: Vec<(&str, RestoreAction)> = plan
        .steps
        .iter()
        .map(|s| (s.path.as_str(), s.action))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("d/new.txt", RestoreAction::Trashed),
            ("d/gone.txt", RestoreAction::Undeleted),
            ("notes.txt", RestoreAction::Reverted),
        ]
    );
    assert_eq!(plan.unchanged, 2, "d and d/keep.txt are as they were");
    let outcome = apply_as(meta, chunks, &user, "laptop", plan.ops, 3_000).await;
    assert!(
        outcome.outcomes.iter().all(OpOutcome::is_applied),
        "{outcome:?}"
    );
    let tree = meta.tree(user.id, NOW).await.unwrap();
    let files: Vec<(&str, Option<ContentHash>)> = tree
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| (e.path.as_str(), e.hash))
        .collect();
    assert_eq!(
        files,
        vec![
            ("d/gone.txt", Some(content_hash(b"gone"))),
            ("d/keep.txt", Some(content_hash(b"keep"))),
            ("notes.txt", Some(content_hash(b"one"))),
        ]
    );
    // What the restore replaced is history and trash: nothing lost.
    let trash = meta.trash(user.id, &TrashQuery::default()).await.unwrap();
    assert_eq!(
        trash
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect::<Vec<_>>(),
        vec!["d/new.txt"]
    );
    let notes = meta.history(user.id, &path("notes.txt")).await.unwrap();
    assert!(
        notes.versions.iter().any(|v| v.rev == v2.rev),
        "the encrypted version is still in history"
    );

    // A version by revision; the same content again is unchanged.
    let plan = plan_of(RestoreTarget::Version {
        path: path("notes.txt"),
        rev: v2.rev,
        to: None,
    })
    .await
    .unwrap();
    assert_eq!(plan.steps.len(), 1);
    assert_eq!(plan.steps[0].action, RestoreAction::Reverted);
    let plan = plan_of(RestoreTarget::Version {
        path: path("notes.txt"),
        rev: v1.rev,
        to: None,
    })
    .await
    .unwrap();
    assert_eq!((plan.steps.len(), plan.unchanged), (0, 1));
    // Beside: at a new path, which must not exist.
    let plan = plan_of(RestoreTarget::Version {
        path: path("notes.txt"),
        rev: v2.rev,
        to: Some(path("old.txt")),
    })
    .await
    .unwrap();
    assert!(
        matches!(&plan.ops[0], Op::PutFile { path: p, base: Precondition::MustNotExist, .. } if p.as_str() == "old.txt")
    );
    // Refusals: not a version of the path, a deletion.
    let refused = plan_of(RestoreTarget::Version {
        path: path("d/keep.txt"),
        rev: v2.rev,
        to: None,
    })
    .await;
    assert!(refused.unwrap_err().contains("not a version"));
    let refused = plan_of(RestoreTarget::Moment {
        path: Some(path("nowhere")),
        at_ms: 1_500,
        to: None,
    })
    .await;
    assert!(refused.is_err());
    // Hostile values are refusals with a message, not store failures.
    let refused = plan_of(RestoreTarget::Version {
        path: path("notes.txt"),
        rev: Revision(u64::MAX),
        to: None,
    })
    .await;
    assert!(refused.unwrap_err().contains("not kept"));
    let refused = plan_of(RestoreTarget::Moment {
        path: None,
        at_ms: i64::MIN,
        to: None,
    })
    .await;
    assert!(refused.unwrap_err().contains("before 1970"));

    // The trash in bulk: since a time.
    let plan = plan_of(RestoreTarget::Deleted {
        prefix: None,
        since_ms: Some(3_000),
        by: None,
    })
    .await
    .unwrap();
    assert_eq!(
        plan.steps
            .iter()
            .map(|s| s.path.as_str())
            .collect::<Vec<_>>(),
        vec!["d/new.txt"]
    );
    let plan = plan_of(RestoreTarget::Deleted {
        prefix: None,
        since_ms: Some(3_001),
        by: None,
    })
    .await
    .unwrap();
    assert!(plan.steps.is_empty());
}

/// The wall clock: chunk stores stamp chunks with it, so collection times count from it.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const DAY: i64 = 24 * 3600 * 1000;

fn policy(keep_ms: i64, grace_ms: i64) -> GcPolicy {
    GcPolicy {
        retention: Retention { keep_ms },
        grace_ms,
    }
}

/// After retention passes, the content of deleted files and orphans of uploads are freed;
/// every current and retained version still reads back right.
pub async fn gc_frees_what_retention_lets_go(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("gc-alice")).await.unwrap();
    let now = wall_ms();
    let dev = ("laptop", now);
    let gone = put_at(
        meta,
        chunks,
        &user,
        dev,
        "gone.txt",
        Precondition::MustNotExist,
        b"deleted content",
    )
    .await;
    let kept = put_at(
        meta,
        chunks,
        &user,
        dev,
        "kept.txt",
        Precondition::MustNotExist,
        b"old version",
    )
    .await;
    put_at(
        meta,
        chunks,
        &user,
        dev,
        "kept.txt",
        Precondition::Rev(kept.rev),
        b"new version",
    )
    .await;
    let deleted = apply_as(
        meta,
        chunks,
        &user,
        "laptop",
        vec![Op::Delete {
            path: path("gone.txt"),
            base: gone.rev,
        }],
        now,
    )
    .await;
    assert!(deleted.outcomes[0].is_applied());
    // An upload no commit named (an interrupted one).
    store_chunk(chunks, &user, b"orphan of an upload").await;
    let _ = chunks
        .durable_chunk_lens(user.namespace, &[chunk_hash(b"orphan of an upload")])
        .await
        .unwrap();
    let stored = |bytes: &'static [u8]| async move {
        chunks
            .missing(user.namespace, &[chunk_hash(bytes)])
            .await
            .unwrap()
            .is_empty()
    };

    // Within retention and the grace period: nothing goes.
    let report = gc::collect(meta, chunks, now, policy(30 * DAY, DAY), false)
        .await
        .unwrap();
    assert_eq!(
        (report.chunks_deleted, report.rows_removed),
        (0, 0),
        "{report:?}"
    );
    // Past the grace period but within retention: only the orphan goes; the deleted file and
    // the old version are history.
    let report = gc::collect(meta, chunks, now + 2 * DAY, policy(30 * DAY, DAY), false)
        .await
        .unwrap();
    assert_eq!(report.chunks_deleted, 1, "{report:?}");
    assert_eq!(report.bytes_freed, b"orphan of an upload".len() as u64);
    assert!(!stored(b"orphan of an upload").await);
    assert!(stored(b"deleted content").await && stored(b"old version").await);
    // Every retained version still reads back and verifies against its hash.
    for bytes in [&b"deleted content"[..], b"old version", b"new version"] {
        let read = chunks
            .get(user.namespace, &chunk_hash(bytes))
            .await
            .unwrap();
        assert_eq!(&read[..], bytes);
    }
    assert_eq!(
        meta.trash(user.id, &TrashQuery::default())
            .await
            .unwrap()
            .entries
            .len(),
        1
    );

    // A dry run past retention says what a run would free, and frees nothing.
    let later = now + 40 * DAY;
    let dry = gc::collect(meta, chunks, later, policy(30 * DAY, DAY), true)
        .await
        .unwrap();
    assert!(dry.rows_removed >= 2, "{dry:?}");
    assert!(stored(b"deleted content").await);
    // Past retention: the deleted file and the old version go, measured on the chunk store.
    let before: u64 = chunks
        .list(user.namespace)
        .await
        .unwrap()
        .iter()
        .map(|c| c.len)
        .sum();
    let report = gc::collect(meta, chunks, later, policy(30 * DAY, DAY), false)
        .await
        .unwrap();
    let after: u64 = chunks
        .list(user.namespace)
        .await
        .unwrap()
        .iter()
        .map(|c| c.len)
        .sum();
    let freed = (b"deleted content".len() + b"old version".len()) as u64;
    assert_eq!(
        (report.chunks_deleted, report.bytes_freed),
        (2, freed),
        "{report:?}"
    );
    assert_eq!(before - after, freed);
    assert!(!stored(b"deleted content").await && !stored(b"old version").await);
    // The current version reads back and verifies; history and trash say what is kept.
    assert_eq!(
        &chunks
            .get(user.namespace, &chunk_hash(b"new version"))
            .await
            .unwrap()[..],
        b"new version"
    );
    let history = meta.history(user.id, &path("kept.txt")).await.unwrap();
    assert_eq!(history.versions.len(), 1);
    assert_eq!(history.kept_since_ms, later - 30 * DAY);
    assert!(meta
        .trash(user.id, &TrashQuery::default())
        .await
        .unwrap()
        .entries
        .is_empty());
    // A restore to before what is kept is refused with a message.
    let refused = meta
        .plan_restore(
            user.id,
            &RestoreTarget::Moment {
                path: None,
                at_ms: now,
                to: None,
            },
        )
        .await
        .unwrap();
    assert!(refused.unwrap_err().contains("no longer kept"));
    // A client behind the compacted rows reloads the tree; its known position still checks.
    let page = meta.changes_since(user.id, Cursor(1), 100).await.unwrap();
    assert!(page.reset, "{page:?}");
    assert!(meta
        .journal_tag(user.id, Cursor(1))
        .await
        .unwrap()
        .is_some());
}

/// A commit that names a chunk a collection run doomed is refused; after the run it finds the
/// chunk missing, and an upload of it again lets the commit through. A commit whose chunk check
/// raced the end of a run is not applied (`GcRaced`).
pub async fn gc_refuses_commits_of_doomed_chunks(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("gc-bob")).await.unwrap();
    let now = wall_ms();
    let content = store_chunk(chunks, &user, b"content deleted long ago").await;
    let _ = chunks
        .durable_chunk_lens(user.namespace, &[chunk_hash(&content.bytes)])
        .await
        .unwrap();
    let listed = chunks.list(user.namespace).await.unwrap();
    assert_eq!(listed.len(), 1);
    let doomed = meta
        .gc_doom(user.id, &listed, now + DAY, 0, 7)
        .await
        .unwrap();
    assert_eq!(doomed.len(), 1);
    let refused = apply_one(
        meta,
        chunks,
        &user,
        put_op("f.txt", Precondition::MustNotExist, &content),
    )
    .await;
    assert!(
        matches!(&refused, OpOutcome::Invalid(m) if m.contains("being collected")),
        "{refused:?}"
    );
    assert_eq!(
        chunks.delete(user.namespace, &doomed).await.unwrap(),
        content.bytes.len() as u64
    );
    let epoch = meta.gc_epoch(user.id).await.unwrap();
    meta.gc_finish(user.id, 7).await.unwrap();
    assert_eq!(meta.gc_epoch(user.id).await.unwrap(), epoch + 1);
    assert!(meta.gc_runs(user.id).await.unwrap().is_empty());
    let missing = apply_one(
        meta,
        chunks,
        &user,
        put_op("f.txt", Precondition::MustNotExist, &content),
    )
    .await;
    assert!(
        matches!(&missing, OpOutcome::Invalid(m) if m.contains("missing chunk")),
        "{missing:?}"
    );
    // A check made before the run ended does not count.
    let lens = [(chunk_hash(&content.bytes), content.bytes.len() as u32)]
        .into_iter()
        .collect();
    let raced = meta
        .apply_ops(
            user.id,
            &device_name("dev"),
            vec![put_op("f.txt", Precondition::MustNotExist, &content)],
            lens,
            NOW,
            Some(epoch),
        )
        .await;
    assert!(matches!(raced, Err(StoreError::GcRaced)), "{raced:?}");
    let content = store_chunk(chunks, &user, b"content deleted long ago").await;
    let applied = apply_one(
        meta,
        chunks,
        &user,
        put_op("f.txt", Precondition::MustNotExist, &content),
    )
    .await;
    assert!(applied.is_applied(), "{applied:?}");
}

/// Collection runs racing commits that reuse old content never delete a chunk a current or
/// kept version names. Rounds of: devices write files whose content is drawn from a small pool
/// (so a commit often names content a deleted file had), delete some, while runs collect
/// everything unreferenced with no grace period and no history kept; each round checks that
/// every current file's chunks read back and verify. Able to fail: without the doomed check or
/// the epoch check in the commit, a run deletes a chunk a commit just named.
pub async fn gc_races_commits(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    gc_races_commits_on([(meta, chunks), (meta, chunks)]).await;
}

/// [`gc_races_commits`] over two servers on one database and one bucket: the devices write
/// through one server each, and the runs alternate between them.
pub async fn gc_races_commits_on(servers: [(&dyn MetaStore, &dyn ChunkStore); 2]) {
    let (meta, chunks) = servers[0];
    let user = meta.create_user(&user_name("gc-race")).await.unwrap();
    let pool: Vec<Vec<u8>> = (0..6)
        .map(|i| format!("pooled content {i}").into_bytes())
        .collect();
    let rounds = std::env::var("SYNCSTORE_GC_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    for round in 0..rounds {
        let writer = |device: &'static str, offset: usize, server: usize| {
            let pool = &pool;
            let user = &user;
            let (meta, chunks) = servers[server];
            async move {
                for i in 0..6 {
                    let bytes = &pool[(round + offset + i) % pool.len()];
                    let at = format!("{device}/{}.txt", i % 3);
                    // Upload, then commit, as a device does; a refused commit uploads again.
                    for _ in 0..10 {
                        let content = store_chunk(chunks, user, bytes).await;
                        let current = meta.tree(user.id, NOW).await.unwrap();
                        let base = current
                            .entries
                            .iter()
                            .find(|e| e.path.as_str() == at)
                            .map_or(Precondition::MustNotExist, |e| Precondition::Rev(e.rev));
                        let outcome = apply_as(
                            meta,
                            chunks,
                            user,
                            device,
                            vec![put_op(&at, base, &content)],
                            wall_ms(),
                        )
                        .await;
                        if outcome.outcomes[0].is_applied() {
                            break;
                        }
                    }
                    if i % 4 == 3 {
                        let tree = meta.tree(user.id, NOW).await.unwrap();
                        if let Some(entry) = tree.entries.iter().find(|e| e.path.as_str() == at) {
                            apply_as(
                                meta,
                                chunks,
                                user,
                                device,
                                vec![Op::Delete {
                                    path: entry.path.clone(),
                                    base: entry.rev,
                                }],
                                wall_ms(),
                            )
                            .await;
                        }
                    }
                }
            }
        };
        let collector = async {
            for run in 0..3 {
                let (meta, chunks) = servers[(round + run) % 2];
                gc::collect(meta, chunks, wall_ms() + 1, policy(0, 0), false)
                    .await
                    .unwrap();
            }
        };
        futures::join!(writer("a", 0, 0), writer("b", 3, 1), collector);
        let tree = meta.tree(user.id, NOW).await.unwrap();
        for entry in tree.entries.iter().filter(|e| e.kind == EntryKind::File) {
            for chunk in &entry.chunks {
                let read = chunks.get(user.namespace, &chunk.hash).await;
                assert!(
                    read.is_ok(),
                    "round {round}: {} names a chunk that is gone: {read:?}",
                    entry.path
                );
            }
        }
    }
}

/// A quota refuses what would grow the account past it (507 on the wire), and lets shrinking
/// and deleting through.
pub async fn quota_refuses_growth(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("quota-carol")).await.unwrap();
    let small = put_file(
        meta,
        chunks,
        &user,
        "a.txt",
        Precondition::MustNotExist,
        b"0123456789",
    )
    .await;
    assert_eq!(
        (
            meta.usage(user.id).await.unwrap().current_bytes,
            meta.usage(user.id).await.unwrap().quota_bytes
        ),
        (10, None)
    );
    meta.set_quota(user.id, Some(15)).await.unwrap();
    let content = store_chunk(chunks, &user, b"0123456789").await;
    let refused = apply_one(
        meta,
        chunks,
        &user,
        put_op("b.txt", Precondition::MustNotExist, &content),
    )
    .await;
    assert!(
        matches!(&refused, OpOutcome::OverQuota(m) if m.contains("quota")),
        "{refused:?}"
    );
    let shrink = store_chunk(chunks, &user, b"01234").await;
    assert!(apply_one(
        meta,
        chunks,
        &user,
        put_op("a.txt", Precondition::Rev(small.rev), &shrink)
    )
    .await
    .is_applied());
    assert_eq!(
        (
            meta.usage(user.id).await.unwrap().current_bytes,
            meta.usage(user.id).await.unwrap().quota_bytes
        ),
        (5, Some(15))
    );
    assert!(apply_one(
        meta,
        chunks,
        &user,
        put_op("b.txt", Precondition::MustNotExist, &content)
    )
    .await
    .is_applied());
    assert_eq!(meta.usage(user.id).await.unwrap().current_bytes, 15);
    let b = meta
        .tree(user.id, NOW)
        .await
        .unwrap()
        .entries
        .into_iter()
        .find(|e| e.path.as_str() == "b.txt")
        .unwrap();
    assert!(apply_one(
        meta,
        chunks,
        &user,
        Op::Delete {
            path: b.path,
            base: b.rev
        }
    )
    .await
    .is_applied());
    let usage = meta.usage(user.id).await.unwrap();
    assert_eq!((usage.current_bytes, usage.current_files), (5, 1));
    assert_eq!((usage.trash_bytes, usage.trash_files), (10, 1), "{usage:?}");
    assert_eq!(usage.history_bytes, 10, "the first a.txt");
    meta.set_quota(user.id, None).await.unwrap();
}

/// Devices: when each was added and last seen (never backwards, never once revoked); a
/// revoked device's token is refused at once, its row and name stay (no new device gets the
/// name, which the journal names), and the locks it held are released in the journal.
pub async fn devices_seen_and_revoked(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let user = meta.create_user(&user_name("dev-alice")).await.unwrap();
    let laptop_token = TokenHash::of_token("sst_dev_laptop");
    let phone_token = TokenHash::of_token("sst_dev_phone");
    let laptop = meta
        .add_device(user.id, &device_name("laptop"), &laptop_token, NOW)
        .await
        .unwrap();
    let phone = meta
        .add_device(user.id, &device_name("phone"), &phone_token, NOW + 1000)
        .await
        .unwrap();
    let devices = meta.devices(user.id).await.unwrap();
    let names: Vec<&str> = devices.iter().map(|device| device.name.as_str()).collect();
    assert_eq!(names, ["laptop", "phone"]);
    assert_eq!(devices[0].id, laptop.id);
    assert_eq!(
        (
            devices[0].created_ms,
            devices[0].last_seen_ms,
            devices[0].last_address.as_deref(),
            devices[0].revoked_ms
        ),
        (Some(NOW), None, None, None)
    );
    assert_eq!(devices[1].created_ms, Some(NOW + 1000));

    meta.seen_device(laptop.id, NOW + 5000, "192.0.2.7")
        .await
        .unwrap();
    // An older sighting (another server, a moment behind) changes nothing.
    meta.seen_device(laptop.id, NOW + 4000, "198.51.100.1")
        .await
        .unwrap();
    let seen = meta.devices(user.id).await.unwrap().remove(0);
    assert_eq!(
        (seen.last_seen_ms, seen.last_address.as_deref()),
        (Some(NOW + 5000), Some("192.0.2.7"))
    );
    let account = |accounts: Vec<Account>| {
        accounts
            .into_iter()
            .find(|account| account.user.id == user.id)
            .expect("the account is listed")
    };
    let listed = account(meta.accounts().await.unwrap());
    assert_eq!(listed.user, user);
    assert_eq!(
        (
            listed.devices,
            listed.created_ms,
            listed.used_bytes,
            listed.quota_bytes
        ),
        (2, Some(NOW), 0, None)
    );

    // The laptop holds a lock: revoking it releases the lock, in the journal.
    put_file(
        meta,
        chunks,
        &user,
        "doc.txt",
        Precondition::MustNotExist,
        b"doc",
    )
    .await;
    let taken = take(meta, &user, "laptop", "doc.txt", None, NOW).await;
    assert!(matches!(taken, LockOutcome::Done { .. }), "{taken:?}");
    let before = meta.current_cursor(user.id).await.unwrap();
    let revoked = meta
        .revoke_device(user.id, &device_name("laptop"), NOW + 6000)
        .await
        .unwrap();
    let Revocation::Revoked {
        revoked_ms,
        released,
        cursor,
    } = revoked
    else {
        panic!("not revoked: {revoked:?}");
    };
    assert_eq!(revoked_ms, NOW + 6000);
    let released: Vec<&str> = released.iter().map(|lock| lock.path.as_str()).collect();
    assert_eq!(released, ["doc.txt"]);
    assert_eq!(cursor, Some(Cursor(before.0 + 1)));
    let page = meta.changes_since(user.id, before, 10).await.unwrap();
    assert!(
        matches!(
            &page.changes[..],
            [Change::Unlock { path, device, broken_by: None, .. }]
                if path.as_str() == "doc.txt" && device.as_str() == "laptop"
        ),
        "{:?}",
        page.changes
    );
    assert_eq!(meta.locks(user.id, NOW + 6000).await.unwrap(), []);
    assert_eq!(meta.authenticate(&laptop_token).await.unwrap(), None);
    let principal = meta.authenticate(&phone_token).await.unwrap();
    assert_eq!(
        principal.map(|principal| principal.device_id),
        Some(phone.id)
    );
    assert_eq!(
        meta.revoke_device(user.id, &device_name("laptop"), NOW + 7000)
            .await
            .unwrap(),
        Revocation::AlreadyRevoked {
            revoked_ms: NOW + 6000
        }
    );
    assert_eq!(
        meta.revoke_device(user.id, &device_name("tablet"), NOW)
            .await
            .unwrap(),
        Revocation::NoSuchDevice
    );
    // Revoked, it is seen no more; its row and name stay.
    meta.seen_device(laptop.id, NOW + 8000, "203.0.113.9")
        .await
        .unwrap();
    let devices = meta.devices(user.id).await.unwrap();
    assert_eq!(
        (
            devices[0].name.as_str(),
            devices[0].revoked_ms,
            devices[0].last_seen_ms
        ),
        ("laptop", Some(NOW + 6000), Some(NOW + 5000))
    );
    assert_eq!(account(meta.accounts().await.unwrap()).devices, 1);

    // Neither name goes to a new device; the refusals name the user, not an id.
    let new_token = TokenHash::of_token("sst_dev_new");
    let err = meta
        .add_device(user.id, &device_name("laptop"), &new_token, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DeviceNameRetired { .. }), "{err}");
    assert!(err.to_string().contains("user dev-alice"), "{err}");
    let err = meta
        .add_device(user.id, &device_name("phone"), &new_token, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "device phone of user dev-alice already exists"
    );
    assert_eq!(meta.authenticate(&new_token).await.unwrap(), None);
}

/// Renaming keeps the namespace and the tokens. Removing refuses every later request of the
/// account (its token, and a write that was under way), frees its name without handing out
/// its id or namespace again, and lists it for garbage collection, which deletes what content
/// is left, until a run past the grace period finds none.
pub async fn users_renamed_and_removed(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let alice = meta.create_user(&user_name("rm-alice")).await.unwrap();
    let bob = meta.create_user(&user_name("rm-bob")).await.unwrap();
    let token = TokenHash::of_token("sst_rm_alice");
    meta.add_device(alice.id, &device_name("laptop"), &token, NOW)
        .await
        .unwrap();
    put_file(
        meta,
        chunks,
        &alice,
        "a.txt",
        Precondition::MustNotExist,
        b"alice's",
    )
    .await;
    put_file(
        meta,
        chunks,
        &bob,
        "b.txt",
        Precondition::MustNotExist,
        b"bob's",
    )
    .await;

    assert!(matches!(
        meta.rename_user(alice.id, &user_name("rm-bob")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    meta.rename_user(alice.id, &user_name("rm-carol"))
        .await
        .unwrap();
    assert_eq!(
        meta.user_by_name(&user_name("rm-alice")).await.unwrap(),
        None
    );
    let carol = meta
        .user_by_name(&user_name("rm-carol"))
        .await
        .unwrap()
        .expect("renamed");
    assert_eq!((carol.id, carol.namespace), (alice.id, alice.namespace));
    let principal = meta
        .authenticate(&token)
        .await
        .unwrap()
        .expect("token works");
    assert_eq!(principal.user_name.as_str(), "rm-carol");
    assert_eq!(meta.tree(carol.id, NOW).await.unwrap().entries.len(), 1);

    let n_users = meta.count_users().await.unwrap();
    meta.remove_user(carol.id, NOW).await.unwrap();
    assert_eq!(meta.count_users().await.unwrap(), n_users - 1);
    assert_eq!(meta.authenticate(&token).await.unwrap(), None);
    assert_eq!(
        meta.user_by_name(&user_name("rm-carol")).await.unwrap(),
        None
    );
    assert!(meta.users().await.unwrap().iter().all(|u| u.id != carol.id));
    assert!(meta
        .accounts()
        .await
        .unwrap()
        .iter()
        .all(|account| account.user.id != carol.id));
    assert!(matches!(
        meta.tree(carol.id, NOW).await,
        Err(StoreError::NotFound(_))
    ));
    // No message names the internal id.
    let err = meta.current_cursor(carol.id).await.unwrap_err();
    assert_eq!(err.to_string(), "account not found");
    // A write that authenticated before the removal finds no account.
    let late = apply_ops(
        meta,
        chunks,
        &principal,
        vec![Op::MakeDir {
            path: path("late"),
            mtime_ms: 1,
        }],
        NOW,
    )
    .await;
    assert!(matches!(late, Err(StoreError::NotFound(_))), "{late:?}");
    assert!(matches!(
        meta.add_device(
            carol.id,
            &device_name("phone"),
            &TokenHash::of_token("sst_rm_phone"),
            NOW
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        meta.rename_user(carol.id, &user_name("rm-dave")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        meta.remove_user(carol.id, NOW).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(meta.tree(bob.id, NOW).await.unwrap().entries.len(), 1);

    // The name is free; the id and the namespace are never handed out again.
    let again = meta.create_user(&user_name("rm-carol")).await.unwrap();
    assert_ne!(again.id, carol.id);
    assert_ne!(again.namespace, carol.namespace);
    assert_eq!(meta.tree(again.id, NOW).await.unwrap().entries, []);

    let removed = RemovedUser {
        user_id: carol.id,
        namespace: carol.namespace,
        removed_ms: NOW,
    };
    assert_eq!(meta.removed_users().await.unwrap(), [removed]);
    assert_eq!(chunks.delete_all(carol.namespace).await.unwrap(), (1, 7));
    assert_eq!(chunks.list(carol.namespace).await.unwrap(), []);
    // An upload that was under way stores a chunk after the removal.
    let late = chunk_hash(b"late");
    chunks
        .put(carol.namespace, &late, Bytes::from_static(b"late"))
        .await
        .unwrap();
    chunks
        .durable_chunk_lens(carol.namespace, &[late])
        .await
        .unwrap();
    let report = gc::collect(meta, chunks, NOW + 1000, policy(DAY, DAY), false)
        .await
        .unwrap();
    assert_eq!((report.chunks_deleted, report.bytes_freed), (1, 4));
    assert_eq!(chunks.list(carol.namespace).await.unwrap(), []);
    // Within the grace period more may come: it stays listed.
    assert_eq!(meta.removed_users().await.unwrap(), [removed]);
    gc::collect(meta, chunks, NOW + 2 * DAY, policy(DAY, DAY), false)
        .await
        .unwrap();
    assert_eq!(meta.removed_users().await.unwrap(), []);
    assert_eq!(meta.tree(bob.id, NOW).await.unwrap().entries.len(), 1);
}

/// Web passwords, the web device and browser sessions (issue 16): a password makes sure the
/// user's `web` device exists and is not revoked, and ends the user's sessions; a sign-in
/// session acts as that device only while it is live, the device not revoked and the user not
/// removed; no token device may take the name `web`.
pub async fn web_passwords_and_sessions(meta: &dyn MetaStore, _chunks: &dyn ChunkStore) {
    let alice = meta.create_user(&user_name("web-alice")).await.unwrap();
    let bob = meta.create_user(&user_name("web-bob")).await.unwrap();
    assert_eq!(
        meta.login_record(&user_name("web-alice")).await.unwrap(),
        Some((alice.clone(), None))
    );
    assert_eq!(
        meta.login_record(&user_name("web-nobody")).await.unwrap(),
        None
    );

    // The name is kept for the web interface, before and after it exists.
    let token = TokenHash::of_token("sst_web_device");
    let err = meta
        .add_device(alice.id, &web_device(), &token, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ReservedDeviceName), "{err}");
    assert!(
        err.to_string()
            .contains("the device name web is kept for the web interface"),
        "{err}"
    );

    meta.set_password(alice.id, Some("$argon2id$v=19$fake-1"), NOW)
        .await
        .unwrap();
    let (user, phc) = meta
        .login_record(&user_name("web-alice"))
        .await
        .unwrap()
        .expect("alice exists");
    assert_eq!(
        (user, phc.as_deref()),
        (alice.clone(), Some("$argon2id$v=19$fake-1"))
    );
    let devices = meta.devices(alice.id).await.unwrap();
    let names: Vec<&str> = devices.iter().map(|device| device.name.as_str()).collect();
    assert_eq!(names, [WEB_DEVICE]);
    assert_eq!(
        (devices[0].created_ms, devices[0].revoked_ms),
        (Some(NOW), None)
    );
    assert!(matches!(
        meta.add_device(alice.id, &web_device(), &token, NOW).await,
        Err(StoreError::ReservedDeviceName)
    ));
    assert_eq!(meta.authenticate(&token).await.unwrap(), None);
    // Setting it again keeps the one device.
    meta.set_password(alice.id, Some("$argon2id$v=19$fake-2"), NOW + 1)
        .await
        .unwrap();
    assert_eq!(meta.devices(alice.id).await.unwrap().len(), 1);

    // A sign-in session acts as the web device, until it expires.
    let login = session_of(alice.id, "login-1", None, NOW, NOW + 1000);
    meta.create_session(&login).await.unwrap();
    let live = meta
        .session(&login.id_hash, NOW + 999)
        .await
        .unwrap()
        .expect("live");
    let principal = live.principal.clone().expect("a sign-in acts as a device");
    assert_eq!(
        (
            principal.user_id,
            principal.user_name.as_str(),
            principal.namespace,
            principal.device_name.as_str(),
            principal.device_id
        ),
        (
            alice.id,
            "web-alice",
            alice.namespace,
            WEB_DEVICE,
            devices[0].id
        )
    );
    assert_eq!(
        (
            live.user_id,
            live.share_id,
            live.csrf.as_str(),
            live.expires_ms
        ),
        (alice.id, None, "csrf-login-1", NOW + 1000)
    );
    assert_eq!(
        meta.session(&login.id_hash, NOW + 1000).await.unwrap(),
        None
    );
    let unknown = TokenHash::of_token("no such cookie");
    assert_eq!(meta.session(&unknown, NOW).await.unwrap(), None);
    // The id is the key: a second row with it is refused, and the first one stays.
    let again = session_of(alice.id, "login-1", None, NOW + 1, NOW + 5000);
    assert!(matches!(
        meta.create_session(&again).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        meta.session(&login.id_hash, NOW)
            .await
            .unwrap()
            .map(|s| s.expires_ms),
        Some(NOW + 1000)
    );

    // A share link's session acts as no device.
    let share_id = ShareId::new("web-alice-share-0001".to_owned()).unwrap();
    let unlocked = session_of(alice.id, "share-1", Some(&share_id), NOW, NOW + 1000);
    meta.create_session(&unlocked).await.unwrap();
    let live = meta
        .session(&unlocked.id_hash, NOW)
        .await
        .unwrap()
        .expect("live");
    assert_eq!((live.principal, live.share_id), (None, Some(share_id)));

    // A new session drops the user's sessions that had expired by then, and only those.
    let bob_login = session_of(bob.id, "bob-1", None, NOW, NOW + 1000);
    meta.set_password(bob.id, Some("$argon2id$v=19$bob"), NOW)
        .await
        .unwrap();
    meta.create_session(&bob_login).await.unwrap();
    let later = session_of(alice.id, "login-2", None, NOW + 2000, NOW + 9000);
    meta.create_session(&later).await.unwrap();
    assert_eq!(meta.session(&login.id_hash, NOW).await.unwrap(), None);
    assert!(meta
        .session(&later.id_hash, NOW + 2000)
        .await
        .unwrap()
        .is_some());
    assert!(meta
        .session(&bob_login.id_hash, NOW)
        .await
        .unwrap()
        .is_some());

    // Signing out ends one session; ending it again succeeds.
    meta.end_session(&later.id_hash).await.unwrap();
    meta.end_session(&later.id_hash).await.unwrap();
    assert_eq!(
        meta.session(&later.id_hash, NOW + 2000).await.unwrap(),
        None
    );

    // Revoking the web device ends its sign-ins; a password (the operator's act) brings it
    // back, and ends every session of the user, but not another user's.
    let login = session_of(alice.id, "login-3", None, NOW + 2000, NOW + 9000);
    meta.create_session(&login).await.unwrap();
    let revoked = meta
        .revoke_device(alice.id, &web_device(), NOW + 3000)
        .await
        .unwrap();
    assert!(matches!(revoked, Revocation::Revoked { .. }), "{revoked:?}");
    assert_eq!(
        meta.session(&login.id_hash, NOW + 3000).await.unwrap(),
        None
    );
    meta.set_password(alice.id, Some("$argon2id$v=19$fake-3"), NOW + 4000)
        .await
        .unwrap();
    let devices = meta.devices(alice.id).await.unwrap();
    assert_eq!(
        (
            devices.len(),
            devices[0].name.as_str(),
            devices[0].revoked_ms
        ),
        (1, WEB_DEVICE, None)
    );
    assert_eq!(
        meta.session(&login.id_hash, NOW + 4000).await.unwrap(),
        None
    );
    assert_eq!(meta.session(&unlocked.id_hash, NOW).await.unwrap(), None);
    assert!(meta
        .session(&bob_login.id_hash, NOW)
        .await
        .unwrap()
        .is_some());
    let login = session_of(alice.id, "login-4", None, NOW + 4000, NOW + 9000);
    meta.create_session(&login).await.unwrap();
    assert!(meta
        .session(&login.id_hash, NOW + 4000)
        .await
        .unwrap()
        .and_then(|session| session.principal)
        .is_some());

    // No password: no web sign-in (the device stays, with its history).
    meta.set_password(alice.id, None, NOW + 5000).await.unwrap();
    assert_eq!(
        meta.login_record(&user_name("web-alice")).await.unwrap(),
        Some((alice.clone(), None))
    );
    assert_eq!(
        meta.session(&login.id_hash, NOW + 5000).await.unwrap(),
        None
    );
    assert_eq!(meta.devices(alice.id).await.unwrap().len(), 1);

    // A removed user's sessions and password go with it.
    let bob_id = bob.id;
    meta.remove_user(bob_id, NOW + 6000).await.unwrap();
    assert_eq!(meta.session(&bob_login.id_hash, NOW).await.unwrap(), None);
    assert_eq!(
        meta.login_record(&user_name("web-bob")).await.unwrap(),
        None
    );
    assert!(matches!(
        meta.set_password(bob_id, Some("$argon2id$v=19$x"), NOW)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        meta.create_session(&session_of(bob_id, "bob-2", None, NOW, NOW + 1000))
            .await,
        Err(StoreError::NotFound(_))
    ));
    // The name comes free, without the old password.
    let bob_again = meta.create_user(&user_name("web-bob")).await.unwrap();
    assert_eq!(
        meta.login_record(&user_name("web-bob")).await.unwrap(),
        Some((bob_again, None))
    );
}

/// Share links: stored as made, listed newest first per user, found by id for anyone, revoked
/// only by their owner (once: the first time stays), gone with their user; the node they name
/// is found by id, so a move keeps the link.
pub async fn share_links(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let alice = meta.create_user(&user_name("share-alice")).await.unwrap();
    let bob = meta.create_user(&user_name("share-bob")).await.unwrap();
    let file = put_file(
        meta,
        chunks,
        &alice,
        "docs/report.txt",
        Precondition::MustNotExist,
        b"report",
    )
    .await;
    let docs = meta
        .entry(alice.id, &path("docs"))
        .await
        .unwrap()
        .expect("the implicit parent");
    assert_eq!(docs.kind, EntryKind::Dir);
    assert_eq!(
        meta.entry(alice.id, &path("docs/report.txt"))
            .await
            .unwrap(),
        Some(file.clone())
    );
    assert_eq!(
        meta.entry(alice.id, &path("docs/nope")).await.unwrap(),
        None
    );
    assert_eq!(
        meta.entry(bob.id, &path("docs/report.txt")).await.unwrap(),
        None
    );
    assert_eq!(
        meta.node(alice.id, file.node_id).await.unwrap(),
        Some(file.clone())
    );
    assert_eq!(meta.node(bob.id, file.node_id).await.unwrap(), None);
    assert_eq!(meta.node(alice.id, NodeId(u64::MAX)).await.unwrap(), None);

    assert!(ShareId::new("short".to_owned()).is_err());
    assert!(ShareId::new("has/a/slash/in/it/0000".to_owned()).is_err());
    assert!(ShareId::new("x".repeat(65)).is_err());
    let old = share_of(&alice, "share-alice-old-00001", &docs, NOW);
    let new = ShareRecord {
        expires_ms: Some(NOW + DAY),
        password_hash: Some("$argon2id$v=19$share".to_owned()),
        ..share_of(&alice, "share-alice-new-00001", &file, NOW + 1000)
    };
    let bobs = share_of(&bob, "share-bob-000000000001", &docs, NOW + 2000);
    meta.create_share(&old).await.unwrap();
    meta.create_share(&new).await.unwrap();
    meta.create_share(&bobs).await.unwrap();
    assert!(matches!(
        meta.create_share(&share_of(&bob, "share-alice-old-00001", &docs, NOW))
            .await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        meta.shares(alice.id).await.unwrap(),
        [new.clone(), old.clone()]
    );
    assert_eq!(
        meta.shares(bob.id).await.unwrap(),
        std::slice::from_ref(&bobs)
    );
    assert_eq!(meta.share(&new.id).await.unwrap(), Some(new.clone()));
    assert_eq!(meta.share(&bobs.id).await.unwrap(), Some(bobs.clone()));
    let unknown = ShareId::new("share-nobody-00000001".to_owned()).unwrap();
    assert_eq!(meta.share(&unknown).await.unwrap(), None);

    // A move keeps the node id: the link follows it, and keeps the path it was made at.
    let outcome = apply_one(
        meta,
        chunks,
        &alice,
        Op::Move {
            from: path("docs/report.txt"),
            to: path("report-final.txt"),
            base: file.rev,
        },
    )
    .await;
    assert!(matches!(outcome, OpOutcome::Applied(_)), "{outcome:?}");
    let moved = meta
        .node(alice.id, new.node_id)
        .await
        .unwrap()
        .expect("moved, not gone");
    assert_eq!(moved.path.as_str(), "report-final.txt");
    assert_eq!(
        meta.share(&new.id).await.unwrap().map(|share| share.path),
        Some(path("docs/report.txt"))
    );

    // Only the owner revokes; the first time stays.
    assert!(!meta
        .revoke_share(bob.id, &new.id, NOW + 3000)
        .await
        .unwrap());
    assert!(!meta
        .revoke_share(alice.id, &unknown, NOW + 3000)
        .await
        .unwrap());
    assert_eq!(meta.share(&new.id).await.unwrap().unwrap().revoked_ms, None);
    assert!(meta
        .revoke_share(alice.id, &new.id, NOW + 3000)
        .await
        .unwrap());
    assert!(meta
        .revoke_share(alice.id, &new.id, NOW + 4000)
        .await
        .unwrap());
    let revoked = meta.share(&new.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_ms, Some(NOW + 3000));
    assert_eq!(meta.shares(alice.id).await.unwrap()[0], revoked);

    // A deleted node is gone from `node`; its link is still listed.
    let moved_rev = moved.rev;
    let outcome = apply_one(
        meta,
        chunks,
        &alice,
        Op::Delete {
            path: path("report-final.txt"),
            base: moved_rev,
        },
    )
    .await;
    assert!(matches!(outcome, OpOutcome::Applied(_)), "{outcome:?}");
    assert_eq!(meta.node(alice.id, new.node_id).await.unwrap(), None);
    assert_eq!(meta.shares(alice.id).await.unwrap().len(), 2);

    // A removed user's links go with it.
    meta.remove_user(alice.id, NOW + 5000).await.unwrap();
    assert_eq!(meta.share(&old.id).await.unwrap(), None);
    assert_eq!(meta.share(&new.id).await.unwrap(), None);
    assert_eq!(meta.shares(alice.id).await.unwrap(), []);
    assert_eq!(meta.share(&bobs.id).await.unwrap(), Some(bobs));
}

/// `entries_under`: every node strictly under a folder (not the folder, not a sibling whose
/// name starts the same), in path order; the whole tree for the root; only the user's own.
pub async fn entries_under_a_folder(meta: &dyn MetaStore, chunks: &dyn ChunkStore) {
    let alice = meta.create_user(&user_name("under-alice")).await.unwrap();
    let bob = meta.create_user(&user_name("under-bob")).await.unwrap();
    for at in [
        "d/x.txt",
        "d/e/f.txt",
        "d-sibling/y.txt",
        "d0.txt",
        "e.txt",
        "d/~z",
    ] {
        put_file(
            meta,
            chunks,
            &alice,
            at,
            Precondition::MustNotExist,
            at.as_bytes(),
        )
        .await;
    }
    put_file(
        meta,
        chunks,
        &bob,
        "d/bob.txt",
        Precondition::MustNotExist,
        b"bob",
    )
    .await;
    let paths = |entries: Vec<RemoteEntry>| -> Vec<String> {
        entries
            .into_iter()
            .map(|entry| entry.path.to_string())
            .collect()
    };
    assert_eq!(
        paths(
            meta.entries_under(alice.id, Some(&path("d")))
                .await
                .unwrap()
        ),
        ["d/e", "d/e/f.txt", "d/x.txt", "d/~z"]
    );
    assert_eq!(
        paths(
            meta.entries_under(alice.id, Some(&path("d/e")))
                .await
                .unwrap()
        ),
        ["d/e/f.txt"]
    );
    assert_eq!(
        paths(meta.entries_under(alice.id, None).await.unwrap()),
        [
            "d",
            "d-sibling",
            "d-sibling/y.txt",
            "d/e",
            "d/e/f.txt",
            "d/x.txt",
            "d/~z",
            "d0.txt",
            "e.txt"
        ]
    );
    // The entries are the tree's.
    let tree = meta.tree(alice.id, NOW).await.unwrap().entries;
    let under = meta.entries_under(alice.id, None).await.unwrap();
    assert_eq!(under.len(), tree.len());
    for entry in &under {
        assert_eq!(&entry_at(&tree, entry.path.as_str()), entry);
    }
    assert_eq!(
        meta.entries_under(alice.id, Some(&path("d/x.txt")))
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        meta.entries_under(alice.id, Some(&path("nope")))
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        paths(meta.entries_under(bob.id, None).await.unwrap()),
        ["d", "d/bob.txt"]
    );
}

fn session_of(
    user_id: UserId,
    cookie: &str,
    share_id: Option<&ShareId>,
    created_ms: i64,
    expires_ms: i64,
) -> NewSession {
    NewSession {
        id_hash: TokenHash::of_token(cookie),
        user_id,
        share_id: share_id.cloned(),
        csrf: format!("csrf-{cookie}"),
        created_ms,
        expires_ms,
    }
}

fn share_of(user: &User, id: &str, node: &RemoteEntry, created_ms: i64) -> ShareRecord {
    ShareRecord {
        id: ShareId::new(id.to_owned()).unwrap(),
        user_id: user.id,
        node_id: node.node_id,
        path: node.path.clone(),
        created_ms,
        expires_ms: None,
        password_hash: None,
        revoked_ms: None,
        created_by: web_device(),
    }
}

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
            .put(
                user.namespace,
                &chunk_hash(bytes),
                Bytes::copy_from_slice(bytes),
            )
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
        executable: false,
    }
}

async fn apply(
    meta: &dyn MetaStore,
    chunks: &dyn ChunkStore,
    user: &User,
    ops: Vec<Op>,
) -> BatchOutcome {
    apply_as(meta, chunks, user, "dev", ops, NOW).await
}

async fn apply_as(
    meta: &dyn MetaStore,
    chunks: &dyn ChunkStore,
    user: &User,
    device: &str,
    ops: Vec<Op>,
    now_ms: i64,
) -> BatchOutcome {
    let principal = Principal {
        user_id: user.id,
        user_name: user.name.clone(),
        namespace: user.namespace,
        device_id: DeviceId(0),
        device_name: device_name(device),
    };
    apply_ops(meta, chunks, &principal, ops, now_ms)
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

async fn take(
    meta: &dyn MetaStore,
    user: &User,
    device: &str,
    at: &str,
    ttl_secs: Option<u64>,
    now_ms: i64,
) -> LockOutcome {
    meta.take_lock(user.id, &device_name(device), &path(at), ttl_secs, now_ms)
        .await
        .unwrap()
}

async fn release(
    meta: &dyn MetaStore,
    user: &User,
    device: &str,
    at: &str,
    force: bool,
    now_ms: i64,
) -> LockOutcome {
    meta.release_lock(user.id, &device_name(device), &path(at), force, now_ms)
        .await
        .unwrap()
}
