//! Integration: `tracebridge demo`. Its building blocks (the demo gateway and its in-process
//! upstreams of each protocol, on 127.0.0.1:0) and its `--once` mode as a user runs it. The
//! Thrift call must reach the THeader upstream with the caller's trace id and the gateway's
//! client span as the new parent, and come back as the decoded `greet` result.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use tokio::sync::mpsc;
use tracebridge::app::demo::{self, DemoOptions};

const CALLER_TRACE: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
const CALLER_SPAN: &str = "051581bf3cb55c13";

fn options() -> DemoOptions {
    DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        once: true,
    }
}

#[tokio::test]
async fn thrift_sample_reaches_the_thrift_upstream_with_the_callers_trace() {
    let (seen, mut lines) = mpsc::unbounded_channel();
    let demo = demo::start(&options(), seen).await.unwrap();
    let rpc = demo.gateway.bound.iter().find(|b| b.name == "rpc").unwrap();
    assert_eq!(rpc.protocol, "thrift");
    assert_ne!(rpc.address.port(), 0);

    let crossing = tokio::time::timeout(Duration::from_secs(10), demo.thrift_sample())
        .await
        .expect("no Thrift reply within 10s")
        .unwrap();
    assert_eq!(crossing.reply, "Hello, thrift");
    assert_eq!(
        crossing.traceparent,
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    );
    assert_eq!(crossing.sent.trace_id.to_hex(), CALLER_TRACE);
    assert_eq!(crossing.sent.span_id.to_hex(), CALLER_SPAN);

    let received = crossing
        .received
        .expect("the Thrift upstream recorded the call");
    assert_eq!(received.name, "thrift");
    let got = received
        .context
        .expect("the Thrift upstream received a valid traceparent");
    assert_eq!(got.trace_id.to_hex(), CALLER_TRACE);
    assert_ne!(got.span_id.to_hex(), CALLER_SPAN);
    assert!(!got.span_id.is_zero());
    assert!(got.flags.is_sampled());

    // The upstream's own line shows the info headers the gateway injected (w3c + jaeger).
    let line = tokio::time::timeout(Duration::from_secs(5), lines.recv())
        .await
        .unwrap()
        .unwrap();
    let parent = got.span_id.to_hex();
    assert_eq!(
        line,
        format!(
            "upstream greeter <-- THeader greet traceparent=00-{CALLER_TRACE}-{parent}-01 uber-trace-id={CALLER_TRACE}:{parent}:0:01"
        )
    );
    demo.shutdown().await;
}

/// The value after `key=` in `line`, up to the next space.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    line[start..].split(' ').next()
}

#[tokio::test]
async fn once_prints_the_thrift_trace_crossing_the_gateway() {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tracebridge"))
        .args([
            "demo",
            "--once",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("demo --once did not exit within 60s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let find = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}"))
    };

    assert!(find("  gateway        rpc     thrift://127.0.0.1:").len() > 40);
    assert!(find("  demo upstream  greeter thrift://127.0.0.1:").contains("greet(1: string name)"));
    assert_eq!(
        *find("caller  --thrift-->"),
        format!(
            "caller  --thrift--> THeader greet(\"thrift\") traceparent: 00-{CALLER_TRACE}-{CALLER_SPAN}-01"
        )
    );
    assert_eq!(
        *find("caller  <-- REPLY"),
        "caller  <-- REPLY \"Hello, thrift\""
    );
    assert_eq!(
        *find("thrift  caller "),
        format!("thrift  caller   trace_id={CALLER_TRACE} parent={CALLER_SPAN}")
    );
    let upstream = find("thrift  upstream ");
    assert_eq!(field(upstream, "trace_id"), Some(CALLER_TRACE));
    let parent = field(upstream, "parent").unwrap();
    assert_ne!(parent, CALLER_SPAN);
    assert!(
        upstream.ends_with("(same trace; new parent = the gateway's client span)"),
        "{upstream}"
    );
    assert_eq!(
        field(find("upstream greeter <-- THeader greet"), "traceparent"),
        Some(format!("00-{CALLER_TRACE}-{parent}-01").as_str())
    );
    // The parent the upstream got is the span the gateway logged as its client span of this
    // trace, whose own parent is the gateway's server span (child of the caller's span).
    let client_span = lines
        .iter()
        .find(|l| {
            l.starts_with("span ")
                && field(l, "span_id") == Some(parent)
                && field(l, "kind") == Some("client")
        })
        .unwrap_or_else(|| panic!("no client span {parent} in:\n{stdout}"));
    assert_eq!(field(client_span, "trace_id"), Some(CALLER_TRACE));
    let server_span = field(client_span, "parent").unwrap();
    let server = lines
        .iter()
        .find(|l| l.starts_with("span ") && field(l, "span_id") == Some(server_span))
        .unwrap_or_else(|| panic!("no server span {server_span} in:\n{stdout}"));
    assert_eq!(field(server, "kind"), Some("server"));
    assert_eq!(field(server, "parent"), Some(CALLER_SPAN));
}
