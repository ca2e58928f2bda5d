//! The client's [`Server`] and [`Clock`] seams over the simulated server: the network.
//!
//! Each request first waits a seeded number of scheduler turns (so the requests of devices
//! and of one device's uploads in flight interleave, and answers arrive out of order), then is
//! delivered, lost before the server sees it, or carried out with its answer lost (4 % each
//! while faults are on); a lost request crashes the device 30 % of the time.

use crate::shared::{Shared, Sim};
use rand::Rng;
use std::time::Duration;
use syncstore_client::http::ApiError;
use syncstore_client::seams::{Clock, Server};
use syncstore_proto::{
    decode_frame_header, encode_frame_header, ChangesResponse, ChunkHash, Cursor, JournalTag, Op,
    OpsResponse, TreeResponse, UserName, WhoAmI, FRAME_HEADER_LEN,
};

/// Device `idx`'s connection to the server.
#[derive(Clone)]
pub struct SimServer {
    shared: Shared,
    idx: usize,
}

impl SimServer {
    pub fn new(shared: Shared, idx: usize) -> SimServer {
        SimServer { shared, idx }
    }

    /// One request: `what` for the trace, `serve` what the server does.
    async fn call<T>(
        &self,
        what: String,
        serve: impl FnOnce(&mut Sim, usize) -> Result<T, ApiError> + Send,
    ) -> Result<T, ApiError> {
        let turns = self.shared.lock().net_rng.gen_range(0..3);
        for _ in 0..turns {
            tokio::task::yield_now().await;
        }
        let mut sim = self.shared.lock();
        let name = sim.devices[self.idx].name.clone();
        if sim.devices[self.idx].crashed {
            return Err(lost("the process is gone"));
        }
        let roll: f64 = if sim.faults { sim.net_rng.gen() } else { 1.0 };
        let result = if roll < 0.04 {
            sim.log(format!("{name} {what} -> LOST before the server"));
            Err(lost("the request was lost"))
        } else {
            let answer = serve(&mut sim, self.idx);
            if roll < 0.08 {
                sim.log(format!("{name} {what} -> carried out, answer LOST"));
                Err(lost("the answer was lost"))
            } else {
                answer
            }
        };
        if result.is_err() && roll < 0.08 && sim.net_rng.gen_bool(0.3) {
            sim.crash(self.idx, "after losing a request");
        }
        result
    }
}

fn lost(message: &str) -> ApiError {
    ApiError::Interrupted {
        url: "sim://server".to_owned(),
        message: message.to_owned(),
    }
}

fn status(status: u16, message: String) -> ApiError {
    ApiError::Status { status, message }
}

fn show_op(op: &Op) -> String {
    match op {
        Op::PutFile { path, base, .. } => format!("PutFile {path} {base:?}"),
        Op::SetMode {
            path,
            base,
            executable,
        } => format!("SetMode {path}@{base} x={executable}"),
        Op::MakeDir { path, .. } => format!("MakeDir {path}"),
        Op::Delete { path, base } => format!("Delete {path}@{base}"),
        Op::Move { from, to, base } => format!("Move {from}@{base} -> {to}"),
    }
}

impl Server for SimServer {
    type Download = std::io::Cursor<Vec<u8>>;

    fn describe(&self) -> String {
        "sim://server".to_owned()
    }

    async fn whoami(&self) -> Result<WhoAmI, ApiError> {
        self.call("whoami".to_owned(), |sim, idx| {
            Ok(WhoAmI {
                user: UserName::new("sim").expect("valid"),
                device: sim.devices[idx].name.clone(),
                namespace: sim.server.namespace(),
            })
        })
        .await
    }

    async fn tree(&self) -> Result<TreeResponse, ApiError> {
        self.call("tree".to_owned(), |sim, _| {
            let (cursor, entries) = sim.server.tree();
            let now_ms = sim.now_ms;
            Ok(TreeResponse {
                cursor,
                cursor_tag: sim.server.tag_at(cursor).unwrap_or_default(),
                namespace: sim.server.namespace(),
                entries,
                locks: sim.server.locks(now_ms),
            })
        })
        .await
    }

    async fn changes(
        &self,
        since: Cursor,
        known: Option<(Cursor, JournalTag)>,
    ) -> Result<ChangesResponse, ApiError> {
        self.call(format!("changes since {since}"), move |sim, idx| {
            let diverged =
                known.is_some_and(|(cursor, tag)| sim.server.tag_at(cursor) != Some(tag));
            let namespace = sim.server.namespace();
            let page = sim.net_rng.gen_range(1..=8);
            let page = sim.server.changes_page(since, page);
            if page.reset {
                let name = sim.devices[idx].name.clone();
                sim.log(format!(
                    "{name} changes since {since} -> journal reset (the server is at {})",
                    page.cursor
                ));
            }
            Ok(ChangesResponse {
                cursor: page.cursor,
                changes: page.changes,
                more: page.more,
                reset: page.reset,
                cursor_tag: page.cursor_tag,
                namespace,
                diverged,
                wanted: sim.server.wanted(),
                peeked: 0,
            })
        })
        .await
    }

    async fn missing_chunks(&self, hashes: Vec<ChunkHash>) -> Result<Vec<ChunkHash>, ApiError> {
        self.call(
            format!("missing? {} chunks", hashes.len()),
            move |sim, _| {
                Ok(hashes
                    .into_iter()
                    .filter(|hash| !sim.server.has_chunk(hash))
                    .collect())
            },
        )
        .await
    }

    async fn upload_pack(&self, pack: bytes::Bytes, durable: bool) -> Result<(), ApiError> {
        let what = format!(
            "upload {} bytes{}",
            pack.len(),
            if durable { " (repair)" } else { "" }
        );
        self.call(what, move |sim, _| {
            let mut chunks = Vec::new();
            let mut at = 0;
            while at < pack.len() {
                let header: [u8; FRAME_HEADER_LEN] = pack
                    .get(at..at + FRAME_HEADER_LEN)
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| status(400, "truncated frame".to_owned()))?;
                let (hash, len) = decode_frame_header(&header).map_err(|m| status(400, m))?;
                let start = at + FRAME_HEADER_LEN;
                let bytes = pack
                    .get(start..start + len as usize)
                    .ok_or_else(|| status(400, "truncated frame".to_owned()))?;
                if syncstore_chunk::hash_chunk(bytes) != hash {
                    return Err(status(422, format!("chunk {hash} does not match its hash")));
                }
                chunks.push((hash, bytes.to_vec()));
                at = start + len as usize;
            }
            for (hash, bytes) in chunks {
                sim.server.put_chunk(hash, bytes, durable);
            }
            Ok(())
        })
        .await
    }

    /// The simulated devices follow no upload streams (a stream only announces; the commit is
    /// what the simulation checks), so an announcement reaches nobody.
    async fn announce_stream(&self, _part: syncstore_proto::StreamPart) -> Result<(), ApiError> {
        Ok(())
    }

    async fn download_pack(&self, hashes: Vec<ChunkHash>) -> Result<Self::Download, ApiError> {
        self.call(
            format!("download {} chunks", hashes.len()),
            move |sim, _| {
                let missing: Vec<ChunkHash> = hashes
                    .iter()
                    .filter(|hash| sim.server.chunk(hash).is_none())
                    .copied()
                    .collect();
                if let Some(first) = missing.first() {
                    let message = format!("unknown chunk {first}");
                    sim.server.want(&missing);
                    return Err(status(404, message));
                }
                let mut out = Vec::new();
                for hash in &hashes {
                    let bytes = sim.server.chunk(hash).expect("checked above");
                    out.extend_from_slice(&encode_frame_header(hash, bytes.len() as u32));
                    out.extend_from_slice(bytes);
                }
                Ok(std::io::Cursor::new(out))
            },
        )
        .await
    }

    async fn chunk_signature(&self, bases: Vec<ChunkHash>) -> Result<Vec<u8>, ApiError> {
        self.call(
            format!("signature of {} chunks", bases.len()),
            move |sim, _| {
                let base = sim_bases(sim, &bases)?;
                Ok(syncstore_chunk::delta::signature(&base))
            },
        )
        .await
    }

    async fn upload_delta(
        &self,
        target: ChunkHash,
        bases: Vec<ChunkHash>,
        delta: bytes::Bytes,
    ) -> Result<(), ApiError> {
        let what = format!("patch {target} ({} bytes)", delta.len());
        self.call(what, move |sim, idx| {
            let base = sim_bases(sim, &bases)?;
            let chunk = syncstore_chunk::delta::apply(&base, &delta, target)
                .map_err(|err| status(422, err.to_string()))?;
            sim.server.put_chunk(target, chunk, false);
            let name = sim.devices[idx].name.clone();
            sim.log(format!("{name} PATCH STORED {target}"));
            Ok(())
        })
        .await
    }

    async fn download_delta(
        &self,
        target: ChunkHash,
        bases: Vec<ChunkHash>,
    ) -> Result<Vec<u8>, ApiError> {
        self.call(format!("delta of {target}"), move |sim, idx| {
            let base = sim_bases(sim, &bases)?;
            let Some(chunk) = sim.server.chunk(&target) else {
                sim.server.want(&[target]);
                return Err(status(404, format!("unknown chunk {target}")));
            };
            let delta = syncstore_chunk::delta::delta_between(&base, chunk);
            let name = sim.devices[idx].name.clone();
            sim.log(format!("{name} DELTA SENT {target}"));
            Ok(delta)
        })
        .await
    }

    async fn ops(
        &self,
        ops: Vec<Op>,
        known: Option<(Cursor, JournalTag)>,
    ) -> Result<OpsResponse, ApiError> {
        let shown: Vec<String> = ops.iter().map(show_op).collect();
        let what = format!("ops [{}]", shown.join(", "));
        self.call(what.clone(), move |sim, idx| {
            let device = sim.devices[idx].name.clone();
            let now_ms = sim.now_ms;
            let response = sim.server.apply_ops(&device, &ops, known, now_ms);
            let statuses: Vec<String> = response
                .results
                .iter()
                .map(|r| r.status.to_string())
                .collect();
            sim.log(format!("{device} {what} -> [{}]", statuses.join(", ")));
            Ok(response)
        })
        .await
    }
}

/// The bases of a delta, concatenated: 404 when the server lacks one (as the real server).
fn sim_bases(sim: &Sim, bases: &[ChunkHash]) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    for hash in bases {
        let bytes = sim
            .server
            .chunk(hash)
            .ok_or_else(|| status(404, format!("unknown chunk {hash}")))?;
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// The simulated clock: one millisecond counter for wall and monotonic time.
pub struct SimClock {
    shared: Shared,
}

impl SimClock {
    pub fn new(shared: Shared) -> SimClock {
        SimClock { shared }
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.shared.lock().now_ms
    }

    fn local_now(&self) -> chrono::DateTime<chrono::FixedOffset> {
        let ms = self.now_ms();
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("in range")
            .fixed_offset()
    }

    fn monotonic(&self) -> Duration {
        Duration::from_millis(self.now_ms().max(0) as u64)
    }
}
