//! `collector --store PATH --socket PATH`: serve one store's imports.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Imports change batches into an information store (created if the path has none).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The store's SQLite file.
    #[arg(long)]
    store: PathBuf,
    /// The local socket to listen on (made owner-only).
    #[arg(long)]
    socket: PathBuf,
    /// Remove tombstones older than this (config key `retention`): a number and s, m, h or d,
    /// e.g. 30d. Cleanup runs at start and then every tenth of it (at most hourly). Without it,
    /// tombstones are kept for ever.
    #[arg(long)]
    retention: Option<shared::store::Retention>,
    /// Do not apply a message whose body is larger than this many bytes (config key
    /// `max_body_bytes`): it is reported as an item error and comes again next session.
    #[arg(long)]
    max_body_bytes: Option<u64>,
    /// Stop, as on SIGTERM, when stdin reaches its end: how a daemon started by `agent run`
    /// (`spawn = true`) ends with the agent, even one killed with kill -9. The agent passes it.
    #[arg(long)]
    supervised: bool,
    /// Log format.
    #[arg(long, default_value = "text")]
    log_format: shared::logging::LogFormat,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    shared::logging::init(args.log_format, "info");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{error}`, not the chain: every error here already names its cause.
            eprintln!("collector: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let stop = shared::shutdown::stop(args.supervised);
    let cleanup = shared::daemon::start_cleanup("collector", &args.store, args.retention).await?;
    let listener = shared::daemon::bind_for_store("collector", &args.store, &args.socket).await?;
    let limits = collector::ImportLimits {
        max_body_bytes: args.max_body_bytes,
    };
    collector::serve(listener, args.store, limits, stop).await;
    if let Some(task) = cleanup {
        task.abort();
    }
    Ok(())
}
