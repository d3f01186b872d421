//! `synchronizer --store PATH --socket PATH` serves one store's exports;
//! `synchronizer info --store PATH [--json]` tells what a store is and knows;
//! `synchronizer cleanup --store PATH --retention 30d` removes old tombstones now.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exports an information store's changes to collectors, batch by batch.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The store's SQLite file (created if the path has none).
    #[arg(long)]
    store: Option<PathBuf>,
    /// The local socket to listen on (made owner-only).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Remove tombstones older than this (config key `retention`): a number and s, m, h or d,
    /// e.g. 30d. Cleanup runs at start and then every tenth of it (at most hourly). Without it,
    /// tombstones are kept for ever.
    #[arg(long)]
    retention: Option<shared::store::Retention>,
    /// Stop, as on SIGTERM, when stdin reaches its end: how a daemon started by `agent run`
    /// (`spawn = true`) ends with the agent, even one killed with kill -9. The agent passes it.
    #[arg(long)]
    supervised: bool,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: shared::logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Print the store's replica id, knowledge, forgotten knowledge and counts.
    Info {
        /// The store's SQLite file; it must exist (nothing is created).
        #[arg(long)]
        store: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the tombstones older than the retention now, recording forgotten knowledge
    /// (seed 001's CleanupDeletedItems), and print what was done.
    Cleanup {
        /// The store's SQLite file; it must exist (nothing is created).
        #[arg(long)]
        store: PathBuf,
        /// e.g. 30d, 12h, 0s (every tombstone).
        #[arg(long)]
        retention: shared::store::Retention,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    shared::logging::init(args.log_format, "info");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{error}`, not the chain: every error here already names its cause.
            eprintln!("synchronizer: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Some(Command::Info { store, json }) => {
            let info = synchronizer::info::read(&store)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", synchronizer::info::render(&info));
            }
            Ok(())
        }
        Some(Command::Cleanup { store, retention }) => {
            let report = shared::daemon::store_work(|| {
                shared::store::Store::open_existing(&store)?.cleanup_tombstones(retention)
            })?;
            println!(
                "removed {} tombstones older than {retention}; forgotten knowledge: {}",
                report.removed,
                if report.forgotten.is_empty() {
                    "none".to_string()
                } else {
                    report.forgotten.to_string()
                }
            );
            Ok(())
        }
        None => {
            let (Some(store), Some(socket)) = (args.store, args.socket) else {
                anyhow::bail!("--store PATH and --socket PATH are both required to serve (or use `synchronizer info --store PATH`)");
            };
            let stop = shared::shutdown::stop(args.supervised);
            let cleanup =
                shared::daemon::start_cleanup("synchronizer", &store, args.retention).await?;
            let listener = shared::daemon::bind_for_store("synchronizer", &store, &socket).await?;
            synchronizer::serve(listener, store, stop).await;
            if let Some(task) = cleanup {
                task.abort();
            }
            Ok(())
        }
    }
}
