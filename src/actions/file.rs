//! The `file` action: append the output message as one JSON line (NDJSON) to a file under
//! the base directory, durably.
//!
//! Invariant: the path never leaves the base directory (no absolute path, no `..`) and is
//! not topicrule's own; every line is one JSON value on one line; an append reports success
//! only once its line is on the disk (written to its file, and synced there or in the
//! journal with where it went: see `journal`), and the names of the files and folders it
//! created with it (their folder synced), so an acknowledged message survives a crash or a
//! power cut.
//!
//! One thread writes every file (group commit): the lines that arrive while it writes and
//! syncs are written next, all the lines of one file with one `write`, then made durable
//! at once by one sync of the journal, whatever the number of files. Under light load a
//! line is synced as soon as it arrives; under heavy load one sync serves many messages.
//! Files stay open (the least recently used closed past `MAX_OPEN`) and their directories
//! are created once; a file deleted meanwhile is opened again at its path before the next
//! write, one renamed away (log rotation) within a second (the lines of that second go to
//! the renamed file). Lines of one batch go to a file in the order they arrived.

mod journal;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::oneshot;

use super::durable::sync_dir;
use super::ActionError;
use crate::sql::{Message, Value};
use crate::template::Template;
use journal::{Entry, Journal};

/// The `file` action.
#[derive(Debug, Clone)]
pub struct FileAppend {
    /// A path relative to the base directory; substitutions may not leave it.
    pub path: Template,
}

/// Files kept open at once: past it, every round would open and close files again (a file
/// a topic is common).
const MAX_OPEN: usize = 256;

/// How often an open file is compared with the file at its path, to find one renamed away.
const RECHECK: Duration = Duration::from_secs(1);

/// A line to append.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    /// Relative to the base directory, checked.
    pub path: PathBuf,
    /// The line, newline included.
    pub line: Vec<u8>,
}

impl AppendRequest {
    pub fn describe(&self) -> serde_json::Value {
        let line = String::from_utf8_lossy(&self.line);
        serde_json::json!({
            "action": "file",
            "path": self.path.display().to_string(),
            "line": line.trim_end_matches('\n'),
        })
    }
}

/// The relative path `text` names, when it stays inside the base directory and is not
/// topicrule's own (a name starting with `.topicrule` at its top: the journals); else
/// what is wrong with it.
pub fn confined(text: &str) -> Result<PathBuf, &'static str> {
    const LEAVES: &str = "leaves the base directory";
    if text.contains('\0') {
        return Err(LEAVES);
    }
    let mut out = PathBuf::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return Err(LEAVES),
        }
    }
    let top = out.components().next().map(|top| top.as_os_str());
    match top {
        None => Err(LEAVES),
        Some(top) if top.as_encoded_bytes().starts_with(b".topicrule") => {
            Err("is topicrule's own (a name starting with `.topicrule` in the base directory)")
        }
        Some(_) => Ok(out),
    }
}

/// Expands the path and builds the line. Output that is not one line of text (a binary
/// payload) is written as a JSON string of its base64.
pub fn prepare(
    action: &FileAppend,
    msg: &Message,
    vars: &[Value],
    output: &[u8],
) -> Result<AppendRequest, ActionError> {
    let text = action.path.expand(msg, vars);
    let path = confined(&text)
        .map_err(|why| ActionError::new(&text, format!("the file path `{text}` {why}")))?;
    Ok(AppendRequest {
        path,
        line: line_of(output),
    })
}

/// The output as one JSON line, newline included: JSON as it is (a value spread over
/// several lines put on one: a line break outside a string is only white space); text that
/// is not JSON as a JSON string of it; bytes that are not UTF-8 as `{"base64": "..."}`.
pub fn line_of(output: &[u8]) -> Vec<u8> {
    let mut line = if serde_json::from_slice::<serde::de::IgnoredAny>(output).is_ok() {
        output
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .collect()
    } else if let Ok(text) = std::str::from_utf8(output) {
        serde_json::to_vec(text).unwrap_or_default()
    } else {
        let encoded = base64::engine::general_purpose::STANDARD.encode(output);
        serde_json::to_vec(&serde_json::json!({ "base64": encoded })).unwrap_or_default()
    };
    line.push(b'\n');
    line
}

/// The appending thread's handle; cloned, it is shared by every message.
#[derive(Clone)]
pub struct Files {
    jobs: mpsc::Sender<Job>,
}

/// What the appending thread is asked to do.
enum Job {
    Append(Append),
    /// Sync the files, remove the journal, then say so: the run ends.
    Close(oneshot::Sender<()>),
}

/// A line for the appending thread, and where to say when it is on the disk.
struct Append {
    path: PathBuf,
    line: Vec<u8>,
    done: Done,
}

/// Where the appending thread tells how an append went.
type Done = oneshot::Sender<Result<(), FileError>>;

/// Why lines could not be appended: the step that failed, on which file. One error
/// answers every message whose line was in that write (hence the shared `io::Error`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot {step} `{}`: {source}", path.display())]
pub struct FileError {
    step: &'static str,
    path: PathBuf,
    #[source]
    source: Arc<std::io::Error>,
}

impl FileError {
    /// The error of `step` on `path`, to give to `map_err`.
    fn of<'p>(step: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> FileError + 'p {
        move |e| FileError {
            step,
            path: path.to_owned(),
            source: Arc::new(e),
        }
    }
}

impl Files {
    /// Replays the journal the last run of `instance` left, then starts the appending
    /// thread for files under `base`. It ends when every handle is dropped. Its queue holds
    /// at most one line per message in flight.
    pub fn start(base: PathBuf, instance: &str) -> Result<Files, FileError> {
        let written = journal::replay(&base, instance).inspect_err(|_| {
            tracing::error!(
                "the journal `{}` may hold acknowledged lines missing from their files: mend \
                 the error below and start again, or move the journal away to start without it",
                journal::path_of(&base, instance).display()
            );
        })?;
        if written > 0 {
            tracing::warn!(
                "{written} group(s) of acknowledged lines the disk had lost (a power cut) \
                 written again into their files from the journal of `{instance}`"
            );
        }
        let (jobs, queue) = mpsc::channel();
        let journal = Journal::new(&base, instance);
        let writer = base.clone();
        std::thread::Builder::new()
            .name("topicrule-files".into())
            .spawn(move || append_all(&base, journal, &queue))
            .map_err(FileError::of("start the writer of", &writer))?;
        Ok(Files { jobs })
    }

    /// Syncs the files and removes the journal, at the end of a run (after its last
    /// append); waits for it at most `within`. Without it the journal stays for the next
    /// start, which finds its lines in their files.
    pub async fn close(&self, within: Duration) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).is_ok() {
            let _ = tokio::time::timeout(within, closed).await;
        }
    }

    /// Appends the line; done once it is on the disk.
    pub async fn append(&self, request: &AppendRequest) -> Result<(), ActionError> {
        let fail = |message: String| ActionError::new(request.path.display().to_string(), message);
        let (done, result) = oneshot::channel();
        let append = Append {
            path: request.path.clone(),
            line: request.line.clone(),
            done,
        };
        if self.jobs.send(Job::Append(append)).is_err() {
            return Err(fail("the file writer has stopped".into()));
        }
        match result.await {
            Ok(result) => result.map_err(|e| fail(e.to_string())),
            Err(_) => Err(fail("the file writer has stopped".into())),
        }
    }
}

/// The appending thread: takes what is queued, writes each file's lines at once, makes
/// them durable (in the journal, or by syncing their files), then answers; empties the
/// journal when it is due.
fn append_all(base: &Path, journal: Journal, queue: &mpsc::Receiver<Job>) {
    let mut open = OpenFiles::new(base);
    // `None` once a checkpoint failed: what the journal holds stays for the next start
    // (a second sync may not report what the first lost), and each group syncs its files.
    let mut journal = Some(journal);
    loop {
        let waited = match journal.as_ref().and_then(Journal::due_in) {
            Some(wait) => queue.recv_timeout(wait),
            None => queue
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        let first = match waited {
            Ok(Job::Append(first)) => first,
            Ok(Job::Close(done)) => {
                close(&mut open, &mut journal);
                let _ = done.send(());
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                checkpoint(&mut open, &mut journal);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let (files, closing) = group(first, queue);
        let mut results: Vec<_> = files
            .iter()
            .map(|file| open.write(&file.path, &file.lines))
            .collect();
        let journaled = journal.as_mut().is_some_and(|journal| {
            let written = files
                .iter()
                .zip(&results)
                .filter_map(|(file, result)| Some((result.as_ref().ok()?, file.lines.as_slice())));
            journal
                .write(written)
                .inspect_err(|e| tracing::warn!("{e}: syncing the files instead"))
                .is_ok()
        });
        if !journaled {
            open.sync(&files, &mut results);
        }
        // The entries borrow the paths of `files`, which the answers consume.
        let results: Vec<_> = results.into_iter().map(|r| r.map(drop)).collect();
        for (file, result) in files.into_iter().zip(results) {
            for done in file.waiting {
                let _ = done.send(result.clone());
            }
        }
        if let Some(done) = closing {
            close(&mut open, &mut journal);
            let _ = done.send(());
        }
        let due = journal.as_ref().and_then(Journal::due_in) == Some(Duration::ZERO);
        if due || open.retired.len() >= MAX_RETIRED {
            checkpoint(&mut open, &mut journal);
        }
    }
    close(&mut open, &mut journal);
}

/// The appends queued, by file, in the order they arrived, up to a `Close`, given back.
fn group(
    first: Append,
    queue: &mpsc::Receiver<Job>,
) -> (Vec<Pending>, Option<oneshot::Sender<()>>) {
    let mut files: Vec<Pending> = Vec::new();
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    let mut closing = None;
    let queued = queue.try_iter().map_while(|job| match job {
        Job::Append(append) => Some(append),
        Job::Close(done) => {
            closing = Some(done);
            None
        }
    });
    for append in std::iter::once(first).chain(queued) {
        let i = *index.entry(append.path.clone()).or_insert_with(|| {
            files.push(Pending {
                path: append.path,
                lines: Vec::new(),
                waiting: Vec::new(),
            });
            files.len() - 1
        });
        files[i].lines.extend_from_slice(&append.line);
        files[i].waiting.push(append.done);
    }
    (files, closing)
}

/// Ends the journal: syncs the files and removes it. Later appends (none is expected)
/// sync their files.
fn close(open: &mut OpenFiles, journal: &mut Option<Journal>) {
    if checkpoint(open, journal) {
        if let Some(Err(e)) = journal.take().map(Journal::remove) {
            tracing::warn!("{e}");
        }
    }
}

/// Syncs the files written since the journal was last emptied, then empties it. False
/// when that failed: the journal is dropped as it is, for the next start to replay.
fn checkpoint(open: &mut OpenFiles, journal: &mut Option<Journal>) -> bool {
    let Some(held) = journal else {
        return false;
    };
    match open.sync_written().and_then(|()| held.empty()) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(
                "{e}: the journal keeps the lines of the last second for the next start \
                 (written again if the disk lost them); from now on each group of lines \
                 syncs its files"
            );
            *journal = None;
            open.stop_retiring();
            false
        }
    }
}

/// The lines of one file in one round, and the messages waiting for them.
struct Pending {
    path: PathBuf,
    lines: Vec<u8>,
    waiting: Vec<Done>,
}

/// Past this many files written in one round, one `syncfs` per file system syncs them
/// all at once, instead of one `fdatasync` each.
const SYNC_EACH_MAX: usize = 2;

/// Files closed with lines not synced yet, kept open for the checkpoint: past this many,
/// it comes at once.
const MAX_RETIRED: usize = 64;

/// The files open for appending, by path under the base directory.
struct OpenFiles<'a> {
    base: &'a Path,
    files: HashMap<PathBuf, OpenFile>,
    /// Files closed (evicted, renamed away, failed) with lines written since the last
    /// checkpoint, to sync at the next one; none once there is no journal (each group
    /// then syncs its own files), else they would pile up.
    retired: Vec<(PathBuf, OpenFile)>,
    retiring: bool,
    /// Counts appends, to find the least recently used file.
    clock: u64,
}

struct OpenFile {
    file: File,
    /// The file system it is on, and its inode there.
    device: u64,
    inode: u64,
    used: u64,
    /// When it was last compared with the file at its path.
    checked: Instant,
    /// Written since it was last synced.
    written: bool,
}

impl OpenFile {
    /// Its length, when this is still the file at `full`: not deleted (checked at each
    /// use, on the open file: an acknowledged line must not go to a deleted file), not
    /// renamed away (checked by path at most every `RECHECK`: the lines of that second go
    /// to the renamed file, which keeps them). A look-up by path at every write was a sixth
    /// of the appending thread's time with a file a topic.
    fn current_len(&mut self, full: &Path) -> Option<u64> {
        let open = self.file.metadata().ok()?;
        if open.nlink() == 0 {
            return None;
        }
        if self.checked.elapsed() >= RECHECK {
            self.checked = Instant::now();
            let named = std::fs::metadata(full).ok()?;
            if named.dev() != open.dev() || named.ino() != open.ino() {
                return None;
            }
        }
        Some(open.len())
    }
}

impl<'a> OpenFiles<'a> {
    fn new(base: &'a Path) -> OpenFiles<'a> {
        OpenFiles {
            base,
            files: HashMap::new(),
            retired: Vec::new(),
            retiring: true,
            clock: 0,
        }
    }

    /// Writes `lines` at the end of the file; where they went.
    fn write<'p>(&mut self, path: &'p Path, lines: &[u8]) -> Result<Entry<'p>, FileError> {
        let full = self.base.join(path);
        let result = self.file(path, &full).and_then(|(open, offset)| {
            open.written = true;
            (&open.file)
                .write_all(lines)
                .map_err(FileError::of("append to", &full))?;
            Ok(Entry {
                path: path.to_string_lossy(),
                dev: open.device,
                ino: open.inode,
                offset,
                len: lines.len() as u64,
            })
        });
        if result.is_err() {
            self.close(path); // Opened again on the next append.
        }
        result
    }

    /// Closes the file open at `path`; kept for the next checkpoint when it has lines
    /// not synced.
    fn close(&mut self, path: &Path) {
        if let Some(open) = self.files.remove(path) {
            if open.written && self.retiring {
                self.retired.push((path.to_owned(), open));
            }
        }
    }

    /// No journal any more: files closed are not kept for a checkpoint.
    fn stop_retiring(&mut self) {
        self.retiring = false;
        self.retired.clear();
    }

    /// Syncs the files of `pending` written without error (see `sync_each`); a failure
    /// becomes the file's result.
    fn sync(&mut self, pending: &[Pending], results: &mut [Result<Entry, FileError>]) {
        let written: Vec<(&Path, &OpenFile)> = pending
            .iter()
            .zip(results.iter())
            .filter(|(_, result)| result.is_ok())
            .filter_map(|(p, _)| Some((p.path.as_path(), self.files.get(&p.path)?)))
            .collect();
        let mut synced = sync_each(self.base, &written).into_iter();
        for (p, result) in pending.iter().zip(results.iter_mut()) {
            if result.is_err() {
                continue;
            }
            let Some(open) = self.files.get_mut(&p.path) else {
                continue;
            };
            match synced.next().expect("a result a file") {
                Ok(()) => open.written = false,
                Err(e) => {
                    *result = Err(e);
                    self.close(&p.path);
                }
            }
        }
    }

    /// Syncs every file written since it was last synced, the ones closed meanwhile too.
    fn sync_written(&mut self) -> Result<(), FileError> {
        let written: Vec<(&Path, &OpenFile)> = self
            .files
            .iter()
            .filter(|(_, open)| open.written)
            .map(|(path, open)| (path.as_path(), open))
            .chain(
                self.retired
                    .iter()
                    .map(|(path, open)| (path.as_path(), open)),
            )
            .collect();
        sync_each(self.base, &written)
            .into_iter()
            .collect::<Result<(), FileError>>()?;
        self.retired.clear();
        for open in self.files.values_mut() {
            open.written = false;
        }
        Ok(())
    }

    /// The file open at `path` and its length; opened (its directories created) unless it
    /// is open and still the file at that path.
    fn file(&mut self, path: &Path, full: &Path) -> Result<(&mut OpenFile, u64), FileError> {
        self.clock += 1;
        let current = self
            .files
            .get_mut(path)
            .and_then(|open| open.current_len(full));
        let len = match current {
            Some(len) => len,
            None => {
                self.close(path);
                if self.files.len() >= MAX_OPEN {
                    let oldest = self.files.iter().min_by_key(|(_, open)| open.used);
                    if let Some(oldest) = oldest.map(|(path, _)| path.clone()) {
                        self.close(&oldest);
                    }
                }
                let file = create(full, &appending())?;
                let meta = file.metadata().map_err(FileError::of("read", full))?;
                let open = OpenFile {
                    file,
                    device: meta.dev(),
                    inode: meta.ino(),
                    used: 0,
                    checked: Instant::now(),
                    written: false,
                };
                self.files.insert(path.to_owned(), open);
                meta.len()
            }
        };
        let open = self.files.get_mut(path).expect("opened above");
        open.used = self.clock;
        Ok((open, len))
    }
}

/// Syncs `files` (their paths under `base`, for errors): each with `fdatasync` when they
/// are few, else with one `syncfs` per file system (one flush of the disk for all of
/// them). A result a file, in order.
fn sync_each(base: &Path, files: &[(&Path, &OpenFile)]) -> Vec<Result<(), FileError>> {
    let mut synced: HashMap<u64, Result<(), FileError>> = HashMap::new();
    files
        .iter()
        .map(|(path, open)| {
            let full = base.join(path);
            if files.len() <= SYNC_EACH_MAX {
                match open.file.sync_data() {
                    // A file that cannot be synced (a device, a pipe) has nothing to sync.
                    Err(e) if e.kind() != std::io::ErrorKind::InvalidInput => {
                        Err(FileError::of("sync", &full)(e))
                    }
                    _ => Ok(()),
                }
            } else {
                synced
                    .entry(open.device)
                    .or_insert_with(|| {
                        rustix::fs::syncfs(&open.file)
                            .map_err(|e| FileError::of("sync the file system of", &full)(e.into()))
                    })
                    .clone()
            }
        })
        .collect()
}

/// How an appended file is opened: created when missing, every write at its end.
fn appending() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    options
}

/// Opens `full` with `options` (which create it), creating its directories when missing,
/// and makes the names it created durable: a new name is on the disk only once the
/// directory that holds it is synced, and a power cut would otherwise lose a file whose
/// lines were synced.
fn create(full: &Path, options: &OpenOptions) -> Result<File, FileError> {
    let parent = full.parent().unwrap_or(Path::new(""));
    let missing: Vec<PathBuf> = parent
        .ancestors()
        .map(here)
        .take_while(|dir| !dir.exists())
        .map(Path::to_owned)
        .collect();
    std::fs::create_dir_all(here(parent))
        .map_err(FileError::of("create the directory of", full))?;
    let existed = full.exists();
    let file = options.open(full).map_err(FileError::of("open", full))?;
    for dir in holders_of_new_names(full, existed, &missing) {
        sync_dir(dir).map_err(FileError::of("sync the directory", dir))?;
    }
    Ok(file)
}

/// A directory as a path to open: a relative path's last ancestor, "", is the working
/// directory.
fn here(dir: &Path) -> &Path {
    if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }
}

/// The directories that hold the names created for `full`: its own when the file is new,
/// and the parent of each directory that was `missing`.
fn holders_of_new_names<'a>(
    full: &'a Path,
    existed: bool,
    missing: &'a [PathBuf],
) -> impl Iterator<Item = &'a Path> {
    let own = full.parent().filter(|_| !existed);
    let parents = missing.iter().filter_map(|dir| dir.parent());
    own.into_iter().chain(parents).map(here)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::path::{Path, PathBuf};

    use super::{appending, confined, create, holders_of_new_names, line_of, OpenFiles, RECHECK};

    fn parsed(output: &[u8]) -> serde_json::Value {
        let line = line_of(output);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "{line:?}");
        assert_eq!(line.last(), Some(&b'\n'));
        serde_json::from_slice(&line).expect("a JSON line")
    }

    #[test]
    fn every_output_is_one_json_line() {
        assert_eq!(line_of(br#"{"a":1}"#), b"{\"a\":1}\n");
        assert_eq!(
            parsed(b"{\n  \"a\": \"x\\ny\"\r\n}"),
            serde_json::json!({"a": "x\ny"})
        );
        assert_eq!(parsed(b"21.5"), serde_json::json!(21.5));
        assert_eq!(
            parsed(b"temperature=21;state=on"),
            "temperature=21;state=on"
        );
        assert_eq!(parsed(b"{\"temp\": 31.5"), "{\"temp\": 31.5");
        assert_eq!(parsed(b""), "");
        assert_eq!(parsed(b"two\nlines"), "two\nlines");
        assert_eq!(parsed(b"\0\0"), "\0\0");
        assert_eq!(
            parsed(b"\xff\xfe\x00"),
            serde_json::json!({"base64": "//4A"})
        );
    }

    #[test]
    fn the_directories_of_new_names_are_synced() {
        let holders = |full: &str, existed: bool, missing: &[&str]| {
            let missing: Vec<PathBuf> = missing.iter().map(PathBuf::from).collect();
            holders_of_new_names(Path::new(full), existed, &missing)
                .map(|dir| dir.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert!(holders("/data/a/x.jsonl", true, &[]).is_empty());
        assert_eq!(holders("/data/a/x.jsonl", false, &[]), ["/data/a"]);
        assert_eq!(
            holders("/data/a/b/x.jsonl", false, &["/data/a/b", "/data/a"]),
            ["/data/a/b", "/data/a", "/data"]
        );
        // Relative to the working directory, with the base folder new too.
        assert_eq!(holders("data/x.jsonl", false, &["data"]), ["data", "."]);
        assert_eq!(holders("x.jsonl", false, &[]), ["."]);
    }

    #[test]
    fn a_file_is_created_with_its_directories() {
        let base = std::env::temp_dir().join(format!("topicrule-create-{}", std::process::id()));
        let full = base.join("a/b/x.jsonl");
        let mut file = create(&full, &appending()).expect("created");
        file.write_all(b"1\n").unwrap();
        drop(file);
        let mut again = create(&full, &appending()).expect("opened again");
        again.write_all(b"2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&full).unwrap(), "1\n2\n");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_file_deleted_or_renamed_away_is_opened_again_at_its_path() {
        let base = std::env::temp_dir().join(format!("topicrule-reopen-{}", std::process::id()));
        let mut open = OpenFiles::new(&base);
        let path = Path::new("log.jsonl");
        let read = || std::fs::read_to_string(base.join(path)).unwrap();
        open.write(path, b"1\n").unwrap();
        std::fs::remove_file(base.join(path)).unwrap();
        open.write(path, b"2\n").unwrap();
        assert_eq!(read(), "2\n", "deleted: the next line goes to a new file");
        std::fs::rename(base.join(path), base.join("log.jsonl.1")).unwrap();
        std::thread::sleep(RECHECK);
        open.write(path, b"3\n").unwrap();
        assert_eq!(read(), "3\n", "renamed: a new file, once checked");
        let renamed = std::fs::read_to_string(base.join("log.jsonl.1")).unwrap();
        assert_eq!(renamed, "2\n");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn files_closed_are_kept_for_the_checkpoint_only_while_there_is_a_journal() {
        let base = std::env::temp_dir().join(format!("topicrule-retire-{}", std::process::id()));
        let mut open = OpenFiles::new(&base);
        let path = Path::new("a.jsonl");
        open.write(path, b"1\n").unwrap();
        open.close(path);
        assert_eq!(open.retired.len(), 1, "written, not synced: kept");
        open.stop_retiring();
        assert!(open.retired.is_empty());
        open.write(path, b"2\n").unwrap();
        open.close(path);
        assert!(open.retired.is_empty(), "no journal: nothing kept");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn paths_stay_under_the_base() {
        assert_eq!(confined("a/./b.jsonl").unwrap().to_str(), Some("a/b.jsonl"));
        assert_eq!(
            confined("a/.topicrule-x").unwrap().to_str(),
            Some("a/.topicrule-x")
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            ".",
            ".topicrule-a.journal",
            "./.topicrule/x",
        ] {
            assert!(confined(bad).is_err(), "{bad}");
        }
    }
}
