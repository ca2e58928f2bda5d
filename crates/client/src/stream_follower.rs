//! The stream follower: fetches the chunks of large files other devices are still uploading
//! (their upload streams, `syncstore_proto::streams`) into temp files of the folder, so that
//! when the upload commits, the download has little or nothing left to fetch.
//!
//! It only fetches ahead: what it writes goes to [`Prefetched`], never into the folder. It
//! follows a stream only for a path this folder has no file at (a new file: an edited one is
//! fetched by the engine from what changed), at most [`MAX_FOLLOWED`] at once, and only when
//! the disk has room for the whole file. A stream that is no longer live and that no commit
//! claimed within [`UNCLAIMED_GRACE`] is dropped with its temp file. While syncing is paused it
//! fetches nothing, and what it had fetched goes (as a paused download's temp file does).
//!
//! A new stream of a path it follows (the uploader scanned the file again: it is still being
//! written) replaces the old one, whose temp file the new one keeps as its [`Earlier`]: the
//! chunks it holds, verified when they were fetched, are read from it rather than fetched
//! again, and it goes when the new one is taken or dropped.

use crate::http::ApiClient;
use crate::prefetch::{Earlier, Prefetched, PrefetchedFile};
use crate::progress::Progress;
use crate::seams::{Disk, OsDisk, OsTemp, Server, TempFile};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use syncstore_proto::{
    ChunkHash, ChunkRef, RelPath, StreamPartInfo, FRAME_HEADER_LEN, STREAM_MIN_BYTES,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Streams followed at once.
pub const MAX_FOLLOWED: usize = 4;
/// How long a stream that ended without its commit being downloaded is kept.
pub const UNCLAIMED_GRACE: Duration = Duration::from_secs(60);
/// Long-poll wait per request.
const WAIT: Duration = Duration::from_secs(25);
/// Free space left on the disk besides a followed file.
const SPACE_RESERVE: u64 = 64 * 1024 * 1024;

/// How often a paused follower looks whether syncing was resumed.
const PAUSE_CHECK: Duration = Duration::from_millis(250);

/// Follows the user's other devices' upload streams until `shutdown`; while the user paused
/// syncing (`progress`), it fetches nothing.
pub async fn run(
    api: Arc<ApiClient>,
    disk: OsDisk,
    prefetched: Prefetched<OsTemp>,
    progress: Progress,
    shutdown: CancellationToken,
) {
    let mut after = 0u64;
    let mut backoff = Duration::from_millis(500);
    let mut not_live_since: HashMap<(RelPath, String), Instant> = HashMap::new();
    loop {
        if progress.is_paused() {
            // Paused: transfers stop, and what was fetched ahead goes (fetched again, or after
            // the commit, once syncing resumes).
            prefetched.drop_all();
        }
        while progress.is_paused() {
            tokio::select! {
                () = tokio::time::sleep(PAUSE_CHECK) => {}
                () = shutdown.cancelled() => return,
            }
        }
        let answer = tokio::select! {
            answer = api.follow_streams(after, WAIT) => answer,
            () = paused(&progress) => continue,
            () = shutdown.cancelled() => return,
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                tracing::debug!(cause = %err, retry_in = ?backoff, "could not follow upload streams");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        // Parts not taken because syncing was paused meanwhile are asked for again once it
        // resumes.
        let mut interrupted = false;
        for info in &answer.parts {
            if progress.is_paused() {
                interrupted = true;
                break;
            }
            tokio::task::block_in_place(|| {
                follow_part(&api, &disk, &prefetched, &progress, info);
            });
            after = info.seq;
        }
        if interrupted {
            continue;
        }
        after = answer.seq;
        let live: HashSet<&str> = answer.live.iter().map(String::as_str).collect();
        let now = Instant::now();
        let held = prefetched.held();
        not_live_since.retain(|(path, stream), _| {
            held.iter()
                .any(|(p, s)| p == path && s.as_deref() == Some(stream.as_str()))
        });
        for (path, stream) in held {
            let Some(stream) = stream else { continue };
            if live.contains(stream.as_str()) {
                not_live_since.remove(&(path, stream));
                continue;
            }
            let since = *not_live_since
                .entry((path.clone(), stream.clone()))
                .or_insert(now);
            if now.duration_since(since) >= UNCLAIMED_GRACE {
                tracing::info!(%path, "dropped what was fetched of {path}: its upload ended without a version this folder took");
                prefetched.drop_stream(&path, &stream);
                not_live_since.remove(&(path, stream));
            }
        }
    }
}

/// Returns once syncing is paused.
async fn paused(progress: &Progress) {
    while !progress.is_paused() {
        tokio::time::sleep(PAUSE_CHECK).await;
    }
}

/// Takes one announced part: starts following its stream (offset 0) or continues it, and
/// fetches its chunks. Blocking IO.
fn follow_part(
    api: &Arc<ApiClient>,
    disk: &OsDisk,
    prefetched: &Prefetched<OsTemp>,
    progress: &Progress,
    info: &StreamPartInfo,
) {
    let part = &info.part;
    if part.size < STREAM_MIN_BYTES {
        return;
    }
    if part.offset == 0 {
        if !matches!(disk.stat(&part.path), Err(err) if err.kind() == std::io::ErrorKind::NotFound)
        {
            // A file is there: the engine fetches only what changed of it.
            return;
        }
        let replacing = prefetched.slot(&part.path);
        if replacing.is_none() && prefetched.len() >= MAX_FOLLOWED {
            return;
        }
        let room = disk
            .available_bytes()
            .is_ok_and(|free| free >= part.size.saturating_add(SPACE_RESERVE));
        if !room {
            tracing::debug!(path = %part.path, "not fetching ahead: not enough free space");
            return;
        }
        let temp = match disk.create_temp() {
            Ok(temp) => temp,
            Err(err) => {
                tracing::debug!(cause = %err, "could not create a temp file to fetch ahead");
                return;
            }
        };
        // The stream replaced stays readable while this one is followed (what it had of the
        // one before it, it copied into its own temp file).
        let earlier = replacing
            .and_then(|slot| lock(&slot).take())
            .filter(|old| !old.chunks.is_empty())
            .map(|old| Earlier {
                at: offsets(&old.chunks),
                temp: old.temp,
            });
        prefetched.start(
            &part.path,
            PrefetchedFile {
                stream: part.stream.clone(),
                temp,
                chunks: Vec::new(),
                announced: Vec::new(),
                shown: Some(progress.transfer(
                    &part.path,
                    syncstore_proto::daemon::Direction::Download,
                    part.size,
                )),
                earlier,
            },
        );
    }
    let Some(slot) = prefetched.slot(&part.path) else {
        return;
    };
    let mut held = lock(&slot);
    let Some(file) = held.as_mut() else { return };
    if file.stream != part.stream || file.announced_bytes() != part.offset {
        return;
    }
    file.announced.extend_from_slice(&part.chunks);
    let first = file.chunks.is_empty();
    let before = file.written_bytes();
    let fetched = fetch_announced(api, file);
    if let Some(shown) = &file.shown {
        shown.add(file.written_bytes() - before);
    }
    match fetched {
        Ok(()) if first => tracing::info!(
            path = %part.path,
            device = %info.device,
            size = part.size,
            fetched_bytes = file.written_bytes(),
            "receiving {} from {} while it is being uploaded: {} of its {} bytes fetched",
            part.path,
            info.device,
            file.written_bytes(),
            part.size
        ),
        Ok(()) => tracing::debug!(
            path = %part.path,
            seq = info.seq,
            fetched_bytes = file.written_bytes(),
            "fetched a part of an upload stream"
        ),
        Err(err) => {
            tracing::info!(path = %part.path, cause = %err, "stopped fetching ahead");
            held.take();
            drop(held);
            prefetched.drop_stream(&part.path, &part.stream);
        }
    }
}

/// Fetches and writes the announced chunks not written yet, in order, each verified; those the
/// replaced stream's temp file holds (`file.earlier`) are read from it.
fn fetch_announced(api: &Arc<ApiClient>, file: &mut PrefetchedFile<OsTemp>) -> Result<(), String> {
    let earlier = file.earlier.take();
    let in_earlier = |hash: &ChunkHash| {
        let earlier = earlier.as_ref()?;
        Some((&earlier.temp, *earlier.at.get(hash)?))
    };
    let written = file.chunks.len();
    let mut at: HashMap<ChunkHash, (u64, u32)> = HashMap::new();
    let mut offset = 0u64;
    for chunk in &file.chunks {
        at.entry(chunk.hash).or_insert((offset, chunk.len));
        offset += u64::from(chunk.len);
    }
    let mut asked = HashSet::new();
    let fetch: Vec<ChunkHash> = file.announced[written..]
        .iter()
        .map(|chunk| chunk.hash)
        .filter(|hash| !at.contains_key(hash) && in_earlier(hash).is_none() && asked.insert(*hash))
        .collect();
    let handle = tokio::runtime::Handle::current();
    let mut stream: Box<dyn Read + Send> = if fetch.is_empty() {
        Box::new(std::io::empty())
    } else {
        handle
            .block_on(Server::download_pack(api, fetch))
            .map_err(|err| err.to_string())?
    };
    let start = offset;
    let mut buf = Vec::new();
    for &chunk in &file.announced[written..] {
        buf.resize(chunk.len as usize, 0);
        if let Some(&(from, _)) = at.get(&chunk.hash) {
            file.temp
                .read_exact_at(&mut buf, from)
                .map_err(|err| err.to_string())?;
        } else if let Some((old, from)) = in_earlier(&chunk.hash) {
            old.read_exact_at(&mut buf, from)
                .map_err(|err| err.to_string())?;
            at.insert(chunk.hash, (offset, chunk.len));
        } else {
            let mut header = [0u8; FRAME_HEADER_LEN];
            stream
                .read_exact(&mut header)
                .map_err(|err| format!("the chunk stream ended early: {err}"))?;
            let (hash, len) = syncstore_proto::decode_frame_header(&header)?;
            if hash != chunk.hash || len != chunk.len {
                return Err(format!("the server sent chunk {hash} out of order"));
            }
            stream
                .read_exact(&mut buf)
                .map_err(|err| format!("the chunk stream ended early: {err}"))?;
            if syncstore_chunk::hash_chunk(&buf) != chunk.hash {
                return Err(format!("chunk {} did not verify", chunk.hash));
            }
            at.insert(chunk.hash, (offset, chunk.len));
        }
        file.temp
            .write_all(&buf)
            .map_err(|err| format!("could not write the temp file: {err}"))?;
        file.chunks.push(chunk);
        offset += u64::from(chunk.len);
    }
    file.temp.start_writeback(start, offset - start);
    file.earlier = earlier;
    Ok(())
}

/// Where each chunk of `chunks` (a file's, from its start) first starts.
fn offsets(chunks: &[ChunkRef]) -> HashMap<ChunkHash, u64> {
    let mut at = HashMap::new();
    let mut offset = 0u64;
    for chunk in chunks {
        at.entry(chunk.hash).or_insert(offset);
        offset += u64::from(chunk.len);
    }
    at
}

/// Locks a prefetched slot (a poisoned lock still holds a consistent file or none).
fn lock<T>(slot: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
