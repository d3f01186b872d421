//! `agent`: schedules sessions, owns the sync-state records, and is the operator's CLI.

use std::process::ExitCode;

use agent::cli::{Cli, Command};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::logging::init(
        cli.log_format,
        if matches!(cli.command, Command::Run) {
            "info"
        } else {
            "warn"
        },
    );
    let code = agent::cli::run(cli).await;
    ExitCode::from(code)
}
