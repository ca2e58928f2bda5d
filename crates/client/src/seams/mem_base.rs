//! A [`BaseStore`] in memory, for the simulation: its committed snapshot ([`MemBaseCommitted`])
//! outlives the engine, and is what a crash rolls back to.

use super::BaseStore;
use crate::base_chunks::BaseChunks;
use crate::state::ServerIdentity;
use crate::Error;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use syncstore_plan::BaseNode;
use syncstore_proto::{ChunkRef, RelPath};

/// What a [`MemBase`] holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemState {
    pub base: BTreeMap<RelPath, BaseNode>,
    /// Indexing every file's chunks (the simulation's files are small).
    pub base_chunks: BaseChunks,
    pub meta: BTreeMap<String, String>,
}

impl Default for MemState {
    fn default() -> MemState {
        MemState {
            base: BTreeMap::new(),
            base_chunks: BaseChunks::indexing_every_file(),
            meta: BTreeMap::new(),
        }
    }
}

/// The committed state, shared with whoever reopens the store after a crash; `frozen` (the
/// process is dead) refuses every later commit.
#[derive(Clone, Debug, Default)]
pub struct MemBaseCommitted {
    inner: Arc<Mutex<(MemState, bool)>>,
}

impl MemBaseCommitted {
    /// What is committed now.
    pub fn snapshot(&self) -> MemState {
        self.inner.lock().expect("not poisoned").0.clone()
    }

    /// From now on nothing commits (the process crashed); [`MemBaseCommitted::thaw`] undoes it
    /// for the next process.
    pub fn freeze(&self) {
        self.inner.lock().expect("not poisoned").1 = true;
    }

    /// Lets a restarted process commit again.
    pub fn thaw(&self) {
        self.inner.lock().expect("not poisoned").1 = false;
    }

    fn commit(&self, state: &MemState) -> Result<(), Error> {
        let mut inner = self.inner.lock().expect("not poisoned");
        if inner.1 {
            return Err(Error::state(
                "could not commit state",
                "the process is gone",
            ));
        }
        inner.0 = state.clone();
        Ok(())
    }
}

/// Base in memory: a working copy, committed by copying it into [`MemBaseCommitted`].
#[derive(Debug)]
pub struct MemBase {
    working: MemState,
    committed: MemBaseCommitted,
    in_batch: bool,
}

impl MemBase {
    /// Opens the committed state (as a process does at start).
    pub fn open(committed: &MemBaseCommitted) -> MemBase {
        MemBase {
            working: committed.snapshot(),
            committed: committed.clone(),
            in_batch: false,
        }
    }

    fn changed(&mut self) -> Result<(), Error> {
        if self.in_batch {
            Ok(())
        } else {
            self.committed.commit(&self.working)
        }
    }
}

impl BaseStore for MemBase {
    fn base(&self) -> &BTreeMap<RelPath, BaseNode> {
        &self.working.base
    }

    fn base_chunks(&self) -> &BaseChunks {
        &self.working.base_chunks
    }

    fn put(&mut self, path: &RelPath, node: BaseNode, chunks: Vec<ChunkRef>) -> Result<(), Error> {
        self.working.base.insert(path.clone(), node);
        self.working.base_chunks.insert(path.clone(), chunks);
        self.changed()
    }

    fn remove(&mut self, path: &RelPath) -> Result<(), Error> {
        self.working.base.remove(path);
        self.working.base_chunks.remove(path);
        self.changed()
    }

    fn rebase(&mut self, from: &RelPath, to: &RelPath) -> Result<(), Error> {
        let moved: Vec<RelPath> = self
            .working
            .base
            .keys()
            .filter(|p| p.rebase(from, to).is_some())
            .cloned()
            .collect();
        for old in moved {
            let new = old.rebase(from, to).expect("filtered above");
            if let Some(node) = self.working.base.remove(&old) {
                self.working.base.insert(new.clone(), node);
            }
            if let Some(chunks) = self.working.base_chunks.remove(&old) {
                self.working.base_chunks.insert(new, chunks);
            }
        }
        self.changed()
    }

    fn begin_batch(&mut self) -> Result<(), Error> {
        self.in_batch = true;
        Ok(())
    }

    fn commit_batch(&mut self) -> Result<(), Error> {
        if self.in_batch {
            self.committed.commit(&self.working)?;
            self.in_batch = false;
        }
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.working.meta.get(key).cloned())
    }

    fn set_meta(&mut self, key: &str, value: Option<&str>) -> Result<(), Error> {
        match value {
            Some(value) => self.working.meta.insert(key.to_owned(), value.to_owned()),
            None => self.working.meta.remove(key),
        };
        self.changed()
    }

    fn readopt(&mut self, identity: &ServerIdentity, why: &str) -> Result<(), Error> {
        self.commit_batch()?;
        self.in_batch = true;
        self.working.base.clear();
        self.working.base_chunks.clear();
        crate::state::save_identity(self, identity)?;
        self.set_meta("readopted", Some(why))?;
        self.commit_batch()
    }
}
