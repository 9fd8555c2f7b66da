//! The `file` action's journal: one sync makes a group of lines durable, whatever the
//! number of files they go to.
//!
//! Syncing the files a group of lines was appended to writes each file's new length with
//! its data (with a file a topic, a metadata write a message: half of topicrule's CPU
//! under load). Instead the group is also written to the journal, one file an instance
//! (`<base_dir>/.topicrule-<instance>.journal`), over zeros written ahead (see `durable`),
//! and one `fdatasync` of the journal makes it durable: its messages are acknowledged
//! then. The appended files are synced at a checkpoint, a second after the first group the
//! journal holds (or at `CHECKPOINT_BYTES`), and the journal is emptied. At start, the
//! journal an earlier run left is replayed: a group of lines missing from its file (a
//! power cut lost it) is written again where it was, or at the end of the file at its path
//! when that file is another one now; what is there is left as it is.
//!
//! Invariant: an acknowledged line is on the disk in its file, or in the journal with the
//! file and offset it went to; the journal is emptied only after every file written since
//! it was last emptied has been synced.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{confined, create, FileError};
use crate::actions::durable::{sync_dir, whole_lines, ZerosAhead};

/// How long after its first group the journal is emptied (its files synced).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A journal this large is emptied at once.
const CHECKPOINT_BYTES: u64 = 16 << 20;

/// A group of lines appended to one file, as the journal holds it: this, as a line of
/// JSON, then the lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Entry<'a> {
    /// Relative to the base directory.
    #[serde(borrow)]
    pub path: Cow<'a, str>,
    /// The file they were appended to: the device and inode (a file renamed away since,
    /// or deleted, is not the file at the path).
    pub dev: u64,
    pub ino: u64,
    /// Where they were appended, and their length.
    pub offset: u64,
    pub len: u64,
}

/// The journal of this instance's `file` actions. Owned by the appending thread.
pub(super) struct Journal {
    path: PathBuf,
    /// Created at the first group.
    file: Option<File>,
    zeros: ZerosAhead,
    /// Where the next group goes; 0 when it is empty.
    end: u64,
    /// When its first group since it was last emptied was written.
    since: Option<Instant>,
    buffer: Vec<u8>,
}

/// The journal's path: in the base directory, named after the instance (instances may
/// share a base directory).
pub(super) fn path_of(base: &Path, instance: &str) -> PathBuf {
    base.join(format!(".topicrule-{instance}.journal"))
}

impl Journal {
    pub fn new(base: &Path, instance: &str) -> Journal {
        Journal {
            path: path_of(base, instance),
            file: None,
            zeros: ZerosAhead::default(),
            end: 0,
            since: None,
            buffer: Vec::new(),
        }
    }

    /// Writes the groups (each one's entry and lines) and syncs them.
    pub fn write<'a>(
        &mut self,
        groups: impl Iterator<Item = (&'a Entry<'a>, &'a [u8])>,
    ) -> Result<(), FileError> {
        let fail = |step| FileError::of(step, &self.path);
        self.buffer.clear();
        for (entry, lines) in groups {
            serde_json::to_writer(&mut self.buffer, entry).map_err(|e| fail("write")(e.into()))?;
            self.buffer.push(b'\n');
            self.buffer.extend_from_slice(lines);
        }
        if self.buffer.is_empty() {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(create(
                &self.path,
                OpenOptions::new().create(true).truncate(true).write(true),
            )?),
        };
        let end = self.end + self.buffer.len() as u64;
        self.zeros.cover(file, end).map_err(fail("write"))?;
        file.write_all_at(&self.buffer, self.end)
            .map_err(fail("write"))?;
        file.sync_data().map_err(fail("sync"))?;
        self.end = end;
        self.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// How long until it is to be emptied (zero: now); `None` when it is empty.
    pub fn due_in(&self) -> Option<Duration> {
        let since = self.since?;
        if self.end >= CHECKPOINT_BYTES {
            return Some(Duration::ZERO);
        }
        Some(CHECKPOINT_EVERY.saturating_sub(since.elapsed()))
    }

    /// Empties it, once every file its groups went to is synced. The emptying is synced
    /// too: a group left in it would be written again at the next start into a file that
    /// may have been cut since.
    pub fn empty(&mut self) -> Result<(), FileError> {
        if let Some(file) = &self.file {
            file.set_len(0)
                .and_then(|()| file.sync_all())
                .map_err(FileError::of("empty", &self.path))?;
        }
        self.zeros = ZerosAhead::default();
        self.end = 0;
        self.since = None;
        Ok(())
    }

    /// Removes it, emptied, at the end of a run.
    pub fn remove(self) -> Result<(), FileError> {
        if self.file.is_some() {
            std::fs::remove_file(&self.path).map_err(FileError::of("remove", &self.path))?;
        }
        Ok(())
    }
}

/// Replays the journal an earlier run left under `base` (see the module's doc), syncs what
/// it wrote, and removes it. Gives how many groups of lines were written again.
pub(super) fn replay(base: &Path, instance: &str) -> Result<usize, FileError> {
    let path = path_of(base, instance);
    let fail = |step| FileError::of(step, &path);
    let mut journal = match File::open(&path) {
        // No journal, or no base directory (a file there: every append will fail).
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(0)
        }
        opened => opened.map_err(fail("open"))?,
    };
    let whole = whole_lines(&mut journal).map_err(fail("read"))?;
    let mut content = vec![0; usize::try_from(whole).unwrap_or(usize::MAX)];
    journal
        .read_exact_at(&mut content, 0)
        .map_err(fail("read"))?;
    let (mut groups, mut written) = (0, HashMap::new());
    for (entry, lines) in entries(&content) {
        let Ok(relative) = confined(&entry.path) else {
            continue;
        };
        let full = base.join(relative);
        if let Some(file) = restore(&full, &entry, lines)? {
            groups += 1;
            written.insert(full, file);
        }
    }
    for (full, file) in &written {
        file.sync_data().map_err(FileError::of("sync", full))?;
    }
    std::fs::remove_file(&path).map_err(fail("remove"))?;
    sync_dir(base).map_err(fail("sync the directory of"))?;
    Ok(groups)
}

/// The whole groups of a journal's content, in order; a group cut short ends it.
fn entries(mut content: &[u8]) -> impl Iterator<Item = (Entry<'_>, &[u8])> {
    std::iter::from_fn(move || {
        let newline = content.iter().position(|&b| b == b'\n')?;
        let entry: Entry = serde_json::from_slice(&content[..newline]).ok()?;
        let start = newline + 1;
        let end = start.checked_add(usize::try_from(entry.len).ok()?)?;
        let lines = content.get(start..end)?;
        content = &content[end..];
        Some((entry, lines))
    })
}

/// Makes sure the group's `lines` are in the file at `full`: where they were appended when
/// it is the same file and they are there or were lost (zeros, or the file cut short);
/// else at its end. The file written, if any.
fn restore(full: &Path, entry: &Entry, lines: &[u8]) -> Result<Option<File>, FileError> {
    let fail = |step| FileError::of(step, full);
    let file = match OpenOptions::new().read(true).write(true).open(full) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let file = create(full, OpenOptions::new().create(true).write(true))?;
            file.write_all_at(lines, 0).map_err(fail("write"))?;
            return Ok(Some(file));
        }
        opened => opened.map_err(fail("open"))?,
    };
    let meta = file.metadata().map_err(fail("read"))?;
    let len = meta.len();
    let same = meta.dev() == entry.dev && meta.ino() == entry.ino;
    if same && len >= entry.offset {
        let there_len = (len - entry.offset).min(entry.len);
        let mut there = vec![0; usize::try_from(there_len).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut there, entry.offset)
            .map_err(fail("read"))?;
        if there == lines {
            return Ok(None);
        }
        let lost = there.iter().all(|&b| b == 0);
        let cut_short = there.len() < lines.len() && (lost || lines.starts_with(&there));
        if cut_short {
            file.set_len(entry.offset).map_err(fail("cut"))?;
        }
        if lost || cut_short {
            file.write_all_at(lines, entry.offset)
                .map_err(fail("write"))?;
            return Ok(Some(file));
        }
    }
    // Another file now, or other lines where these went: at the end, on a line of their own.
    let mut at = len;
    let mut last = [0];
    if len > 0 && file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n' {
        file.write_all_at(b"\n", len).map_err(fail("write"))?;
        at += 1;
    }
    file.write_all_at(lines, at).map_err(fail("write"))?;
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;
    use std::path::{Path, PathBuf};

    use super::{entries, path_of, replay, restore, Entry, Journal};
    use crate::actions::file::OpenFiles;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("topicrule-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Where `lines` would be appended to `full` now, as a journal entry.
    fn entry_for(full: &Path, lines: &[u8]) -> Entry<'static> {
        let meta = std::fs::metadata(full).unwrap();
        Entry {
            path: "f.jsonl".into(),
            dev: meta.dev(),
            ino: meta.ino(),
            offset: meta.len(),
            len: lines.len() as u64,
        }
    }

    #[test]
    fn a_group_is_restored_where_it_was_lost_and_left_where_it_is() {
        let dir = scratch("restore");
        let full = dir.join("f.jsonl");
        let old = b"{\"a\":1}\n";
        let lines = b"{\"a\":2}\n{\"a\":3}\n";
        let after = |prepare: &dyn Fn(&Entry)| {
            std::fs::write(&full, old).unwrap();
            let entry = entry_for(&full, lines);
            prepare(&entry);
            let written = restore(&full, &entry, lines).unwrap().is_some();
            (written, std::fs::read(&full).unwrap())
        };
        let whole = [&old[..], lines].concat();
        let append = |bytes: &[u8]| {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&full)
                .unwrap();
            file.write_all(bytes).unwrap();
        };
        // There: left as it is.
        assert_eq!(after(&|_| append(lines)), (false, whole.clone()));
        // Lost: the file cut short, zeros where the lines were, a part of them.
        assert_eq!(after(&|_| ()), (true, whole.clone()));
        assert_eq!(after(&|_| append(&[0; 16])), (true, whole.clone()));
        assert_eq!(after(&|_| append(&lines[..5])), (true, whole.clone()));
        // Other lines where these went (another writer): at the end.
        let other = b"{\"b\":1}\n{\"b\":2}\n";
        assert_eq!(
            after(&|_| append(other)),
            (true, [&old[..], other, lines].concat())
        );
        // Another file at the path now (renamed away and made again), ending mid-line.
        let renamed = |_: &Entry| {
            std::fs::rename(&full, dir.join("f.jsonl.1")).unwrap();
            std::fs::write(&full, b"{\"c\"").unwrap();
        };
        assert_eq!(after(&renamed), (true, [&b"{\"c\"\n"[..], lines].concat()));
        // No file at the path: made.
        assert_eq!(
            after(&|_| std::fs::remove_file(&full).unwrap()),
            (true, lines.to_vec())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_ends_at_its_last_whole_group() {
        let entry = |offset: u64, len: u64| Entry {
            path: "f".into(),
            dev: 1,
            ino: 2,
            offset,
            len,
        };
        let mut content = Vec::new();
        for (at, lines) in [(0, &b"1\n2\n"[..]), (4, b"3\n")] {
            serde_json::to_writer(&mut content, &entry(at, lines.len() as u64)).unwrap();
            content.push(b'\n');
            content.extend_from_slice(lines);
        }
        let whole = content.len();
        serde_json::to_writer(&mut content, &entry(6, 4)).unwrap();
        content.extend_from_slice(b"\n4\n"); // Two bytes of four.
        let found: Vec<(u64, Vec<u8>)> = entries(&content)
            .map(|(entry, lines)| (entry.offset, lines.to_vec()))
            .collect();
        assert_eq!(found, [(0, b"1\n2\n".to_vec()), (4, b"3\n".to_vec())]);
        assert_eq!(entries(&content[..whole - 1]).count(), 1);
        assert_eq!(entries(b"{\"path\": \"f\"}\n1\n").count(), 0);
    }

    #[test]
    fn lines_a_power_cut_lost_are_written_again_at_start() {
        let base = scratch("replay");
        let mut open = OpenFiles::new(&base);
        let mut journal = Journal::new(&base, "me");
        let (a, b) = (Path::new("a.jsonl"), Path::new("d/b.jsonl"));
        for round in 0..3 {
            let lines = format!("{{\"round\":{round}}}\n");
            let written = [
                open.write(a, lines.as_bytes()).unwrap(),
                open.write(b, lines.as_bytes()).unwrap(),
            ];
            journal
                .write(written.iter().map(|entry| (entry, lines.as_bytes())))
                .unwrap();
        }
        let all = "{\"round\":0}\n{\"round\":1}\n{\"round\":2}\n";
        // The disk kept `a` to its second line (and a part of the third), lost `b`'s lines.
        drop(open);
        std::fs::write(base.join(a), &all[..30]).unwrap();
        std::fs::write(base.join(b), "").unwrap();
        assert_eq!(
            replay(&base, "me").unwrap(),
            1 + 3,
            "a's third group, b's three"
        );
        assert_eq!(std::fs::read_to_string(base.join(a)).unwrap(), all);
        assert_eq!(std::fs::read_to_string(base.join(b)).unwrap(), all);
        assert!(!path_of(&base, "me").exists(), "replayed, then removed");
        // Another instance's journal is its own.
        assert_eq!(replay(&base, "other").unwrap(), 0);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn an_emptied_journal_replays_nothing() {
        let base = scratch("emptied");
        let mut open = OpenFiles::new(&base);
        let mut journal = Journal::new(&base, "me");
        let path = Path::new("a.jsonl");
        let entry = open.write(path, b"1\n").unwrap();
        journal
            .write(std::iter::once((&entry, &b"1\n"[..])))
            .unwrap();
        assert!(journal.due_in().is_some());
        open.sync_written().unwrap();
        journal.empty().unwrap();
        assert_eq!(journal.due_in(), None);
        // The file cut by its reader since: nothing comes back.
        std::fs::write(base.join(path), "").unwrap();
        assert_eq!(std::fs::metadata(path_of(&base, "me")).unwrap().len(), 0);
        assert_eq!(replay(&base, "me").unwrap(), 0);
        assert_eq!(std::fs::read_to_string(base.join(path)).unwrap(), "");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
