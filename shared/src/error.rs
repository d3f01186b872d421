//! The error of a session as a whole, for the daemons and the agent: which area failed, and
//! whether trying again later may succeed.

use crate::ipc::IpcError;
use crate::protocol::ProtocolError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Ipc(#[from] IpcError),
    /// The session was stopped on purpose (shutdown) at a batch boundary.
    #[error("{0}")]
    Stopped(String),
    /// The session cannot run until someone changes something (e.g. an out-of-date
    /// destination needing a full enumeration this version cannot do).
    #[error("{0}")]
    Refused(String),
}

impl SessionError {
    /// A connection that closed before its first message: someone checking the socket answers.
    pub fn is_probe(&self) -> bool {
        matches!(
            self,
            SessionError::Protocol(ProtocolError::Closed {
                waiting_for: "hello"
            })
        )
    }

    /// Whether the next attempt may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            SessionError::Store(e) => e.is_retryable(),
            SessionError::Protocol(e) => e.is_retryable(),
            SessionError::Ipc(e) => e.is_retryable(),
            SessionError::Stopped(_) => true,
            SessionError::Refused(_) => false,
        }
    }
}
