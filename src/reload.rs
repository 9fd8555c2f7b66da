//! Hot reload: the rule files are loaded again when they change (the rule folders are
//! watched) and on SIGHUP.
//!
//! Invariant: a new rule set reaches the router only when every file of it validated; when
//! one does not, every error is logged with its place and the running set stays. The router
//! swaps the set between messages and changes the subscriptions by difference
//! (`router::subscriber`), so nothing is lost across a reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::rules;

/// How long the files must stay quiet before they are read: an editor saving a file, or
/// `git pull` changing several, is one reload.
const SETTLE: Duration = Duration::from_millis(300);

/// Starts watching `paths` and SIGHUP; the rule sets to apply come out of the receiver.
/// Must be called within the runtime, before any SIGHUP may arrive (SIGHUP otherwise ends
/// the process).
pub fn watch(paths: Vec<PathBuf>, shutdown: CancellationToken) -> mpsc::Receiver<Engine> {
    let (reloads, receiver) = mpsc::channel(1);
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let (changed, changes) = mpsc::channel(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| is_rule_change(&e)) {
            let _ = changed.try_send(());
        }
    });
    let watcher = match watcher {
        Ok(mut watcher) => {
            for path in &paths {
                if let Err(e) = watcher.watch(path, RecursiveMode::Recursive) {
                    tracing::warn!(
                        "cannot watch `{}` for changes ({e}); SIGHUP reloads the rules",
                        path.display()
                    );
                }
            }
            Some(watcher)
        }
        Err(e) => {
            tracing::warn!("cannot watch the rule files ({e}); SIGHUP reloads the rules");
            None
        }
    };
    tokio::spawn(async move {
        let _watcher = watcher; // Watching stops when it is dropped.
        let mut hangup = match hangup {
            Ok(hangup) => Some(hangup),
            Err(e) => {
                tracing::warn!("cannot handle SIGHUP ({e})");
                None
            }
        };
        let mut changes = changes;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = async { hangup.as_mut()?.recv().await } => {
                    tracing::info!("SIGHUP: reloading the rules");
                }
                Some(()) = changes.recv() => {
                    settle(&mut changes).await;
                    tracing::info!("the rule files changed: reloading the rules");
                }
            }
            if let Some(engine) = load(&paths) {
                if reloads.send(engine).await.is_err() {
                    return;
                }
            }
        }
    });
    receiver
}

/// Waits until no change came for `SETTLE`.
async fn settle(changes: &mut mpsc::Receiver<()>) {
    while tokio::time::timeout(SETTLE, changes.recv())
        .await
        .is_ok_and(|c| c.is_some())
    {}
}

/// A change to a file that may hold rules (`*.toml`, `*.json`), not an editor's swap file.
fn is_rule_change(event: &notify::Event) -> bool {
    matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
    ) && event.paths.iter().any(|p| is_rule_file(p))
}

fn is_rule_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "toml" || e == "json")
}

/// The new rule set, or `None` (its errors logged) when a file does not validate.
fn load(paths: &[PathBuf]) -> Option<Engine> {
    match rules::load(paths) {
        Ok(set) => {
            for warning in &set.warnings {
                tracing::warn!("{}", warning.render().trim_end());
            }
            Some(Engine::new(set))
        }
        Err(errors) => {
            for error in &errors.0 {
                tracing::error!("{}", error.render().trim_end());
            }
            tracing::error!(
                "{} error(s) in the rule files: the rules loaded before stay",
                errors.0.len()
            );
            crate::metrics::reloaded(false);
            None
        }
    }
}
