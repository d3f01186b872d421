//! `agent run`: the daemon.

use crate::config::Config;
use crate::session::AgentError;

pub async fn run(_config: Config) -> Result<(), AgentError> {
    Ok(())
}
