//! The wire protocol between agent, synchronizer and collector (seed 000: the synchronizer
//! "transfers the next set of changes" only after the collector's success message, then sends
//! "a completion message to the agent").
//!
//! - `frame`: length-prefixed frames with a size cap checked before the body is read.
//! - `attached`: a batch's message bodies and headers as raw bytes after the frame's JSON
//!   (protocol 2).
//! - `packed`: a batch's changes in a compact binary form, attached like them (protocol 3).
//! - `connection`: the buffered, typed connection.
//! - `handshake`: `hello` / `welcome` / `error` — every connection opens with the protocol
//!   version and the caller's role.
//! - `sync`: agent ↔ synchronizer — `sync_request`, then `progress`, then `completed` or `failed`.
//! - `batch`: synchronizer ↔ collector — `begin_session` / `session_ready`, then `change_batch`
//!   and its success message `batch_applied`.
//!
//! Every message is one JSON object with a `type` field; ARCHITECTURE.md lists every field.

pub(crate) mod attached;
mod batch;
mod connection;
pub mod frame;
mod handshake;
mod message_de;
mod packed;
mod sync;

use serde::Serialize;

pub use batch::{BatchApplied, BeginSession, ChangeBatch, SessionReady};
pub use connection::{Connection, Encoded};
pub use handshake::{
    accept_hello, refuse, refuse_with, say_hello, ErrorMessage, Hello, Role, Welcome,
    PROTOCOL_VERSION,
};
pub use sync::{Completed, Failed, Progress, SessionStats, SyncRequest};

/// Every message of the protocol.
/// Written with `type` first; read by `message_de` without buffering the whole object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    Error(ErrorMessage),
    SyncRequest(SyncRequest),
    Progress(Progress),
    Completed(Completed),
    Failed(Failed),
    BeginSession(BeginSession),
    SessionReady(SessionReady),
    ChangeBatch(ChangeBatch),
    BatchApplied(BatchApplied),
}

impl Message {
    /// The `type` name, for errors about unexpected messages.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Welcome(_) => "welcome",
            Message::Error(_) => "error",
            Message::SyncRequest(_) => "sync_request",
            Message::Progress(_) => "progress",
            Message::Completed(_) => "completed",
            Message::Failed(_) => "failed",
            Message::BeginSession(_) => "begin_session",
            Message::SessionReady(_) => "session_ready",
            Message::ChangeBatch(_) => "change_batch",
            Message::BatchApplied(_) => "batch_applied",
        }
    }
}

/// What can go wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes is over the {max}-byte cap")]
    FrameTooLarge { len: u32, max: u32 },
    #[error("malformed input: {0}")]
    Malformed(String),
    #[error("the peer closed the connection while we waited for {waiting_for}")]
    Closed { waiting_for: &'static str },
    #[error("protocol version {theirs} is not supported (this side speaks {ours})")]
    VersionMismatch { theirs: u32, ours: u32 },
    #[error("expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("{message}")]
    Remote { message: String, retryable: bool },
}

impl ProtocolError {
    /// Whether the same request may succeed later (a lost connection, a busy peer), as opposed
    /// to input that will be refused again.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProtocolError::Io(_) | ProtocolError::Closed { .. } => true,
            ProtocolError::Remote { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
