//! The devices endpoints (`syncstore_proto::devices`): a device lists its user's devices, and
//! revokes any of them, itself included. What a revocation does is the store's
//! (`MetaStore::revoke_device`: one transaction serialised on the user); here it is answered,
//! and the long polls of this server are woken for the locks it released (other servers hear
//! of them through the store's change feed).

use crate::auth::Auth;
use crate::error::{ApiError, JsonBody};
use crate::routes::{now_ms, AppState};
use axum::extract::State;
use axum::Json;
use syncstore_proto::{DeviceInfo, DevicesResponse, RevokeRequest, RevokeResponse};
use syncstore_store::Revocation;

/// Every device of the caller's user, revoked ones too; `current` marks the caller.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name))]
pub(crate) async fn devices(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<DevicesResponse>, ApiError> {
    let Auth(principal) = auth;
    let devices = state.stores.meta.devices(principal.user_id).await?;
    Ok(Json(DevicesResponse {
        devices: devices
            .into_iter()
            .map(|device| DeviceInfo {
                current: device.id == principal.device_id,
                name: device.name,
                created_ms: device.created_ms,
                last_seen_ms: device.last_seen_ms,
                last_address: device.last_address,
                revoked_ms: device.revoked_ms,
            })
            .collect(),
    }))
}

/// Revokes a device of the caller's user: its token gets 401 from now on, on every server.
#[tracing::instrument(skip_all, fields(user = %auth.0.user_name, device = %auth.0.device_name, revoke = %body.0.device))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody<RevokeRequest>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let Auth(principal) = auth;
    let JsonBody(RevokeRequest { device }) = body;
    Ok(Json(revoke_device(&state, &principal, device).await?))
}

/// Revokes one of the principal's user's devices and releases its locks (the API's revoke and
/// the web interface's).
///
/// # Errors
/// 404 when the user has no such device, or the store's failure.
pub(crate) async fn revoke_device(
    state: &AppState,
    principal: &syncstore_store::Principal,
    device: syncstore_proto::DeviceName,
) -> Result<RevokeResponse, ApiError> {
    let revocation = state
        .stores
        .meta
        .revoke_device(principal.user_id, &device, now_ms())
        .await?;
    let response = match revocation {
        Revocation::NoSuchDevice => {
            return Err(ApiError::not_found(format!(
                "user {} has no device {device}",
                principal.user_name
            )))
        }
        Revocation::AlreadyRevoked { revoked_ms } => RevokeResponse {
            device,
            revoked_ms,
            already_revoked: true,
            released_locks: Vec::new(),
        },
        Revocation::Revoked {
            revoked_ms,
            released,
            cursor,
        } => {
            if let Some(cursor) = cursor {
                state.hub.notify(principal.user_id, cursor);
            }
            tracing::info!(released_locks = released.len(), "revoked a device");
            RevokeResponse {
                device,
                revoked_ms,
                already_revoked: false,
                released_locks: released.into_iter().map(|lock| lock.path).collect(),
            }
        }
    };
    Ok(response)
}
