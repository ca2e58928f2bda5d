//! Early upload against a real server on loopback: every chunk the scan hands over is on the
//! server once `finish` returns, before any plan asks for it, also when the server already
//! had some of them.

use std::sync::Arc;
use std::time::Duration;
use syncstore_client::early_upload::{EarlyUpload, StreamStarts};
use syncstore_client::ApiClient;
use syncstore_proto::{ChunkHash, DeviceName, UserName};

/// A file of `len` bytes that FastCDC cuts into several chunks (no repeats).
fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Cuts `path` the way the scan does, handing every chunk to `early`; returns the chunk hashes.
fn cut_into(path: &std::path::Path, early: &EarlyUpload) -> Vec<ChunkHash> {
    let mut sink = early.sink();
    let mut offset = 0u64;
    let file = std::fs::File::open(path).unwrap();
    let manifest = syncstore_chunk::chunk_reader(&file, |chunk, _| {
        sink.chunk(path, offset, chunk, Vec::new());
        offset += u64::from(chunk.len);
        Ok(())
    })
    .unwrap();
    manifest.chunks.iter().map(|chunk| chunk.hash).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_handed_over_are_on_the_server_when_early_upload_finishes() {
    let data_dir = tempfile::tempdir().unwrap();
    let token = syncstore_server::add_user(
        data_dir.path(),
        &UserName::new("me").unwrap(),
        &DeviceName::new("laptop").unwrap(),
    )
    .await
    .unwrap();
    let other_token = syncstore_server::add_token(
        data_dir.path(),
        &UserName::new("me").unwrap(),
        &DeviceName::new("desktop").unwrap(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(syncstore_server::run(
        listener,
        syncstore_server::ServerConfig::new(data_dir.path().to_owned()),
        async {
            let _ = stopped.await;
        },
    ));
    let api = Arc::new(ApiClient::new(vec![url.clone()], token).unwrap());
    let other = ApiClient::new(vec![url], other_token).unwrap();

    let files = tempfile::tempdir().unwrap();
    let first = files.path().join("first.bin");
    std::fs::write(&first, pseudo_random(20 * 1024 * 1024, 1)).unwrap();
    let early = EarlyUpload::start(
        Arc::clone(&api),
        files.path().to_owned(),
        StreamStarts::default(),
    );
    let hashes = tokio::task::block_in_place(|| cut_into(&first, &early));
    assert!(hashes.len() > 4, "{} chunks", hashes.len());
    early.finish().await;
    assert_eq!(
        api.missing_chunks(hashes.clone()).await.unwrap(),
        Vec::<ChunkHash>::new(),
        "every chunk is on the server once the early upload has finished"
    );
    // The other device sees the whole file announced as one stream, in order, from offset 0,
    // each part continuing the one before; the uploader sees none of its own.
    let streams = other.follow_streams(0, Duration::ZERO).await.unwrap();
    assert_eq!(streams.live.len(), 1, "{streams:?}");
    let mut offset = 0;
    let mut announced = Vec::new();
    for info in &streams.parts {
        assert_eq!(info.part.path.as_str(), "first.bin");
        assert_eq!(info.part.offset, offset);
        assert_eq!(info.part.size, 20 * 1024 * 1024);
        assert_eq!(info.device.as_str(), "laptop");
        offset += info
            .part
            .chunks
            .iter()
            .map(|c| u64::from(c.len))
            .sum::<u64>();
        announced.extend(info.part.chunks.iter().map(|c| c.hash));
    }
    assert!(streams.parts.len() > 1, "announced pack by pack");
    assert_eq!(announced, hashes);
    assert!(api
        .follow_streams(0, Duration::ZERO)
        .await
        .unwrap()
        .parts
        .is_empty());

    // A second file that shares the first one's bytes up to its last few MiB: its new chunks
    // arrive too.
    let mut bytes = std::fs::read(&first).unwrap();
    let tail = bytes.len() - 3 * 1024 * 1024;
    bytes[tail..].copy_from_slice(&pseudo_random(3 * 1024 * 1024, 2));
    let second = files.path().join("second.bin");
    std::fs::write(&second, &bytes).unwrap();
    let early = EarlyUpload::start(
        Arc::clone(&api),
        files.path().to_owned(),
        StreamStarts::default(),
    );
    let second_hashes = tokio::task::block_in_place(|| cut_into(&second, &early));
    let new: Vec<ChunkHash> = second_hashes
        .iter()
        .filter(|hash| !hashes.contains(hash))
        .copied()
        .collect();
    assert!(!new.is_empty() && new.len() < second_hashes.len());
    early.finish().await;
    assert_eq!(
        api.missing_chunks(second_hashes).await.unwrap(),
        Vec::<ChunkHash>::new()
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
