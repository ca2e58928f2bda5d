//! [`Auth`]: the bearer-token extractor every endpoint but health takes first, so an
//! unauthenticated request is refused before its body is read; with it, the two tables it
//! keeps in memory: [`AuthFailures`] (the rate limit on refused tokens, per address) and
//! [`LastSeen`] (when this process last recorded each device as seen).
//!
//! Every request's token is looked up in the meta store, so a revoked device, or a removed
//! account, is refused from the commit that revoked it on, by every server of the database;
//! neither table caches a token.
//!
//! A refused token is logged (WARN, with the peer address, never the token) and counted for
//! its address. An address that sends more than [`ServerConfig::auth_fail_limit`] refused
//! tokens within [`ServerConfig::auth_fail_window`] gets 429, with `Retry-After`, instead of
//! 401 for every refused token it sends during [`ServerConfig::auth_block`]. A good token is
//! served from any address, a blocked one too, so the devices behind one NAT address keep
//! syncing beside a misconfigured one. (Tokens are 256 random bits: the limit is not what keeps
//! them from being guessed; it makes a client that keeps sending a bad token back off and shows
//! it in the log once.)

use crate::access_log::Requester;
use crate::conn::PeerAddr;
use crate::error::ApiError;
use crate::routes::{now_ms, AppState};
use crate::ServerConfig;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use syncstore_store::{DeviceId, Principal, TokenHash};

/// How often, at most, this process records a device as seen.
pub(crate) const SEEN_EVERY: Duration = Duration::from_secs(60);

/// The most devices [`LastSeen`] remembers; past it, entries older than [`SEEN_EVERY`] go.
const MAX_SEEN: usize = 100_000;

/// The most addresses [`AuthFailures`] tracks; past it, those not blocked are forgotten.
const MAX_ADDRESSES: usize = 10_000;

/// The device a request comes from, from `Authorization: Bearer TOKEN`.
pub(crate) struct Auth(pub(crate) Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Auth, ApiError> {
        let peer = parts.extensions.get::<PeerAddr>().map(|peer| peer.0.ip());
        let Some(value) = parts.headers.get(AUTHORIZATION) else {
            return Err(refuse(
                state,
                peer,
                "missing header Authorization: Bearer TOKEN",
            ));
        };
        let Some(token) = value
            .to_str()
            .ok()
            .and_then(|text| text.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
        else {
            return Err(refuse(
                state,
                peer,
                "the Authorization header is not \"Bearer TOKEN\"",
            ));
        };
        let Some(principal) = state
            .stores
            .meta
            .authenticate(&TokenHash::of_token(token))
            .await?
        else {
            return Err(refuse(state, peer, "unknown or revoked token"));
        };
        if let Some(requester) = parts.extensions.get::<Requester>() {
            requester.set(principal.user_name.as_str(), principal.device_name.as_str());
        }
        if let Some(peer) = peer {
            record_seen(state, &principal, peer);
        }
        Ok(Auth(principal))
    }
}

/// The answer to a refused token: 401 with `reason`, or 429 while its address is blocked.
pub(crate) fn refuse(state: &AppState, peer: Option<IpAddr>, reason: &'static str) -> ApiError {
    let Some(peer) = peer else {
        tracing::warn!(reason, "refused a request's token");
        return ApiError::unauthorized(reason);
    };
    match state.auth_failures.failed(peer, Instant::now()) {
        Verdict::Refused => {
            tracing::warn!(%peer, reason, "refused a request's token");
            ApiError::unauthorized(reason)
        }
        Verdict::Blocked {
            retry_after,
            started,
        } => {
            if started {
                tracing::warn!(
                    %peer,
                    limit = state.config.auth_fail_limit,
                    window = ?state.config.auth_fail_window,
                    block = ?state.config.auth_block,
                    "too many refused tokens from this address; answering its refused tokens with 429 for a while"
                );
            } else {
                tracing::debug!(%peer, reason, "refused a request's token (address blocked)");
            }
            ApiError::too_many_requests(
                format!(
                    "too many requests with a refused token from this address; try again in {} s",
                    retry_after.as_secs().max(1)
                ),
                retry_after,
            )
        }
    }
}

/// Records the device as seen, unless this process did within [`SEEN_EVERY`]: in the
/// background, so the request does not wait for the write.
pub(crate) fn record_seen(state: &AppState, principal: &Principal, peer: IpAddr) {
    if !state.last_seen.due(principal.device_id, Instant::now()) {
        return;
    }
    let meta = std::sync::Arc::clone(&state.stores.meta);
    let device_id = principal.device_id;
    let address = canonical(peer).to_string();
    tokio::spawn(async move {
        if let Err(err) = meta.seen_device(device_id, now_ms(), &address).await {
            tracing::warn!(cause = %err, "could not record a device as seen");
        }
    });
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// When this process last recorded each device as seen (see [`SEEN_EVERY`]).
#[derive(Default)]
pub(crate) struct LastSeen {
    written: Mutex<HashMap<DeviceId, Instant>>,
}

impl LastSeen {
    /// Whether the device is to be recorded as seen now; if so, counts it as recorded.
    pub(crate) fn due(&self, device_id: DeviceId, now: Instant) -> bool {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if written
            .get(&device_id)
            .is_some_and(|at| now.saturating_duration_since(*at) < SEEN_EVERY)
        {
            return false;
        }
        if written.len() >= MAX_SEEN {
            written.retain(|_, at| now.saturating_duration_since(*at) < SEEN_EVERY);
            if written.len() >= MAX_SEEN {
                // More devices in a minute than the table holds: record them all again.
                written.clear();
            }
        }
        written.insert(device_id, now);
        true
    }
}

/// What [`AuthFailures::failed`] says of one more refused token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Verdict {
    /// Answer 401.
    Refused,
    /// Answer 429: the address is blocked for `retry_after` more; `started`: by this one.
    Blocked {
        retry_after: Duration,
        started: bool,
    },
}

/// Refused tokens per address (an IPv6 address counts by its /64), within a window, for the
/// rate limit; bounded to [`MAX_ADDRESSES`].
pub(crate) struct AuthFailures {
    /// Refused tokens allowed per window; 0 turns the limit off.
    limit: u32,
    window: Duration,
    block: Duration,
    table: Mutex<HashMap<u128, Failures>>,
}

/// One address's refused tokens.
struct Failures {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

impl AuthFailures {
    pub(crate) fn new(config: &ServerConfig) -> AuthFailures {
        AuthFailures {
            limit: config.auth_fail_limit,
            window: config.auth_fail_window,
            block: config.auth_block,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// How much longer `peer` is blocked, if it is: a password sign-in from a blocked address
    /// is refused before its password is checked, since passwords, unlike tokens, can be
    /// guessed.
    pub(crate) fn blocked(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        table
            .get(&address_key(peer))
            .and_then(|failures| failures.blocked_until)
            .filter(|until| now < *until)
            .map(|until| until - now)
    }

    /// Counts one refused token from `peer` at `now`.
    pub(crate) fn failed(&self, peer: IpAddr, now: Instant) -> Verdict {
        if self.limit == 0 {
            return Verdict::Refused;
        }
        let key = address_key(peer);
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !table.contains_key(&key) && table.len() >= MAX_ADDRESSES {
            let is_live = |failures: &Failures| {
                failures.blocked_until.is_some_and(|until| now < until)
                    || now.saturating_duration_since(failures.window_start) < self.window
            };
            table.retain(|_, failures| is_live(failures));
            if table.len() >= MAX_ADDRESSES {
                // Full of live entries: keep only the blocks, forget the counts.
                table.retain(|_, failures| failures.blocked_until.is_some());
            }
            if table.len() >= MAX_ADDRESSES {
                return Verdict::Refused;
            }
        }
        let failures = table.entry(key).or_insert(Failures {
            window_start: now,
            count: 0,
            blocked_until: None,
        });
        if let Some(until) = failures.blocked_until {
            if now < until {
                return Verdict::Blocked {
                    retry_after: until - now,
                    started: false,
                };
            }
            *failures = Failures {
                window_start: now,
                count: 0,
                blocked_until: None,
            };
        }
        if now.saturating_duration_since(failures.window_start) >= self.window {
            failures.window_start = now;
            failures.count = 0;
        }
        failures.count += 1;
        if failures.count <= self.limit {
            return Verdict::Refused;
        }
        failures.blocked_until = Some(now + self.block);
        Verdict::Blocked {
            retry_after: self.block,
            started: true,
        }
    }
}

/// The key an address is counted under: an IPv4 address itself, an IPv6 address its /64 (one
/// host usually holds a whole /64).
fn address_key(peer: IpAddr) -> u128 {
    match canonical(peer) {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 64) - 1)) | (1u128 << 127),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(limit: u32) -> AuthFailures {
        let mut config = ServerConfig::new(std::path::PathBuf::new());
        config.auth_fail_limit = limit;
        config.auth_fail_window = Duration::from_secs(60);
        config.auth_block = Duration::from_secs(300);
        AuthFailures::new(&config)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_over_the_limit_is_blocked_for_a_while() {
        let table = failures(3);
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        for second in 0..3 {
            assert_eq!(table.failed(ip("192.0.2.1"), at(second)), Verdict::Refused);
        }
        assert_eq!(
            table.failed(ip("192.0.2.1"), at(3)),
            Verdict::Blocked {
                retry_after: Duration::from_secs(300),
                started: true
            }
        );
        assert_eq!(
            table.failed(ip("192.0.2.1"), at(103)),
            Verdict::Blocked {
                retry_after: Duration::from_secs(200),
                started: false
            }
        );
        // Another address, and the same one written as IPv6, are counted apart and together.
        assert_eq!(table.failed(ip("192.0.2.2"), at(4)), Verdict::Refused);
        assert!(matches!(
            table.failed(ip("::ffff:192.0.2.1"), at(5)),
            Verdict::Blocked { .. }
        ));
        // The block ends; the count starts again.
        assert_eq!(table.failed(ip("192.0.2.1"), at(303)), Verdict::Refused);
    }

    #[test]
    fn failures_spread_over_windows_are_not_blocked() {
        let table = failures(2);
        let start = Instant::now();
        for minute in 0..10 {
            let at = start + Duration::from_secs(61 * minute);
            assert_eq!(table.failed(ip("2001:db8::1"), at), Verdict::Refused);
            // The same /64.
            assert_eq!(
                table.failed(ip("2001:db8::2"), at + Duration::from_secs(1)),
                Verdict::Refused
            );
        }
        assert!(matches!(
            table.failed(ip("2001:db8::3"), start + Duration::from_secs(61 * 9 + 2)),
            Verdict::Blocked { started: true, .. }
        ));
        assert_eq!(
            table.failed(ip("2001:db8:0:1::1"), start),
            Verdict::Refused,
            "another /64"
        );
    }

    #[test]
    fn a_limit_of_zero_never_blocks() {
        let table = failures(0);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(table.failed(ip("192.0.2.1"), now), Verdict::Refused);
        }
    }

    #[test]
    fn the_tables_stay_bounded() {
        let table = failures(1);
        let now = Instant::now();
        for n in 0..(MAX_ADDRESSES as u32 + 100) {
            table.failed(IpAddr::from(n.to_be_bytes()), now);
        }
        assert!(table.table.lock().unwrap().len() <= MAX_ADDRESSES);
        let seen = LastSeen::default();
        for n in 0..(MAX_SEEN as i64 + 10) {
            assert!(seen.due(DeviceId(n), now));
        }
        assert!(seen.written.lock().unwrap().len() <= MAX_SEEN);
    }

    #[test]
    fn a_device_is_recorded_at_most_once_a_minute() {
        let seen = LastSeen::default();
        let now = Instant::now();
        assert!(seen.due(DeviceId(1), now));
        assert!(!seen.due(DeviceId(1), now + Duration::from_secs(59)));
        assert!(seen.due(DeviceId(2), now + Duration::from_secs(59)));
        assert!(seen.due(DeviceId(1), now + SEEN_EVERY));
    }
}
