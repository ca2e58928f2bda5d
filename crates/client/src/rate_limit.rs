//! An upload rate limit (`--limit-upload`): each pack waits for its slot, so the average rate
//! of a device's uploads stays under the limit (a pack itself goes at full speed).

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes per second, shared by every upload of one API client.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_s: u64,
    /// When the bytes taken so far are paid for.
    next_free: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// A limit of `bytes_per_s` (at least 1).
    pub fn new(bytes_per_s: u64) -> RateLimit {
        RateLimit {
            bytes_per_s: bytes_per_s.max(1),
            next_free: Mutex::new(None),
        }
    }

    /// The limit, in bytes per second.
    pub fn bytes_per_s(&self) -> u64 {
        self.bytes_per_s
    }

    /// Waits until `bytes` may be sent.
    pub async fn take(&self, bytes: u64) {
        let start = {
            let mut next_free = self
                .next_free
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            let start = next_free.map_or(now, |free| free.max(now));
            let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_s as f64);
            *next_free = Some(start + cost);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_take_waits_for_what_the_ones_before_it_cost() {
        let limit = RateLimit::new(1000);
        let started = Instant::now();
        limit.take(500).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        limit.take(2000).await;
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        limit.take(1).await;
        assert_eq!(started.elapsed(), Duration::from_millis(2500));
    }
}
