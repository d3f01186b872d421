//! The agent (seed 000): schedules sessions and owns the synchronization-state records.
//!
//! - `cli`: the command line and what each command does; `main` only calls it.
//! - `config`: the TOML config, parsed and validated with file:line errors.
//! - `daemon`: `agent run` — schedules, retries, spawned processes, signals.
//! - `lock`: the lock of a pair of stores, and the daemon's lock on its state file.
//! - `progress`: `agent sync`'s progress bar or lines.
//! - `queue`: `agent conflicts` / `agent resolve` output.
//! - `report`: `agent status`, `state` and `history` output.
//! - `session`: one session of a partnership, direction by direction.
//! - `state`: the agent's SQLite state file (sync-state records, history, conflict queue).

pub mod cli;
pub mod config;
pub mod daemon;
pub mod lock;
pub mod progress;
pub mod queue;
pub mod report;
pub mod session;
pub mod state;
