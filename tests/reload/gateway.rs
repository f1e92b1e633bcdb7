//! `tracebridge run` as a child process: its stdout read line by line (each line with the
//! instant the test read it), SIGHUP, the admin `/metrics`, and one HTTP request to ask which
//! upstream answers.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::WAIT;
use crate::support;

/// One stdout line of the child and when the test read it.
#[derive(Debug)]
struct Line {
    text: String,
    at: Instant,
}

/// A reload outcome the child printed: its first line, the error lines under it, and when
/// the test read it.
#[derive(Debug)]
pub(crate) struct Reload {
    pub(crate) line: String,
    pub(crate) errors: Vec<String>,
    pub(crate) at: Instant,
}

/// `tracebridge run` as a child process; killed when dropped.
pub(crate) struct Gateway {
    child: Child,
    pub(crate) edge: SocketAddr,
    pub(crate) rpc: SocketAddr,
    admin: SocketAddr,
    pub(crate) startup: Vec<String>,
    lines: mpsc::UnboundedReceiver<Line>,
    stderr: Arc<Mutex<String>>,
}

impl Gateway {
    /// Starts the binary on `path` and reads its stdout up to `ready`.
    pub(crate) async fn start(path: &Path, watch: bool) -> Gateway {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracebridge"));
        command
            .arg("run")
            .arg("--config")
            .arg(path)
            .env_remove("TRACEBRIDGE_CONFIG_WATCH")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if watch {
            command.arg("--enable-config-watch");
        }
        let mut child = command.spawn().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(text)) = stdout.next_line().await {
                let at = Instant::now();
                if tx.send(Line { text, at }).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let log = stderr.clone();
        let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut gw = Gateway {
            child,
            edge: support::closed_port().await,
            rpc: support::closed_port().await,
            admin: support::closed_port().await,
            startup: Vec::new(),
            lines,
            stderr,
        };
        loop {
            let line = gw.next_line("ready").await;
            if line.text == "ready" {
                break;
            }
            if let Some((name, address)) = listening(&line.text) {
                match name {
                    "edge" => gw.edge = address,
                    "rpc" => gw.rpc = address,
                    "admin" => gw.admin = address,
                    other => panic!("unexpected listener {other}"),
                }
            }
            gw.startup.push(line.text);
        }
        assert_eq!(
            gw.startup.len() as u8,
            3 + u8::from(watch),
            "{:?}",
            gw.startup
        );
        gw
    }

    /// The next stdout line, which must come within [`WAIT`].
    async fn next_line(&mut self, waiting_for: &str) -> Line {
        match tokio::time::timeout(WAIT, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "the gateway's stdout ended while waiting for {waiting_for:?}; stderr:\n{}",
                self.stderr.lock().unwrap()
            ),
            Err(_) => panic!(
                "no {waiting_for:?} within {WAIT:?}; stderr:\n{}",
                self.stderr.lock().unwrap()
            ),
        }
    }

    /// The next reload outcome (other lines are skipped). A `reload invalid:` line that counts
    /// `N error(s)` comes with the N lines under it.
    pub(crate) async fn next_reload(&mut self) -> Reload {
        let line = loop {
            let line = self.next_line("a reload line").await;
            if line.text.starts_with("reload ") {
                break line;
            }
        };
        // `reload invalid: FILE: N error(s), keeping generation G`, then N indented lines.
        let count = line
            .text
            .split_once(" error(s), keeping generation ")
            .and_then(|(head, _)| head.rsplit_once(": "))
            .map_or(0, |(_, n)| n.parse::<usize>().unwrap());
        let mut errors = Vec::with_capacity(count);
        for _ in 0..count {
            let error = self.next_line("an error line").await.text;
            errors.push(error.trim_start().to_owned());
        }
        Reload {
            line: line.text,
            errors,
            at: line.at,
        }
    }

    /// Asserts that no reload line comes for `quiet` (a bounded wait for an absence).
    pub(crate) async fn assert_no_reload(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        while let Ok(line) = tokio::time::timeout_at(deadline, self.lines.recv()).await {
            let line = line.expect("the gateway's stdout ended");
            assert!(
                !line.text.starts_with("reload "),
                "expected no reload, got {:?}",
                line.text
            );
        }
    }

    /// Sends the process SIGHUP.
    pub(crate) fn sighup(&self) {
        let pid = self.child.id().expect("the gateway is running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -HUP {pid}: {status}");
    }

    /// `(ok, invalid, restart_required, generation)` from one read of `/metrics`. A counter
    /// family shows no sample until its first increment: an absent sample is 0.
    pub(crate) async fn reload_metrics(&self) -> (f64, f64, f64, f64) {
        let (status, _, body) = support::send(false, self.admin, "GET", "/metrics", &[], "").await;
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8(body.to_vec()).unwrap();
        let value = |sample: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
                .map_or(0.0, |v| v.trim().parse().unwrap())
        };
        let reloads = |result| format!("tracebridge_config_reloads_total{{result=\"{result}\"}}");
        (
            value(&reloads("ok")),
            value(&reloads("invalid")),
            value(&reloads("restart_required")),
            value("tracebridge_config_generation"),
        )
    }

    /// Which upstream answered a plain HTTP request (`A` or `B`).
    pub(crate) async fn who(&self) -> String {
        let (status, _, body) = support::send(false, self.edge, "GET", "/who", &[], "").await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub(crate) async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// `(name, address)` of a `listening name=... protocol=... address=...` line.
fn listening(line: &str) -> Option<(&str, SocketAddr)> {
    let rest = line.strip_prefix("listening name=")?;
    let (name, rest) = rest.split_once(' ')?;
    let address = rest.split_once("address=")?.1.parse().ok()?;
    Some((name, address))
}
