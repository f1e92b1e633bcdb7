//! `tracebridge demo`: the embedded default. Starts in-process demo upstreams of all three
//! protocols (HTTP `users`, the gRPC Greeter, the THeader Thrift `greet`) and the gateway in
//! front of them from an embedded config, prints where everything listens and each trace as it
//! crosses (`log_spans`), and with `--once` sends one request per trace format through itself,
//! one JSON call bridged to the gRPC Greeter and one THeader call through the Thrift listener,
//! printing what the caller sent and what the upstream received.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::RunningGateway;
use super::demo_thrift::{self, ThriftGreeter};
use crate::config;
use crate::error::{ErrorKind, GatewayError, Side};

pub use super::demo_thrift::{Received, ThriftCrossing};

/// The embedded gateway config; `{LISTEN}`, `{THRIFT}`, `{ADMIN}`, `{USERS}`, `{GREETER}` and
/// `{THRIFT_GREETER}` are filled in at start.
pub const DEMO_CONFIG: &str = r#"
[admin]
listen = "{ADMIN}"

[telemetry]
service_name = "tracebridge-demo"
log_spans = true
sampler = { kind = "parent_ratio", ratio = 1.0 }

[propagation]
extract = ["w3c", "jaeger", "b3", "grpc-trace-bin", "x-trace-raw"]
inject = ["w3c", "jaeger"]
on_missing = "start"

[[listeners]]
name = "edge"
protocol = "http"
address = "{LISTEN}"

[[listeners]]
name = "rpc"
protocol = "thrift"
address = "{THRIFT}"

[[routes]]
name = "strict"
listener = "edge"
match = { path_prefix = "/strict" }
upstream = "users"
on_missing = "reject"

[[routes]]
name = "greeter-json"
listener = "edge"
match = { path_prefix = "/v1" }
upstream = "greeter"
bridge = "json-grpc"

[[routes]]
name = "greeter-default"
listener = "edge"
match = { path_prefix = "/tracebridge.demo.v1.Greeter" }
upstream = "greeter"
bridge = "json-grpc"

[[routes]]
name = "users"
listener = "edge"
match = { path_prefix = "/" }
upstream = "users"

[[routes]]
name = "greeter-thrift"
listener = "rpc"
match = { thrift_method = "greet" }
upstream = "greeter-thrift"

[[upstreams]]
name = "users"
protocol = "http"
endpoints = ["{USERS}"]

[[upstreams]]
name = "greeter"
protocol = "grpc"
endpoints = ["{GREETER}"]

[[upstreams]]
name = "greeter-thrift"
protocol = "thrift"
transport = "header"
thrift_protocol = "binary"
endpoints = ["{THRIFT_GREETER}"]
"#;

/// Options of `tracebridge demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the gateway's HTTP listener binds.
    pub listen: SocketAddr,
    /// Where the admin endpoint binds.
    pub admin: SocketAddr,
    /// Send one request per trace format through the gateway, print, and exit.
    pub once: bool,
}

impl DemoOptions {
    /// Where the gateway's Thrift listener binds: the HTTP listener's IP on the next port
    /// (`127.0.0.1:8081` for the default `127.0.0.1:8080`); port 0 stays 0.
    pub fn thrift_address(&self) -> SocketAddr {
        let port = match self.listen.port() {
            0 => 0,
            p => p.checked_add(1).unwrap_or(0),
        };
        SocketAddr::new(self.listen.ip(), port)
    }
}

/// A started demo: the gateway and the in-process upstreams behind it.
#[derive(Debug)]
pub struct Demo {
    /// The gateway, with listeners `edge` (HTTP) and `rpc` (Thrift) and `admin`.
    pub gateway: RunningGateway,
    users: SocketAddr,
    greeter: SocketAddr,
    thrift: ThriftGreeter,
}

/// Starts the demo upstreams and the gateway from [`DEMO_CONFIG`]. Each upstream sends a line
/// to `seen` for every call it receives, with the trace headers it arrived with.
pub async fn start(
    options: &DemoOptions,
    seen: mpsc::UnboundedSender<String>,
) -> Result<Demo, GatewayError> {
    let greeter = super::demo_grpc::start_greeter(seen.clone()).await?;
    let thrift = demo_thrift::start_thrift_greeter(seen.clone()).await?;
    let users = start_demo_upstream("users", seen).await?;
    let text = DEMO_CONFIG
        .replace("{LISTEN}", &options.listen.to_string())
        .replace("{THRIFT}", &options.thrift_address().to_string())
        .replace("{ADMIN}", &options.admin.to_string())
        .replace("{USERS}", &users.to_string())
        .replace("{GREETER}", &greeter.to_string())
        .replace("{THRIFT_GREETER}", &thrift.address.to_string());
    let config = config::parse(&text).map_err(|e| {
        GatewayError::new(
            ErrorKind::Internal,
            Side::Internal,
            format!("embedded demo config is invalid:\n{e}"),
        )
    })?;
    let gateway = super::start(config).await?;
    Ok(Demo {
        gateway,
        users,
        greeter,
        thrift,
    })
}

impl Demo {
    /// One THeader call of `greet` through the gateway's Thrift listener with a W3C
    /// `traceparent` info header: what the caller sent, what the Thrift upstream received and
    /// the decoded reply.
    pub async fn thrift_sample(&self) -> Result<ThriftCrossing, GatewayError> {
        let rpc = self.gateway.address("rpc").ok_or_else(|| {
            GatewayError::new(
                ErrorKind::Internal,
                Side::Internal,
                "the demo gateway has no Thrift listener",
            )
        })?;
        demo_thrift::sample(rpc, &self.thrift).await
    }

    /// Stops the gateway (drain, flush spans); the upstream tasks end with the runtime.
    pub async fn shutdown(self) {
        self.gateway.shutdown().await;
    }
}

/// Runs the demo until SIGINT/SIGTERM (or, with `once`, after the sample requests).
pub async fn run(options: DemoOptions) -> Result<(), GatewayError> {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<String>();
    let demo = start(&options, seen_tx).await?;
    let edge = demo.gateway.address("edge").unwrap_or(options.listen);
    let rpc = demo
        .gateway
        .address("rpc")
        .unwrap_or_else(|| options.thrift_address());
    print_banner(&demo, edge, rpc);
    // Print what the upstream saw as it happens.
    tokio::spawn(async move {
        while let Some(line) = seen_rx.recv().await {
            println!("{line}");
        }
    });
    if options.once {
        send_samples(edge).await;
        send_thrift_sample(&demo).await;
        // Give the span printer a moment to drain what the export task already has.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        demo.shutdown().await;
        return Ok(());
    }
    let token = demo.gateway.shutdown_token();
    let stop = super::shutdown_signal();
    tokio::spawn(async move {
        stop.await;
        token.cancel();
    });
    demo.gateway.wait().await;
    Ok(())
}

fn print_banner(demo: &Demo, edge: SocketAddr, rpc: SocketAddr) {
    let gateway = &demo.gateway;
    println!("tracebridge demo");
    println!("  demo upstream  users   http://{}", demo.users);
    println!(
        "  demo upstream  greeter grpc://{} (tracebridge.demo.v1.Greeter)",
        demo.greeter
    );
    println!(
        "  demo upstream  greeter thrift://{} (THeader, binary: string {}(1: string name))",
        demo.thrift.address,
        demo_thrift::METHOD
    );
    for b in &gateway.bound {
        println!(
            "  gateway        {:<7} {}://{}",
            b.name,
            if b.protocol == "admin" {
                "http"
            } else {
                b.protocol
            },
            b.address
        );
    }
    println!();
    println!("Try:");
    println!(
        "  curl -s http://{edge}/users/1 -H 'uber-trace-id: 4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1'"
    );
    println!(
        "  curl -s http://{edge}/users/1 -H 'b3: 4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1'"
    );
    println!(
        "  curl -s http://{edge}/strict/1          # rejected: this route demands trace context"
    );
    println!(
        "  curl -si -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' -d '{{\"greeting\":\"hi\"}}' http://{edge}/v1/greeter/world"
    );
    println!("  curl -s http://{edge}/v1/countdown/3     # server streaming as NDJSON");
    println!(
        "  curl -s http://{}/metrics",
        gateway
            .address("admin")
            .map_or_else(|| "-".to_owned(), |a| a.to_string())
    );
    println!(
        "  thrift listener on {rpc}: THeader + binary, greet(1: string name); with Python's thrift package:"
    );
    println!(
        "  python3 -c 'from thrift.transport.TSocket import TSocket; from thrift.protocol.THeaderProtocol import THeaderProtocol; from thrift.Thrift import TType; s = TSocket(\"{}\", {}); s.open(); p = THeaderProtocol(s, [0]); p.set_header(b\"traceparent\", b\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"); p.writeMessageBegin(\"greet\", 1, 0); p.writeStructBegin(\"a\"); p.writeFieldBegin(\"name\", TType.STRING, 1); p.writeString(\"you\"); p.writeFieldEnd(); p.writeFieldStop(); p.writeStructEnd(); p.writeMessageEnd(); p.trans.flush(); p.readMessageBegin(); p.readStructBegin(); p.readFieldBegin(); print(p.readString())'",
        rpc.ip(),
        rpc.port()
    );
    println!();
}

/// One request per trace format, as a caller would send them.
const SAMPLES: [(&str, &str, &str); 4] = [
    (
        "jaeger",
        "uber-trace-id",
        "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
    ),
    (
        "b3",
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
    ),
    (
        "w3c",
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ),
    ("none", "x-no-trace", "1"),
];

async fn send_samples(edge: SocketAddr) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for (label, header, value) in SAMPLES {
        let uri = format!("http://{edge}/users/{label}");
        let Ok(req) = Request::get(&uri)
            .header(header, value)
            .body(Full::new(Bytes::new()))
        else {
            continue;
        };
        println!("caller  --{label}--> {header}: {value}");
        show(&client, req).await;
    }
    // HTTP/JSON in, gRPC out: the W3C context continues into the Greeter's metadata.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let uri = format!("http://{edge}/v1/greeter/world");
    if let Ok(req) = Request::post(&uri)
        .header("traceparent", traceparent)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"greeting":"hi"}"#)))
    {
        println!("caller  --json--> POST /v1/greeter/world traceparent: {traceparent}");
        show(&client, req).await;
    }
}

/// THeader in, THeader out: the caller's `traceparent` info header continues into the Thrift
/// upstream's, with the gateway's client span as the new parent.
async fn send_thrift_sample(demo: &Demo) {
    println!(
        "caller  --thrift--> THeader {}(\"{}\") traceparent: {}",
        demo_thrift::METHOD,
        demo_thrift::SAMPLE_NAME,
        demo_thrift::SAMPLE_TRACEPARENT
    );
    let limit = std::time::Duration::from_secs(5);
    let crossing = match tokio::time::timeout(limit, demo.thrift_sample()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return println!("caller  <-- error: {e}"),
        Err(_) => return println!("caller  <-- no reply within {limit:?}"),
    };
    println!("caller  <-- REPLY \"{}\"", crossing.reply);
    let sent = &crossing.sent;
    println!(
        "thrift  caller   trace_id={} parent={}",
        sent.trace_id, sent.span_id
    );
    match crossing.received.and_then(|r| r.context) {
        Some(got) => {
            let verdict = if got.trace_id != sent.trace_id {
                "TRACE BROKEN: a different trace id"
            } else if got.span_id == sent.span_id {
                "same trace, but the gateway added no span"
            } else {
                "same trace; new parent = the gateway's client span"
            };
            println!(
                "thrift  upstream trace_id={} parent={}  ({verdict})",
                got.trace_id, got.span_id
            );
        }
        None => println!("thrift  upstream received no valid traceparent"),
    }
}

/// Sends one sample and prints the answer.
async fn show(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    req: Request<Full<Bytes>>,
) {
    match client.request(req).await {
        Ok(resp) => {
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            println!(
                "caller  <-- {status} {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Err(e) => println!("caller  <-- error: {e}"),
    }
}

/// A tiny HTTP upstream that answers with the trace headers it received, as JSON.
async fn start_demo_upstream(
    name: &'static str,
    seen: mpsc::UnboundedSender<String>,
) -> Result<SocketAddr, GatewayError> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| {
        GatewayError::new(
            ErrorKind::Internal,
            Side::Internal,
            "cannot bind the demo upstream",
        )
        .with_source(e)
    })?;
    let address = listener.local_addr().map_err(|e| {
        GatewayError::new(
            ErrorKind::Internal,
            Side::Internal,
            "demo upstream has no address",
        )
        .with_source(e)
    })?;
    let seen = Arc::new(seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let seen = seen.clone();
                async move { Ok::<_, std::convert::Infallible>(echo_trace(name, &seen, req)) }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

const TRACE_HEADERS: [&str; 6] = [
    "traceparent",
    "tracestate",
    "uber-trace-id",
    "b3",
    "x-b3-traceid",
    "baggage",
];

fn echo_trace(
    name: &str,
    seen: &mpsc::UnboundedSender<String>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut received = serde_json::Map::new();
    let mut line = format!("upstream {name} <-- {} {}", req.method(), req.uri().path());
    for header in TRACE_HEADERS {
        if let Some(v) = req.headers().get(header).and_then(|v| v.to_str().ok()) {
            received.insert(header.to_owned(), serde_json::Value::String(v.to_owned()));
            line.push_str(&format!(" {header}={v}"));
        }
    }
    let _ = seen.send(line);
    let body =
        serde_json::json!({ "service": name, "path": req.uri().path(), "received": received });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_is_valid() {
        let text = DEMO_CONFIG
            .replace("{LISTEN}", "127.0.0.1:0")
            .replace("{THRIFT}", "127.0.0.1:0")
            .replace("{ADMIN}", "127.0.0.1:0")
            .replace("{USERS}", "127.0.0.1:9")
            .replace("{GREETER}", "127.0.0.1:10")
            .replace("{THRIFT_GREETER}", "127.0.0.1:11");
        let cfg = config::parse(&text).unwrap();
        assert_eq!(cfg.routes.len(), 5);
        assert_eq!(
            cfg.routes[1].bridge,
            Some(crate::config::BridgeKind::JsonGrpc)
        );
        assert_eq!(
            cfg.routes[0].on_missing,
            Some(crate::config::OnMissing::Reject)
        );
        assert!(cfg.telemetry.log_spans);
        let rpc = &cfg.listeners[1];
        assert_eq!(
            (rpc.name.as_str(), rpc.protocol),
            ("rpc", crate::config::ListenerProtocol::Thrift)
        );
        let thrift = &cfg.upstreams[cfg.routes[4].upstream];
        assert_eq!(thrift.endpoints, ["127.0.0.1:11"]);
        assert_eq!(
            thrift.transport,
            Some(crate::config::ThriftTransport::Header)
        );
    }

    #[test]
    fn thrift_listens_on_the_next_port() {
        let options = |listen: &str| DemoOptions {
            listen: listen.parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            once: true,
        };
        assert_eq!(
            options("127.0.0.1:8080").thrift_address(),
            "127.0.0.1:8081".parse().unwrap()
        );
        assert_eq!(
            options("0.0.0.0:0").thrift_address(),
            "0.0.0.0:0".parse().unwrap()
        );
        assert_eq!(
            options("[::1]:65535").thrift_address(),
            "[::1]:0".parse().unwrap()
        );
    }
}
