//! Wire types of a user's devices, for the web UI (and any device) to list and revoke them.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /api/v1/devices` | | [`DevicesResponse`]: every device of the caller's user, revoked ones too, by name |
//! | `POST /api/v1/devices/revoke` | [`RevokeRequest`] | [`RevokeResponse`]; 404 when the user has no such device |
//!
//! Any device of a user may revoke any device of the same user, itself included: from then on
//! the revoked device's token gets 401 on every server of the database, and the locks it held
//! are released. Revoking a device that was revoked already changes nothing and says so.
//! Times are milliseconds since the Unix epoch, server clock.

use crate::{DeviceName, RelPath};
use serde::{Deserialize, Serialize};

/// One device of the user.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: DeviceName,
    /// When it was added; `None` for a device added before the server recorded it.
    pub created_ms: Option<i64>,
    /// When a server last took its token (recorded at most once a minute per server process),
    /// and the IP address that request came from.
    pub last_seen_ms: Option<i64>,
    pub last_address: Option<String>,
    /// When it was revoked; `None` while its token works.
    pub revoked_ms: Option<i64>,
    /// This is the device asking.
    #[serde(default)]
    pub current: bool,
}

/// `GET /api/v1/devices` answer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DevicesResponse {
    /// Sorted by name.
    pub devices: Vec<DeviceInfo>,
}

/// `POST /api/v1/devices/revoke` body.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RevokeRequest {
    /// The device of the caller's user to revoke (the caller itself is allowed).
    pub device: DeviceName,
}

/// `POST /api/v1/devices/revoke` answer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RevokeResponse {
    pub device: DeviceName,
    /// When it was revoked (by this request, or earlier when `already_revoked`).
    pub revoked_ms: i64,
    /// It had been revoked before this request; nothing changed.
    #[serde(default)]
    pub already_revoked: bool,
    /// The paths whose locks it held, released by this request.
    #[serde(default)]
    pub released_locks: Vec<RelPath>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented JSON shapes.
    #[test]
    fn json_shapes() {
        let request: RevokeRequest = serde_json::from_str(r#"{"device": "laptop"}"#).unwrap();
        assert_eq!(request.device.as_str(), "laptop");
        assert!(serde_json::from_str::<RevokeRequest>(r#"{"device": "a b"}"#).is_err());
        let info = DeviceInfo {
            name: DeviceName::new("laptop").unwrap(),
            created_ms: Some(1),
            last_seen_ms: None,
            last_address: None,
            revoked_ms: None,
            current: true,
        };
        assert_eq!(
            serde_json::to_value(&info).unwrap(),
            serde_json::json!({
                "name": "laptop", "created_ms": 1, "last_seen_ms": null, "last_address": null,
                "revoked_ms": null, "current": true
            })
        );
    }
}
