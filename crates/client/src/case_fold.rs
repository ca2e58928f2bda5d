//! Folders on filesystems that do not tell names apart by case (FAT and exFAT on USB sticks and
//! SD cards, and what Windows and macOS format by default): `Report.txt` and `report.txt` are
//! one file there. The server, and every other folder, may hold both. Written into such a
//! folder, the second would overwrite the first, and the next scan, seeing one name where base
//! holds two, would delete the other everywhere.
//!
//! So of each set of paths that differ only in case, a case-insensitive folder holds one (the
//! *holder*): the one on its disk (unless the server renamed it away since base), else the one its
//! base holds, else the first in byte order.
//! The others are *hidden*: the planner leaves them alone as it does ignored paths (not
//! downloaded, never deleted on either side), and they are reported as skipped. A hidden
//! directory hides everything beneath it. Pure: no IO.

use std::collections::{BTreeMap, HashMap};
use syncstore_plan::{BaseNode, LocalNode};
use syncstore_proto::{RelPath, RemoteEntry};

/// The name that paths differing only in case share: each character lowercased.
fn folded(path: &RelPath) -> String {
    path.as_str().to_lowercase()
}

/// The remote paths a case-insensitive folder cannot hold beside another, each with the path
/// it yields to. Walks the remote tree, and the local one for names it folds onto: its cost
/// grows with the folder, so it is computed only for case-insensitive folders.
pub fn hidden(
    remote: &BTreeMap<RelPath, RemoteEntry>,
    local: &BTreeMap<RelPath, LocalNode>,
    base: &BTreeMap<RelPath, BaseNode>,
) -> BTreeMap<RelPath, RelPath> {
    let mut groups: HashMap<String, Vec<&RelPath>> = HashMap::new();
    for path in remote.keys() {
        groups.entry(folded(path)).or_default().push(path);
    }
    for path in local.keys() {
        if let Some(group) = groups.get_mut(&folded(path)) {
            if !group.contains(&path) {
                group.push(path);
            }
        }
    }
    let mut hidden = BTreeMap::new();
    for group in groups.into_values().filter(|group| group.len() > 1) {
        // A local name holds unless the server moved or deleted it since base (a rename that
        // changes only the case: the planner moves the file, nothing is hidden).
        let live_locally = |path: &RelPath| {
            local.contains_key(path) && (remote.contains_key(path) || !base.contains_key(path))
        };
        let in_remote = |path: &&&RelPath| remote.contains_key(**path);
        let holder = group
            .iter()
            .find(|path| live_locally(path))
            .or_else(|| {
                group
                    .iter()
                    .filter(in_remote)
                    .find(|path| base.contains_key(**path))
            })
            .or_else(|| group.iter().filter(in_remote).min())
            .copied()
            .expect("a group holds a remote path");
        for path in group {
            if path != holder && remote.contains_key(path) {
                hidden.insert(path.clone(), holder.clone());
            }
        }
    }
    hidden
}

/// Why a hidden path is not synced, as `status` and the log say it.
pub fn reason(holder: &RelPath) -> String {
    format!(
        "differs only in case from {holder}, and this folder's filesystem does not tell names \
         apart by case: not synced here, and not deleted anywhere"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstore_proto::{ContentHash, EntryKind, NodeId, Revision};

    fn path(text: &str) -> RelPath {
        RelPath::new(text).unwrap()
    }

    fn remote(paths: &[&str]) -> BTreeMap<RelPath, RemoteEntry> {
        paths
            .iter()
            .enumerate()
            .map(|(idx, text)| {
                let entry = RemoteEntry {
                    path: path(text),
                    node_id: NodeId(idx as u64 + 1),
                    rev: Revision(1),
                    kind: EntryKind::File,
                    hash: Some(ContentHash([idx as u8; 32])),
                    size: 1,
                    mtime_ms: 0,
                    chunks: Vec::new(),
                    device: syncstore_proto::DeviceName::new("laptop").unwrap(),
                    executable: false,
                };
                (path(text), entry)
            })
            .collect()
    }

    fn local(paths: &[&str]) -> BTreeMap<RelPath, LocalNode> {
        paths
            .iter()
            .map(|text| {
                let node = LocalNode {
                    kind: EntryKind::File,
                    hash: Some(ContentHash([9; 32])),
                    size: 1,
                    mtime_ns: 0,
                    inode: 1,
                    ctime_ns: 0,
                    executable: false,
                };
                (path(text), node)
            })
            .collect()
    }

    fn base(paths: &[&str]) -> BTreeMap<RelPath, BaseNode> {
        paths
            .iter()
            .map(|text| {
                let node = BaseNode {
                    kind: EntryKind::File,
                    hash: Some(ContentHash([9; 32])),
                    node_id: NodeId(1),
                    rev: Revision(1),
                    size: 1,
                    mtime_ns: 0,
                    inode: 1,
                    ctime_ns: 0,
                    executable: false,
                };
                (path(text), node)
            })
            .collect()
    }

    fn hidden_of(remote_paths: &[&str], local_paths: &[&str], base_paths: &[&str]) -> Vec<String> {
        hidden(
            &remote(remote_paths),
            &local(local_paths),
            &base(base_paths),
        )
        .into_iter()
        .map(|(hidden, holder)| format!("{hidden} -> {holder}"))
        .collect()
    }

    #[test]
    fn names_apart_by_more_than_case_are_all_held() {
        assert!(hidden_of(&["a.txt", "b.txt", "dir/a.txt"], &["a.txt"], &[]).is_empty());
    }

    #[test]
    fn of_two_names_the_one_on_disk_is_held_then_base_then_byte_order() {
        let both = ["Report.txt", "report.txt"];
        assert_eq!(hidden_of(&both, &[], &[]), ["report.txt -> Report.txt"]);
        assert_eq!(
            hidden_of(&both, &[], &["report.txt"]),
            ["Report.txt -> report.txt"]
        );
        assert_eq!(
            hidden_of(&both, &["report.txt"], &["Report.txt"]),
            ["Report.txt -> report.txt"],
            "what the disk holds wins over base"
        );
    }

    #[test]
    fn a_local_file_holds_its_name_against_a_remote_one_differing_in_case() {
        // A local file not uploaded yet: the remote name is the one kept out.
        assert_eq!(
            hidden_of(&["Notes.md"], &["notes.md"], &[]),
            ["Notes.md -> notes.md"]
        );
        // A remote rename that changes only the case, the old name gone remotely, hides
        // nothing: the planner moves the file.
        assert!(hidden_of(&["Notes.md"], &["notes.md"], &["notes.md"]).is_empty());
    }

    #[test]
    fn directories_differing_in_case_hide_the_other_with_everything_beneath() {
        assert_eq!(
            hidden_of(
                &["Docs", "Docs/a", "docs", "docs/b", "DOCS"],
                &["Docs", "Docs/a"],
                &[]
            ),
            ["DOCS -> Docs", "docs -> Docs"]
        );
    }
}
