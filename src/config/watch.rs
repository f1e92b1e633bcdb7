//! Re-loading the config file when it changes: [`watch`] for `--enable-config-watch`,
//! [`reload_now`] for SIGHUP. To the side of `config`: both end in [`super::load`], the
//! function `tracebridge check` runs, so a reload accepts exactly what `check` accepts.
//!
//! How a file changes, and what is watched for it (the file's directory, not recursively:
//! a watch on the file itself would follow the old inode after a rename):
//! - written in place: events name the file;
//! - an editor's save, a temp file renamed over the target: the rename names the file;
//! - a Kubernetes ConfigMap volume: `dir/config.toml -> ..data/config.toml`,
//!   `..data -> ..2026_12_02_xx`; an update writes a new `..<timestamp>` directory, points
//!   `..data_tmp` at it and renames `..data_tmp` over `..data`. No event names
//!   `config.toml`, so while the file is a symlink every change in the directory counts.
//!
//! Events are signals only: after a burst has settled (no event for `debounce`, or at most
//! [`MAX_BURST`] × `debounce` after it began) the file is read once, and a burst that left
//! its bytes as they were yields nothing. Events for reads (the watcher's own included)
//! are ignored.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Config, ConfigErrors};

/// A burst of events longer than this many debounce intervals is read anyway, so a
/// directory that never goes quiet still gets its config re-loaded.
pub const MAX_BURST: u32 = 10;

/// Re-loads the config file now, as `tracebridge check` does (for SIGHUP).
pub fn reload_now(path: &Path) -> Result<Config, ConfigErrors> {
    super::load(path)
}

/// Why a watch could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// [`watch`] was called outside a tokio runtime.
    #[error("watching {0} needs a tokio runtime")]
    NoRuntime(PathBuf),
    /// The path names no file (it ends in `..` or is empty).
    #[error("{0} names no file to watch")]
    NotAFile(PathBuf),
    /// The file system watch could not be set up.
    #[error("cannot watch directory {dir}: {error}")]
    Notify {
        /// The directory that was to be watched.
        dir: PathBuf,
        /// What the watcher said.
        error: notify::Error,
    },
}

/// A running watch of one config file: yields the result of re-loading it after each
/// settled burst of changes. Dropping it stops the watch.
#[derive(Debug)]
pub struct ConfigWatch {
    path: PathBuf,
    results: mpsc::Receiver<Result<Config, ConfigErrors>>,
    // Kept for its lifetime: dropping it ends the watch thread, then the reload task.
    _watcher: RecommendedWatcher,
}

impl ConfigWatch {
    /// The next re-load: `Ok` with the new config, or every error with its key path (the
    /// running config should then be kept). `None` once the watch has stopped.
    pub async fn next(&mut self) -> Option<Result<Config, ConfigErrors>> {
        self.results.recv().await
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Starts watching `path` (inside a tokio runtime). The file's bytes now are the baseline:
/// the first result is for the first change after this returns, so start the watch before
/// the initial [`super::load`] to miss nothing.
pub fn watch(path: PathBuf, debounce: Duration) -> Result<ConfigWatch, WatchError> {
    let runtime =
        tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime(path.clone()))?;
    let Some(name) = path.file_name().map(OsStr::to_owned) else {
        return Err(WatchError::NotAFile(path));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    // Capacity 1: a pending signal already says "something changed"; more add nothing.
    let (signal_tx, signal_rx) = mpsc::channel::<()>(1);
    let target = path.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        if is_relevant(&event, &name, &target) {
            let _ = signal_tx.try_send(());
        }
    })
    .map_err(|error| WatchError::Notify {
        dir: dir.clone(),
        error,
    })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|error| WatchError::Notify {
            dir: dir.clone(),
            error,
        })?;
    let baseline = super::read(&path).ok();
    let (results_tx, results) = mpsc::channel(1);
    runtime.spawn(reload_loop(
        path.clone(),
        debounce,
        baseline,
        signal_rx,
        results_tx,
    ));
    Ok(ConfigWatch {
        path,
        results,
        _watcher: watcher,
    })
}

/// Whether an event may have changed the file's content.
fn is_relevant(event: &notify::Result<Event>, name: &OsString, path: &Path) -> bool {
    let Ok(event) = event else {
        // Events may have been lost (e.g. the kernel queue overflowed): look again.
        return true;
    };
    if event.need_rescan() {
        return true;
    }
    if let EventKind::Access(kind) = event.kind
        && kind != AccessKind::Close(AccessMode::Write)
    {
        return false;
    }
    event
        .paths
        .iter()
        .any(|p| p.file_name() == Some(name.as_os_str()))
        || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Per settled burst: read the file, and if its bytes changed, validate and send the result.
async fn reload_loop(
    path: PathBuf,
    debounce: Duration,
    mut last: Option<Vec<u8>>,
    mut signals: mpsc::Receiver<()>,
    results: mpsc::Sender<Result<Config, ConfigErrors>>,
) {
    while signals.recv().await.is_some() {
        if !settle(&mut signals, debounce).await {
            return;
        }
        // Reading and validating (descriptor sets included) block: off the runtime's threads.
        let file = path.clone();
        let seen = last.take();
        let Ok((seen, result)) =
            tokio::task::spawn_blocking(move || reload_if_changed(&file, seen)).await
        else {
            return;
        };
        last = seen;
        if let Some(result) = result
            && results.send(result).await.is_err()
        {
            return;
        }
    }
}

/// Waits until no signal has come for `debounce`, or [`MAX_BURST`] × `debounce` has passed.
/// `false`: the watcher is gone.
async fn settle(signals: &mut mpsc::Receiver<()>, debounce: Duration) -> bool {
    let deadline = Instant::now() + debounce * MAX_BURST;
    loop {
        let quiet = (Instant::now() + debounce).min(deadline);
        match tokio::time::timeout_at(quiet, signals.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// Reads the file; unless its bytes equal `last`, loads them as [`super::load`] does.
/// Returns the bytes now seen (`None`: unreadable) and the result, if any.
fn reload_if_changed(
    path: &Path,
    last: Option<Vec<u8>>,
) -> (Option<Vec<u8>>, Option<Result<Config, ConfigErrors>>) {
    match super::read(path) {
        Ok(bytes) if last.as_ref() == Some(&bytes) => (last, None),
        Ok(bytes) => {
            let result = super::from_bytes(path, &bytes);
            (Some(bytes), Some(result))
        }
        // Still unreadable: said already.
        Err(_) if last.is_none() => (None, None),
        Err(e) => (None, Some(Err(e))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);
    const DEBOUNCE: Duration = Duration::from_millis(100);

    /// A valid config whose `service_name` tells the versions apart.
    fn config(version: &str) -> String {
        format!(
            r#"
[admin]
listen = ""

[telemetry]
service_name = "{version}"

[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"

[[routes]]
listener = "edge"
upstream = "users"

[[upstreams]]
name = "users"
protocol = "http"
endpoints = ["users.internal:80"]
"#
        )
    }

    /// The next result, which must come within [`WAIT`].
    async fn next(watch: &mut ConfigWatch) -> Result<Config, ConfigErrors> {
        tokio::time::timeout(WAIT, watch.next())
            .await
            .unwrap_or_else(|_| panic!("no re-load of {} within {WAIT:?}", watch.path().display()))
            .expect("the watch stopped")
    }

    /// The `service_name` of the next result, which must be `Ok`.
    async fn next_version(watch: &mut ConfigWatch) -> String {
        match next(watch).await {
            Ok(c) => c.telemetry.service_name,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    /// Nothing comes for `quiet` (a bounded wait for an absence).
    async fn assert_quiet(watch: &mut ConfigWatch, quiet: Duration) {
        if let Ok(got) = tokio::time::timeout(quiet, watch.next()).await {
            panic!("expected no re-load, got {got:?}");
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config("v1")).unwrap();
        (dir, path)
    }

    #[tokio::test]
    async fn an_in_place_write_is_seen() {
        let (_dir, path) = setup();
        let mut w = watch(path.clone(), DEBOUNCE).unwrap();
        std::fs::write(&path, config("v2")).unwrap();
        assert_eq!(next_version(&mut w).await, "v2");
        std::fs::write(&path, config("v3")).unwrap();
        assert_eq!(next_version(&mut w).await, "v3");
    }

    #[tokio::test]
    async fn a_save_by_rename_over_the_file_is_seen() {
        let (dir, path) = setup();
        let mut w = watch(path.clone(), DEBOUNCE).unwrap();
        let tmp = dir.path().join(".config.toml.swp");
        std::fs::write(&tmp, config("v2")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(next_version(&mut w).await, "v2");
    }

    #[tokio::test]
    async fn a_kubernetes_configmap_symlink_swap_is_seen() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_a")).unwrap();
        std::fs::write(d.join("..2026_a/config.toml"), config("a")).unwrap();
        symlink("..2026_a", d.join("..data")).unwrap();
        symlink("..data/config.toml", d.join("config.toml")).unwrap();
        let path = d.join("config.toml");
        assert_eq!(
            reload_now(&path).unwrap().telemetry.service_name,
            "a",
            "the symlinked layout loads"
        );

        let mut w = watch(path, DEBOUNCE).unwrap();
        std::fs::create_dir(d.join("..2026_b")).unwrap();
        std::fs::write(d.join("..2026_b/config.toml"), config("b")).unwrap();
        symlink("..2026_b", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        assert_eq!(next_version(&mut w).await, "b");
    }

    #[tokio::test]
    async fn an_invalid_file_yields_every_error_with_its_key_path() {
        let (_dir, path) = setup();
        let mut w = watch(path.clone(), DEBOUNCE).unwrap();
        let text = config("v2")
            .replace(
                "protocol = \"http\"\naddress",
                "protocol = \"htp\"\naddress",
            )
            .replace("upstream = \"users\"", "upstream = \"userz\"")
            .replace("users.internal:80", "users.internal");
        std::fs::write(&path, &text).unwrap();
        let e = next(&mut w).await.unwrap_err();
        let got: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                r#"listeners[0].protocol: "htp" is not a known listener protocol (known: http, thrift)"#,
                r#"routes[0].upstream: "userz" is not a defined upstream (defined: "users")"#,
                r#"upstreams[0].endpoints[0]: "users.internal" is not host:port"#,
            ]
        );
        assert_eq!(Err(e), reload_now(&path), "the same as check");
        // Fixed again: the next result is a config.
        std::fs::write(&path, config("v3")).unwrap();
        assert_eq!(next_version(&mut w).await, "v3");
    }

    #[tokio::test]
    async fn a_burst_of_writes_is_one_result_and_unchanged_bytes_none() {
        let (_dir, path) = setup();
        let debounce = Duration::from_millis(400);
        let mut w = watch(path.clone(), debounce).unwrap();
        for i in 0..10 {
            std::fs::write(&path, config(&format!("burst-{i}"))).unwrap();
        }
        assert_eq!(next_version(&mut w).await, "burst-9");
        assert_quiet(&mut w, debounce * 3).await;

        // The same bytes written again (and a touch of metadata): nothing to re-load.
        std::fs::write(&path, config("burst-9")).unwrap();
        assert_quiet(&mut w, debounce * 3).await;
        std::fs::write(&path, config("after")).unwrap();
        assert_eq!(next_version(&mut w).await, "after");
    }

    #[tokio::test]
    async fn an_unreadable_file_is_reported_once() {
        let (_dir, path) = setup();
        let mut w = watch(path.clone(), DEBOUNCE).unwrap();
        std::fs::remove_file(&path).unwrap();
        let e = next(&mut w).await.unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].path, "");
        assert!(
            e.errors[0]
                .message
                .starts_with(&format!("cannot read {}: ", path.display())),
            "{e}"
        );
        // Back and gone again within one burst: still unreadable, nothing new to say.
        std::fs::write(&path, config("brief")).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_quiet(&mut w, DEBOUNCE * 3).await;
        std::fs::write(&path, config("back")).unwrap();
        assert_eq!(next_version(&mut w).await, "back");
    }

    #[test]
    fn watch_needs_a_runtime_and_a_file_name() {
        let e = watch(PathBuf::from("/tmp/x.toml"), DEBOUNCE).unwrap_err();
        assert_eq!(e.to_string(), "watching /tmp/x.toml needs a tokio runtime");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let e = watch(PathBuf::from("/tmp/.."), DEBOUNCE).unwrap_err();
        assert_eq!(e.to_string(), "/tmp/.. names no file to watch");
        let e = watch(PathBuf::from("/nonexistent-dir/x.toml"), DEBOUNCE).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot watch directory /nonexistent-dir: "),
            "{e}"
        );
    }
}
