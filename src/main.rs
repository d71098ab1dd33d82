//! The costd binary: serve, run the demo, run the sandbox alone, or query a server.

use clap::{Parser, Subcommand};
use costd::{App, cli, config, demo, sandbox, telemetry};
use std::{net::SocketAddr, process::ExitCode};

/// mimalloc: answering from cache is allocation-heavy (many small strings per answer); the load
/// harness measured it faster than the system allocator on the cached path (see benches/load.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a bad configuration (EX_USAGE, sysexits.h).
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "costd",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("COSTD_GIT_REVISION"), ")"),
    about = "What we spend on SaaS infrastructure, over gRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API with the configuration from COSTD_CONFIG (or --config) and COSTD_* variables.
    Serve {
        /// TOML configuration file (overrides COSTD_CONFIG).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Serve the API wired to the built-in sandbox upstreams on loopback.
    Demo {
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// Where `/metrics` is served.
        #[arg(long, default_value = "127.0.0.1:9090")]
        metrics_listen: SocketAddr,
    },
    /// Run only the sandbox upstreams, printing their URL and credentials.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: SocketAddr,
    },
    /// Ask a costd server for costs.
    Query(cli::QueryArgs),
    /// Export a query's records as a FOCUS 1.2 file (CSV or Parquet).
    Export(cli::ExportArgs),
    /// Start, inspect, list, cancel and watch query jobs.
    #[command(subcommand)]
    Jobs(cli::JobsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("costd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => serve(config).await,
            Command::Demo {
                listen,
                metrics_listen,
            } => run_demo(listen, metrics_listen).await,
            Command::Sandbox { listen } => report(
                sandbox::run_standalone(listen)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            Command::Query(args) => report(cli::run_query(args).await),
            Command::Export(args) => report(cli::run_export(args).await),
            Command::Jobs(command) => report(cli::run_jobs(command).await),
        }
    })
}

async fn serve(config_path: Option<std::path::PathBuf>) -> ExitCode {
    let mut env = config::process_env();
    if let Some(path) = config_path {
        env.insert(
            config::ENV_CONFIG_FILE.to_string(),
            path.display().to_string(),
        );
    }
    let settings = match config::Settings::load(&env) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("costd: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    run(settings, None).await
}

async fn run_demo(listen: SocketAddr, metrics_listen: SocketAddr) -> ExitCode {
    let upstreams = match sandbox::Sandbox::start(sandbox::SandboxOptions::default()) {
        Ok(upstreams) => upstreams,
        Err(e) => return report(Err(format!("cannot start the sandbox upstreams: {e}"))),
    };
    match demo::settings(&upstreams, listen) {
        Ok(mut settings) => {
            settings.metrics.listen = metrics_listen;
            run(settings, Some(&upstreams)).await
        }
        Err(e) => report(Err(e)),
    }
}

async fn run(
    settings: config::Settings,
    demo_upstreams: Option<&sandbox::SandboxHandle>,
) -> ExitCode {
    let _telemetry = match telemetry::init(&settings.telemetry) {
        Ok(guard) => guard,
        Err(e) => return report(Err(e.to_string())),
    };
    let accounts: Vec<String> = settings.accounts.iter().map(|a| a.id.to_string()).collect();
    let app = match App::build(settings).await {
        Ok(app) => app,
        Err(e) => return report(Err(e.to_string())),
    };
    if let Some(upstreams) = demo_upstreams {
        print_demo_help(app.local_addr(), app.metrics_addr(), upstreams, &accounts);
    }
    report(
        app.run_until_stopped(stop_signal())
            .await
            .map_err(|e| e.to_string()),
    )
}

fn print_demo_help(
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    upstreams: &sandbox::SandboxHandle,
    accounts: &[String],
) {
    let month = chrono::Utc::now().format("%Y-%m-01");
    println!(
        "costd demo: serving gRPC on {addr}, sandbox upstreams on {}",
        upstreams.base_url()
    );
    println!("accounts: {}", accounts.join(", "));
    println!("try, from another terminal:");
    println!(
        "  cargo run --release -- query --addr http://{addr} --from 2026-01-01 --to {month} --group-by billing_account,service"
    );
    println!(
        "  cargo run --release -- query --addr http://{addr} --from 2026-10-01 --to 2026-10-08 --granularity daily --output csv"
    );
    println!("  grpcurl -plaintext {addr} list");
    if let Some(metrics) = metrics {
        println!("  curl http://{metrics}/metrics");
    }
    println!("stop with Ctrl-C");
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C). The handlers are installed at once, before the
/// server says it is serving, so a signal sent right after that line is never missed.
fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            // Without signal handlers the process still stops on a signal, just without draining.
            _ => std::future::pending::<()>().await,
        }
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("costd: {message}");
            ExitCode::FAILURE
        }
    }
}
