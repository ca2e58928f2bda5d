//! The executable bit is synced (issue 11): a `chmod` alone is a change, sent without its
//! content, both ways; a new executable file arrives executable.

use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The server's entry at `path`: (node id, rev, content hash, executable).
fn server_entry(server: &Server, token: &str, path: &str) -> Option<(u64, u64, String, bool)> {
    let (status, body) =
        reqwest::send("GET", &format!("{}/api/v1/tree", server.url()), token, None);
    assert_eq!(status, 200, "{body}");
    let tree: serde_json::Value = serde_json::from_str(&body).unwrap();
    tree["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"].as_str() == Some(path))
        .map(|e| {
            (
                e["node_id"].as_u64().unwrap(),
                e["rev"].as_u64().unwrap(),
                e["hash"].as_str().unwrap_or_default().to_owned(),
                e["executable"].as_bool().unwrap_or(false),
            )
        })
}

/// Regular files beneath `dir`: the chunks the server stores.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                count_files(&path)
            } else {
                1
            }
        })
        .sum()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn chmod_reaches_the_other_device_and_back_without_content() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().to_path_buf();
    let data = tmp.path().join("data");
    let server = Server::start(&logs, &data);
    let token_a = server.token("alice", "laptop");
    let token_b = server.token("alice", "desktop");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let _a = start_client("client-a", &logs, &a_dir, &server.url(), &token_a);
    let _b = start_client("client-b", &logs, &b_dir, &server.url(), &token_b);

    let script = "#!/bin/sh\necho hello\n";
    write(&a_dir.join("run.sh"), script);
    chmod(&a_dir.join("run.sh"), 0o644);
    wait_until("run.sh on B", || {
        read(&b_dir.join("run.sh")).as_deref() == Some(script)
    });
    wait_same(&a_dir, &b_dir);
    assert_eq!(mode_of(&b_dir.join("run.sh")) & 0o111, 0);
    let (node_id, rev, hash, executable) =
        server_entry(&server, &token_a, "run.sh").expect("run.sh on the server");
    assert!(!executable);
    let chunks_before = count_files(&data.join("chunks"));
    assert!(chunks_before > 0, "the server stores run.sh's chunk");

    // chmod +x on A: B's file becomes executable; the server's node keeps its id and content.
    chmod(&a_dir.join("run.sh"), 0o755);
    wait_until("B's run.sh executable", || {
        mode_of(&b_dir.join("run.sh")) & 0o111 == 0o111
    });
    assert_eq!(mode_of(&b_dir.join("run.sh")), 0o755);
    assert_eq!(read(&b_dir.join("run.sh")).as_deref(), Some(script));
    let (node_after, rev_after, hash_after, executable_after) =
        server_entry(&server, &token_a, "run.sh").unwrap();
    assert!(executable_after);
    assert_eq!((node_after, &hash_after), (node_id, &hash));
    assert!(
        rev_after > rev,
        "a mode change is a change: {rev_after} > {rev}"
    );
    assert_eq!(
        count_files(&data.join("chunks")),
        chunks_before,
        "no chunk was uploaded for a mode change"
    );

    // chmod -x on B comes back to A.
    chmod(&b_dir.join("run.sh"), 0o644);
    wait_until("A's run.sh not executable", || {
        mode_of(&a_dir.join("run.sh")) & 0o111 == 0
    });
    assert_eq!(mode_of(&a_dir.join("run.sh")), 0o644);
    let (node_last, _, hash_last, executable_last) =
        server_entry(&server, &token_a, "run.sh").unwrap();
    assert!(!executable_last);
    assert_eq!((node_last, &hash_last), (node_id, &hash));
    assert_eq!(count_files(&data.join("chunks")), chunks_before);

    // A new executable file created on A arrives executable on B.
    let tool = a_dir.join("bin/tool");
    write(&tool, "#!/bin/sh\necho tool\n");
    chmod(&tool, 0o755);
    wait_until("bin/tool executable on B", || {
        b_dir.join("bin/tool").is_file() && mode_of(&b_dir.join("bin/tool")) & 0o111 == 0o111
    });
    assert_eq!(
        read(&b_dir.join("bin/tool")).as_deref(),
        Some("#!/bin/sh\necho tool\n")
    );
    assert!(server_entry(&server, &token_a, "bin/tool").unwrap().3);
    // The status of both folders then says in sync.
    wait_same(&a_dir, &b_dir);
    assert_eq!(
        mode_of(&a_dir.join("run.sh")),
        mode_of(&b_dir.join("run.sh"))
    );
}
