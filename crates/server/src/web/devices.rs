//! The user's devices, when each was last seen and from where, and revoking one (a lost
//! laptop): its token is refused from then on by every server, and its locks are released.

use super::layout::{csrf_field, page, time};
use super::{WebError, WebUser};
use crate::routes::AppState;
use axum::extract::State;
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use syncstore_proto::DeviceName;

pub(crate) async fn devices_page(
    State(state): State<AppState>,
    user: WebUser,
) -> Result<Markup, WebError> {
    let devices = state.stores.meta.devices(user.principal.user_id).await?;
    let body = html! {
        h1 { "Devices" }
        p class="note" { "Each device syncs with its own token. Revoke a device you lost: its token stops working at once, on every server, and its locks are released." }
        table class="listing devices" {
            thead { tr { th scope="col" { "Device" } th scope="col" { "Added" } th scope="col" { "Last seen" } th scope="col" { "From" } th scope="col" { "State" } } }
            tbody {
                @for device in &devices {
                    @let name = device.name.as_str();
                    tr data-device=(name) {
                        td data-label="Device" {
                            (name)
                            @if device.id == user.principal.device_id { " " span class="note" { "(this web interface)" } }
                        }
                        td data-label="Added" { @if let Some(ms) = device.created_ms { (time(ms)) } @else { "—" } }
                        td data-label="Last seen" { @if let Some(ms) = device.last_seen_ms { (time(ms)) } @else { "never" } }
                        td data-label="From" { (device.last_address.as_deref().unwrap_or("—")) }
                        td data-label="State" {
                            @if let Some(ms) = device.revoked_ms {
                                "revoked " (time(ms))
                            } @else if device.id == user.principal.device_id {
                                "active"
                            } @else {
                                form method="post" action="/devices/revoke" class="inline" data-confirm=(format!("Revoke {name}? It will stop syncing until it is set up with a new token.")) {
                                    (csrf_field(&user))
                                    input type="hidden" name="device" value=(name);
                                    button type="submit" class="danger revoke" aria-label=(format!("Revoke {name}")) { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Devices", Some(&user), body))
}

#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    #[serde(default)]
    csrf: String,
    device: String,
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    user: WebUser,
    Form(form): Form<RevokeForm>,
) -> Result<Markup, WebError> {
    user.check_csrf(&form.csrf)?;
    let device = DeviceName::new(&form.device).map_err(|err| {
        WebError::bad_request(format!("not a device name {:?}: {err}", form.device))
    })?;
    if device == user.principal.device_name {
        return Err(WebError::bad_request(
            "the web interface cannot revoke itself; sign out instead (the operator can turn web \
             sign-in off with syncstore user passwd NAME --clear)",
        ));
    }
    let revoked = crate::devices::revoke_device(&state, &user.principal, device).await?;
    let body = html! {
        h1 { "Device revoked" }
        p role="status" id="revoke-result" {
            (revoked.device.as_str())
            @if revoked.already_revoked { " was already revoked." } @else { " is revoked: its token is refused from now on." }
        }
        @if !revoked.released_locks.is_empty() {
            p { "Its locks were released: " (revoked.released_locks.iter().map(|path| path.as_str()).collect::<Vec<_>>().join(", ")) }
        }
        p { a href="/devices" { "Back to devices" } }
    };
    Ok(page("Device revoked", Some(&user), body))
}
