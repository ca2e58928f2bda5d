//! Limits on what one request may take, so that one client cannot hurt the others: chunk
//! transfer slots per user and in total, a budget of JSON body bytes in flight, and the shape
//! of an ops batch (how many ops, how many directories they may create).
//!
//! The other limits sit where their mechanism lives: the header read timeout and the
//! connection cap in `conn`, the body size in `DefaultBodyLimit` and the body idle timeout in
//! `tower_http::timeout::RequestBodyTimeoutLayer` (both set up in `routes::router`), and the
//! path depth in [`syncstore_proto::RelPath`].

use crate::error::ApiError;
use crate::routes::AppState;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use syncstore_proto::{Op, RelPath};
use syncstore_store::UserId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Slots for chunk uploads and downloads: a cap in total and one per user, so one user's
/// stalled transfers (which hold their slots until the body idle timeout cuts them off) never
/// take the slots another user's transfers need.
pub(crate) struct TransferSlots {
    total: Arc<Semaphore>,
    per_user_max: usize,
    /// One semaphore per user that ever transferred; a few dozen bytes per account, so they
    /// are kept rather than cleaned up.
    per_user: Mutex<HashMap<UserId, Arc<Semaphore>>>,
}

/// The two slots one transfer holds; dropping it frees them.
pub(crate) struct TransferPermit {
    _user: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl TransferSlots {
    pub(crate) fn new(total: usize, per_user: usize) -> TransferSlots {
        TransferSlots {
            total: Arc::new(Semaphore::new(total.max(1))),
            per_user_max: per_user.max(1),
            per_user: Mutex::new(HashMap::new()),
        }
    }

    /// Waits up to `wait` for a slot of the user, then for one of the total; 503 when either
    /// does not come in time. The user's slot is taken first, so a user over their cap waits
    /// without holding a slot of the total.
    pub(crate) async fn acquire(
        &self,
        user_id: UserId,
        wait: std::time::Duration,
    ) -> Result<TransferPermit, ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let user_slots = {
            // A panic while holding this lock leaves the map consistent (one insert).
            let mut per_user = self
                .per_user
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(
                per_user
                    .entry(user_id)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_user_max))),
            )
        };
        let user = acquire_until(user_slots, deadline).await.ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this account already has {} chunk transfers running (serve \
                     --max-transfers-per-user); try again when one has finished",
                    self.per_user_max
                ),
            )
        })?;
        let total = acquire_until(Arc::clone(&self.total), deadline)
            .await
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is busy with other chunk transfers (serve --max-transfers); \
                     try again shortly",
                )
            })?;
        Ok(TransferPermit {
            _user: user,
            _total: total,
        })
    }
}

/// A permit of `semaphore`, or `None` at the deadline. The semaphores are never closed.
async fn acquire_until(
    semaphore: Arc<Semaphore>,
    deadline: tokio::time::Instant,
) -> Option<OwnedSemaphorePermit> {
    tokio::time::timeout_at(deadline, semaphore.acquire_owned())
        .await
        .ok()?
        .ok()
}

/// The budget of JSON request body bytes the server holds at once, counted in KiB (a tokio
/// semaphore hands out at most `u32::MAX` permits at a time).
pub(crate) struct JsonBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

impl JsonBudget {
    pub(crate) fn new(total_bytes: usize) -> JsonBudget {
        let total_kib = u32::try_from(total_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        JsonBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }
}

/// Before a request body is read: refuses one whose declared length is over the limit (413),
/// then waits for its share of the JSON budget (its declared length, or the whole limit when
/// it declares none) and holds it until the answer is built. Requests that carry no body
/// (GET, HEAD) pass at once.
pub(crate) async fn json_budget(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let limit = state.config.json_body_limit;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|&declared| declared > limit as u64) {
        return body_too_large(Some(declared), limit).into_response();
    }
    let bytes = declared.map_or(limit, |declared| declared as usize);
    let kib = u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .min(state.json_budget.total_kib);
    // The semaphore is never closed; if it were, the request would go ahead unbudgeted.
    let _budget = Arc::clone(&state.json_budget.kib)
        .acquire_many_owned(kib)
        .await
        .ok();
    next.run(request).await
}

/// The 413 for a JSON body over `limit` bytes (`declared`: its Content-Length, when known).
pub(crate) fn body_too_large(declared: Option<u64>, limit: usize) -> ApiError {
    let size = match declared {
        Some(declared) => format!("is {declared} bytes"),
        None => "is larger".to_owned(),
    };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body {size}; at most {limit} bytes are accepted (serve --max-json-body)"
        ),
    )
}

/// Refuses an ops batch with more than `max_ops` ops, or whose ops lie in more than `max_dirs`
/// distinct directories: each op creates its missing parents and lists them in its result, so
/// the directories bound the work and the answer of a batch.
pub(crate) fn check_batch(ops: &[Op], max_ops: usize, max_dirs: usize) -> Result<(), ApiError> {
    if ops.len() > max_ops {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} ops in one request; at most {max_ops} are accepted (serve --max-batch-ops): \
                 send them in smaller batches",
                ops.len()
            ),
        ));
    }
    if count_parent_dirs(ops, max_dirs) > max_dirs {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the ops of this request lie in more than {max_dirs} distinct directories, any \
                 of which an op may have to create (serve --max-batch-dirs): send them in \
                 smaller batches"
            ),
        ));
    }
    Ok(())
}

/// The distinct ancestors of the paths `ops` create or move to, counting up to `stop_after + 1`.
///
/// Each path's ancestors are walked from the innermost out, stopping at the first one seen
/// already (its own ancestors were counted with it), so the work is about one hash per
/// distinct directory plus one per op, however the paths repeat.
fn count_parent_dirs(ops: &[Op], stop_after: usize) -> usize {
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for op in ops {
        let path: &RelPath = match op {
            Op::PutFile { path, .. } | Op::MakeDir { path, .. } => path,
            Op::Move { to, .. } => to,
            // A delete or a mode change creates nothing.
            Op::Delete { .. } | Op::SetMode { .. } => continue,
        };
        let text = path.as_str();
        for (idx, _) in text.rmatch_indices('/') {
            if !seen.insert(&text[..idx]) {
                break;
            }
            if seen.len() > stop_after {
                return seen.len();
            }
        }
    }
    seen.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_dir(path: &str) -> Op {
        Op::MakeDir {
            path: RelPath::new(path).unwrap(),
            mtime_ms: 0,
        }
    }

    #[test]
    fn parent_dirs_are_counted_once() {
        let ops = [
            make_dir("a/b/c"),
            make_dir("a/b/d"),
            make_dir("a/x"),
            make_dir("top"),
        ];
        // a, a/b, (a again), a/b again: a and a/b.
        assert_eq!(count_parent_dirs(&ops, 100), 2);
        let deep: Vec<Op> = (0..50)
            .map(|idx| make_dir(&format!("d{idx}/{}", ["x"; 10].join("/"))))
            .collect();
        assert_eq!(count_parent_dirs(&deep, 10_000), 50 * 10);
        assert_eq!(
            count_parent_dirs(&deep, 20),
            21,
            "stops counting past the cap"
        );
    }

    #[test]
    fn batches_over_a_limit_are_refused_with_413() {
        let ops: Vec<Op> = (0..5).map(|idx| make_dir(&format!("p{idx}/q"))).collect();
        assert!(check_batch(&ops, 5, 5).is_ok());
        let too_many = check_batch(&ops, 4, 5).unwrap_err();
        assert_eq!(too_many.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            too_many.message.contains("--max-batch-ops"),
            "{}",
            too_many.message
        );
        let too_deep = check_batch(&ops, 5, 4).unwrap_err();
        assert_eq!(too_deep.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            too_deep.message.contains("--max-batch-dirs"),
            "{}",
            too_deep.message
        );
    }
}
