//! The `tracebridge` command: `run`, `check`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracebridge::{app, config};

/// tracebridge: one distributed trace across HTTP, gRPC and Apache Thrift.
#[derive(Debug, Parser)]
#[command(name = "tracebridge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the gateway from a config file.
    Run {
        /// The TOML config file.
        #[arg(long, short, env = "TRACEBRIDGE_CONFIG")]
        config: PathBuf,
        /// Worker threads (default: one per CPU core).
        #[arg(long, env = "TRACEBRIDGE_WORKERS")]
        workers: Option<usize>,
        /// Watch the config file and apply each valid change (SIGHUP reloads with or without it).
        #[arg(long, env = "TRACEBRIDGE_CONFIG_WATCH")]
        enable_config_watch: bool,
    },
    /// Validate a config file: exit 0, or non-zero listing every error with its key path.
    Check {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the embedded demo: the gateway plus in-process demo upstreams.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the demo admin endpoint (/metrics) listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// Send one request per trace format through the demo, print the traces, and exit.
        #[arg(long)]
        once: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            workers,
            enable_config_watch,
        } => with_runtime(workers, run(config, enable_config_watch)),
        Command::Demo {
            listen,
            admin,
            once,
        } => with_runtime(None, async move {
            app::demo::run(app::demo::DemoOptions {
                listen,
                admin,
                once,
            })
            .await
            .map_err(|e| e.to_string())
        }),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            println!(
                "{}: ok ({} listeners, {} routes, {} upstreams)",
                path.display(),
                cfg.listeners.len(),
                cfg.routes.len(),
                cfg.upstreams.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} error(s)", path.display(), errors.errors.len());
            for e in &errors.errors {
                eprintln!("  {e}");
            }
            ExitCode::from(2)
        }
    }
}

async fn run(path: PathBuf, watch: bool) -> Result<(), String> {
    // Watching starts before the file is first read: a change while the gateway starts is
    // then reloaded, not missed (the watch compares against the bytes it first saw). The
    // file's own errors are reported before a failure to watch it.
    let changes = watch.then(|| app::reload::watch(path.clone()));
    let cfg = config::load(&path).map_err(|errors| {
        let mut text = format!("{}: {} error(s)", path.display(), errors.errors.len());
        for e in &errors.errors {
            text.push_str(&format!("\n  {e}"));
        }
        text
    })?;
    let changes = changes.transpose().map_err(|e| e.to_string())?;
    let gateway = app::start(cfg).await.map_err(|e| e.to_string())?;
    for b in &gateway.bound {
        println!(
            "listening name={} protocol={} address={}",
            b.name, b.protocol, b.address
        );
    }
    let reloader = gateway.reloader();
    let sighup = app::reload::on_sighup(path.clone(), reloader.clone())
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    tokio::spawn(sighup);
    if let Some(changes) = changes {
        app::reload::apply_changes(changes, reloader);
        println!("watching {} for changes", path.display());
    }
    // Installed before `ready`: a SIGTERM right after it drains rather than kills.
    let signalled = app::shutdown_signal();
    let token = gateway.shutdown_token();
    tokio::spawn(async move {
        signalled.await;
        token.cancel();
    });
    println!("ready");
    gateway.wait().await;
    println!("stopped");
    Ok(())
}

fn with_runtime(
    workers: Option<usize>,
    fut: impl std::future::Future<Output = Result<(), String>>,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers.filter(|n| *n > 0) {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tracebridge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracebridge: {e}");
            ExitCode::FAILURE
        }
    }
}
