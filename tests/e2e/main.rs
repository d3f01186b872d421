//! End-to-end tests through the real binaries, one module per feature. Each test has its own
//! temporary directory (see the fixture in `tests/src/lib.rs`).
#![allow(clippy::unwrap_used)]

mod cli;
mod conflicts;
mod convergence;
mod crash;
mod daemon;
mod daemon_sessions;
mod malformed;
mod repair;
mod retention;
mod scoped;
mod seed_004;
mod sockets;
mod two_way;
