//! Batch mode of the `s3` action (beyond AWS): many messages an object, NDJSON, optionally
//! gzip or zstd, built on disk.
//!
//! Each batch-mode action has a folder under `[s3] spool_dir`/<instance>. A batch is
//! `<seq>.open` while it takes messages and `<seq>.ready` once closed; `<seq>.key` holds its
//! object key (the key template of its first message, the instance id and the sequence
//! number: instances of one shared group never write the same object), written before its
//! first message, and `next` the sequence number of the next batch.
//!
//! Invariants: a message is acknowledged only once its line is in the open batch and
//! synced to disk (so a crash loses nothing); an upload retried after a crash writes the
//! same key (so it never duplicates); what a crash left open or unsent is uploaded at
//! start. Closed batches are uploaded in the background, retried until they are stored.
//!
//! Each batch-mode action has a thread that owns its open batch (group commit): the lines
//! that arrive while it writes and syncs are appended next, with one sync for all of them.
//! The same thread closes a batch that reached `max_age`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc as queue;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use futures_util::StreamExt as _;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot};

use crate::rules::{Batch, Compression, S3Put};

/// A line for a spooler's thread, and where to say when it is synced.
struct Append {
    key: String,
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

/// A batch-mode action: its limits, its folder, the batch it is filling. Owned by its
/// thread.
struct Spooler {
    batch: Batch,
    /// In each batch's key, so that instances of one group never write the same object.
    instance: String,
    dir: PathBuf,
    open: Option<OpenBatch>,
    closed: mpsc::UnboundedSender<u64>,
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
    file: File,
    records: u64,
    bytes: u64,
    opened: Instant,
}

/// The spoolers of every batch-mode action, by spool name: the queues to their threads.
#[derive(Default)]
pub struct Spool {
    spoolers: HashMap<String, queue::Sender<Append>>,
}

impl Spool {
    /// Opens the folder of each batch-mode action under `root/<instance>`, and starts its
    /// uploader (which first sends what an earlier run left) and its thread. The threads
    /// end with the `Spool`.
    pub fn start(
        root: &Path,
        instance: &str,
        actions: &[(&S3Put, Client)],
    ) -> std::io::Result<Spool> {
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
            let pending = close_leftovers(&dir, &waiting)?;
            let (closed, uploads) = mpsc::unbounded_channel();
            let upload = Upload {
                client: client.clone(),
                bucket: put.bucket.clone(),
                dir: dir.clone(),
                compression: batch.compression,
                waiting: waiting.clone(),
            };
            tokio::spawn(upload.run(pending, uploads));
            let spooler = Spooler {
                batch,
                instance: instance.to_owned(),
                dir,
                open: None,
                closed,
                waiting,
            };
            let (appends, lines) = queue::channel();
            std::thread::Builder::new()
                .name(format!("topicrule-spool-{}", put.spool))
                .spawn(move || spooler.run(&lines))?;
            spoolers.insert(put.spool.clone(), appends);
        }
        Ok(Spool { spoolers })
    }

    /// Whether a batch-mode action with this spool runs.
    pub fn has(&self, spool: &str) -> bool {
        self.spoolers.contains_key(spool)
    }

    /// Appends a line to the action's open batch (opened for `key` when there is none);
    /// done once it is synced. A full batch is closed.
    pub async fn append(&self, spool: &str, key: &str, line: Vec<u8>) -> Result<(), String> {
        let spooler = self
            .spoolers
            .get(spool)
            .ok_or_else(|| format!("no spool `{spool}`"))?;
        let (done, result) = oneshot::channel();
        let append = Append {
            key: key.to_owned(),
            line,
            done,
        };
        spooler
            .send(append)
            .map_err(|_| "the spool's writer has stopped".to_owned())?;
        result
            .await
            .map_err(|_| "the spool's writer has stopped".to_owned())?
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
            let result = self.append_all(&appends).map_err(|e| e.to_string());
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
            batch.file.write_all(&append.line)?;
            batch.records += 1;
            batch.bytes += append.line.len() as u64;
            if batch.records >= self.batch.max_records || batch.bytes >= self.batch.max_bytes {
                self.close()?;
            }
        }
        match &self.open {
            Some(batch) => batch.file.sync_data(),
            None => Ok(()),
        }
    }

    /// A new batch: its sequence number and key are on disk before its first line.
    fn open_batch(&self, key: &str) -> std::io::Result<OpenBatch> {
        let next = self.dir.join("next");
        let seq = std::fs::read_to_string(&next)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let ext = self.batch.compression.extension();
        write_synced(
            &self.dir.join(format!("{seq:012}.key")),
            &format!("{key}-{}-{seq:06}.ndjson{ext}", self.instance),
        )?;
        write_synced(&next, &(seq + 1).to_string())?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{seq:012}.open")))?;
        sync_dir(&self.dir)?;
        Ok(OpenBatch {
            seq,
            file,
            records: 0,
            bytes: 0,
            opened: Instant::now(),
        })
    }

    /// Syncs the open batch and marks it ready for upload.
    fn close(&mut self) -> std::io::Result<()> {
        let Some(batch) = self.open.take() else {
            return Ok(());
        };
        batch.file.sync_data()?;
        let name = |ext: &str| self.dir.join(format!("{:012}.{ext}", batch.seq));
        std::fs::rename(name("open"), name("ready"))?;
        sync_dir(&self.dir)?;
        self.waiting.closed(batch.bytes);
        let _ = self.closed.send(batch.seq);
        Ok(())
    }
}

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

/// At start: a batch a crash left open is closed; returns every batch to upload, in order.
fn close_leftovers(dir: &Path, waiting: &Waiting) -> std::io::Result<Vec<u64>> {
    let mut pending = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
            continue;
        };
        let Ok(seq) = stem.to_string_lossy().parse::<u64>() else {
            continue;
        };
        match ext.to_str() {
            Some("open") => std::fs::rename(&path, path.with_extension("ready"))?,
            Some("ready") => {}
            _ => continue,
        }
        let bytes = std::fs::metadata(path.with_extension("ready"))?.len();
        waiting.closed(bytes);
        pending.push(seq);
    }
    sync_dir(dir)?;
    pending.sort_unstable();
    Ok(pending)
}

fn write_synced(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

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
}

impl Upload {
    /// Uploads what an earlier run left, then each batch as it closes; at most
    /// `MAX_UPLOADS` at once (each holds its batch in memory, at most `max_bytes`).
    async fn run(self, pending: Vec<u64>, mut queue: mpsc::UnboundedReceiver<u64>) {
        let closed = futures_util::stream::poll_fn(|cx| queue.poll_recv(cx));
        futures_util::stream::iter(pending)
            .chain(closed)
            .for_each_concurrent(MAX_UPLOADS, |seq| self.until_stored(seq))
            .await;
    }

    /// Retries with backoff (at most a minute apart) until the store has the batch; then
    /// removes it from the spool.
    async fn until_stored(&self, seq: u64) {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.put(seq).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(
                        "batch {seq} of `{}`: {e}; retrying in {delay:?}",
                        self.dir.display()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    async fn put(&self, seq: u64) -> Result<(), String> {
        let name = |ext: &str| self.dir.join(format!("{seq:012}.{ext}"));
        // Reading and compressing a batch (up to `max_bytes`) blocks: off the runtime's
        // thread, which carries every message meanwhile.
        let (key_path, data_path, compression) = (name("key"), name("ready"), self.compression);
        let (key, body, bytes) = tokio::task::spawn_blocking(move || {
            let key = std::fs::read_to_string(key_path)
                .map_err(|e| format!("cannot read its key: {e}"))?;
            let data = std::fs::read(data_path).map_err(|e| format!("cannot read it: {e}"))?;
            let bytes = data.len() as u64;
            let body =
                compress(compression, data).map_err(|e| format!("cannot compress it: {e}"))?;
            Ok::<_, String>((key, body, bytes))
        })
        .await
        .map_err(|e| format!("cannot read it: {e}"))??;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot put `s3://{}/{key}`: {}",
                    self.bucket,
                    super::s3::explain(&e)
                )
            })?;
        tracing::debug!("stored batch `s3://{}/{key}`", self.bucket);
        let _ = std::fs::remove_file(name("ready"));
        let _ = std::fs::remove_file(name("key"));
        self.waiting.stored(bytes);
        Ok(())
    }
}

fn compress(compression: Compression, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::None => Ok(data),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&data)?;
            encoder.finish()
        }
        Compression::Zstd => zstd::encode_all(&data[..], 3),
    }
}
