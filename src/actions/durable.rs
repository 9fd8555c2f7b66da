//! What makes files durable, shared by the S3 batch spool, the `file` action and its
//! journal: a directory's names synced; lines written over zeros written ahead of them
//! (the spool and the journal, synced at each group of lines).
//!
//! Over zeros, a sync then writes the lines alone, where an append must also write the file's new
//! length (on ext4, a journal commit, or a second write without a journal: 0.7x the time a
//! sync here). After a crash, what precedes the first zero byte was written (no line of
//! JSON holds one), and its last whole line ends what counts: a line cut short, or zeros
//! where a page of an unsynced group did not reach the disk, end it.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

/// Makes the names `dir` holds durable: a new name (a file created, renamed) is on the
/// disk only once the directory that holds it is synced.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The zeros written ahead: the first chunk, and the most at once (a small file gets few
/// zeros; a large one, one size change a megabyte).
const MIN_CHUNK: u64 = 16 * 1024;
const MAX_CHUNK: u64 = 1024 * 1024;

/// How far a file has zeros written ahead of its lines: its length.
#[derive(Debug, Default)]
pub struct ZerosAhead {
    end: u64,
}

impl ZerosAhead {
    /// Makes `file` at least `end` long, writing zeros past its length, in chunks that
    /// double up to `MAX_CHUNK`.
    pub fn cover(&mut self, file: &File, end: u64) -> std::io::Result<()> {
        while self.end < end {
            let chunk = self.end.clamp(MIN_CHUNK, MAX_CHUNK);
            file.write_all_at(&vec![0; chunk as usize], self.end)?;
            self.end += chunk;
        }
        Ok(())
    }
}

/// Where the last whole line before the first zero byte of `file` ends, reading it from
/// its start a block at a time (it may be large).
pub fn whole_lines(file: &mut File) -> std::io::Result<u64> {
    let mut block = vec![0; 64 * 1024];
    let (mut at, mut whole) = (0, 0);
    loop {
        let read = file.read(&mut block)?;
        let zero = block[..read].iter().position(|&b| b == 0);
        let lines = &block[..zero.unwrap_or(read)];
        if let Some(newline) = lines.iter().rposition(|&b| b == b'\n') {
            whole = at + newline as u64 + 1;
        }
        if read == 0 || zero.is_some() {
            return Ok(whole);
        }
        at += read as u64;
    }
}
