//! The agent's command line: parsing (clap) and what each command does. Exit codes: 0 success;
//! 1 a session failed; 2 bad arguments or a bad config; 3 the partnership is busy.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{Config, EMBEDDED_ORIGIN};
use crate::report;
use crate::session::{sync_partnership, AgentError, Event};
use crate::state::State;

/// The embedded demo config, used when neither --config nor ICSYNC_CONFIG names one.
pub const DEMO_CONFIG: &str = include_str!("../examples/demo.toml");
/// Where the embedded demo config's relative paths point.
pub const DEMO_DIR: &str = "icsync-demo";

/// Schedules sync sessions between information stores and reports on them.
#[derive(Parser)]
#[command(name = "agent", version, about)]
pub struct Cli {
    /// The config file (default: $ICSYNC_CONFIG, else the embedded demo config in ./icsync-demo).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    pub log_format: shared::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run as a daemon: scheduled sessions, retries, spawned processes.
    Run,
    /// Run one session of a partnership now, in the foreground.
    Sync { name: String },
    /// Every partnership: state, last result, counts.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// One partnership's sync-state records in full.
    State {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Past sessions, newest first.
    History {
        name: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Check the config without running anything.
    Check,
}

/// Loads the config the command line names.
pub fn load_config(path: Option<&Path>) -> Result<Config, crate::config::ConfigError> {
    let env = std::env::var_os("ICSYNC_CONFIG").map(PathBuf::from);
    match path.map(Path::to_path_buf).or(env) {
        Some(path) => Config::load(&path),
        None => {
            let cwd = std::env::current_dir().unwrap_or_default();
            Config::parse(DEMO_CONFIG, EMBEDDED_ORIGIN, &cwd.join(DEMO_DIR))
        }
    }
}

/// Runs a command; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    let config = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent: {e}");
            return 2;
        }
    };
    let result = match cli.command {
        Command::Run => {
            let path = cli.config.clone();
            crate::daemon::run(config, move || load_config(path.as_deref()))
                .await
                .map(|_| 0)
        }
        Command::Sync { name } => sync(&config, &name).await,
        Command::Status { json } => print_status(&config, json),
        Command::State { name, json } => print_state(&config, &name, json),
        Command::History { name, limit, json } => {
            print_history(&config, name.as_deref(), limit, json)
        }
        Command::Check => {
            println!(
                "{}: ok ({} stores, {} partnerships)",
                config.origin,
                config.stores.len(),
                config.partnerships.len()
            );
            Ok(0)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agent: {e}");
            match e {
                AgentError::Config(_) => 2,
                AgentError::Busy { .. } => 3,
                _ => 1,
            }
        }
    }
}

async fn sync(config: &Config, name: &str) -> Result<u8, AgentError> {
    let tty = std::io::stderr().is_terminal();
    let mut listen = |event: Event<'_>| match event {
        Event::Started { leg } => eprintln!("{name} {}: started", leg.name()),
        Event::Progress { leg, progress } => {
            let s = &progress.stats;
            let line = format!(
                "{name} {}: {} batch {}: {} sent, {} applied, {} conflicts, {} errors",
                leg.name(),
                progress.phase.name(),
                s.batches,
                s.sent,
                s.applied,
                s.conflicts,
                s.errors
            );
            if tty {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
        }
        Event::Completed { leg, completed } => {
            if tty {
                eprintln!();
            }
            let s = &completed.stats;
            eprintln!(
                "{name} {}: completed: {} sent, {} applied, {} conflicts, {} errors{}",
                leg.name(),
                s.sent,
                s.applied,
                s.conflicts,
                s.errors,
                if completed.destination_regressed {
                    " (the destination had lost changes; they were sent again)"
                } else {
                    ""
                }
            );
            for e in &completed.errors {
                eprintln!(
                    "{name} {}: warning: item {}: {}",
                    leg.name(),
                    e.item,
                    e.reason
                );
            }
        }
    };
    sync_partnership(config, name, &mut listen).await?;
    Ok(0)
}

fn print_status(config: &Config, json: bool) -> Result<u8, AgentError> {
    let state = State::open(&config.state)?;
    let now = report::Now {
        ms: crate::state::now_ms(),
        daemon: crate::lock::DaemonLock::is_held(config),
    };
    let rows = report::status(config, &state, now)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        print!("{}", report::render_status(&rows, now.ms));
    }
    Ok(0)
}

fn print_state(config: &Config, name: &str, json: bool) -> Result<u8, AgentError> {
    let state = State::open(&config.state)?;
    let r = report::state_report(config, &state, name)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        print!("{}", report::render_state(&r));
    }
    Ok(0)
}

fn print_history(
    config: &Config,
    name: Option<&str>,
    limit: usize,
    json: bool,
) -> Result<u8, AgentError> {
    if let Some(name) = name {
        config.partnership(name).map_err(Box::new)?;
    }
    let state = State::open(&config.state)?;
    let sessions = state.history(name, limit)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&sessions).unwrap_or_default()
        );
    } else {
        print!("{}", report::render_history(&sessions));
    }
    Ok(0)
}
