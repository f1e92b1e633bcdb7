//! Hot reload of the config file: on SIGHUP (always) and, with `--enable-config-watch`, when
//! the file changes. The whole file is validated exactly as `tracebridge check` does; only a
//! valid file is swapped in as the next snapshot. An invalid file keeps the running snapshot
//! and logs every error with its key path. Outcomes are printed as one line each
//! (`reload ok generation=N`, `reload invalid: ...`, `reload not applied: ...`) and counted in
//! `tracebridge_config_reloads_total{result}`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ReloadError, Reloader};
use crate::config::watch::ConfigWatch;
use crate::config::{self, Config, ConfigErrors};

/// How long a burst of file-system events is let settle before the file is read.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// Applies the result of loading the config file: a valid config is swapped in, an invalid
/// one is refused with every error named. Returns the line it printed.
pub fn apply(path: &Path, reloader: &Reloader, loaded: Result<Config, ConfigErrors>) -> String {
    let line = match loaded {
        Ok(config) => match reloader.reload(config) {
            Ok(generation) => format!("reload ok generation={generation}"),
            Err(e @ ReloadError::RestartRequired(_)) => format!("reload {e}"),
            Err(ReloadError::Build(e)) => format!("reload invalid: {e}"),
        },
        Err(errors) => {
            reloader.invalid();
            let mut text = format!(
                "reload invalid: {}: {} error(s), keeping generation {}",
                path.display(),
                errors.errors.len(),
                reloader.generation()
            );
            for e in &errors.errors {
                text.push_str(&format!("\n  {e}"));
            }
            text
        }
    };
    println!("{line}");
    line
}

/// Reloads on every SIGHUP until the process ends. The handler is installed before this
/// returns (so a SIGHUP right after start reloads rather than kills: SIGHUP's default action
/// is to terminate); the returned future serves it.
pub fn on_sighup(
    path: PathBuf,
    reloader: Reloader,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        Ok(async move {
            while hup.recv().await.is_some() {
                apply(&path, &reloader, config::load(&path));
            }
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (path, reloader);
        Ok(std::future::pending())
    }
}

/// Starts watching the config file (`--enable-config-watch`). Call it before the initial
/// [`config::load`]: the watch's baseline is the file as it is now, so a change made while
/// the gateway starts is then applied by [`apply_changes`] instead of missed. Fails if the
/// file's directory cannot be watched.
pub fn watch(path: PathBuf) -> Result<ConfigWatch, config::watch::WatchError> {
    config::watch::watch(path, WATCH_DEBOUNCE)
}

/// Applies every settled change a [`watch`] yields, like a SIGHUP.
pub fn apply_changes(mut changes: ConfigWatch, reloader: Reloader) {
    tokio::spawn(async move {
        while let Some(loaded) = changes.next().await {
            apply(changes.path(), &reloader, loaded);
        }
    });
}
