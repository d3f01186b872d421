//! The opening of every connection: the caller says `hello` with its protocol version and role;
//! the daemon answers `welcome` with its own replica id, or `error` and closes.

use serde::{Deserialize, Serialize};

use crate::knowledge::ReplicaId;

/// The protocol version this build speaks. A peer of another version is refused with an error
/// that names both. Version 2 attaches message bodies after the JSON (`attached`); version 3
/// packs a batch's changes (`packed`).
pub const PROTOCOL_VERSION: u32 = 3;

/// Who is calling, or who answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Synchronizer,
    Collector,
}

/// caller → daemon: the first message on every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub protocol: u32,
    pub role: Role,
}

/// daemon → caller: the answer to `hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    pub protocol: u32,
    pub role: Role,
    pub replica: ReplicaId,
}

/// either way: the request was refused or failed; the sender closes the connection after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorMessage {
    pub message: String,
    /// Whether the same request may succeed later.
    pub retryable: bool,
}

use super::{Connection, Message, ProtocolError};
use tokio::io::{AsyncRead, AsyncWrite};

/// The daemon's side: reads `hello`, checks the version and that the caller's role is one this
/// daemon serves, and answers `welcome`. On refusal the caller reports the error to the peer.
pub async fn accept_hello<S: AsyncRead + AsyncWrite>(
    conn: &mut Connection<S>,
    me: Role,
    replica: &ReplicaId,
    allowed: Role,
) -> Result<(), ProtocolError> {
    let result = match conn.recv_required("hello").await {
        Ok(Message::Hello(hello)) if hello.protocol != PROTOCOL_VERSION => {
            Err(ProtocolError::VersionMismatch {
                theirs: hello.protocol,
                ours: PROTOCOL_VERSION,
            })
        }
        Ok(Message::Hello(hello)) if hello.role != allowed => Err(ProtocolError::Malformed(
            format!("a {me:?} serves {allowed:?} callers, not {:?}", hello.role),
        )),
        Ok(Message::Hello(_)) => Ok(()),
        Ok(other) => Err(ProtocolError::Unexpected {
            expected: "hello",
            got: other.name(),
        }),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            conn.send(&Message::Welcome(Welcome {
                protocol: PROTOCOL_VERSION,
                role: me,
                replica: replica.clone(),
            }))
            .await
        }
        Err(e) => Err(e),
    }
}

/// The caller's side: says `hello` and checks the daemon is of the expected role and version.
pub async fn say_hello<S: AsyncRead + AsyncWrite>(
    conn: &mut Connection<S>,
    me: Role,
    expected: Role,
) -> Result<Welcome, ProtocolError> {
    conn.send(&Message::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        role: me,
    }))
    .await?;
    match conn.recv_required("welcome").await? {
        Message::Welcome(w) if w.protocol != PROTOCOL_VERSION => {
            Err(ProtocolError::VersionMismatch {
                theirs: w.protocol,
                ours: PROTOCOL_VERSION,
            })
        }
        Message::Welcome(w) if w.role != expected => Err(ProtocolError::Malformed(format!(
            "expected a {expected:?} on this socket, found a {:?}",
            w.role
        ))),
        Message::Welcome(w) => Ok(w),
        other => Err(ProtocolError::Unexpected {
            expected: "welcome",
            got: other.name(),
        }),
    }
}

/// Tells the peer why its request is refused (best effort: it may be gone already).
pub async fn refuse<S: AsyncRead + AsyncWrite>(
    conn: &mut Connection<S>,
    error: &(dyn std::fmt::Display + Sync),
) {
    refuse_with(conn, error, false).await
}

/// Like [`refuse`], saying whether trying again may help.
pub async fn refuse_with<S: AsyncRead + AsyncWrite>(
    conn: &mut Connection<S>,
    error: &(dyn std::fmt::Display + Sync),
    retryable: bool,
) {
    let _ = conn
        .send(&Message::Error(ErrorMessage {
            message: error.to_string(),
            retryable,
        }))
        .await;
}
