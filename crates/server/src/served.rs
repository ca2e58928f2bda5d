//! Which chunks each device was served lately, so that a chunk a device asks for again is
//! verified before it is sent.
//!
//! The server trusts a stored chunk by name (it verified it when it was received) and serves
//! it without hashing it again; the client verifies every chunk it fetches. A client whose
//! chunk did not verify drops the file and downloads it again: that second request is what
//! tells the server the chunk may be damaged on its storage, so it is served through
//! [`syncstore_store::ChunkStore::get_verified`], which moves a bad chunk aside, and the
//! download path then asks the devices that have it to upload it again. A device rarely asks
//! for a chunk twice otherwise (a download cut off and retried, the same content in a later
//! batch), and such a chunk costs one hash, as every served chunk did before.
//!
//! This is a hint, not state: a forgotten entry (the table is bounded; another server took
//! the retry) only delays the verification to the next retry; `scrub` finds damage on the
//! storage whether or not anyone asks.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use syncstore_proto::ChunkHash;
use syncstore_store::DeviceId;

/// Entries kept: about 4 GiB of 1 MiB chunks per device for a few devices, in a few MiB.
const CAPACITY: usize = 1 << 16;

/// The (device, chunk) pairs served last, oldest first out.
#[derive(Default)]
pub(crate) struct ServedChunks {
    inner: Mutex<Served>,
}

#[derive(Default)]
struct Served {
    set: HashSet<(DeviceId, ChunkHash)>,
    order: VecDeque<(DeviceId, ChunkHash)>,
}

impl ServedChunks {
    /// Records that `device` is served `hash`; returns whether it was served it before (while
    /// the table remembers), in which case the chunk is to be verified.
    pub(crate) fn served_again(&self, device: DeviceId, hash: ChunkHash) -> bool {
        // A poisoned lock only means a panic elsewhere mid-update: the table is a hint.
        let mut served = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !served.set.insert((device, hash)) {
            return true;
        }
        served.order.push_back((device, hash));
        if served.order.len() > CAPACITY {
            if let Some(oldest) = served.order.pop_front() {
                served.set.remove(&oldest);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_verified_when_the_same_device_asks_again() {
        let served = ServedChunks::default();
        let (laptop, phone) = (DeviceId(1), DeviceId(2));
        let hash = ChunkHash([7; 32]);
        assert!(!served.served_again(laptop, hash));
        assert!(
            !served.served_again(phone, hash),
            "another device: first time"
        );
        assert!(served.served_again(laptop, hash));
        assert!(served.served_again(laptop, hash));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest() {
        let served = ServedChunks::default();
        let device = DeviceId(1);
        let hash = |n: usize| {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
            ChunkHash(bytes)
        };
        for n in 0..=CAPACITY {
            assert!(!served.served_again(device, hash(n)));
        }
        let inner = served.inner.lock().unwrap();
        assert_eq!(inner.set.len(), CAPACITY);
        assert_eq!(inner.order.len(), CAPACITY);
        drop(inner);
        assert!(
            !served.served_again(device, hash(0)),
            "the oldest was forgotten"
        );
        assert!(served.served_again(device, hash(CAPACITY)));
    }
}
