pub mod cli;
pub mod config;
pub mod daemon;
pub mod lock;
pub mod progress;
pub mod report;
pub mod session;
pub mod state;
