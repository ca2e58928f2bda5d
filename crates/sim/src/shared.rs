//! Everything the simulated seams act on, behind one lock: the server, every device's disk,
//! the users, the clock, the fault dice and the trace.
//!
//! Every seam call takes the lock for its own duration and never across an `await`, so a call
//! is atomic, and the order of calls (decided by the seeded schedule of one current-thread
//! runtime) is the whole history.

use crate::fs::SimFs;
use crate::server::Server;
use crate::user::{user_edit, Ledger};
use rand::rngs::StdRng;
use rand::Rng;
use std::sync::{Arc, Mutex, MutexGuard};
use syncstore_client::seams::MemBaseCommitted;
use syncstore_proto::DeviceName;

/// One device as the world sees it (its engine lives in the driver).
pub struct DeviceState {
    pub name: DeviceName,
    pub disk: SimFs,
    /// The user at this device.
    pub user_rng: StdRng,
    /// The process is dead: every seam call fails until the driver restarts it.
    pub crashed: bool,
    /// Its `.syncstore/state.sqlite`: what survives a crash.
    pub committed: MemBaseCommitted,
}

/// The shared state.
pub struct Sim {
    pub server: Server,
    pub devices: Vec<DeviceState>,
    pub ledger: Ledger,
    pub trace: Vec<String>,
    /// Decides the fate of requests and how long each waits.
    pub net_rng: StdRng,
    /// Decides crashes inside disk calls and edits at the engine's re-check windows.
    pub disk_rng: StdRng,
    pub now_ms: i64,
    pub step: usize,
    /// Faults and concurrent edits are on (off for the final sync).
    pub faults: bool,
    /// Users edit while the engines work (off for the final sync).
    pub concurrent_edits: bool,
}

/// The lock every seam takes.
#[derive(Clone)]
pub struct Shared(pub Arc<Mutex<Sim>>);

impl Shared {
    /// The state; a panic elsewhere does not hide it.
    pub fn lock(&self) -> MutexGuard<'_, Sim> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Sim {
    /// Appends a line to the trace.
    pub fn log(&mut self, text: String) {
        let line = format!("#{} {text}", self.step);
        self.trace.push(line);
    }

    /// The user of device `idx` makes a random edit now (a millisecond passes first, so no two
    /// writes share an mtime).
    pub fn user_edit(&mut self, idx: usize, when: &str) {
        self.now_ms += 1;
        let now_ms = self.now_ms;
        let device = &mut self.devices[idx];
        let Some(edit) = user_edit(
            &device.name,
            &mut device.disk,
            &mut device.user_rng,
            now_ms,
            &mut self.ledger.counter,
        ) else {
            return;
        };
        let line = format!("#{} {} {}{when}", self.step, device.name, edit.text);
        self.ledger.record(&line, edit);
        self.trace.push(line);
    }

    /// Sometimes (while faults are on) device `idx`'s user edits right now, in the middle of
    /// an engine call: at a re-check window of the engine.
    pub fn maybe_concurrent_edit(&mut self, idx: usize, chance: f64) {
        if self.concurrent_edits && self.disk_rng.gen_bool(chance) {
            self.user_edit(idx, " (while the engine works)");
        }
    }

    /// Sometimes (while faults are on) device `idx` crashes right after a disk change, before
    /// anything else it would have done: its memory is lost, its committed base stays.
    pub fn maybe_torn(&mut self, idx: usize, what: &str) {
        if self.faults && self.disk_rng.gen_bool(0.02) {
            self.crash(idx, &format!("right after {what}"));
        }
    }

    /// Device `idx`'s process dies: from now on its seams refuse everything and its base
    /// commits nothing.
    pub fn crash(&mut self, idx: usize, when: &str) {
        let device = &mut self.devices[idx];
        if device.crashed {
            return;
        }
        device.crashed = true;
        device.committed.freeze();
        let line = format!("#{} {} CRASH {when}", self.step, device.name);
        self.trace.push(line);
    }
}
