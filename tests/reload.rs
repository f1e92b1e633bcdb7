//! Integration: hot reload of the real binary. `tracebridge run --config FILE` runs as a child
//! process on 127.0.0.1:0 (ports read from its `listening ...` lines), in front of in-process
//! upstreams that say who they are: HTTP/1.1 upstreams `a` and `b` (body `A` / `B`) and a
//! multiplexing THeader upstream `thrift` (result `"thrift"`). Each test edits the config file
//! the way people do (an editor's rename-over save, a Kubernetes ConfigMap symlink swap) or
//! sends SIGHUP, and checks what the child prints, where traffic goes and the admin `/metrics`.
//!
//! - a reload under load (about 200 HTTP requests and 200 pipelined Thrift calls in flight)
//!   loses nothing, and requests that start after `reload ok` reach the new upstream;
//! - an invalid file changes nothing and names every error by key path;
//! - a ConfigMap `..data` swap is seen;
//! - a `[[listeners]]` change is refused;
//! - without `--enable-config-watch` only SIGHUP reloads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "reload/gateway.rs"]
mod gateway;
#[path = "reload/load.rs"]
mod load;
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use gateway::Gateway;
use load::{
    Load, Record, ThriftUpstream, h2c_client, http1_client, thrift_client, thrift_once, until,
};
use support::{Answer, Upstream};

/// Bound of every wait on a condition.
const WAIT: Duration = Duration::from_secs(10);
/// How long the upstreams take to answer, so that calls are in flight when a reload lands.
const UPSTREAM_DELAY: Duration = Duration::from_millis(30);
/// How long the Thrift upstream takes to answer `Sleepy:` calls.
const SLEEPY_DELAY: Duration = Duration::from_millis(600);

// ---------------------------------------------------------------------------------------------
// Upstreams and config

/// The in-process upstreams of one test.
struct Upstreams {
    a: Upstream,
    b: Upstream,
    thrift: ThriftUpstream,
}

impl Upstreams {
    async fn start() -> Upstreams {
        let answer = |body| Answer {
            body,
            delay: UPSTREAM_DELAY,
            ..Answer::default()
        };
        Upstreams {
            a: Upstream::start(answer("A")).await,
            b: Upstream::start(answer("B")).await,
            thrift: ThriftUpstream::start().await,
        }
    }
}

/// The routes a config may vary: where `edge` sends HTTP, and the two Thrift routes' timeouts.
#[derive(Clone, Copy)]
struct Routes<'a> {
    http_to: &'a str,
    calc_timeout: &'a str,
    sleepy_timeout: &'a str,
}

const START: Routes<'static> = Routes {
    http_to: "a",
    calc_timeout: "5s",
    sleepy_timeout: "5s",
};

fn config(ups: &Upstreams, routes: Routes<'_>) -> String {
    let Routes {
        http_to,
        calc_timeout,
        sleepy_timeout,
    } = routes;
    let (a, b, t) = (ups.a.address, ups.b.address, ups.thrift.address);
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[shutdown]
drain_timeout = "1s"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:0"
[[routes]]
name = "api"
listener = "edge"
upstream = "{http_to}"
[[routes]]
name = "calc"
listener = "rpc"
match = {{ thrift_method = "Calc:" }}
upstream = "thrift"
timeout = "{calc_timeout}"
[[routes]]
name = "sleepy"
listener = "rpc"
match = {{ thrift_method = "Sleepy:" }}
upstream = "thrift"
timeout = "{sleepy_timeout}"
[[upstreams]]
name = "a"
protocol = "http"
endpoints = ["{a}"]
[[upstreams]]
name = "b"
protocol = "http"
endpoints = ["{b}"]
[[upstreams]]
name = "thrift"
protocol = "thrift"
transport = "header"
thrift_protocol = "binary"
endpoints = ["{t}"]
"#
    )
}

/// Saves `text` as an editor does: a temporary file in the same directory renamed over `path`.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A config file in a fresh temporary directory.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracebridge.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

// ---------------------------------------------------------------------------------------------
// Tests

/// HTTP/1.1 keep-alive connections, h2c connections and streams on each, Thrift connections
/// and calls pipelined on each: 8 + 4 × 48 = 200 HTTP requests and 8 × 25 = 200 Thrift calls
/// in flight.
const HTTP1_CONNECTIONS: usize = 8;
const H2C_CONNECTIONS: usize = 4;
const H2C_STREAMS: usize = 48;
const THRIFT_CONNECTIONS: usize = 8;
const THRIFT_DEPTH: usize = 25;

/// Requests and calls that must complete after the last reload before the load stops.
const AFTER_RELOAD: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_nothing() {
    let ups = Upstreams::start().await;
    let (_dir, path) = config_file(&config(&ups, START));
    let mut gw = Gateway::start(&path, true).await;
    assert_eq!(gw.who().await, "A");
    assert_eq!(
        thrift_once(gw.rpc, "Sleepy:nap").await,
        Ok("thrift".into()),
        "a {SLEEPY_DELAY:?} call is answered within the first config's 5s"
    );

    let (http, thrift) = (Load::default(), Load::default());
    let mut http_clients = Vec::new();
    for _ in 0..HTTP1_CONNECTIONS {
        http_clients.push(tokio::spawn(http1_client(gw.edge, http.clone())));
    }
    for _ in 0..H2C_CONNECTIONS {
        http_clients.push(tokio::spawn(h2c_client(gw.edge, H2C_STREAMS, http.clone())));
    }
    let thrift_clients: Vec<_> = (0..THRIFT_CONNECTIONS)
        .map(|_| tokio::spawn(thrift_client(gw.rpc, THRIFT_DEPTH, thrift.clone())))
        .collect();
    let http_target = HTTP1_CONNECTIONS + H2C_CONNECTIONS * H2C_STREAMS;
    let thrift_target = THRIFT_CONNECTIONS * THRIFT_DEPTH;
    // Running on the first config: a first round answered, the next in flight.
    until("the load is in flight", || {
        let http_up = http.done() >= http_target && http.in_flight() >= http_target * 9 / 10;
        http_up && thrift.done() >= thrift_target && thrift.in_flight() >= thrift_target * 9 / 10
    })
    .await;

    // Point `api` at upstream b and change both Thrift routes' timeouts, while all that is in
    // flight; the watcher applies it after its debounce, SIGHUP at once (same file: the
    // second reload is another generation of the same config).
    let in_flight_at_save = (http.in_flight(), thrift.in_flight());
    let saved = Instant::now();
    let next = Routes {
        http_to: "b",
        calc_timeout: "4s",
        sleepy_timeout: "200ms",
    };
    save(&path, &config(&ups, next));
    gw.sighup();
    let first = gw.next_reload().await;
    let in_flight_at_reload = (http.in_flight(), thrift.in_flight());
    let second = gw.next_reload().await;
    assert_eq!(
        [first.line.as_str(), second.line.as_str()],
        ["reload ok generation=2", "reload ok generation=3"]
    );

    // Keep the load going for a while on the new config.
    let (http_mark, thrift_mark) = (http.done(), thrift.done());
    until("traffic after the reload", || {
        http.done() >= http_mark + AFTER_RELOAD && thrift.done() >= thrift_mark + AFTER_RELOAD
    })
    .await;
    http.stop.cancel();
    thrift.stop.cancel();
    let collect = |handles: Vec<tokio::task::JoinHandle<Vec<Record>>>| async move {
        let all = futures_util::future::join_all(handles);
        let done = tokio::time::timeout(WAIT, all)
            .await
            .expect("the clients did not finish");
        done.into_iter()
            .flat_map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    let http_records = collect(http_clients).await;
    let thrift_records = collect(thrift_clients).await;

    // Nothing lost: every request got a 200 from a or b, every call a REPLY from the upstream.
    let failed: Vec<_> = http_records
        .iter()
        .chain(&thrift_records)
        .filter_map(|r| r.answer.as_ref().err())
        .collect();
    let from = |records: &[Record], who: &str, keep: &dyn Fn(&Record) -> bool| {
        records
            .iter()
            .filter(|r| keep(r) && r.answer.as_deref() == Ok(who))
            .count()
    };
    let all = |_: &Record| true;
    let (to_a, to_b) = (
        from(&http_records, "A", &all),
        from(&http_records, "B", &all),
    );
    let thrift_ok = from(&thrift_records, "thrift", &all);
    let straddling = |records: &[Record]| {
        records
            .iter()
            .filter(|r| r.started < first.at && r.finished > first.at)
            .count()
    };
    let after = |r: &Record| r.started > first.at;
    let before = |r: &Record| r.finished < saved;
    println!(
        "HTTP: {} requests ({to_a} to a, {to_b} to b), {} in flight at the save, {} at `reload ok`, \
         {} spanning it; started after it: {} (to b: {}); done before the save: {} (to a: {})",
        http_records.len(),
        in_flight_at_save.0,
        in_flight_at_reload.0,
        straddling(&http_records),
        http_records.iter().filter(|r| after(r)).count(),
        from(&http_records, "B", &after),
        http_records.iter().filter(|r| before(r)).count(),
        from(&http_records, "A", &before),
    );
    println!(
        "Thrift: {} calls ({thrift_ok} replied), {} in flight at the save, {} at `reload ok`, {} spanning it",
        thrift_records.len(),
        in_flight_at_save.1,
        in_flight_at_reload.1,
        straddling(&thrift_records),
    );
    println!("lost or failed: {}", failed.len());
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(to_a + to_b, http_records.len());
    assert_eq!(thrift_ok, thrift_records.len());
    assert!(straddling(&http_records) > 0 && straddling(&thrift_records) > 0);
    assert!(
        in_flight_at_reload.0 >= http_target / 2,
        "{in_flight_at_reload:?}"
    );
    assert!(
        in_flight_at_reload.1 >= thrift_target / 2,
        "{in_flight_at_reload:?}"
    );

    // Where traffic went: before the save all to a; after `reload ok` all to b.
    let started_after = http_records.iter().filter(|r| after(r)).count();
    assert!(started_after >= AFTER_RELOAD, "{started_after}");
    assert_eq!(from(&http_records, "B", &after), started_after);
    let done_before = http_records.iter().filter(|r| before(r)).count();
    assert!(done_before > 0);
    assert_eq!(from(&http_records, "A", &before), done_before);

    // The new Thrift timeout applies; the Thrift pool (one multiplexed connection) was kept.
    assert_eq!(
        thrift_once(gw.rpc, "Sleepy:nap").await,
        Err("Exception: upstream thrift did not answer within 200ms".into())
    );
    assert_eq!(
        ups.thrift.accepted.load(Ordering::SeqCst),
        1,
        "the pool was kept"
    );

    let (ok, invalid, restart, generation) = gw.reload_metrics().await;
    println!(
        "reloads ok={ok} invalid={invalid} restart_required={restart} generation={generation}"
    );
    assert!(ok >= 1.0);
    assert_eq!(
        (ok, invalid, restart, generation),
        (2.0, 0.0, 0.0, 1.0 + ok)
    );
    gw.kill().await;
}

/// The error lines `tracebridge check` prints for `path`.
fn check_errors(path: &Path) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracebridge"))
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    stderr
        .lines()
        .skip(1)
        .map(|l| l.trim_start().to_owned())
        .collect()
}

#[tokio::test]
async fn an_invalid_file_changes_nothing() {
    let ups = Upstreams::start().await;
    let (_dir, path) = config_file(&config(&ups, START));
    let mut gw = Gateway::start(&path, true).await;
    assert_eq!(gw.who().await, "A");

    // A route to an upstream nobody defined, and a duration in no known unit.
    let broken = Routes {
        http_to: "c",
        calc_timeout: "5x",
        ..START
    };
    save(&path, &config(&ups, broken));
    let reload = gw.next_reload().await;
    assert_eq!(
        reload.line,
        format!(
            "reload invalid: {}: 2 error(s), keeping generation 1",
            path.display()
        )
    );
    assert_eq!(
        reload.errors,
        [
            r#"routes[0].upstream: "c" is not a defined upstream (defined: "a", "b", "thrift")"#,
            r#"routes[1].timeout: "5x" is not a duration: unknown unit "x" (ms, s, m or h)"#,
        ]
    );
    assert_eq!(reload.errors, check_errors(&path), "as `check` says");
    assert_eq!(gw.who().await, "A");
    assert_eq!(thrift_once(gw.rpc, "Calc:add").await, Ok("thrift".into()));
    assert_eq!(gw.reload_metrics().await, (0.0, 1.0, 0.0, 1.0));
    assert_eq!(ups.b.count(), 0);

    // Fixed (and pointed at b): applied.
    let fixed = Routes {
        http_to: "b",
        ..START
    };
    save(&path, &config(&ups, fixed));
    assert_eq!(gw.next_reload().await.line, "reload ok generation=2");
    assert_eq!(gw.who().await, "B");
    assert_eq!(gw.reload_metrics().await, (1.0, 1.0, 0.0, 2.0));
    gw.kill().await;
}

#[tokio::test]
async fn a_kubernetes_configmap_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    let ups = Upstreams::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..2026_a")).unwrap();
    std::fs::write(d.join("..2026_a/tracebridge.toml"), config(&ups, START)).unwrap();
    symlink("..2026_a", d.join("..data")).unwrap();
    symlink("..data/tracebridge.toml", d.join("tracebridge.toml")).unwrap();
    let mut gw = Gateway::start(&d.join("tracebridge.toml"), true).await;
    assert_eq!(gw.who().await, "A");

    // What the kubelet does on a ConfigMap update: a new timestamped directory, `..data_tmp`
    // pointing at it, renamed over `..data`. No event names `tracebridge.toml`.
    let to_b = Routes {
        http_to: "b",
        ..START
    };
    std::fs::create_dir(d.join("..2026_b")).unwrap();
    std::fs::write(d.join("..2026_b/tracebridge.toml"), config(&ups, to_b)).unwrap();
    symlink("..2026_b", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    assert_eq!(gw.next_reload().await.line, "reload ok generation=2");
    assert_eq!(gw.who().await, "B");
    assert_eq!(gw.reload_metrics().await, (1.0, 0.0, 0.0, 2.0));
    gw.kill().await;
}

#[tokio::test]
async fn a_listener_change_is_refused() {
    let ups = Upstreams::start().await;
    let (_dir, path) = config_file(&config(&ups, START));
    let mut gw = Gateway::start(&path, true).await;
    assert_eq!(gw.who().await, "A");

    // The edge listener moves (and the route with it would go to b): nothing is applied.
    let to_b = Routes {
        http_to: "b",
        ..START
    };
    let moved = config(&ups, to_b).replacen(
        r#"address = "127.0.0.1:0""#,
        r#"address = "127.0.0.2:0""#,
        1,
    );
    save(&path, &moved);
    assert_eq!(
        gw.next_reload().await.line,
        "reload not applied: [[listeners]] changed; restart the gateway to apply it"
    );
    assert_eq!(gw.who().await, "A");
    assert_eq!(gw.reload_metrics().await, (0.0, 0.0, 1.0, 1.0));

    // The listener as it was, the route change alone: applied.
    save(&path, &config(&ups, to_b));
    assert_eq!(gw.next_reload().await.line, "reload ok generation=2");
    assert_eq!(gw.who().await, "B");
    assert_eq!(gw.reload_metrics().await, (1.0, 0.0, 1.0, 2.0));
    gw.kill().await;
}

#[tokio::test]
async fn without_the_watch_flag_only_sighup_reloads() {
    let ups = Upstreams::start().await;
    let (_dir, path) = config_file(&config(&ups, START));
    let mut gw = Gateway::start(&path, false).await;
    assert!(
        !gw.startup.iter().any(|l| l.starts_with("watching ")),
        "{:?}",
        gw.startup
    );
    assert_eq!(gw.who().await, "A");

    let to_b = Routes {
        http_to: "b",
        ..START
    };
    save(&path, &config(&ups, to_b));
    // Five debounce windows: a watcher, were there one, would have reloaded by now.
    gw.assert_no_reload(tracebridge::app::reload::WATCH_DEBOUNCE * 5)
        .await;
    assert_eq!(gw.who().await, "A");
    assert_eq!(gw.reload_metrics().await, (0.0, 0.0, 0.0, 1.0));

    gw.sighup();
    assert_eq!(gw.next_reload().await.line, "reload ok generation=2");
    assert!(gw.is_running(), "SIGHUP ended the gateway");
    assert_eq!(gw.who().await, "B");
    assert_eq!(gw.reload_metrics().await, (1.0, 0.0, 0.0, 2.0));
    gw.kill().await;
}
