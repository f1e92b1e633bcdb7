//! The Thrift load harness behind `benches/load/thrift.sh`.
//!
//! `thrift_load upstream 127.0.0.1:0` — an echo upstream: every CALL gets a REPLY with the same
//! method name, seqid and argument bytes, in the transport the call came in (THeader replies
//! carry the call's flags and header seq id). Many connections, pipelined frames (all frames
//! of one read are answered with one write). Prints `listening <addr>`.
//!
//! `thrift_load client --addr A --transport header|framed --connections N --duration S` — a
//! closed-loop load generator: each of N connections sends one call (binary protocol, ~200-byte
//! arguments; THeader calls carry `traceparent` + `tracestate`), waits for its reply, checks it
//! (REPLY, same seqid, same name, same bytes) and sends the next. Prints one line:
//! `rps=<f> p50_ms=<f> p99_ms=<f> errors=<n>`; every latency is kept and sorted at the end.
//!
//! `cargo run --release --example thrift_load -- upstream 127.0.0.1:0`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;
use tracebridge::codec::thrift::DEFAULT_MAX_FRAME_SIZE;
use tracebridge::codec::thrift::Dialect as WireDialect;
use tracebridge::codec::thrift::encode_message_header;
use tracebridge::codec::thrift::frame::{Frame, ThriftDecoder};
use tracebridge::codec::thrift::header::{HeaderHead, encode_head};
use tracebridge::codec::thrift::message::{MessageType, ProtocolId, peek_message};

const METHOD: &str = "UserService:getProfile";
const TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TS: &[u8] = b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

#[derive(Debug, Parser)]
#[command(about = "Thrift echo upstream and closed-loop load generator")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Serve the echo upstream.
    Upstream {
        /// Bind address (port 0 picks a free port).
        #[arg(default_value = "127.0.0.1:0")]
        address: SocketAddr,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Generate closed-loop load.
    Client {
        /// Target address.
        #[arg(long)]
        addr: SocketAddr,
        /// Transport of the calls (binary protocol inside).
        #[arg(long, value_enum, default_value_t = Transport::Header)]
        transport: Transport,
        /// Concurrent connections, one call in flight on each.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Runtime worker threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// THeader frames.
    Header,
    /// Framed binary.
    Framed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.mode {
        Mode::Upstream { threads, .. } | Mode::Client { threads, .. } => (*threads).max(1),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.mode {
        Mode::Upstream { address, .. } => match runtime.block_on(upstream(address)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("upstream: {e}");
                ExitCode::FAILURE
            }
        },
        Mode::Client {
            addr,
            transport,
            connections,
            duration,
            ..
        } => {
            let duration = Duration::from_secs_f64(duration);
            let summary = runtime.block_on(client(addr, transport, connections, duration));
            println!("{summary}");
            if summary.ok == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

// ---- upstream -------------------------------------------------------------------------------

async fn upstream(address: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(address).await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = echo_connection(stream).await {
                eprintln!("upstream connection: {e}");
            }
        });
    }
}

/// Reads whatever is available, answers every whole frame in it, writes all replies at once.
async fn echo_connection(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut decoder = ThriftDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut output = BytesMut::with_capacity(64 * 1024);
    let mut message = BytesMut::with_capacity(1024);
    loop {
        input.reserve(16 * 1024);
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        while let Some(frame) = decoder.decode(&mut input).map_err(std::io::Error::other)? {
            echo(frame, &mut message, &mut output)?;
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
    }
}

/// Appends the reply to one call (nothing for ONEWAY) to `out`.
fn echo(frame: Frame, message: &mut BytesMut, out: &mut BytesMut) -> std::io::Result<()> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let (header, protocol, payload) = match frame {
        Frame::Header(h) => (Some((h.flags, h.seq_id)), h.protocol, h.payload),
        Frame::Framed { protocol, message } | Frame::Unframed { protocol, message } => {
            (None, protocol, message)
        }
        Frame::Invalid { error, .. } => return Err(bad(error.to_string())),
    };
    let call = peek_message(&payload, protocol)
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("truncated message header".to_owned()))?;
    if call.kind == MessageType::Oneway {
        return Ok(());
    }
    message.clear();
    encode_message_header(
        message,
        protocol,
        call.name,
        MessageType::Reply,
        call.seq_id,
    );
    message.extend_from_slice(&payload[call.body_offset..]);
    match header {
        Some((flags, seq_id)) => {
            let head = HeaderHead {
                flags,
                seq_id,
                protocol,
                transforms: &[],
                info: &[],
                persistent: &[],
            };
            encode_head(&head, message.len(), out).map_err(|e| bad(e.to_string()))?;
        }
        None => out.put_u32(message.len() as u32),
    }
    out.extend_from_slice(message);
    Ok(())
}

// ---- client ---------------------------------------------------------------------------------

/// What one connection (and then the whole run) measured.
#[derive(Debug, Default)]
struct Summary {
    ok: u64,
    errors: u64,
    latencies_ns: Vec<u64>,
    elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |q: f64| -> f64 {
            let n = self.latencies_ns.len();
            if n == 0 {
                return 0.0;
            }
            let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
            self.latencies_ns[i] as f64 / 1e6
        };
        write!(
            f,
            "rps={:.1} p50_ms={:.3} p99_ms={:.3} errors={}",
            self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9),
            pct(0.50),
            pct(0.99),
            self.errors
        )
    }
}

/// ~200 bytes of arguments: `1: string` of 191 bytes, then STOP.
fn call_args() -> Bytes {
    let text = b"load-harness payload: the upstream echoes these bytes back as the result. ";
    let mut a = Vec::with_capacity(200);
    a.extend_from_slice(&[11, 0, 1]);
    let s: Vec<u8> = text.iter().copied().cycle().take(191).collect();
    a.extend_from_slice(&(s.len() as i32).to_be_bytes());
    a.extend_from_slice(&s);
    a.push(0);
    Bytes::from(a)
}

async fn client(
    addr: SocketAddr,
    transport: Transport,
    connections: usize,
    duration: Duration,
) -> Summary {
    let args = call_args();
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(addr, transport, args.clone(), deadline)))
        .collect();
    let mut total = Summary::default();
    for task in tasks {
        match task.await {
            Ok(s) => {
                total.ok += s.ok;
                total.errors += s.errors;
                total.latencies_ns.extend(s.latencies_ns);
            }
            Err(_) => total.errors += 1,
        }
    }
    total.elapsed = start.elapsed();
    total.latencies_ns.sort_unstable();
    total
}

/// One closed loop until `deadline`; a failed call is counted and the connection reopened.
async fn connection(
    addr: SocketAddr,
    transport: Transport,
    args: Bytes,
    deadline: Instant,
) -> Summary {
    let mut s = Summary {
        latencies_ns: Vec::with_capacity(1 << 16),
        ..Summary::default()
    };
    let mut seq: i32 = 0;
    while Instant::now() < deadline {
        let mut stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(_) => {
                s.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut calls = Calls::new(transport, &args);
        while Instant::now() < deadline {
            seq = seq.wrapping_add(1);
            let sent = Instant::now();
            match calls.call(&mut stream, seq, &args).await {
                Ok(()) => {
                    s.ok += 1;
                    s.latencies_ns.push(sent.elapsed().as_nanos() as u64);
                }
                Err(_) => {
                    s.errors += 1;
                    break;
                }
            }
        }
    }
    s
}

/// One connection's buffers and reply decoder.
struct Calls {
    transport: Transport,
    decoder: ThriftDecoder,
    input: BytesMut,
    output: BytesMut,
    message: BytesMut,
    info: Vec<(Bytes, Bytes)>,
}

impl Calls {
    fn new(transport: Transport, args: &Bytes) -> Self {
        let client = match transport {
            Transport::Header => WireDialect::HEADER,
            Transport::Framed => WireDialect::FRAMED_BINARY,
        };
        Calls {
            transport,
            decoder: ThriftDecoder::for_dialect(client, DEFAULT_MAX_FRAME_SIZE),
            input: BytesMut::with_capacity(4096),
            output: BytesMut::with_capacity(512 + args.len()),
            message: BytesMut::with_capacity(64 + args.len()),
            info: vec![
                (Bytes::from_static(b"traceparent"), Bytes::from_static(TP)),
                (Bytes::from_static(b"tracestate"), Bytes::from_static(TS)),
            ],
        }
    }

    /// Sends one call and waits for its reply; any mismatch is an error.
    async fn call(&mut self, stream: &mut TcpStream, seq: i32, args: &[u8]) -> std::io::Result<()> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        self.message.clear();
        let (m, o) = (&mut self.message, &mut self.output);
        encode_message_header(m, ProtocolId::Binary, METHOD, MessageType::Call, seq);
        m.extend_from_slice(args);
        o.clear();
        match self.transport {
            Transport::Header => {
                let head = HeaderHead {
                    flags: 0,
                    seq_id: seq as u32,
                    protocol: ProtocolId::Binary,
                    transforms: &[],
                    info: &self.info,
                    persistent: &[],
                };
                encode_head(&head, m.len(), o).map_err(|e| bad(&e.to_string()))?;
            }
            Transport::Framed => o.put_u32(m.len() as u32),
        }
        o.extend_from_slice(m);
        stream.write_all(o).await?;

        let frame = loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.input)
                .map_err(std::io::Error::other)?
            {
                break frame;
            }
            self.input.reserve(4096);
            if stream.read_buf(&mut self.input).await? == 0 {
                return Err(bad("connection closed before the reply"));
            }
        };
        let (protocol, payload) = match frame {
            Frame::Header(h) => (h.protocol, h.payload),
            Frame::Framed { protocol, message } => (protocol, message),
            _ => return Err(bad("unexpected reply frame")),
        };
        let reply = peek_message(&payload, protocol)
            .map_err(|e| bad(&e.to_string()))?
            .ok_or_else(|| bad("truncated reply"))?;
        if reply.kind != MessageType::Reply
            || reply.seq_id != seq
            || reply.name != METHOD
            || payload[reply.body_offset..] != *args
        {
            return Err(bad("reply does not match the call"));
        }
        Ok(())
    }
}
