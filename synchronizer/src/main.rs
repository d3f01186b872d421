//! `synchronizer --store PATH --socket PATH` serves one store's exports;
//! `synchronizer info --store PATH [--json]` tells what a store is and knows.

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
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: shared::logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Print the store's replica id, knowledge, forgotten knowledge and counts.
    Info {
        #[arg(long)]
        store: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    shared::logging::init(args.log_format, "info");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("synchronizer: {error:#}");
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
        None => {
            let (Some(store), Some(socket)) = (args.store, args.socket) else {
                anyhow::bail!("--store PATH and --socket PATH are both required to serve (or use `synchronizer info --store PATH`)");
            };
            let stop = shared::shutdown::signal();
            let listener = shared::daemon::bind_for_store("synchronizer", &store, &socket).await?;
            synchronizer::serve(listener, store, stop).await;
            Ok(())
        }
    }
}
