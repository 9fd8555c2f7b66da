//! Batch mode of the `s3` action (beyond AWS): many messages an object, NDJSON, optionally
//! gzip or zstd, built on disk.
//!
//! Each batch-mode action has a folder under `[s3] spool_dir`/<instance>. A batch is
//! `<seq>.open` while it takes messages and `<seq>.ready` once closed; `<seq>.key` holds its
//! object key (the key template of its first message, the instance id and the sequence
//! number: instances of one shared group never write the same object), written before its
//! first message, and `next` the first sequence number not yet given (reserved
//! `SEQ_BLOCK` at a time: a restart skips what was reserved, never reuses a number).
//!
//! Invariants: a message is acknowledged only once its line is in the open batch and
//! synced to disk (so a crash loses nothing); an upload retried after a crash writes the
//! same key (so it never duplicates); what a crash left open or unsent is uploaded at
//! start. Closed batches are uploaded in the background, retried until they are stored.
//! The spool folder is the upload queue: the uploader takes its `.ready` batches, oldest
//! first, when one closes and when an upload ends, so nothing but the disk holds it.
//!
//! Each batch-mode action has a thread that owns its open batch (group commit): the lines
//! that arrive while it writes and syncs are appended next, with one sync for all of them.
//! The same thread closes a batch that reached `max_age`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as queue;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Batch, Compression, S3Put};
use crate::actions::durable::{sync_dir, whole_lines, ZerosAhead};
use crate::backoff::Backoff;

/// A line for a spooler's thread, and where to say when it is synced.
struct Append {
    key: String,
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

/// Why a line was not spooled. One error answers every line of that write (hence the
/// shared `io::Error`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("no spool `{0}`")]
    Unknown(String),
    #[error("the spool's writer has stopped")]
    Stopped,
    #[error("{0}")]
    Io(#[source] Arc<std::io::Error>),
}

/// Why a batch was not stored this time (it is tried again).
#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error("cannot read its key: {0}")]
    Key(#[source] std::io::Error),
    #[error("cannot read or compress it: {0}")]
    Read(#[source] std::io::Error),
    #[error("cannot read it: {0}")]
    Reader(#[source] tokio::task::JoinError),
    #[error("cannot {doing} `s3://{bucket}/{key}`: {why}")]
    Store {
        doing: &'static str,
        bucket: String,
        key: String,
        why: String,
    },
}

/// A batch-mode action: its limits, its folder, the batch it is filling. Owned by its
/// thread.
struct Spooler {
    batch: Batch,
    /// In each batch's key, so that instances of one group never write the same object.
    instance: String,
    dir: PathBuf,
    open: Option<OpenBatch>,
    /// The next sequence number, and the first one `next` has not reserved yet.
    seq: u64,
    reserved: u64,
    /// Tells the uploader a batch is ready.
    closed: watch::Sender<()>,
    waiting: Waiting,
}

/// The batches closed and not stored yet, and their bytes: the spool's metrics.
#[derive(Clone)]
struct Waiting {
    batches: Gauge,
    bytes: Gauge,
}

impl Waiting {
    fn closed(&self, bytes: u64) {
        self.batches.inc();
        self.bytes.inc_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn stored(&self, bytes: u64) {
        self.batches.dec();
        self.bytes.dec_by(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

struct OpenBatch {
    seq: u64,
    /// Buffered: the lines of one group go to the disk in one write, before its sync.
    file: BufWriter<File>,
    /// Zeros written ahead of its lines, cut off at `close`.
    zeros: ZerosAhead,
    records: u64,
    /// The length of its lines.
    bytes: u64,
    opened: Instant,
}

/// The spoolers of every batch-mode action, by spool name: the queues to their threads;
/// and their uploaders.
#[derive(Default)]
pub struct Spool {
    spoolers: HashMap<String, queue::Sender<Append>>,
    uploads: TaskTracker,
    /// Cancelled at `close`: no upload starts, no retry waits.
    stop: CancellationToken,
}

impl Spool {
    /// Opens the folder of each batch-mode action under `root/<instance>`, and starts its
    /// uploader (which first sends what an earlier run left) and its thread. The threads
    /// end with the `Spool`, the uploaders at `close`.
    pub fn start(
        root: &Path,
        instance: &str,
        actions: &[(&S3Put, Client)],
    ) -> std::io::Result<Spool> {
        let (uploads, stop) = (TaskTracker::new(), CancellationToken::new());
        let mut spoolers = HashMap::new();
        for (put, client) in actions {
            let Some(batch) = put.batch.clone() else {
                continue;
            };
            let dir = root.join(instance).join(&put.spool);
            adopt_legacy(&root.join(&put.spool), &dir)?;
            std::fs::create_dir_all(&dir)?;
            let (batches, bytes) = crate::metrics::spool_gauges(&put.spool);
            let waiting = Waiting { batches, bytes };
            close_leftovers(&dir, &waiting)?;
            let (closed, ready) = watch::channel(());
            let upload = Upload {
                client: client.clone(),
                bucket: put.bucket.clone(),
                dir: dir.clone(),
                compression: batch.compression,
                waiting: waiting.clone(),
                stop: stop.clone(),
            };
            uploads.spawn(upload.run(ready));
            let spooler = Spooler {
                batch,
                instance: instance.to_owned(),
                dir,
                open: None,
                seq: 0,
                reserved: 0,
                closed,
                waiting,
            };
            let (appends, lines) = queue::channel();
            std::thread::Builder::new()
                .name(format!("topicrule-spool-{}", put.spool))
                .spawn(move || spooler.run(&lines))?;
            spoolers.insert(put.spool.clone(), appends);
        }
        Ok(Spool {
            spoolers,
            uploads,
            stop,
        })
    }

    /// Stops the uploaders: the uploads under way get `within` to end; what is not stored
    /// stays in the spool, and the next start sends it.
    pub async fn close(&self, within: Duration) {
        self.stop.cancel();
        self.uploads.close();
        if tokio::time::timeout(within, self.uploads.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "an S3 batch upload did not end within {within:?}; its batch stays in the spool and is sent at the next start"
            );
        }
    }

    /// Whether a batch-mode action with this spool runs.
    pub fn has(&self, spool: &str) -> bool {
        self.spoolers.contains_key(spool)
    }

    /// Appends a line to the action's open batch (opened for `key` when there is none);
    /// done once it is synced. A full batch is closed.
    pub async fn append(&self, spool: &str, key: &str, line: Vec<u8>) -> Result<(), SpoolError> {
        let spooler = self
            .spoolers
            .get(spool)
            .ok_or_else(|| SpoolError::Unknown(spool.to_owned()))?;
        let (done, result) = oneshot::channel();
        let append = Append {
            key: key.to_owned(),
            line,
            done,
        };
        spooler.send(append).map_err(|_| SpoolError::Stopped)?;
        result.await.map_err(|_| SpoolError::Stopped)?
    }
}

impl Spooler {
    /// Takes what is queued, appends it, syncs once, answers; closes a batch at its age.
    fn run(mut self, lines: &queue::Receiver<Append>) {
        loop {
            if self
                .open
                .as_ref()
                .is_some_and(|b| b.opened.elapsed() >= self.batch.max_age)
            {
                if let Err(e) = self.close() {
                    tracing::error!("cannot close a batch in `{}`: {e}", self.dir.display());
                }
            }
            let age = self.open.as_ref().map(|b| b.opened.elapsed());
            let first = match age {
                Some(age) => match lines.recv_timeout(self.batch.max_age.saturating_sub(age)) {
                    Ok(first) => first,
                    Err(queue::RecvTimeoutError::Timeout) => continue,
                    Err(queue::RecvTimeoutError::Disconnected) => return,
                },
                None => match lines.recv() {
                    Ok(first) => first,
                    Err(_) => return,
                },
            };
            let appends: Vec<Append> = std::iter::once(first).chain(lines.try_iter()).collect();
            let result = self
                .append_all(&appends)
                .map_err(|e| SpoolError::Io(Arc::new(e)));
            for append in appends {
                let _ = append.done.send(result.clone());
            }
        }
    }

    fn append_all(&mut self, appends: &[Append]) -> std::io::Result<()> {
        for append in appends {
            if self.open.is_none() {
                self.open = Some(self.open_batch(&append.key)?);
            }
            let batch = self.open.as_mut().expect("a batch is open");
            let end = batch.bytes + append.line.len() as u64;
            batch.zeros.cover(batch.file.get_ref(), end)?;
            batch.file.write_all(&append.line)?;
            batch.records += 1;
            batch.bytes += append.line.len() as u64;
            if batch.records >= self.batch.max_records || batch.bytes >= self.batch.max_bytes {
                self.close()?;
            }
        }
        match &mut self.open {
            Some(batch) => batch.sync(),
            None => Ok(()),
        }
    }

    /// A new batch: its sequence number and key are on disk before its first line.
    fn open_batch(&mut self, key: &str) -> std::io::Result<OpenBatch> {
        let seq = self.next_seq()?;
        let ext = self.batch.compression.extension();
        write_synced(
            &self.dir.join(format!("{seq:012}.key")),
            &format!("{key}-{}-{seq:06}.ndjson{ext}", self.instance),
        )?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(self.dir.join(format!("{seq:012}.open")))?;
        sync_dir(&self.dir)?;
        Ok(OpenBatch {
            seq,
            file: BufWriter::with_capacity(GROUP_BUFFER, file),
            zeros: ZerosAhead::default(),
            records: 0,
            bytes: 0,
            opened: Instant::now(),
        })
    }

    /// A sequence number never given before, in this run or an earlier one: `next` on
    /// disk reserves a block of them at a time.
    fn next_seq(&mut self) -> std::io::Result<u64> {
        if self.seq == self.reserved {
            let next = self.dir.join("next");
            let stored = std::fs::read_to_string(&next)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0);
            self.seq = self.seq.max(stored);
            self.reserved = self.seq + SEQ_BLOCK;
            write_synced(&next, &self.reserved.to_string())?;
        }
        self.seq += 1;
        Ok(self.seq - 1)
    }

    /// Syncs the open batch and marks it ready for upload. The rename needs no sync of the
    /// folder: a crash that loses it leaves the batch `.open`, and the next start closes
    /// it, so the batch is uploaded either way (under the same key).
    fn close(&mut self) -> std::io::Result<()> {
        let Some(mut batch) = self.open.take() else {
            return Ok(());
        };
        batch.file.flush()?;
        batch.file.get_ref().set_len(batch.bytes)?;
        batch.sync()?;
        let name = |ext: &str| self.dir.join(format!("{:012}.{ext}", batch.seq));
        std::fs::rename(name("open"), name("ready"))?;
        self.waiting.closed(batch.bytes);
        self.closed.send_replace(());
        Ok(())
    }
}

impl OpenBatch {
    /// Writes what is buffered and syncs it.
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }
}

/// The write buffer of an open batch: lines beyond it are written as it fills, all of them
/// before the group's sync.
const GROUP_BUFFER: usize = 256 * 1024;

/// A spool folder of a version without instance folders (`root/<spool>`) becomes this
/// instance's, so that what it holds is uploaded; its batches keep the keys they were given.
fn adopt_legacy(legacy: &Path, dir: &Path) -> std::io::Result<()> {
    if legacy.join("next").is_file() && !dir.exists() {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(legacy, dir)?;
        tracing::info!(
            "moved the spool `{}` to `{}`",
            legacy.display(),
            dir.display()
        );
    }
    Ok(())
}

/// At start: a batch a crash left open is closed, and what waits for upload counted.
fn close_leftovers(dir: &Path, waiting: &Waiting) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
            continue;
        };
        if stem.to_string_lossy().parse::<u64>().is_err() {
            continue;
        }
        match ext.to_str() {
            Some("open") => {
                trim_leftover(&path)?;
                std::fs::rename(&path, path.with_extension("ready"))?
            }
            Some("ready") => {}
            _ => continue,
        }
        let bytes = std::fs::metadata(path.with_extension("ready"))?.len();
        waiting.closed(bytes);
    }
    sync_dir(dir)
}

/// Cuts a batch a crash left open after its last whole line (see `durable`): every line
/// acknowledged is kept.
fn trim_leftover(path: &Path) -> std::io::Result<()> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let whole = whole_lines(&mut file)?;
    if whole < file.metadata()?.len() {
        file.set_len(whole)?;
        file.sync_all()?;
    }
    Ok(())
}

/// The batches of `dir` ready for upload, oldest first.
fn ready_batches(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut ready: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != "ready" {
                return None;
            }
            path.file_stem()?.to_str()?.parse().ok()
        })
        .collect();
    ready.sort_unstable();
    Ok(ready)
}

fn write_synced(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// How many sequence numbers `next` reserves at once: one synced write per this many
/// batches.
const SEQ_BLOCK: u64 = 64;

/// Batches of one action uploaded at once: a store far away (tens of milliseconds a put)
/// then keeps up with a fast stream.
const MAX_UPLOADS: usize = 4;

/// Uploads the closed batches of one action.
struct Upload {
    client: Client,
    bucket: String,
    dir: PathBuf,
    compression: Compression,
    waiting: Waiting,
    stop: CancellationToken,
}

impl Upload {
    /// Uploads the spool's ready batches, what an earlier run left first, oldest first; at
    /// most `MAX_UPLOADS` at once (each holds a few parts in memory, see `PART_SIZE`).
    /// Looks again when a batch closes (`ready` changes) and when an upload ends; ends at
    /// `stop` once the uploads under way ended.
    async fn run(self, mut ready: watch::Receiver<()>) {
        let mut uploading = HashSet::new();
        let mut uploads = FuturesUnordered::new();
        // Whether the spooler may close more batches.
        let mut spooling = true;
        loop {
            if !self.stop.is_cancelled() && uploads.len() < MAX_UPLOADS {
                match ready_batches(&self.dir) {
                    Ok(batches) => {
                        for seq in batches {
                            if uploads.len() < MAX_UPLOADS && uploading.insert(seq) {
                                uploads.push(self.until_stored(seq));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!("cannot read the spool `{}`: {e}", self.dir.display())
                    }
                }
            }
            tokio::select! {
                Some(seq) = uploads.next() => {
                    uploading.remove(&seq);
                }
                changed = ready.changed(), if spooling && !self.stop.is_cancelled() => {
                    spooling = changed.is_ok();
                }
                () = self.stop.cancelled(), if uploads.is_empty() => return,
            }
        }
    }

    /// Retries with backoff (at most a minute apart) until the store has the batch, then
    /// removes it from the spool; or until `stop`. The batch's sequence number.
    async fn until_stored(&self, seq: u64) -> u64 {
        let mut backoff = Backoff::sink();
        loop {
            match self.put(seq).await {
                Ok(()) => return seq,
                Err(e) => {
                    let delay = backoff.pause();
                    tracing::warn!(
                        "batch {seq} of `{}`: {e}; retrying in {delay:?}",
                        self.dir.display()
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.stop.cancelled() => return seq,
                    }
                }
            }
        }
    }

    /// Stores one batch: read, compressed and sent a part at a time (`PART_SIZE`), so that
    /// a batch of any size holds at most a few parts in memory. A batch of one part is one
    /// put; a bigger one a multipart upload, aborted when a part fails (the retry starts
    /// over, under the same key).
    async fn put(&self, seq: u64) -> Result<(), UploadError> {
        let name = |ext: &str| self.dir.join(format!("{seq:012}.{ext}"));
        let key = tokio::fs::read_to_string(name("key"))
            .await
            .map_err(UploadError::Key)?;
        // Reading and compressing block: off the runtime's thread, which carries every
        // message meanwhile.
        let (parts_out, mut parts) = mpsc::channel(1);
        let (data_path, compression) = (name("ready"), self.compression);
        let reading =
            tokio::task::spawn_blocking(move || write_parts(&data_path, compression, parts_out));
        let first = parts.recv().await;
        let second = parts.recv().await;
        let (bytes, parts) = match second {
            // One part: the reading is over.
            None => {
                let bytes = read(reading).await?;
                self.put_whole(&key, first.unwrap_or_default()).await?;
                (bytes, 1)
            }
            Some(second) => {
                let rest = futures_util::stream::poll_fn(|cx| parts.poll_recv(cx));
                let all = futures_util::stream::iter(first.into_iter().chain([second])).chain(rest);
                self.put_parts(&key, all, reading).await?
            }
        };
        tracing::debug!(
            "stored batch `s3://{}/{key}` ({parts} part(s))",
            self.bucket
        );
        let _ = std::fs::remove_file(name("ready"));
        let _ = std::fs::remove_file(name("key"));
        self.waiting.stored(bytes);
        Ok(())
    }

    async fn put_whole(&self, key: &str, body: Vec<u8>) -> Result<(), UploadError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.failed(key, "put", super::explain(&e)))?;
        Ok(())
    }

    /// A multipart upload of `parts`, completed once `reading` made every one of them;
    /// aborted (best effort) when a step fails. The bytes read and the parts sent.
    async fn put_parts(
        &self,
        key: &str,
        parts: impl futures_util::Stream<Item = Vec<u8>>,
        reading: Reading,
    ) -> Result<(u64, usize), UploadError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.failed(key, "start a multipart upload of", super::explain(&e)))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = self.send_parts(key, &upload_id, parts, reading).await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        parts: impl futures_util::Stream<Item = Vec<u8>>,
        reading: Reading,
    ) -> Result<(u64, usize), UploadError> {
        let mut parts = std::pin::pin!(parts);
        let mut done = Vec::new();
        while let Some(body) = parts.next().await {
            let number = i32::try_from(done.len() + 1).unwrap_or(i32::MAX);
            let sent = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| self.failed(key, "upload a part of", super::explain(&e)))?;
            done.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(sent.e_tag().map(str::to_owned))
                    .build(),
            );
        }
        // A batch read only in part must not become the object.
        let bytes = read(reading).await?;
        let count = done.len();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                self.failed(key, "complete the multipart upload of", super::explain(&e))
            })?;
        Ok((bytes, count))
    }

    fn failed(&self, key: &str, doing: &'static str, why: String) -> UploadError {
        UploadError::Store {
            doing,
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            why,
        }
    }
}

/// The reading and compressing of a batch, on a blocking thread: the bytes it read.
type Reading = tokio::task::JoinHandle<std::io::Result<u64>>;

async fn read(reading: Reading) -> Result<u64, UploadError> {
    reading
        .await
        .map_err(UploadError::Reader)?
        .map_err(UploadError::Read)
}

/// The size of the parts a batch is sent in: above S3's minimum part size (5 MiB), and the
/// most an upload holds in memory, a few times over (a part being sent, one being made).
const PART_SIZE: usize = 8 << 20;

/// Reads the batch at `path`, compresses it and sends it to `parts` a part at a time (the
/// last one, possibly empty, when the reading ends); the bytes read.
fn write_parts(
    path: &Path,
    compression: Compression,
    parts: mpsc::Sender<Vec<u8>>,
) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    let out = Parts {
        buffer: Vec::new(),
        parts,
        sent: 0,
    };
    let (bytes, out) = match compression {
        Compression::None => {
            let mut out = out;
            (std::io::copy(&mut file, &mut out)?, out)
        }
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            (std::io::copy(&mut file, &mut encoder)?, encoder.finish()?)
        }
        Compression::Zstd => {
            let mut encoder = zstd::Encoder::new(out, 3)?;
            (std::io::copy(&mut file, &mut encoder)?, encoder.finish()?)
        }
    };
    out.end()?;
    Ok(bytes)
}

/// A writer that cuts what it is given into parts of `PART_SIZE` and sends them.
struct Parts {
    buffer: Vec<u8>,
    parts: mpsc::Sender<Vec<u8>>,
    sent: usize,
}

impl Parts {
    fn send(&mut self) -> std::io::Result<()> {
        let part = std::mem::take(&mut self.buffer);
        self.sent += 1;
        self.parts
            .blocking_send(part)
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }

    /// Sends the last part: what is left, or an empty body when nothing was sent (an empty
    /// batch); never an empty part after others.
    fn end(mut self) -> std::io::Result<()> {
        if self.sent == 0 || !self.buffer.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl Write for Parts {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = PART_SIZE - self.buffer.len();
        let taken = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == PART_SIZE {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trimmed(content: &[u8]) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("topicrule-trim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.open", content.len()));
        std::fs::write(&path, content).unwrap();
        trim_leftover(&path).unwrap();
        let left = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let _ = std::fs::remove_dir(&dir);
        left
    }

    #[test]
    fn a_leftover_batch_keeps_its_whole_lines_and_loses_the_rest() {
        let lines = b"{\"a\":1}\n{\"a\":2}\n";
        // Closed cleanly, or left with no zeros ahead.
        assert_eq!(trimmed(lines), lines);
        // The zeros written ahead of the lines.
        assert_eq!(trimmed(&[&lines[..], &[0; 100]].concat()), lines);
        // A line cut short, with or without zeros after it.
        assert_eq!(trimmed(&[&lines[..], b"{\"a\":3"].concat()), lines);
        assert_eq!(trimmed(&[&lines[..], b"{\"a\"", &[0; 9]].concat()), lines);
        // A page of an unsynced group lost before a later one: nothing after the gap.
        let gap = [
            &lines[..],
            b"{\"a\":",
            &[0; 8],
            b"4}\n{\"a\":5}\n",
            &[0; 16],
        ]
        .concat();
        assert_eq!(trimmed(&gap), lines);
        // Nothing whole at all.
        assert_eq!(trimmed(b"{\"a\""), b"");
        assert_eq!(trimmed(&[0; 64]), b"");
        // Past a block of the reading.
        let many = b"{\"a\":1}\n".repeat(20_000);
        assert_eq!(
            trimmed(&[&many[..], b"{\"a\"", &[0; 70_000]].concat()),
            many
        );
    }
}
