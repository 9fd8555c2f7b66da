//! The `file` action: append the output message as one JSON line (NDJSON) to a file under
//! the base directory, durably.
//!
//! Invariant: the path never leaves the base directory (no absolute path, no `..`); every
//! line is one JSON value on one line; an append reports success only once its line is on
//! the disk (`sync_data`), and the names of the files and folders it created with it (their
//! folder synced), so an acknowledged message survives a crash or a power cut.
//!
//! One thread writes every file (group commit): the lines that arrive while it writes and
//! syncs are written next, all the lines of one file with one `write`, then synced once
//! (one `syncfs` for all the files when there are many: one journal commit). Under
//! light load a line is synced as soon as it arrives; under heavy load one sync serves many
//! messages. Files stay open (the least recently used closed past `MAX_OPEN`) and their
//! directories are created once; a file deleted meanwhile is opened again at its path
//! before the next write, one renamed away (log rotation) within a second (the lines of
//! that second go to the renamed file). Lines of one batch go to a file in the order they arrived.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::oneshot;

use super::ActionError;
use crate::sql::{Message, Value};
use crate::template::Template;

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

/// The relative path `text` names, when it stays inside the base directory.
pub fn confined(text: &str) -> Option<PathBuf> {
    if text.is_empty() || text.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
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
    let Some(path) = confined(&text) else {
        return Err(ActionError::new(
            &text,
            format!("the file path `{text}` leaves the base directory"),
        ));
    };
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
    appends: mpsc::Sender<Append>,
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
    /// Starts the appending thread for files under `base`. It ends when every handle is
    /// dropped. Its queue holds at most one line per message in flight.
    pub fn start(base: PathBuf) -> std::io::Result<Files> {
        let (appends, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("topicrule-files".into())
            .spawn(move || append_all(&base, &queue))?;
        Ok(Files { appends })
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
        if self.appends.send(append).is_err() {
            return Err(fail("the file writer has stopped".into()));
        }
        match result.await {
            Ok(result) => result.map_err(|e| fail(e.to_string())),
            Err(_) => Err(fail("the file writer has stopped".into())),
        }
    }
}

/// The appending thread: takes what is queued, writes each file's lines at once, syncs
/// each file once, then answers.
fn append_all(base: &Path, queue: &mpsc::Receiver<Append>) {
    let mut open = OpenFiles::new(base);
    while let Ok(first) = queue.recv() {
        let mut files: Vec<Pending> = Vec::new();
        let mut index: HashMap<PathBuf, usize> = HashMap::new();
        for append in std::iter::once(first).chain(queue.try_iter()) {
            let i = *index.entry(append.path.clone()).or_insert_with(|| {
                files.push(Pending {
                    path: append.path,
                    lines: Vec::new(),
                    waiting: Vec::new(),
                    result: Ok(()),
                });
                files.len() - 1
            });
            files[i].lines.extend_from_slice(&append.line);
            files[i].waiting.push(append.done);
        }
        for file in &mut files {
            file.result = open.write(&file.path, &file.lines);
        }
        open.sync(&mut files);
        for file in files {
            for done in file.waiting {
                let _ = done.send(file.result.clone());
            }
        }
    }
}

/// The lines of one file in one round, and how writing and syncing them went.
struct Pending {
    path: PathBuf,
    lines: Vec<u8>,
    waiting: Vec<Done>,
    result: Result<(), FileError>,
}

/// Past this many files written in one round, one `syncfs` per file system syncs them
/// all at once, instead of one `fdatasync` each.
const SYNC_EACH_MAX: usize = 2;

/// The files open for appending, by path under the base directory.
struct OpenFiles<'a> {
    base: &'a Path,
    files: HashMap<PathBuf, OpenFile>,
    /// Counts appends, to find the least recently used file.
    clock: u64,
}

struct OpenFile {
    file: File,
    /// The file system it is on.
    device: u64,
    used: u64,
    /// When it was last compared with the file at its path.
    checked: Instant,
}

impl OpenFile {
    /// Whether this is still the file at `full`: not deleted (checked at each use, on the
    /// open file: an acknowledged line must not go to a deleted file), not renamed away
    /// (checked by path at most every `RECHECK`: the lines of that second go to the renamed
    /// file, which keeps them). A look-up by path at every write was a sixth of the
    /// appending thread's time with a file a topic.
    fn is_current(&mut self, full: &Path) -> bool {
        let Ok(open) = self.file.metadata() else {
            return false;
        };
        if open.nlink() == 0 {
            return false;
        }
        if self.checked.elapsed() < RECHECK {
            return true;
        }
        self.checked = Instant::now();
        std::fs::metadata(full)
            .is_ok_and(|named| named.dev() == open.dev() && named.ino() == open.ino())
    }
}

impl<'a> OpenFiles<'a> {
    fn new(base: &'a Path) -> OpenFiles<'a> {
        OpenFiles {
            base,
            files: HashMap::new(),
            clock: 0,
        }
    }

    /// Writes `lines` at the end of the file.
    fn write(&mut self, path: &Path, lines: &[u8]) -> Result<(), FileError> {
        let full = self.base.join(path);
        let result = self.file(path, &full).and_then(|open| {
            (&open.file)
                .write_all(lines)
                .map_err(FileError::of("append to", &full))
        });
        if result.is_err() {
            self.files.remove(path); // Opened again on the next append.
        }
        result
    }

    /// Syncs the files written without error: each with `fdatasync` when they are few,
    /// else with one `syncfs` per file system (one journal commit for all of them).
    fn sync(&mut self, pending: &mut [Pending]) {
        let written = pending.iter().filter(|p| p.result.is_ok()).count();
        let mut synced: HashMap<u64, Result<(), FileError>> = HashMap::new();
        for p in pending.iter_mut().filter(|p| p.result.is_ok()) {
            let Some(open) = self.files.get(&p.path) else {
                continue;
            };
            let full = self.base.join(&p.path);
            p.result = if written <= SYNC_EACH_MAX {
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
            };
            if p.result.is_err() {
                self.files.remove(&p.path);
            }
        }
    }

    /// The file open at `path`; opened (its directories created) unless it is open and
    /// still the file at that path.
    fn file(&mut self, path: &Path, full: &Path) -> Result<&mut OpenFile, FileError> {
        self.clock += 1;
        let current = self
            .files
            .get_mut(path)
            .is_some_and(|open| open.is_current(full));
        if !current {
            if self.files.len() >= MAX_OPEN {
                let oldest = self.files.iter().min_by_key(|(_, open)| open.used);
                if let Some(oldest) = oldest.map(|(path, _)| path.clone()) {
                    self.files.remove(&oldest);
                }
            }
            let file = create(full)?;
            let device = file.metadata().map_err(FileError::of("read", full))?.dev();
            let open = OpenFile {
                file,
                device,
                used: 0,
                checked: Instant::now(),
            };
            self.files.insert(path.to_owned(), open);
        }
        let open = self.files.get_mut(path).expect("opened above");
        open.used = self.clock;
        Ok(open)
    }
}

/// Opens `full` for appending, creating it and its directories when missing, and makes
/// the names it created durable: a new name is on the disk only once the directory that
/// holds it is synced, and a power cut would otherwise lose a file whose lines were synced.
fn create(full: &Path) -> Result<File, FileError> {
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
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(full)
        .map_err(FileError::of("open", full))?;
    for dir in holders_of_new_names(full, existed, &missing) {
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(FileError::of("sync the directory", dir))?;
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

    use super::{confined, create, holders_of_new_names, line_of, OpenFiles, RECHECK};

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
        let mut file = create(&full).expect("created");
        file.write_all(b"1\n").unwrap();
        drop(file);
        let mut again = create(&full).expect("opened again");
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
    fn paths_stay_under_the_base() {
        assert_eq!(confined("a/./b.jsonl").unwrap().to_str(), Some("a/b.jsonl"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a/..", "."] {
            assert!(confined(bad).is_none(), "{bad}");
        }
    }
}
