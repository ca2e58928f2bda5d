//! The history, trash and restore endpoints (`syncstore_proto::history`).
//!
//! What a restore does is decided in the store (`MetaStore::plan_restore`, one snapshot); here
//! its ops are applied like any device's batch, in batches of [`RESTORE_BATCH`], each op
//! conditional on what the plan saw, so a path changed meanwhile fails on its own and is
//! reported, never overwritten.

use crate::auth::Auth;
use crate::error::{ApiError, JsonBody, QueryParams};
use crate::routes::AppState;
use axum::extract::State;
use axum::Json;
use syncstore_proto::{
    HistoryQuery, HistoryResponse, RestoreRequest, RestoreResponse, TrashQuery, TrashResponse,
    UsageResponse,
};

/// Ops per batch of a restore: one transaction each.
const RESTORE_BATCH: usize = 1000;

/// Every kept version of a path.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, path = %query.0.path))]
pub(crate) async fn history(
    State(state): State<AppState>,
    auth: Auth,
    query: QueryParams<HistoryQuery>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let QueryParams(HistoryQuery { path }) = query;
    let history = state.stores.meta.history(auth.0.user_id, &path).await?;
    if history.versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "no version of {:?} is kept",
            path.as_str()
        )));
    }
    Ok(Json(HistoryResponse {
        path,
        versions: history.versions,
        kept_since_ms: history.kept_since_ms,
    }))
}

/// The deleted files still kept.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name))]
pub(crate) async fn trash(
    State(state): State<AppState>,
    auth: Auth,
    query: QueryParams<TrashQuery>,
) -> Result<Json<TrashResponse>, ApiError> {
    let QueryParams(query) = query;
    let trash = state.stores.meta.trash(auth.0.user_id, &query).await?;
    Ok(Json(TrashResponse {
        entries: trash.entries,
        kept_since_ms: trash.kept_since_ms,
    }))
}

/// Plans a restore and, unless it is a dry run, applies it as the asking device.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name))]
pub(crate) async fn restore(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody<RestoreRequest>,
) -> Result<Json<RestoreResponse>, ApiError> {
    let Auth(principal) = auth;
    let JsonBody(RestoreRequest { target, dry_run }) = body;
    Ok(Json(
        run_restore(&state, &principal, &target, dry_run).await?,
    ))
}

/// Plans a restore and, unless `dry_run`, applies it as the principal's device (the API's
/// restore and the web interface's).
///
/// # Errors
/// 400 for a target the store cannot plan, or the store's failure; ops that fail are reported
/// in their steps.
pub(crate) async fn run_restore(
    state: &AppState,
    principal: &syncstore_store::Principal,
    target: &syncstore_proto::RestoreTarget,
    dry_run: bool,
) -> Result<RestoreResponse, ApiError> {
    let meta = &state.stores.meta;
    let plan = meta
        .plan_restore(principal.user_id, target)
        .await?
        .map_err(ApiError::bad_request)?;
    let mut steps = plan.steps;
    if !dry_run {
        let mut done = 0;
        for ops in plan.ops.chunks(RESTORE_BATCH) {
            let batch = crate::content::apply(state, principal, ops.to_vec()).await?;
            for (step, outcome) in steps[done..].iter_mut().zip(batch.outcomes) {
                let result = crate::wire::op_result(outcome);
                if result.status != 200 {
                    step.error = result.message;
                }
            }
            done += ops.len();
        }
        tracing::info!(
            target = %syncstore_store::history::describe(target),
            steps = steps.len(),
            failed = steps.iter().filter(|step| !step.error.is_empty()).count(),
            "restored"
        );
    }
    Ok(RestoreResponse {
        steps,
        unchanged: plan.unchanged,
        dry_run,
        cursor: meta.current_cursor(principal.user_id).await?,
    })
}

/// The account's usage and quota.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name))]
pub(crate) async fn usage(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<UsageResponse>, ApiError> {
    Ok(Json(state.stores.meta.usage(auth.0.user_id).await?))
}
