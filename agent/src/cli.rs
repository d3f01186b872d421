//! The agent's command line: parsing (clap) and what each command does. Exit codes: 0 success;
//! 1 a session failed; 2 bad arguments or a bad config; 3 the stores are busy with another
//! session (of this agent, an `agent run`, or another agent).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::{Config, EMBEDDED_ORIGIN};
use crate::report;
use crate::session::{sync_partnership, AgentError};
use crate::state::State;

/// The embedded demo config, used when neither --config nor ICSYNC_CONFIG names one.
pub const DEMO_CONFIG: &str = include_str!("../examples/demo.toml");
/// Where the embedded demo config's relative paths point.
pub const DEMO_DIR: &str = "icsync-demo";

/// Schedules sync sessions between information stores and reports on them.
#[derive(Parser)]
#[command(
    name = "agent",
    version,
    about,
    after_help = "Exit codes: 0 success; 1 a session failed (one line on stderr says why); \
                  2 bad arguments or a bad config; 3 the stores are busy with another session.\n\
                  Logs go to stderr; RUST_LOG filters them (e.g. RUST_LOG=debug, or \
                  RUST_LOG=agent=debug,info)."
)]
pub struct Cli {
    /// The config file (default: $ICSYNC_CONFIG, else the embedded demo config in ./icsync-demo).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format: text or json (one object per line).
    #[arg(long, global = true, default_value = "text", value_name = "FORMAT")]
    pub log_format: shared::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run as a daemon: scheduled sessions, retries, spawned processes.
    ///
    /// SIGTERM or SIGINT stops it (running sessions end at a batch boundary, spawned processes
    /// are stopped, exit 0); SIGHUP reads the config again (a bad one is logged and the running
    /// one kept).
    Run,
    /// Run one session of a partnership now, in the foreground, showing its progress
    ///
    /// Ctrl-C or SIGTERM stops it at the next batch boundary (exit 1); the next session resumes
    /// from there. A second Ctrl-C stops it at once.
    Sync {
        /// The partnership's name in the config.
        name: String,
    },
    /// Every partnership: state, last run, next run, changes, open conflicts and errors.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One partnership's sync-state records in full.
    State {
        /// The partnership's name in the config.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Past sessions, newest first.
    History {
        /// Only this partnership's sessions.
        name: Option<String>,
        /// At most this many sessions.
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Deferred conflicts waiting for a decision, oldest first.
    Conflicts {
        /// Include conflicts already settled.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Settle a deferred conflict: the chosen side's value reaches every store with the
    /// partnership's next session.
    Resolve {
        /// The conflict's number in `agent conflicts`.
        id: i64,
        /// Keep the value of the store that deferred it ("local") or of the other ("remote").
        #[arg(long, value_enum)]
        keep: crate::state::Keep,
    },
    /// Check the config without running anything.
    Check,
    /// Print a shell completion script.
    ///
    /// For example `agent completions bash > ~/.local/share/bash-completion/completions/agent`.
    Completions {
        /// bash, elvish, fish, powershell or zsh.
        shell: clap_complete::Shell,
    },
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
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut <Cli as clap::CommandFactory>::command(),
            "agent",
            &mut std::io::stdout(),
        );
        return 0;
    }
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
        Command::Conflicts { all, json } => print_conflicts(&config, all, json),
        Command::Resolve { id, keep } => resolve(&config, id, keep),
        Command::Completions { .. } => Ok(0),
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

/// One session now. Ctrl-C or SIGTERM ends it at the next batch boundary, as `agent run` stops:
/// recorded as stopped, exit 1 with the reason, and the next session resumes from there. A
/// second signal ends the agent at once (which loses nothing either: kill -9 would not).
async fn sync(config: &Config, name: &str) -> Result<u8, AgentError> {
    let mut progress = crate::progress::Progress::new(name, std::io::stderr().is_terminal());
    let (trigger, stop) = shared::shutdown::channel();
    let signalled = shared::shutdown::signal();
    let watch = tokio::spawn(async move {
        signalled.await;
        trigger.fire();
        shared::shutdown::signal().await;
        std::process::exit(130);
    });
    let result =
        sync_partnership(config, name, Some(&stop), &mut |event| progress.show(event)).await;
    watch.abort();
    result?;
    Ok(0)
}

fn print_status(config: &Config, json: bool) -> Result<u8, AgentError> {
    let state = State::open(&config.state)?;
    let now = report::Now {
        ms: crate::state::now_ms(),
        daemon: crate::lock::DaemonLock::is_held(config),
    };
    let rows = report::status(config, &state, now, |name| {
        crate::lock::PairLock::holder_gone(config, name) == Some(true)
    })?;
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

fn print_conflicts(config: &Config, all: bool, json: bool) -> Result<u8, AgentError> {
    let state = State::open(&config.state)?;
    let rows = crate::queue::conflicts(&state, all)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        print!("{}", crate::queue::render(&rows));
    }
    Ok(0)
}

fn resolve(config: &Config, id: i64, keep: crate::state::Keep) -> Result<u8, AgentError> {
    let state = State::open(&config.state)?;
    match crate::queue::resolve(&state, id, keep) {
        Ok(text) => {
            print!("{text}");
            Ok(0)
        }
        Err(crate::state::ResolveError::State(e)) => Err(e.into()),
        Err(e) => {
            eprintln!("agent: {e}");
            Ok(2)
        }
    }
}
