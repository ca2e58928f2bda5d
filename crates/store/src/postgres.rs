//! [`PgMetaStore`]: a [`MetaStore`](crate::MetaStore) in PostgreSQL, shared by any number of server processes.
//!
//! The backend is built with the `postgres` feature (on by default); [`redact_url`] always is,
//! so that a build without it still names a PostgreSQL URL it refuses without its password.
//!
//! Calls run the sync `postgres` client on a blocking thread (`spawn_blocking`), with a small
//! pool of connections bounded by a semaphore. What a call does is written once in
//! [`crate::meta`] (and its queries in `sql.rs`), exactly as on SQLite; this file is the
//! PostgreSQL side: the pool, the migrations, the transaction each [`Access`](crate::meta::Access) gets, when a call
//! runs again, and the change feed.
//!
//! Correctness across servers: every write transaction first locks the user's row
//! (`SELECT … FROM users WHERE id = $1 FOR UPDATE`, which is [`Txn::serialize_writes`](crate::ops::Txn::serialize_writes)). A user's batches, and so the allocation of
//! its cursors and node ids and every conditional write, run one after another whichever server
//! they come through; the default READ COMMITTED isolation then sees the latest committed state
//! after the lock is taken. Reads that must agree with a cursor (`tree`, `changes_since`,
//! `journal_tag`: [`Access::Snapshot`]) run in one REPEATABLE READ, READ ONLY snapshot.
//!
//! Change feed: a batch that changed something, and every lock change, runs `pg_notify('syncstore_changes',
//! '<user id>:<cursor>')` inside its transaction ([`MetaTxn::announce`](crate::meta::MetaTxn::announce)), so PostgreSQL delivers it exactly when (and
//! only if) the batch commits. [`PgMetaStore::change_feed`] LISTENs on its own connection and
//! hands the notices to the server, which wakes its long polls. Notices sent while that
//! connection is down are lost; the feed says when it listens again
//! ([`ChangeFeed::resumed`](crate::ChangeFeed::resumed)), and the server then reads the cursors it cares about again.
//!
//! Restarts of the database: a connection error (refused, reset, closed, or PostgreSQL's
//! "terminating connection") is [`StoreError::Unavailable`](crate::StoreError::Unavailable). A call whose pooled connection
//! turns out dead (the server restarted since it was last used) drops every idle connection and
//! runs again on a new one, which is safe because a read changes nothing and a write
//! transaction is only retried when it failed before its `COMMIT` was sent, so it certainly did
//! not commit; a connection lost during `COMMIT` leaves the outcome unknown
//! (`CommitInDoubt`) and is answered as unavailable, never retried. Every write, even of one
//! row (`create_user`), is an explicit transaction, so this holds for all of them.
//!
//! The schema comes from the numbered files in `migrations/postgres/`, built in at compile
//! time, applied under an advisory lock (several servers may start at once) and recorded in
//! `schema_version`; a database from a newer build is refused.

#[cfg(feature = "postgres")]
mod backend;

#[cfg(feature = "postgres")]
pub use backend::{create_test_database, PgMetaStore, CHANGES_CHANNEL};

/// `url` with the password replaced by `***`, in URL form (`postgres://user:pw@host`) and in
/// key-value form (`password=pw`).
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let redacted_authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***@{host}"),
                None => authority.to_owned(),
            },
            None => authority.to_owned(),
        };
        let tail = redact_password_params(tail, '&');
        return format!("{scheme}://{redacted_authority}{tail}");
    }
    redact_password_params(url, ' ')
}

/// Replaces the value of every `password=` parameter separated by `separator`.
fn redact_password_params(text: &str, separator: char) -> String {
    text.split(separator)
        .map(|part| {
            let key_start = part.rfind(['?', ' ']).map_or(0, |idx| idx + 1);
            if part[key_start..].starts_with("password=") {
                format!("{}password=***", &part[..key_start])
            } else {
                part.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(&separator.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords() {
        let cases = [
            (
                "postgres://me:secret@db:5432/sync",
                "postgres://me:***@db:5432/sync",
            ),
            ("postgres://me@db/sync", "postgres://me@db/sync"),
            ("postgresql://db/sync", "postgresql://db/sync"),
            (
                "postgres://db/sync?user=me&password=secret&sslmode=disable",
                "postgres://db/sync?user=me&password=***&sslmode=disable",
            ),
            (
                "postgres://db/sync?password=secret",
                "postgres://db/sync?password=***",
            ),
            (
                "host=db user=me password=secret dbname=sync",
                "host=db user=me password=*** dbname=sync",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }
}
