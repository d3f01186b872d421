//! Local sockets (Unix domain sockets through `interprocess`).
//!
//! - A listener's socket file is owner-only (0600, set with fchmod before bind, so no umask race).
//! - A stale socket file left by a killed daemon is replaced; a socket a live daemon still
//!   answers on is refused, so two daemons never serve one path.
//! - A peer of another user id is refused (peer credentials).

use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::{Listener as _, Stream as _};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

pub use interprocess::local_socket::tokio::Stream as LocalStream;

/// The longest socket path the system takes: `sockaddr_un`'s `sun_path` holds 108 bytes on
/// Linux, the terminating NUL included.
pub const MAX_SOCKET_PATH: usize = 107;

/// Refuses a socket path longer than [`MAX_SOCKET_PATH`], naming its length. Checked before
/// anything else is done with it (a daemon opens, and may create, its store before it binds).
pub fn check_socket_path(path: &Path) -> Result<(), IpcError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(IpcError::PathTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// What can go wrong with a socket.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("{path}: another daemon is already serving this socket")]
    AlreadyServing { path: PathBuf },
    #[error(
        "{path}: a socket path of {len} bytes is too long; the system takes at most \
         {MAX_SOCKET_PATH} (choose a shorter directory)"
    )]
    PathTooLong { path: PathBuf, len: usize },
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The message adds what the operator can do for the usual causes ([`connect_hint`]).
    #[error("cannot connect to {path}: {source}{}", connect_hint(source))]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refused a peer of user id {peer}: only user id {owner} may connect")]
    ForeignPeer { peer: u32, owner: u32 },
    #[error("cannot check the peer's credentials: {0}")]
    PeerCredentials(std::io::Error),
}

impl IpcError {
    /// Connection failures may pass (a daemon restarting); the rest will not by themselves.
    pub fn is_retryable(&self) -> bool {
        matches!(self, IpcError::Connect { .. })
    }
}

/// A bound, owner-only listener and the user id allowed to connect.
pub struct SocketListener {
    listener: Listener,
    path: PathBuf,
    owner: u32,
}

impl SocketListener {
    /// Binds `path` (creating its directory), replacing a stale socket file.
    pub async fn bind(path: &Path) -> Result<SocketListener, IpcError> {
        check_socket_path(path)?;
        let bind_err = |source| IpcError::Bind {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(IpcError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            if connect(path).await.is_ok() {
                return Err(IpcError::AlreadyServing {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        let name = path.to_fs_name::<GenericFilePath>().map_err(bind_err)?;
        let listener = ListenerOptions::new()
            .name(name)
            .mode(0o600)
            .create_tokio()
            .map_err(bind_err)?;
        let owner = std::fs::metadata(path).map_err(bind_err)?.uid();
        Ok(SocketListener {
            listener,
            path: path.to_path_buf(),
            owner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next connection from a peer of the owner's user id. A foreign peer is refused (its
    /// connection dropped) and reported as an error; the listener stays usable.
    pub async fn accept(&self) -> Result<Stream, IpcError> {
        let stream = self
            .listener
            .accept()
            .await
            .map_err(|source| IpcError::Bind {
                path: self.path.clone(),
                source,
            })?;
        use interprocess::local_socket::traits::StreamCommon;
        let creds = stream.peer_creds().map_err(IpcError::PeerCredentials)?;
        match creds.euid() {
            Some(uid) if uid == self.owner => Ok(stream),
            Some(uid) => Err(IpcError::ForeignPeer {
                peer: uid,
                owner: self.owner,
            }),
            None => Err(IpcError::PeerCredentials(std::io::Error::other(
                "the platform gave no user id",
            ))),
        }
    }
}

impl Drop for SocketListener {
    /// The socket file goes with the listener (interprocess reclaims it too; this also covers a
    /// path that was re-bound).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What an operator can do when nothing answers at a socket path: the two usual causes are a
/// daemon never started there and one that has stopped (kill -9 leaves its socket file).
fn connect_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::NotFound => {
            " (no socket file there: start the daemon serving this path, or give the store \
             spawn = true)"
        }
        std::io::ErrorKind::ConnectionRefused => {
            " (a socket file is there but no daemon answers: the one that made it has stopped; \
             start it again)"
        }
        _ => "",
    }
}

/// Connects to the daemon at `path`.
pub async fn connect(path: &Path) -> Result<Stream, IpcError> {
    check_socket_path(path)?;
    let connect_err = |source| IpcError::Connect {
        path: path.to_path_buf(),
        source,
    };
    let name = path.to_fs_name::<GenericFilePath>().map_err(connect_err)?;
    Stream::connect(name).await.map_err(connect_err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The two usual reasons nothing answers each get their remedy; the path is always named.
    #[tokio::test]
    async fn a_socket_nobody_serves_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let never = dir.path().join("never.sock");
        let err = connect(&never).await.err().unwrap().to_string();
        assert!(
            err.starts_with(&format!("cannot connect to {}: ", never.display())),
            "{err}"
        );
        assert!(err.ends_with("(no socket file there: start the daemon serving this path, or give the store spawn = true)"), "{err}");

        // A socket file whose listener is gone, as kill -9 leaves it.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        let err = connect(&stale).await.err().unwrap().to_string();
        assert!(err.ends_with("(a socket file is there but no daemon answers: the one that made it has stopped; start it again)"), "{err}");
    }
}
