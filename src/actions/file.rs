//! The `file` action: append the output message as one line (NDJSON) to a file under the
//! base directory.
//!
//! Invariant: the path never leaves the base directory (no absolute path, no `..`), and a
//! line is written with one `write` on a file opened for appending, so that many rules
//! appending to one file never interleave within a line. The line has reached the
//! operating system before the action reports success.

use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use tokio::io::AsyncWriteExt;

use super::ActionError;
use crate::rules::FileAppend;
use crate::sql::{Message, Value};

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

/// The output as one NDJSON line, newline included: as it is when it is one line of text,
/// else a JSON string of its base64 (a binary payload).
pub fn line_of(output: &[u8]) -> Vec<u8> {
    let mut line = if std::str::from_utf8(output).is_ok() && !output.contains(&b'\n') {
        output.to_vec()
    } else {
        let encoded = base64::engine::general_purpose::STANDARD.encode(output);
        serde_json::to_vec(&encoded).unwrap_or_default()
    };
    line.push(b'\n');
    line
}

/// Appends the line under `base`, creating directories as needed.
pub async fn execute(base: &Path, request: &AppendRequest) -> Result<(), ActionError> {
    let path = base.join(&request.path);
    let fail = |what: &str, e: std::io::Error| {
        ActionError::new(
            path.display().to_string(),
            format!("cannot {what} `{}`: {e}", path.display()),
        )
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| fail("create the directory of", e))?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(|e| fail("open", e))?;
    file.write_all(&request.line)
        .await
        .map_err(|e| fail("append to", e))?;
    file.flush().await.map_err(|e| fail("flush", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::confined;

    #[test]
    fn paths_stay_under_the_base() {
        assert_eq!(confined("a/./b.jsonl").unwrap().to_str(), Some("a/b.jsonl"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a/..", "."] {
            assert!(confined(bad).is_none(), "{bad}");
        }
    }
}
