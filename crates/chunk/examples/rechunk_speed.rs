//! A full chunking pass against `rechunk` for a file with one byte changed in the middle, read
//! from the page cache: `cargo run --release -p syncstore-chunk --example rechunk_speed [MiB]
//! [PATH]` (1024 MiB in the system's temp dir unless told; the file is removed at the end).
//! (Profile aid for docs/benchmarks.md; not a test.)

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().and_then(|arg| arg.parse().ok()).unwrap_or(1024);
    let path = args.next().map_or_else(
        || std::env::temp_dir().join("syncstore-rechunk-speed.bin"),
        std::path::PathBuf::from,
    );
    // xorshift: incompressible enough for FastCDC and cheap to make.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut file = File::create(&path)?;
    let mut block = vec![0u8; 8 << 20];
    for _ in 0..mib / 8 {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block)?;
    }
    drop(file);
    let file = File::open(&path)?;
    let size = file.metadata()?.len();
    let gib = size as f64 / f64::from(1u32 << 30);
    let report = |label: &str, start: Instant| {
        let secs = start.elapsed().as_secs_f64();
        println!("{label:<52} {secs:>7.3} s  {:>6.2} GiB/s", gib / secs);
    };

    // Warm: the file is in the page cache, as right after an edit.
    let old = syncstore_chunk::manifest_of(File::open(&path)?)?;
    let start = Instant::now();
    let old = {
        let again = syncstore_chunk::manifest_of(File::open(&path)?)?;
        assert!(again == old, "the same file chunks the same");
        again
    };
    report(
        &format!("full pass, unchanged ({} chunks)", old.chunks.len()),
        start,
    );

    let middle = size / 2;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, middle)?;
    File::options()
        .write(true)
        .open(&path)?
        .write_all_at(&[byte[0] ^ 1], middle)?;

    let start = Instant::now();
    let full = syncstore_chunk::manifest_of(File::open(&path)?)?;
    report("full pass, one byte changed", start);

    let read_at = |buf: &mut [u8], offset| file.read_exact_at(buf, offset);
    let start = Instant::now();
    let found = syncstore_chunk::rechunk(&old.chunks, size, &read_at, |_, _| {})?;
    report("rechunk from the previous list, one byte changed", start);
    assert!(
        found.manifest == full,
        "rechunk gives what a full pass gives"
    );
    println!(
        "kept {} MiB, cut {} KiB, hashed in vain {} KiB",
        found.kept_bytes >> 20,
        found.cut_bytes >> 10,
        found.wasted_bytes >> 10
    );
    std::fs::remove_file(&path)
}
