//! Throughput of the pieces of chunking on this machine, single-threaded, from memory:
//! `cargo run --release -p syncstore-chunk --example chunk_speed [MiB]`.
//! (Profile aid for docs/benchmarks.md; not a test.)

use std::time::Instant;
use syncstore_proto::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(512);
    // xorshift: incompressible enough for FastCDC and cheap to make.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..mib * 1024 * 1024 / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    let gib = data.len() as f64 / f64::from(1u32 << 30);
    let rate = |label: &str, start: Instant| {
        let secs = start.elapsed().as_secs_f64();
        println!("{label:<40} {:>6.2} GiB/s", gib / secs);
    };

    let start = Instant::now();
    std::hint::black_box(blake3::hash(&data));
    rate("blake3 (one pass, one thread)", start);

    let start = Instant::now();
    let n = fastcdc::v2020::FastCDC::new(&data, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX).count();
    rate(&format!("fastcdc cut points only ({n} chunks)"), start);

    let start = Instant::now();
    let n = fastcdc::v2020::StreamCDC::new(&data[..], CHUNK_MIN, CHUNK_AVG, CHUNK_MAX).count();
    rate(&format!("fastcdc StreamCDC ({n} chunks)"), start);

    let start = Instant::now();
    let manifest = syncstore_chunk::manifest_of(&data[..]).expect("in memory");
    rate(
        &format!(
            "manifest_of ({} chunks, one blake3 pass)",
            manifest.chunks.len()
        ),
        start,
    );
}
