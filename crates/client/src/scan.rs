//! Scanning the folder into the local tree.
//!
//! A full walk that stats every entry and re-chunks a file only when its size, mtime or inode
//! differ from what was last chunked (the rescan rule of the original design). Symlinks are never
//! followed; they, special files, unreadable files and names that are not valid UTF-8 or not
//! valid [`RelPath`]s are reported as skipped, never as deleted.
//!
//! A large file that changed is re-chunked from the chunk list the [`HashCache`] still holds
//! for its path ([`syncstore_chunk::rechunk`]): the regions of the old chunks are hashed at
//! their places, and only around what changed is the file cut again, with exactly the chunks
//! a full pass gives.

use crate::early_upload::{ChunkSink, EARLY_UPLOAD_MIN_BYTES};
use crate::engine::bases_for;
use crate::seams::{DirEntry, Disk, DiskFile, FileKind};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use syncstore_chunk::Manifest;
use syncstore_plan::LocalNode;
use syncstore_proto::{ChunkHash, ChunkRef, ContentHash, EntryKind, RelPath, CHUNK_MAX, META_DIR};

/// Changed files at least this large are re-chunked from their previous chunk list, when the
/// cache has one. A full pass over a smaller file takes a few milliseconds, and most programs
/// rewrite small files whole, where the previous list saves nothing.
pub const RECHUNK_MIN_BYTES: u64 = 2 * CHUNK_MAX as u64;

/// Patterns ignored in every folder (gitignore syntax): files that editors, office suites,
/// browsers and operating systems leave beside the user's own, taken from Syncthing's and
/// Nextcloud's default lists. A `!PATTERN` line in `.syncignore` syncs one of them after all.
pub const DEFAULT_IGNORES: &[&str] = &[
    // Editor swap, lock, autosave and backup files: vim, Emacs, Kate, and `file~`.
    "*.swp",
    ".#*",
    "\\#*#",
    "*.kate-swp",
    "*~",
    // Office lock and owner files: Microsoft Office (`~$x.docx`), LibreOffice and OpenOffice
    // (`.~lock.x.odt#`), and temp files (`~x.tmp` among them).
    "~$*",
    ".~lock.*#",
    "*.tmp",
    // Downloads in progress: Firefox (`.part`), Chrome and Edge (`.crdownload`), and file
    // managers that copy through a `.filepart`.
    "*.part",
    "*.crdownload",
    "*.filepart",
    // macOS: Finder metadata, AppleDouble resource forks, custom folder icons (`Icon` + CR),
    // volume indexes and trash.
    ".DS_Store",
    "._*",
    "Icon[\r]",
    ".Spotlight-V100",
    ".Trashes",
    ".fseventsd",
    ".TemporaryItems",
    ".DocumentRevisions-V100",
    // Windows: thumbnail caches and folder settings (Windows names are case-insensitive).
    "[Tt]humbs.db",
    "[Ee]hthumbs.db",
    "[Dd]esktop.ini",
    // Linux: KDE folder settings, the trash of removable media, files deleted while open on
    // FUSE or NFS.
    ".directory",
    ".Trash-*",
    ".fuse_hidden*",
    ".nfs*",
];

/// `.syncignore` (gitignore syntax) plus [`DEFAULT_IGNORES`].
pub struct IgnoreRules {
    matcher: Gitignore,
}

impl IgnoreRules {
    /// The rules of a `.syncignore` holding `text` (if any), for the folder at `root`.
    pub fn parse(root: &Path, text: Option<&str>) -> IgnoreRules {
        let mut builder = GitignoreBuilder::new(root);
        for pattern in DEFAULT_IGNORES {
            // The defaults are valid globs.
            let _ = builder.add_line(None, pattern);
        }
        for line in text.unwrap_or_default().lines() {
            if let Err(err) = builder.add_line(None, line) {
                tracing::warn!(cause = %err, "problem in .syncignore");
            }
        }
        let matcher = builder.build().unwrap_or_else(|err| {
            tracing::warn!(cause = %err, "could not build ignore rules; using none");
            Gitignore::empty()
        });
        IgnoreRules { matcher }
    }

    /// Whether `path` (or a directory above it) is ignored.
    pub fn is_ignored(&self, path: &RelPath, kind: EntryKind) -> bool {
        self.is_ignored_text(path.as_str(), kind == EntryKind::Dir)
    }

    /// Whether `path` itself is ignored, its parents being known not to be (the walk only
    /// descends into directories it does not ignore).
    fn is_ignored_entry(&self, path: &RelPath, kind: EntryKind) -> bool {
        self.matcher
            .matched(path.as_str(), kind == EntryKind::Dir)
            .is_ignore()
    }

    /// [`IgnoreRules::is_ignored`] for a name that is no valid [`RelPath`] (macOS's `Icon\r`
    /// holds a control character): an ignored one is not reported as skipped either.
    fn is_ignored_text(&self, path: &str, is_dir: bool) -> bool {
        self.matcher
            .matched_path_or_any_parents(path, is_dir)
            .is_ignore()
    }
}

/// A file's identity when it was last hashed. The ctime is in it because nothing can set it
/// back: a file rewritten in place with its size and mtime restored (`rsync --inplace -t`, VM
/// and database images) still has a new stamp, so it is hashed again (THREE-TREE row 38).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub ctime_ns: i64,
}

/// Content hashes and chunk lists computed by earlier scans (or known from base), keyed by path
/// and valid while the stamp matches: an upload of a file the scan just chunked reads it once
/// more to send the chunks, never to chunk it again.
#[derive(Default)]
pub struct HashCache {
    entries: HashMap<RelPath, Cached>,
}

/// What [`HashCache`] knows of one file.
struct Cached {
    stamp: Stamp,
    /// Whether `stamp` was [settled](Stamp::settled_at) when the file was read: an unsettled one
    /// may hide a later write, so it is hashed again when next looked at.
    settled: bool,
    hash: ContentHash,
    /// The chunk list of a file of two chunks or more; empty for an empty or one-chunk file,
    /// whose list follows from its hash and size.
    chunks: Vec<ChunkRef>,
}

/// How long after a change a filesystem stamping whole seconds may still give a later write the
/// same timestamps: FAT's 2 s (exFAT through FUSE and many network mounts stamp whole seconds).
const COARSE_WINDOW_NS: i64 = 2_000_000_000;
/// The same for timestamps in units of 10 ms (Linux's exFAT driver), with a margin.
const CENTISECOND_WINDOW_NS: i64 = 20_000_000;

impl Stamp {
    /// Whether a stamp seen at `now_ns` (the filesystem's clock, [`crate::seams::Disk::now_ns`])
    /// names the bytes read then and no others: a write after `now_ns` cannot leave it as it is.
    /// Not so when the timestamps are whole seconds (FAT, exFAT through FUSE, network mounts)
    /// and less than [`COARSE_WINDOW_NS`] old, or in units of 10 ms (the kernel's exFAT) and
    /// less than [`CENTISECOND_WINDOW_NS`] old, or when they lie ahead of `now_ns` (the clock
    /// was set back): a same-size write in that tick leaves every part of the stamp unchanged, so
    /// such a stamp is never trusted to skip hashing (git's "racily clean" entries). Nanosecond
    /// timestamps are trusted at once: Linux 6.13 and later stamp a write after a `stat` finer
    /// than the clock tick.
    pub fn settled_at(&self, now_ns: i64) -> bool {
        let newest = self.mtime_ns.max(self.ctime_ns);
        let units_of = |unit: i64| self.mtime_ns % unit == 0 && self.ctime_ns % unit == 0;
        let window = if units_of(1_000_000_000) {
            COARSE_WINDOW_NS
        } else if units_of(10_000_000) {
            CENTISECOND_WINDOW_NS
        } else {
            0
        };
        now_ns >= newest.saturating_add(window)
    }

    /// The stamp a base entry recorded for the local file when both sides agreed.
    pub fn of_base(node: &syncstore_plan::BaseNode) -> Stamp {
        Stamp {
            size: node.size,
            mtime_ns: node.mtime_ns,
            inode: node.inode,
            ctime_ns: node.ctime_ns,
        }
    }
}

impl HashCache {
    /// Remembers the content of `path` at `stamp`, seen at `seen_at_ns` on the filesystem's
    /// clock: its hash and chunks.
    pub fn insert(
        &mut self,
        path: RelPath,
        stamp: Stamp,
        seen_at_ns: i64,
        hash: ContentHash,
        chunks: &[ChunkRef],
    ) {
        let chunks = if chunks.len() > 1 {
            chunks.to_vec()
        } else {
            Vec::new()
        };
        self.entries.insert(
            path,
            Cached {
                stamp,
                settled: stamp.settled_at(seen_at_ns),
                hash,
                chunks,
            },
        );
    }

    /// The hash of `path` if it was computed at `stamp`, and that stamp was settled then.
    fn get(&self, path: &RelPath, stamp: Stamp) -> Option<ContentHash> {
        self.entries
            .get(path)
            .filter(|cached| cached.stamp == stamp && cached.settled)
            .map(|cached| cached.hash)
    }

    /// Whether base may keep `stamp` for `path` at `now_ns`: unless the cache knows the stamp
    /// was unsettled when the file was read, whether it is settled now.
    pub fn settled(&self, path: &RelPath, stamp: Stamp, now_ns: i64) -> bool {
        let read_unsettled = self
            .entries
            .get(path)
            .is_some_and(|cached| cached.stamp == stamp && !cached.settled);
        !read_unsettled && stamp.settled_at(now_ns)
    }

    /// The chunk list last known for `path`, whatever its stamp now: where a re-chunk of the
    /// file after a change starts from.
    fn previous_chunks(&self, path: &RelPath) -> Option<Vec<ChunkRef>> {
        let cached = self.entries.get(path)?;
        self.manifest(path, cached.stamp)
            .map(|manifest| manifest.chunks)
    }

    /// The manifest of `path` if it was computed at `stamp`.
    pub fn manifest(&self, path: &RelPath, stamp: Stamp) -> Option<Manifest> {
        let cached = self.entries.get(path).filter(|c| c.stamp == stamp)?;
        let chunks = if !cached.chunks.is_empty() {
            cached.chunks.clone()
        } else if stamp.size == 0 {
            Vec::new()
        } else {
            vec![ChunkRef {
                hash: ChunkHash(cached.hash.0),
                len: u32::try_from(stamp.size).ok()?,
            }]
        };
        // A cached list that does not give the cached hash is not used (and cannot be: the
        // server checks the two against each other).
        (ContentHash::of_chunks(&chunks) == cached.hash).then_some(Manifest {
            hash: cached.hash,
            size: stamp.size,
            chunks,
        })
    }
}

/// Something found on disk that is not synced, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// The outcome of one scan.
#[derive(Default)]
pub struct Scan {
    pub local: BTreeMap<RelPath, LocalNode>,
    /// Paths the planner must leave alone this round: ignored, or present but unreadable.
    pub untouchable: BTreeSet<RelPath>,
    /// The paths among `untouchable` that the ignore rules exclude.
    pub ignored: BTreeSet<RelPath>,
    pub skipped: Vec<Skipped>,
    pub root_ok: bool,
    /// A file changed while it was being hashed: scan again soon.
    pub unsettled: bool,
    /// Bytes of changed files that were not cut again: regions of their previous chunks that
    /// hashed equal (see [`syncstore_chunk::rechunk`]). Counted since the scan began (a full
    /// walk) or since [`rescan_paths`] was called.
    pub kept_bytes: u64,
    /// Entries were added, removed or renamed in a directory after the walk listed it: the
    /// walk is no snapshot (a file renamed from a directory not yet listed into one already
    /// listed was seen nowhere), so a pass scans again before it plans.
    pub entries_moved: bool,
    /// Set by [`rescan_paths`]: an entry that could not be synced before (changing while read,
    /// unreadable) can be now. It may be what a base path missing locally became (a rename
    /// the planner could not match while it was untouchable), so the whole folder is planned.
    pub became_syncable: bool,
    /// Each directory listed (`None`: the root), with its mtime just before it was listed.
    pub(crate) listed: Vec<(Option<RelPath>, i64)>,
}

/// Walks the folder on `disk`, chunking what changed; the chunks of large files also go to
/// `sink` as they are cut (see [`crate::early_upload`]).
pub fn scan<D: Disk>(
    disk: &D,
    rules: &IgnoreRules,
    cache: &mut HashCache,
    mut sink: Option<&mut ChunkSink>,
) -> Scan {
    let mut out = Scan::default();
    if !disk.root_ok() {
        return out;
    }
    out.root_ok = true;
    let mut seen = HashSet::new();
    let root_dev = disk.root_meta().map_or(0, |meta| meta.dev);
    let mut walker = Walker {
        disk,
        root_dev,
        rules,
        cache,
        out: &mut out,
        seen: &mut seen,
        sink: &mut sink,
    };
    walker.walk(None);
    out.entries_moved = std::mem::take(&mut out.listed)
        .into_iter()
        .any(|(dir, mtime)| {
            disk.dir_mtime_ns(dir.as_ref())
                .map_or(true, |now| now != mtime)
        });
    // Forget cached hashes of paths no longer there.
    cache.entries.retain(|path, _| out.local.contains_key(path));
    out
}

/// Looks again at the paths a watcher named (each with `deep`: a directory's entries are listed
/// again too, as after a create or a rename) and updates `out`, the folder's last scan, in
/// place; nothing else is read.
///
/// A path whose parent `out` does not hold as a directory is found through its nearest
/// ancestor that it holds as one: the entry below that ancestor is looked at again, deeply
/// (a directory that just appeared, a file replaced by a directory). A directory looked at
/// shallowly that is still the same directory (same inode) keeps its entries; otherwise
/// everything beneath it is listed again. Returns the entries looked at (each a path given,
/// or the ancestor it was found through).
pub fn rescan_paths<D: Disk>(
    disk: &D,
    rules: &IgnoreRules,
    cache: &mut HashCache,
    out: &mut Scan,
    paths: &BTreeMap<RelPath, bool>,
    mut sink: Option<&mut ChunkSink>,
) -> Vec<RelPath> {
    out.unsettled = false;
    out.kept_bytes = 0;
    out.entries_moved = false;
    out.became_syncable = false;
    out.listed.clear();
    if !disk.root_ok() {
        out.root_ok = false;
        return Vec::new();
    }
    // Resolve each path to the entry to look at, and whether deeply. An ancestor that is no
    // longer the directory the scan holds (another inode, another filesystem: a disk mounted
    // over it, which tells the watcher nothing) is looked at instead, deeply: what is beneath
    // it may be hidden, not deleted (simulation seed 425 of the history histories).
    let root_dev = disk.root_meta().map_or(0, |meta| meta.dev);
    let mut dir_same: HashMap<RelPath, bool> = HashMap::new();
    let mut todo: BTreeMap<RelPath, bool> = BTreeMap::new();
    for (path, &deep) in paths {
        let (at, deep) = match path.ancestors().into_iter().find(|dir| {
            let same = *dir_same.entry(dir.clone()).or_insert_with(|| {
                match (out.local.get(dir), disk.stat(dir)) {
                    (Some(node), Ok(meta)) => {
                        node.kind == EntryKind::Dir
                            && meta.kind == FileKind::Dir
                            && meta.inode == node.inode
                            && meta.dev == root_dev
                    }
                    _ => false,
                }
            });
            !same
        }) {
            Some(ancestor) => (ancestor, true),
            None => (path.clone(), deep),
        };
        let slot = todo.entry(at).or_insert(deep);
        *slot |= deep;
    }
    let mut seen = HashSet::new();
    let mut purged: Vec<RelPath> = Vec::new();
    let mut was_untouchable: Vec<RelPath> = Vec::new();
    let mut looked_at = Vec::new();
    let mut done_deep: Vec<RelPath> = Vec::new();
    let mut listings = HashMap::new();
    for (path, deep) in todo {
        // Beneath a directory already listed again in this call: nothing to add.
        if done_deep.iter().any(|dir| path.is_inside(dir)) {
            continue;
        }
        looked_at.push(path.clone());
        let parent = path.parent();
        let name = std::ffi::OsString::from(path.file_name());
        let now = match disk.stat_entry(parent.as_ref(), &name) {
            // A folder that does not tell names apart by case finds `Notes.md` for a listed
            // `notes.md`: only the name its listing holds is there (a phantom second entry
            // would be planned as a copy of the file, and the real one deleted).
            Ok(_)
                if disk.case_insensitive()
                    && !listed_exactly(disk, &mut listings, parent.as_ref(), &name) =>
            {
                None
            }
            Ok(meta) => Some(meta),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => {
                // Not known to be gone: left alone until it can be looked at.
                forget(out, &path, false, &mut purged);
                out.skipped.push(Skipped {
                    path: path.as_str().to_owned(),
                    reason: format!("could not look at it: {err}"),
                });
                out.untouchable.insert(path);
                continue;
            }
        };
        let old = out.local.get(&path);
        let same_dir = matches!(
            (old, &now),
            (Some(old), Some(meta)) if old.kind == EntryKind::Dir
                && meta.kind == FileKind::Dir
                && old.inode == meta.inode
        );
        let deep = deep || !same_dir;
        was_untouchable.extend(
            out.untouchable
                .contains(&path)
                .then(|| path.clone())
                .into_iter()
                .chain(syncstore_proto::set_beneath(&out.untouchable, &path).cloned())
                .filter(|p| !out.ignored.contains(p)),
        );
        forget(out, &path, deep, &mut purged);
        if now.is_none() {
            continue;
        }
        if deep {
            done_deep.push(path.clone());
        }
        let mut walker = Walker {
            disk,
            root_dev,
            rules,
            cache,
            out,
            seen: &mut seen,
            sink: &mut sink,
        };
        let entry = DirEntry {
            name,
            is_dir: now.as_ref().is_some_and(|meta| meta.kind == FileKind::Dir),
        };
        walker.entry(parent.as_ref(), &entry, deep);
    }
    out.entries_moved = std::mem::take(&mut out.listed)
        .into_iter()
        .any(|(dir, mtime)| {
            disk.dir_mtime_ns(dir.as_ref())
                .map_or(true, |now| now != mtime)
        });
    for path in purged {
        if !out.local.contains_key(&path) {
            cache.entries.remove(&path);
        }
    }
    out.became_syncable = was_untouchable
        .iter()
        .any(|path| out.local.contains_key(path));
    looked_at
}

/// Whether the listing of `dir` (`None`: the root) holds `name` exactly, byte for byte; each
/// directory is listed once per call through `listings`. A directory that cannot be listed
/// holds nothing.
fn listed_exactly<D: Disk>(
    disk: &D,
    listings: &mut HashMap<Option<RelPath>, HashSet<std::ffi::OsString>>,
    dir: Option<&RelPath>,
    name: &std::ffi::OsStr,
) -> bool {
    listings
        .entry(dir.cloned())
        .or_insert_with(|| {
            disk.read_dir(dir)
                .map(|entries| entries.into_iter().map(|entry| entry.name).collect())
                .unwrap_or_default()
        })
        .contains(name)
}

/// Removes `path` from the scan `out`, with everything beneath it when `with_beneath`; the
/// paths removed are added to `purged`.
fn forget(out: &mut Scan, path: &RelPath, with_beneath: bool, purged: &mut Vec<RelPath>) {
    let beneath: Vec<RelPath> = if with_beneath {
        syncstore_proto::map_beneath(&out.local, path)
            .map(|(p, _)| p.clone())
            .chain(syncstore_proto::set_beneath(&out.untouchable, path).cloned())
            .collect()
    } else {
        Vec::new()
    };
    for gone in std::iter::once(path.clone()).chain(beneath) {
        out.local.remove(&gone);
        out.untouchable.remove(&gone);
        out.ignored.remove(&gone);
        purged.push(gone);
    }
    let text = path.as_str();
    out.skipped.retain(|skipped| {
        let below = skipped.path.len() > text.len()
            && skipped.path.starts_with(text)
            && skipped.path.as_bytes()[text.len()] == b'/';
        skipped.path != text && !(with_beneath && below)
    });
}

/// One walk's inputs and outputs.
struct Walker<'a, 'b, D: Disk> {
    disk: &'a D,
    root_dev: u64,
    rules: &'a IgnoreRules,
    cache: &'a mut HashCache,
    out: &'a mut Scan,
    seen: &'a mut HashSet<u64>,
    sink: &'a mut Option<&'b mut ChunkSink>,
}

impl<D: Disk> Walker<'_, '_, D> {
    fn walk(&mut self, dir_rel: Option<&RelPath>) {
        if let Ok(mtime) = self.disk.dir_mtime_ns(dir_rel) {
            self.out.listed.push((dir_rel.cloned(), mtime));
        }
        let entries = match self.disk.read_dir(dir_rel) {
            Ok(entries) => entries,
            Err(err) => {
                self.out.skipped.push(Skipped {
                    path: dir_rel.map_or_else(String::new, |d| d.as_str().to_owned()),
                    reason: format!("could not read directory: {err}"),
                });
                if let Some(rel) = dir_rel {
                    self.out.untouchable.insert(rel.clone());
                }
                return;
            }
        };
        for entry in entries {
            self.entry(dir_rel, &entry, true);
        }
    }

    /// Looks at one entry of `dir_rel`; a directory's own entries too when `descend`.
    fn entry(&mut self, dir_rel: Option<&RelPath>, entry: &DirEntry, descend: bool) {
        let out = &mut *self.out;
        let lossy = entry.name.to_string_lossy();
        let shown = match dir_rel {
            Some(dir) => format!("{dir}/{lossy}"),
            None => lossy.into_owned(),
        };
        let Some(name) = entry.name.to_str() else {
            out.skipped.push(Skipped {
                path: shown,
                reason: "name is not valid UTF-8".into(),
            });
            return;
        };
        if dir_rel.is_none() && name == META_DIR {
            return;
        }
        let rel = match dir_rel {
            Some(parent) => parent.join(name),
            None => RelPath::new(name),
        };
        let rel = match rel {
            Ok(rel) => rel,
            Err(_) if self.rules.is_ignored_text(&shown, entry.is_dir) => return,
            Err(err) => {
                out.skipped.push(Skipped {
                    path: shown,
                    reason: format!("name cannot be synced: {err}"),
                });
                return;
            }
        };
        let meta = match self.disk.stat_entry(dir_rel, &entry.name) {
            Ok(meta) => meta,
            Err(_) => return, // Gone since the listing: a later event or scan sees it.
        };
        let kind = match meta.kind {
            FileKind::Dir => EntryKind::Dir,
            FileKind::File => EntryKind::File,
            FileKind::Symlink => {
                out.skipped.push(Skipped {
                    path: shown,
                    reason: "symlink (never followed)".into(),
                });
                out.untouchable.insert(rel);
                return;
            }
            FileKind::Other => {
                out.skipped.push(Skipped {
                    path: shown,
                    reason: "not a regular file or directory".into(),
                });
                out.untouchable.insert(rel);
                return;
            }
        };
        // The walk reached this entry through directories it did not ignore: only the entry's
        // own name is matched (`is_ignored` would match every parent again).
        if self.rules.is_ignored_entry(&rel, kind) {
            out.ignored.insert(rel.clone());
            out.untouchable.insert(rel);
            return;
        }
        let stamp = Stamp {
            size: if kind == EntryKind::File {
                meta.size
            } else {
                0
            },
            ..meta.stamp()
        };
        if kind == EntryKind::Dir {
            if meta.dev != self.root_dev {
                // Another filesystem mounted inside the folder: what is beneath is unavailable,
                // never read as deleted (THREE-TREE row 35). What the mount hides comes back,
                // as it was, when it is unmounted.
                out.skipped.push(Skipped {
                    path: shown,
                    reason: "on another filesystem than the folder (a disk mounted here): not \
                             synced, and nothing beneath it is deleted anywhere"
                        .into(),
                });
                out.untouchable.insert(rel);
                return;
            }
            // A directory reached twice (bind mount loop) is walked once.
            if !self.seen.insert(meta.inode) {
                return;
            }
            out.local.insert(
                rel.clone(),
                LocalNode {
                    kind,
                    hash: None,
                    size: 0,
                    mtime_ns: stamp.mtime_ns,
                    inode: stamp.inode,
                    ctime_ns: stamp.ctime_ns,
                    executable: false,
                },
            );
            if descend {
                self.walk(Some(&rel));
            }
            return;
        }
        let hash = match self.cache.get(&rel, stamp) {
            Some(hash) => hash,
            None => match hash_file(
                self.disk,
                &rel,
                stamp,
                self.cache.previous_chunks(&rel).as_deref(),
                self.sink.as_deref_mut(),
            ) {
                Ok((manifest, kept_bytes)) => {
                    out.kept_bytes += kept_bytes;
                    let seen_at = self.disk.now_ns();
                    self.cache
                        .insert(rel.clone(), stamp, seen_at, manifest.hash, &manifest.chunks);
                    manifest.hash
                }
                Err(failure) => {
                    let reason = match failure {
                        HashFailure::Changed => {
                            out.unsettled = true;
                            "changed while being read; retrying later".to_owned()
                        }
                        HashFailure::Unreadable(reason) => reason,
                    };
                    out.skipped.push(Skipped {
                        path: shown,
                        reason,
                    });
                    out.untouchable.insert(rel);
                    return;
                }
            },
        };
        out.local.insert(
            rel,
            LocalNode {
                kind,
                hash: Some(hash),
                size: stamp.size,
                mtime_ns: stamp.mtime_ns,
                inode: stamp.inode,
                ctime_ns: stamp.ctime_ns,
                // Read from every stat, not cached with the hash: a chmod changes no part of
                // the stamp (only the ctime), and must still be seen.
                executable: meta.executable(),
            },
        );
    }
}

/// Chunks and hashes the file at `path`, failing when it changed while being read; a large
/// file's new chunks also go to `sink`. With the chunk list of its previous version
/// (`previous`), a large file is re-chunked from it; the bytes it kept of those chunks without
/// cutting them again come with the manifest.
fn hash_file<D: Disk>(
    disk: &D,
    path: &RelPath,
    stamp: Stamp,
    previous: Option<&[ChunkRef]>,
    sink: Option<&mut ChunkSink>,
) -> Result<(Manifest, u64), HashFailure> {
    let unreadable =
        |err: std::io::Error| HashFailure::Unreadable(format!("could not read: {err}"));
    let mut file = disk.open(path).map_err(unreadable)?;
    let full = disk.root().join(path.as_str());
    let mut sink = sink.filter(|_| stamp.size >= EARLY_UPLOAD_MIN_BYTES);
    let manifest = match previous {
        Some(old) if stamp.size >= RECHUNK_MIN_BYTES && old.len() > 1 => {
            let read_at = |buf: &mut [u8], offset| file.read_exact_at(buf, offset);
            // Only chunks cut again can be new: the kept ones are the previous version's.
            // An edit's new chunks go as deltas against the old ones over the same range.
            let found = syncstore_chunk::rechunk(old, stamp.size, &read_at, |offset, chunk| {
                if let Some(sink) = sink.as_deref_mut() {
                    let bases = bases_for(old, offset, chunk.len);
                    sink.chunk(&full, offset, chunk, bases.iter().map(|b| b.hash).collect());
                }
            });
            match found {
                Ok(found) => {
                    tracing::debug!(
                        %path,
                        size = stamp.size,
                        kept_bytes = found.kept_bytes,
                        cut_bytes = found.cut_bytes,
                        wasted_bytes = found.wasted_bytes,
                        "re-chunked from the previous chunk list"
                    );
                    Ok((found.manifest, found.kept_bytes))
                }
                Err(err) => Err(err),
            }
        }
        _ => match sink {
            Some(sink) => {
                let mut offset = 0u64;
                syncstore_chunk::chunk_reader(&mut file, |chunk, _| {
                    sink.chunk(&full, offset, chunk, Vec::new());
                    offset += u64::from(chunk.len);
                    Ok(())
                })
            }
            None => syncstore_chunk::manifest_of(&mut file),
        }
        .map(|manifest| (manifest, 0)),
    };
    let after = disk.stat(path).map_err(unreadable)?;
    // The whole stamp: a write in place that put the size and mtime back still moved the ctime.
    let changed = after.stamp() != stamp;
    let manifest = match manifest {
        // Read errors of a file that is changing (a positional read past a new end) mean it
        // changed.
        Err(_) if changed => return Err(HashFailure::Changed),
        manifest => manifest.map_err(unreadable)?,
    };
    if manifest.0.size != stamp.size || changed {
        return Err(HashFailure::Changed);
    }
    Ok(manifest)
}

/// Why a file could not be hashed this scan.
enum HashFailure {
    /// It changed while being read: try again once it settles.
    Changed,
    /// It cannot be read (permissions, IO error).
    Unreadable(String),
}

impl HashCache {
    /// Moves cached hashes at and below `from` to `to` (after a rename, nothing needs re-hashing).
    pub fn rebase(&mut self, from: &RelPath, to: &RelPath) {
        let moved: Vec<RelPath> = self
            .entries
            .keys()
            .filter(|p| p.rebase(from, to).is_some())
            .cloned()
            .collect();
        for old in moved {
            if let (Some(new), Some(value)) = (old.rebase(from, to), self.entries.remove(&old)) {
                self.entries.insert(new, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The rules of the folder at `root`, as the engine reads them.
    fn load_rules(root: &std::path::Path) -> IgnoreRules {
        let text = std::fs::read_to_string(root.join(".syncignore")).ok();
        IgnoreRules::parse(root, text.as_deref())
    }

    /// The stamp of the file at `full`.
    fn stamp_of(full: &std::path::Path) -> std::io::Result<Stamp> {
        let meta = std::fs::symlink_metadata(full)?;
        Ok(crate::seams::os_disk::meta_of(&meta).stamp())
    }

    /// The real disk at `root`, for a scan.
    fn os_disk(root: &std::path::Path) -> crate::seams::OsDisk {
        let folder = crate::folder::FolderId::open_without_marker(root).unwrap();
        crate::seams::OsDisk::new(root, root.to_path_buf(), folder).unwrap()
    }

    use super::*;

    #[test]
    fn row_38_bytes_changed_in_place_with_size_and_mtime_kept_are_hashed_again() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let file = root.join("disk.img");
        std::fs::write(&file, b"aaaaaaaa").unwrap();
        let rules = load_rules(root);
        let mut cache = HashCache::default();
        let path = RelPath::new("disk.img").unwrap();
        let first = scan(&os_disk(root), &rules, &mut cache, None).local[&path].hash;
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        // The ctime has a clock tick to move on (coarse-grained timestamps on some filesystems).
        let ctime_before = stamp_of(&file).unwrap().ctime_ns;
        while stamp_of(&file).unwrap().ctime_ns == ctime_before {
            let handle = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
            let mut handle = std::io::BufWriter::new(handle);
            handle.write_all(b"bbbbbbbb").unwrap();
            let handle = handle.into_inner().unwrap();
            handle.set_modified(mtime).unwrap();
        }
        let after = stamp_of(&file).unwrap();
        assert_eq!(after.size, 8);
        assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);
        let second = scan(&os_disk(root), &rules, &mut cache, None).local[&path].hash;
        assert_ne!(first, second, "the in-place write is seen");
        assert_eq!(
            second,
            Some(ContentHash(*blake3::hash(b"bbbbbbbb").as_bytes()))
        );
    }
    /// A stamp of whole seconds (what a FAT or exFAT folder gives) at `secs`, and one of
    /// nanoseconds just after it.
    fn coarse_and_fine(secs: i64) -> (Stamp, Stamp) {
        let coarse = Stamp {
            size: 2,
            mtime_ns: secs * 1_000_000_000,
            inode: 7,
            ctime_ns: secs * 1_000_000_000,
        };
        let fine = Stamp {
            mtime_ns: coarse.mtime_ns + 123,
            ctime_ns: coarse.ctime_ns + 456,
            ..coarse
        };
        (coarse, fine)
    }

    #[test]
    fn a_stamp_of_whole_seconds_is_settled_only_once_no_write_can_share_it() {
        const S: i64 = 1_000_000_000;
        let (coarse, fine) = coarse_and_fine(1_800_000_000);
        let at = coarse.mtime_ns;
        assert!(
            !coarse.settled_at(at + 1),
            "a write later this second keeps every part of it"
        );
        assert!(!coarse.settled_at(at + 2 * S - 1), "FAT stamps every 2 s");
        assert!(coarse.settled_at(at + 2 * S));
        assert!(
            fine.settled_at(fine.ctime_ns),
            "nanosecond timestamps move at each write"
        );
        let centi = Stamp {
            mtime_ns: coarse.mtime_ns + 30_000_000,
            ctime_ns: coarse.ctime_ns + 30_000_000,
            ..coarse
        };
        assert!(
            !centi.settled_at(centi.ctime_ns + 19_999_999),
            "the kernel's exFAT: 10 ms"
        );
        assert!(centi.settled_at(centi.ctime_ns + 20_000_000));
        assert!(
            !fine.settled_at(fine.ctime_ns - 1),
            "a stamp ahead of the clock is not trusted"
        );
    }

    #[test]
    fn an_unsettled_stamp_is_hashed_again_and_never_given_to_base() {
        const S: i64 = 1_000_000_000;
        let (stamp, _) = coarse_and_fine(1_800_000_000);
        let path = RelPath::new("r.txt").unwrap();
        let hash = ContentHash(*blake3::hash(b"v1").as_bytes());
        let mut cache = HashCache::default();
        // Read within the second its timestamps name: a same-size write after the read would
        // leave the stamp as it is.
        cache.insert(path.clone(), stamp, stamp.mtime_ns + S / 2, hash, &[]);
        assert_eq!(
            cache.get(&path, stamp),
            None,
            "hashed again when next looked at"
        );
        assert!(
            cache.manifest(&path, stamp).is_some(),
            "the bytes read are still what an upload of them sends"
        );
        assert!(
            !cache.settled(&path, stamp, stamp.mtime_ns + 10 * S),
            "base never keeps a stamp read unsettled, however late it is recorded"
        );
        // Read again once the stamp is old enough: trusted from then on.
        cache.insert(path.clone(), stamp, stamp.mtime_ns + 3 * S, hash, &[]);
        assert_eq!(cache.get(&path, stamp), Some(hash));
        assert!(cache.settled(&path, stamp, stamp.mtime_ns + 3 * S));
        assert!(
            !cache.settled(&RelPath::new("other").unwrap(), stamp, stamp.mtime_ns + S),
            "a stamp the cache never read is judged by the time now"
        );
    }

    #[test]
    fn a_large_file_edited_in_place_is_re_chunked_from_its_previous_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let file = root.join("disk.img");
        // xorshift: bytes FastCDC cuts like any other data.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut data: Vec<u8> = (0..3 * 1024 * 1024 + 1)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        std::fs::write(&file, &data).unwrap();
        let rules = load_rules(root);
        let mut cache = HashCache::default();
        let path = RelPath::new("disk.img").unwrap();
        let first = scan(&os_disk(root), &rules, &mut cache, None);
        assert_eq!(first.kept_bytes, 0, "nothing known before");
        let before = stamp_of(&file).unwrap();
        // One byte changed in the middle, one inserted near the end: a new version.
        data[12 << 20] ^= 1;
        data.insert(20 << 20, 9);
        std::fs::write(&file, &data).unwrap();
        while stamp_of(&file).unwrap() == before {
            std::fs::write(&file, &data).unwrap();
        }
        let second = scan(&os_disk(root), &rules, &mut cache, None);
        let expected = syncstore_chunk::manifest_of(&data[..]).unwrap();
        assert_eq!(second.local[&path].hash, Some(expected.hash));
        let stamp = stamp_of(&file).unwrap();
        assert_eq!(cache.manifest(&path, stamp), Some(expected));
        // Most of the file was hashed at its place, not cut again.
        assert!(
            second.kept_bytes >= data.len() as u64 - 4 * u64::from(CHUNK_MAX),
            "kept {} of {}",
            second.kept_bytes,
            data.len()
        );
    }

    use syncstore_proto::EntryKind::{Dir, File};

    fn rules_with(syncignore: Option<&str>) -> (tempfile::TempDir, IgnoreRules) {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = syncignore {
            std::fs::write(dir.path().join(".syncignore"), text).unwrap();
        }
        let rules = load_rules(dir.path());
        (dir, rules)
    }

    /// Asserts which of `paths` (with their kinds) the rules ignore.
    fn check(rules: &IgnoreRules, ignored: &[(&str, EntryKind)], synced: &[(&str, EntryKind)]) {
        for (text, kind) in ignored {
            let path = RelPath::new(text).unwrap();
            assert!(rules.is_ignored(&path, *kind), "{text:?} should be ignored");
        }
        for (text, kind) in synced {
            let path = RelPath::new(text).unwrap();
            assert!(!rules.is_ignored(&path, *kind), "{text:?} should be synced");
        }
    }

    #[test]
    fn default_ignores_editor_files() {
        let (_dir, rules) = rules_with(None);
        check(
            &rules,
            &[
                (".notes.txt.swp", File),
                ("src/.#main.rs", File),
                ("#draft.org#", File),
                ("a/b.txt.kate-swp", File),
                ("notes.txt~", File),
            ],
            &[
                ("notes.txt", File),
                ("a#b", File),
                ("#tag", File),
                ("~home", File),
            ],
        );
    }

    #[test]
    fn default_ignores_office_lock_and_temp_files() {
        let (_dir, rules) = rules_with(None);
        check(
            &rules,
            &[
                (".~lock.x.odt#", File),
                ("docs/.~lock.budget.xlsx#", File),
                ("~$report.docx", File),
                ("~WRL0001.tmp", File),
                ("build.tmp", File),
            ],
            &[("x.odt", File), ("lock.odt", File), (".~lock.x.odt", File)],
        );
    }

    #[test]
    fn default_ignores_downloads_in_progress() {
        let (_dir, rules) = rules_with(None);
        check(
            &rules,
            &[
                ("Downloads/film.mkv.part", File),
                ("setup.exe.crdownload", File),
                ("upload.zip.filepart", File),
            ],
            &[("film.mkv", File), ("part", File), ("report.partial", File)],
        );
    }

    #[test]
    fn default_ignores_macos_droppings() {
        let (_dir, rules) = rules_with(None);
        check(
            &rules,
            &[
                (".DS_Store", File),
                ("photos/.DS_Store", File),
                ("._photo.jpg", File),
                (".Spotlight-V100", Dir),
                (".Spotlight-V100/Store-V2/x", File),
                (".Trashes", Dir),
                (".fseventsd", Dir),
                (".TemporaryItems", Dir),
                (".DocumentRevisions-V100", Dir),
            ],
            &[
                ("Icon", File),
                ("Icons", Dir),
                ("photo.jpg", File),
                ("DS_Store", File),
            ],
        );
        // A folder's custom icon, `Icon` and a carriage return, is no valid path: it is
        // matched by name, and neither synced nor reported as skipped.
        assert!(rules.is_ignored_text("Icon\r", false));
        assert!(rules.is_ignored_text("photos/Icon\r", false));
        assert!(!rules.is_ignored_text("Icon\n", false));
    }

    #[test]
    fn scan_neither_syncs_nor_reports_ignored_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("photos")).unwrap();
        for name in [
            "a.txt",
            "photos/Icon\r",
            ".~lock.x.odt#",
            ".DS_Store",
            "x.odt",
        ] {
            std::fs::write(root.join(name), b"x").unwrap();
        }
        let rules = load_rules(root);
        let found = scan(&os_disk(root), &rules, &mut HashCache::default(), None);
        let paths: Vec<&str> = found.local.keys().map(RelPath::as_str).collect();
        assert_eq!(paths, ["a.txt", "photos", "x.odt"]);
        assert_eq!(found.skipped, []);
    }

    #[test]
    fn default_ignores_windows_droppings() {
        let (_dir, rules) = rules_with(None);
        check(
            &rules,
            &[
                ("Thumbs.db", File),
                ("photos/thumbs.db", File),
                ("ehthumbs.db", File),
                ("desktop.ini", File),
                ("Music/Desktop.ini", File),
            ],
            &[("thumbs.db.txt", File), ("desktop.ini.bak", File)],
        );
    }

    #[test]
    fn default_ignores_linux_droppings() {
        let (_dir, rules) = rules_with(None);
        check(
            &rules,
            &[
                (".directory", File),
                ("photos/.directory", File),
                (".Trash-1000", Dir),
                (".Trash-1000/files/old.txt", File),
                (".fuse_hidden0000000a00000001", File),
                (".nfs000000000123abcd00000001", File),
            ],
            &[("directory", File), ("Trash-1000", Dir), (".trash", Dir)],
        );
    }

    #[test]
    fn syncignore_adds_patterns_and_can_sync_a_default_after_all() {
        let (_dir, rules) = rules_with(Some("build/\n!*.part\n"));
        check(
            &rules,
            &[("build", Dir), ("build/out.o", File), (".DS_Store", File)],
            &[("film.mkv.part", File), ("src/build.rs", File)],
        );
    }
}
