//! How the store's outcomes are answered: their HTTP statuses and messages.
//!
//! The store returns typed outcomes ([`OpOutcome`], [`LockOutcome`]) and speaks no HTTP; this is
//! the one place that maps them to statuses, and that words the 423 message clients show:
//! `"PATH" is locked by DEVICE since YYYY-MM-DD HH:MM:SS` (UTC).

use crate::error::ApiError;
use axum::http::StatusCode;
use syncstore_proto::{Cursor, LockInfo, OpResult};
use syncstore_store::{LockOutcome, OpOutcome};

/// The wire form of one op's outcome, as [`OpResult::status`] documents it: 200 with the nodes
/// it created or changed, 409 with the node now at the path (if any), 400 for a wrong op, 404
/// for a node that does not exist, 423 naming the lock in the way.
pub fn op_result(outcome: OpOutcome) -> OpResult {
    let (status, entries, message) = match outcome {
        OpOutcome::Applied(entries) => (StatusCode::OK, entries, String::new()),
        OpOutcome::Conflict { current, message } => {
            (StatusCode::CONFLICT, current.into_iter().collect(), message)
        }
        OpOutcome::Invalid(message) => (StatusCode::BAD_REQUEST, Vec::new(), message),
        OpOutcome::NotFound(message) => (StatusCode::NOT_FOUND, Vec::new(), message),
        OpOutcome::Locked(lock) => (StatusCode::LOCKED, Vec::new(), held_message(&lock)),
        OpOutcome::OverQuota(message) => (StatusCode::INSUFFICIENT_STORAGE, Vec::new(), message),
    };
    OpResult {
        status: status.as_u16(),
        entries,
        message,
    }
}

/// The lock change that was made and the journal row that records it, or the refusal as an
/// error answer: 400 for a bad TTL, 404 for nothing to lock or no lock to release, 423 naming
/// the lock in the way.
pub(crate) fn lock_change(outcome: LockOutcome) -> Result<(LockInfo, Cursor), ApiError> {
    match outcome {
        LockOutcome::Done { lock, cursor } => Ok((lock, cursor)),
        LockOutcome::Invalid(message) => Err(ApiError::bad_request(message)),
        LockOutcome::NotFound(message) => Err(ApiError::not_found(message)),
        LockOutcome::Locked(lock) => Err(ApiError::new(StatusCode::LOCKED, held_message(&lock))),
    }
}

/// The 423 message: `"PATH" is locked by DEVICE since YYYY-MM-DD HH:MM:SS` (UTC), naming the
/// locked path, which may be a directory above the path asked about.
fn held_message(lock: &LockInfo) -> String {
    format!(
        "{:?} is locked by {} since {}",
        lock.path.as_str(),
        lock.device,
        utc_time(lock.since_ms)
    )
}

/// Milliseconds since the Unix epoch as UTC `YYYY-MM-DD HH:MM:SS`, the milliseconds cut off.
fn utc_time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(time) => time.format("%Y-%m-%d %H:%M:%S").to_string(),
        // Beyond 262,000 years from now; no clock the server reads gives such a time.
        None => format!("{ms} ms after 1970-01-01 00:00:00"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstore_proto::{DeviceName, RelPath};

    #[test]
    fn utc_time_formats_known_instants() {
        let cases = [
            (0, "1970-01-01 00:00:00"),
            (999, "1970-01-01 00:00:00"),
            (-1, "1969-12-31 23:59:59"),
            (951_782_400_000, "2000-02-29 00:00:00"),
            (1_700_000_000_000, "2023-11-14 22:13:20"),
            (4_107_542_399_000, "2100-02-28 23:59:59"),
        ];
        for (ms, expect) in cases {
            assert_eq!(utc_time(ms), expect, "{ms}");
        }
    }

    #[test]
    fn outcomes_map_to_statuses_and_messages() {
        let lock = LockInfo {
            path: RelPath::new("docs/a \"b\".txt").unwrap(),
            device: DeviceName::new("laptop").unwrap(),
            since_ms: 1_700_000_000_000,
            expires_ms: None,
        };
        let held = "\"docs/a \\\"b\\\".txt\" is locked by laptop since 2023-11-14 22:13:20";
        let locked = op_result(OpOutcome::Locked(lock.clone()));
        assert_eq!(
            (locked.status, locked.entries, &*locked.message),
            (423, vec![], held)
        );
        let conflict = op_result(OpOutcome::Conflict {
            current: None,
            message: "m".into(),
        });
        assert_eq!((conflict.status, &*conflict.message), (409, "m"));
        let statuses: Vec<u16> = [
            OpOutcome::Applied(Vec::new()),
            OpOutcome::Invalid("i".into()),
            OpOutcome::NotFound("n".into()),
        ]
        .into_iter()
        .map(|outcome| op_result(outcome).status)
        .collect();
        assert_eq!(statuses, [200, 400, 404]);

        let refused = lock_change(LockOutcome::Locked(lock.clone())).unwrap_err();
        assert_eq!(
            (refused.status, &*refused.message),
            (StatusCode::LOCKED, held)
        );
        for (outcome, status) in [
            (LockOutcome::Invalid("i".into()), StatusCode::BAD_REQUEST),
            (LockOutcome::NotFound("n".into()), StatusCode::NOT_FOUND),
        ] {
            assert_eq!(lock_change(outcome).unwrap_err().status, status);
        }
        let done = LockOutcome::Done {
            lock: lock.clone(),
            cursor: Cursor(7),
        };
        assert_eq!(lock_change(done).unwrap(), (lock, Cursor(7)));
    }
}
