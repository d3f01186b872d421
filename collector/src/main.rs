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
    /// Log format.
    #[arg(long, default_value = "text")]
    log_format: shared::logging::LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    shared::logging::init(args.log_format, "info");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("collector: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let stop = shared::shutdown::signal();
    let listener = shared::daemon::bind_for_store("collector", &args.store, &args.socket).await?;
    collector::serve(listener, args.store, stop).await;
    Ok(())
}
