//! The users: what they do to their folders, and the ledger of the contents they wrote and
//! destroyed (what "no content lost" is checked against).

use crate::fs::{FsNode, SimFs};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;
use syncstore_proto::{DeviceName, EntryKind, RelPath};

/// The content ledger: which contents must survive, and where each came from.
#[derive(Default)]
pub struct Ledger {
    /// Live content → the trace line that wrote it.
    pub live: BTreeMap<Vec<u8>, String>,
    /// Numbers every written content, so each is unique.
    pub counter: u64,
    /// Edits made so far.
    pub edits: usize,
}

impl Ledger {
    /// Records an edit described by `line`.
    pub fn record(&mut self, line: &str, edit: Edit) {
        for bytes in &edit.killed {
            self.live.remove(bytes);
        }
        if let Some(bytes) = edit.written {
            self.live.insert(bytes, line.to_owned());
        }
        self.edits += 1;
    }
}

/// What a user edit did, for the content ledger.
pub struct Edit {
    pub text: String,
    /// Contents the user deliberately destroyed (they were on this device's disk at the paths the
    /// user overwrote or deleted).
    pub killed: Vec<Vec<u8>>,
    /// Content the user wrote.
    pub written: Option<Vec<u8>>,
}

/// Compact text of bytes for the trace.
pub fn show_bytes(bytes: &[u8]) -> String {
    if bytes.len() > 64 {
        let head = bytes
            .iter()
            .take_while(|b| **b != 0 && b.is_ascii_graphic())
            .take(24);
        let head: Vec<u8> = head.copied().collect();
        return format!("{:?}+{}B", String::from_utf8_lossy(&head), bytes.len());
    }
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// A random user edit, or `None` when the chosen edit does not apply to this disk.
///
/// Users never empty the whole folder: an empty root while base holds files looks like an
/// unmounted disk, so the planner deletes nothing on its account (row 29) and the deletions
/// would stay blocked for ever.
pub fn user_edit(
    name: &DeviceName,
    disk: &mut SimFs,
    rng: &mut StdRng,
    now_ms: i64,
    counter: &mut u64,
) -> Option<Edit> {
    // Users never leave the folder empty as the engine sees it (only ignored entries, or
    // nothing): that looks like an unmounted disk, so the planner deletes nothing on its
    // account (row 29) and the deletions would stay blocked for ever.
    let mut trial = disk.clone();
    let edit = edit_on(name, &mut trial, rng, now_ms, counter)?;
    if !trial.root_mounted() && visible_entries(disk) > 0 && visible_entries(&trial) == 0 {
        return None;
    }
    *disk = trial;
    Some(edit)
}

/// The entries the engine's scan would see: not ignored by the folder's rules, not beneath a
/// disk mounted over a subfolder.
fn visible_entries(disk: &SimFs) -> usize {
    let rules = crate::rules_of(disk);
    disk.nodes
        .iter()
        .filter(|(path, node)| !disk.on_other_fs(path) && !crate::ignored(&rules, path, node.kind))
        .count()
}

fn edit_on(
    name: &DeviceName,
    disk: &mut SimFs,
    rng: &mut StdRng,
    now_ms: i64,
    counter: &mut u64,
) -> Option<Edit> {
    let now = disk.timestamp(now_ms * 1_000_000);
    if disk.root_mounted() {
        // A disk mounted over the folder: an application may drop a file into it. Its
        // bytes go with that disk, so the ledger does not count them.
        *counter += 1;
        let path = RelPath::new(&format!("stray-{counter}")).expect("valid");
        let bytes = format!("{}#{counter} on the mounted disk", name).into_bytes();
        let _ = disk.write(&path, bytes, now, false);
        return Some(Edit {
            text: format!("user drops {path} onto the disk mounted over the folder"),
            killed: Vec::new(),
            written: None,
        });
    }
    // The user works around filesystems mounted over subfolders, never in or over them.
    let free = |disk: &SimFs, path: &RelPath| !disk.on_other_fs(path) && !disk.holds_mount(path);
    let files: Vec<RelPath> = disk
        .nodes
        .iter()
        .filter(|(p, n)| n.kind == EntryKind::File && free(disk, p))
        .map(|(p, _)| p.clone())
        .collect();
    let dirs: Vec<RelPath> = disk
        .nodes
        .iter()
        .filter(|(p, n)| n.kind == EntryKind::Dir && free(disk, p))
        .map(|(p, _)| p.clone())
        .collect();
    let large = rng.gen_bool(LARGE_FILES);
    let mut content = |name: &DeviceName| {
        *counter += 1;
        let mut bytes = format!("{name}#{counter}").into_bytes();
        if large {
            bytes.extend(large_body(*counter));
        }
        bytes
    };
    match rng.gen_range(0..12) {
        // Write a file: modify an existing one or create one (with its parents).
        0..=3 => {
            // On a disk of whole-second timestamps, what was written this second is often
            // written again (see below).
            let just_written = files.iter().find(|p| {
                disk.get(p).is_some_and(|node| {
                    disk.coarse_timestamps && node.mtime_ns == now && node.ctime_ns == now
                })
            });
            let path = if let Some(path) = just_written.filter(|_| rng.gen_bool(0.8)) {
                path.clone()
            } else if !files.is_empty() && rng.gen_bool(0.5) {
                files.choose(rng).expect("not empty").clone()
            } else {
                random_path(rng)
            };
            if !free(disk, &path)
                || disk.check_ancestors(&path).is_err()
                || disk.get(&path).is_some_and(|n| n.kind == EntryKind::Dir)
            {
                return None;
            }
            // A file made read-only (another device locks it) cannot be written in place; an
            // editor's atomic save still replaces it.
            let read_only = disk.get(&path).is_some_and(|n| n.read_only);
            let mut bytes = content(name);
            let reuse = rng.gen_bool(0.5);
            let killed: Vec<Vec<u8>> = disk
                .get(&path)
                .map(|n| n.bytes.clone())
                .into_iter()
                .collect();
            // Most writes to a large file edit a few bytes of it (what deltas are for).
            if let Some(old) = killed.first().filter(|old| old.len() > LARGE_EDIT_MIN) {
                if rng.gen_bool(0.8) {
                    let tag = format!("{name}#{counter}");
                    let at = rng.gen_range(0..old.len() - tag.len());
                    bytes = old.clone();
                    bytes[at..at + tag.len()].copy_from_slice(tag.as_bytes());
                }
            }
            // On a disk of whole-second timestamps, a file written this very second and written
            // again in place, as long as before (a program rewriting its status file), keeps
            // every part of its stamp: only its bytes tell.
            let same_second = disk.get(&path).is_some_and(|node| {
                disk.coarse_timestamps && node.mtime_ns == now && node.ctime_ns == now
            });
            if same_second && !read_only && bytes.len() <= killed[0].len() && rng.gen_bool(0.8) {
                bytes.resize(killed[0].len(), b'_');
                disk.write(&path, bytes.clone(), now, reuse)
                    .expect("a file is rewritten");
                return Some(Edit {
                    text: format!(
                        "user rewrite-within-the-second {path} = {} (was {})",
                        show_bytes(&bytes),
                        show_bytes(&killed[0])
                    ),
                    killed,
                    written: Some(bytes),
                });
            }
            let how = if killed.is_empty() {
                if let Some(parent) = path.parent() {
                    disk.create_dir_all(&parent, now, reuse)
                        .expect("ancestors checked");
                }
                disk.write(&path, bytes.clone(), now, reuse)
                    .expect("parent exists");
                "create"
            } else if read_only || rng.gen_bool(0.3) {
                // An editor's atomic save: a temp file renamed over the old one (new inode).
                let inode = disk.alloc_inode(reuse);
                // Editors give the new file the old one's mode.
                let executable = disk.get(&path).is_some_and(|n| n.executable);
                let node = FsNode {
                    kind: EntryKind::File,
                    bytes: bytes.clone(),
                    inode,
                    mtime_ns: now,
                    ctime_ns: now,
                    executable,
                    read_only: false,
                };
                disk.place(&path, node, false, now)
                    .expect("a file replaces a file");
                "save-as"
            } else if rng.gen_bool(0.25) {
                // `rsync --inplace -t`, a database or a VM image: the bytes change in place,
                // the size stays where it can, and the mtime is put back (THREE-TREE row
                // 38). Only the ctime tells.
                let old_len = killed[0].len();
                let mut same_size = bytes.clone();
                if same_size.len() < old_len {
                    same_size.resize(old_len, b'_');
                }
                disk.write_keeping_mtime(&path, same_size.clone(), now)
                    .expect("a file is rewritten");
                return Some(Edit {
                    text: format!(
                        "user write-in-place-keeping-mtime {path} = {} (was {})",
                        show_bytes(&same_size),
                        show_bytes(&killed[0])
                    ),
                    killed,
                    written: Some(same_size),
                });
            } else {
                disk.write(&path, bytes.clone(), now, reuse)
                    .expect("a file is rewritten");
                "write"
            };
            let killed_text = killed
                .iter()
                .map(|b| show_bytes(b))
                .collect::<Vec<_>>()
                .join("");
            let text = format!(
                "user {how} {path} = {}{}",
                show_bytes(&bytes),
                if killed.is_empty() {
                    String::new()
                } else {
                    format!(" (was {killed_text})")
                }
            );
            Some(Edit {
                text,
                killed,
                written: Some(bytes),
            })
        }
        // Write the folder's ignore rules (they sync like any file).
        11 => {
            let path = RelPath::new(".syncignore").expect("valid");
            if disk.get(&path).is_some_and(|n| n.kind == EntryKind::Dir) {
                return None;
            }
            let text = IGNORE_RULES.choose(rng).expect("not empty");
            let killed: Vec<Vec<u8>> = disk
                .get(&path)
                .map(|n| n.bytes.clone())
                .into_iter()
                .collect();
            disk.write(&path, text.as_bytes().to_vec(), now, false)
                .ok()?;
            Some(Edit {
                text: format!("user writes .syncignore = {text:?}"),
                killed,
                written: None,
            })
        }
        // Delete a file.
        4 => {
            let path = files.choose(rng)?.clone();
            if disk.nodes.len() == 1 {
                return None;
            }
            let node = disk.get(&path).expect("listed").clone();
            disk.remove_file(&path, now).expect("a file");
            Some(Edit {
                text: format!("user rm {path} (was {})", show_bytes(&node.bytes)),
                killed: vec![node.bytes],
                written: None,
            })
        }
        // Make a directory (with its parents).
        5 => {
            let path = random_path(rng);
            if !free(disk, &path)
                || disk.get(&path).is_some()
                || disk.check_ancestors(&path).is_err()
            {
                return None;
            }
            let reuse = rng.gen_bool(0.5);
            disk.create_dir_all(&path, now, reuse)
                .expect("ancestors checked");
            Some(Edit {
                text: format!("user mkdir -p {path}"),
                killed: Vec::new(),
                written: None,
            })
        }
        // Remove a directory and everything beneath.
        6 => {
            let path = dirs.choose(rng)?.clone();
            if disk.nodes.keys().all(|p| *p == path || p.is_inside(&path)) {
                return None;
            }
            let files = disk.remove_all(&path, now);
            let killed: Vec<Vec<u8>> = files.into_iter().map(|n| n.bytes).collect();
            let shown: Vec<String> = killed.iter().map(|b| show_bytes(b)).collect();
            Some(Edit {
                text: format!("user rm -r {path} (held {})", shown.join(" ")),
                killed,
                written: None,
            })
        }
        // chmod +x or -x of a file: a mode-only change (size, mtime and inode stay).
        10 => {
            let path = files.choose(rng)?.clone();
            disk.events.push((path.clone(), false));
            let node = disk.nodes.get_mut(&path).expect("listed");
            node.executable = !node.executable;
            let sign = if node.executable { '+' } else { '-' };
            Some(Edit {
                text: format!("user chmod {sign}x {path}"),
                killed: Vec::new(),
                written: None,
            })
        }
        // Rename a file or a directory, possibly over a file.
        _ => {
            let all: Vec<RelPath> = disk
                .nodes
                .keys()
                .filter(|p| free(disk, p))
                .cloned()
                .collect();
            let from = all.choose(rng)?.clone();
            let to = if rng.gen_bool(0.3) {
                // A sibling name: a rename in place.
                let name = NAMES.choose(rng).expect("not empty");
                match from.parent() {
                    Some(parent) => parent.join(name).expect("valid"),
                    None => RelPath::new(name).expect("valid"),
                }
            } else {
                random_path(rng)
            };
            if to == from
                || to.is_inside(&from)
                || !free(disk, &to)
                || disk.check_ancestors(&to).is_err()
            {
                return None;
            }
            let from_kind = disk.get(&from).expect("listed").kind;
            let killed: Vec<Vec<u8>> = match disk.get(&to) {
                None => Vec::new(),
                Some(target) if target.kind == EntryKind::File && from_kind == EntryKind::File => {
                    vec![target.bytes.clone()]
                }
                Some(_) => return None,
            };
            if let Some(parent) = to.parent() {
                if from == parent || parent.is_inside(&from) {
                    return None;
                }
                let reuse = rng.gen_bool(0.5);
                disk.create_dir_all(&parent, now, reuse)
                    .expect("ancestors checked");
            }
            disk.rename(&from, &to, false, now).expect("checked above");
            let over = if killed.is_empty() {
                String::new()
            } else {
                format!(" (over {})", show_bytes(&killed[0]))
            };
            Some(Edit {
                text: format!("user mv {from} {to}{over}"),
                killed,
                written: None,
            })
        }
    }
}

/// Names paths are made of: few, so devices collide on them, and shared by files and directories,
/// so a file and a directory contend for one name.
/// `x.tmp` is ignored by default (`*.tmp`).
const NAMES: &[&str] = &["a", "b", "c.txt", "x.tmp"];

/// What users write into `.syncignore`.
const IGNORE_RULES: &[&str] = &[
    "",
    "b\n",
    "c.txt\n",
    "a/b\n",
    "!x.tmp\n",
    "*.txt\n!a/c.txt\n",
];

/// How often a written file is large: several chunks of the real chunker.
const LARGE_FILES: f64 = 0.03;
/// Files longer than this are sometimes edited rather than rewritten.
const LARGE_EDIT_MIN: usize = 64 * 1024;

/// The body of a large file: 600 KiB to 1.4 MiB of bytes that repeat across files (one of a
/// few patterns), so later versions share chunks with earlier ones.
fn large_body(counter: u64) -> Vec<u8> {
    let pattern = counter % 3;
    let len = 600 * 1024 + (counter % 5) as usize * 200 * 1024;
    let mut state = pattern.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift: bytes with no short period, so FastCDC finds its usual cut points.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn random_path(rng: &mut StdRng) -> RelPath {
    let depth = match rng.gen_range(0..10) {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    let parts: Vec<&str> = (0..depth)
        .map(|_| *NAMES.choose(rng).expect("not empty"))
        .collect();
    RelPath::new(&parts.join("/")).expect("valid")
}
