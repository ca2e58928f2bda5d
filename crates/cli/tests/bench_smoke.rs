//! The benchmark scripts cannot rot: `bench/run --smoke` and `bench/history --files 300` run
//! against the binary under test.
//!
//! Tiny sizes and syncstore rows only; nothing about speed is asserted (STYLE.md §13).
//! See issues 5 and 13 and `docs/benchmarks.md`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn bench_run_smoke_has_a_syncstore_row_per_workload() {
    let tmp = tempfile::tempdir().unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/run");
    let table = tmp.path().join("table.md");
    let output = Command::new("python3")
        .arg(&script)
        .arg("--smoke")
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_syncstore"))
        .arg("--out")
        .arg(&table)
        .arg("--workdir")
        .arg(tmp.path())
        .output()
        .expect("run python3 bench/run");
    assert!(
        output.status.success(),
        "bench/run --smoke failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&table).expect("bench/run wrote the table");
    for workload in ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9"] {
        let prefix = format!("| {workload} |");
        assert!(
            text.lines()
                .any(|line| line.starts_with(&prefix) && line.contains("| syncstore |")),
            "no syncstore row for {workload} in:\n{text}"
        );
    }
}

#[test]
fn bench_history_smoke_times_every_step() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/history");
    let output = Command::new("python3")
        .arg(&script)
        .arg("--files")
        .arg("300")
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_syncstore"))
        .output()
        .expect("run python3 bench/history");
    assert!(
        output.status.success(),
        "bench/history failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    for row in ["H1", "H2", "H3", "H4", "H5", "H6"] {
        let prefix = format!("| {row} |");
        assert!(
            table.lines().any(|line| line.starts_with(&prefix)),
            "no {row} row in:\n{table}"
        );
    }
}
