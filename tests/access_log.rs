//! The access log (`[log] access = "json"`): the real binary writes one JSON line per call on
//! standard output, from the `record` phase, with the call's listener, protocol, target,
//! route, upstream, endpoint, code, outcome, duration, bytes and trace ids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

use support::{Answer, Upstream};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The next stdout line, within a bound.
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("no line within 10 s")
        .unwrap()
        .expect("stdout closed")
}

/// The next access-log line (a JSON object), skipping the gateway's other lines.
async fn next_record(lines: &mut Lines<BufReader<ChildStdout>>) -> serde_json::Value {
    loop {
        let line = next_line(lines).await;
        if line.starts_with('{') {
            return serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    }
}

#[tokio::test]
async fn one_json_line_per_call_from_record() {
    let up = Upstream::start(Answer {
        body: "0123456789",
        ..Answer::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[admin]
listen = ""
[log]
access = "json"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[routes]]
name = "users"
listener = "edge"
match = {{ path_prefix = "/users" }}
upstream = "users"
[[upstreams]]
name = "users"
protocol = "http"
endpoints = ["{}"]
"#,
            up.address
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracebridge"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut edge = None;
    loop {
        let line = next_line(&mut lines).await;
        if let Some(a) = line.strip_prefix("listening name=edge protocol=http address=") {
            edge = Some(a.to_owned());
        }
        if line == "ready" {
            break;
        }
    }
    let edge: std::net::SocketAddr = edge.unwrap().parse().unwrap();

    let tp = format!("00-{CALLER_TRACE}-00f067aa0ba902b7-01");
    let (status, _, _) = support::send(
        false,
        edge,
        "GET",
        "/users/7?x=1",
        &[("traceparent", &tp)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let record = next_record(&mut lines).await;
    assert_eq!(record["listener"], "edge");
    assert_eq!(record["protocol"], "http");
    assert_eq!(record["method"], "GET");
    assert_eq!(record["target"], "/users/7?x=1");
    assert_eq!(record["route"], "users");
    assert_eq!(record["upstream"], "users");
    assert_eq!(record["endpoint"], up.address.to_string());
    assert_eq!(record["code"], "200");
    assert_eq!(record["outcome"], "ok");
    assert_eq!(record["bytes_out"], 10);
    assert_eq!(record["trace_id"], CALLER_TRACE);
    let span = record["span_id"].as_str().unwrap();
    assert_eq!(span.len(), 16);
    assert_ne!(span, "00f067aa0ba902b7", "the gateway's own server span");
    assert!(record["duration_ms"].as_f64().unwrap() >= 0.0);
    let time = record["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );

    let (status, _, body) = support::send(false, edge, "GET", "/nowhere", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let record = next_record(&mut lines).await;
    assert_eq!(record["target"], "/nowhere");
    assert_eq!(record["route"], serde_json::Value::Null);
    assert_eq!(record["code"], "404");
    assert_eq!(record["outcome"], "no_route");
    // The trace id the caller was shown is the one logged.
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(record["trace_id"], body["trace_id"]);
    assert_eq!(record["trace_id"].as_str().unwrap().len(), 32);
    child.kill().await.unwrap();
}
