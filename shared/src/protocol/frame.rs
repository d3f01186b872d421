//! Frames: a 4-byte big-endian length, then that many bytes: a message's JSON, and after it the
//! bodies and headers a `change_batch` carries (`attached`). The length is checked against the
//! cap *before* the body is read, so an oversized frame costs nothing.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ProtocolError;

/// The largest frame either side accepts: a batch of the biggest size with room to spare.
pub const MAX_FRAME: u32 = 64 * 1024 * 1024;

/// Reads one frame's body into `body` (replacing what it held); `Ok(false)` when the peer closed
/// cleanly between frames. The bytes are read into `body`'s spare capacity without zeroing it
/// first, so a buffer kept from frame to frame costs neither a 2 MB `memset` nor fresh pages per
/// batch.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
    body: &mut Vec<u8>,
) -> Result<bool, ProtocolError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(ProtocolError::Io(e)),
    }
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(ProtocolError::FrameTooLarge { len, max });
    }
    body.clear();
    body.reserve_exact(len as usize);
    let read = reader.take(u64::from(len)).read_to_end(body).await?;
    if read < len as usize {
        return Err(ProtocolError::Malformed(format!(
            "the peer closed inside a frame of {len} bytes"
        )));
    }
    Ok(true)
}

/// Writes one frame whose body is `parts` back to back (without flushing).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    parts: &[&[u8]],
) -> Result<(), ProtocolError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(total)
        .ok()
        .filter(|len| *len <= MAX_FRAME)
        .ok_or(ProtocolError::FrameTooLarge {
            len: u32::try_from(total).unwrap_or(u32::MAX),
            max: MAX_FRAME,
        })?;
    writer.write_all(&len.to_be_bytes()).await?;
    for part in parts {
        writer.write_all(part).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_frame_round_trips_and_eof_between_frames_is_clean() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &[b"{\"a\":", b"1}"]).await.unwrap();
        write_frame(&mut buf, &[b"{}"]).await.unwrap();
        let (mut r, mut body) = (buf.as_slice(), b"left over".to_vec());
        assert!(read_frame(&mut r, MAX_FRAME, &mut body).await.unwrap());
        assert_eq!(body, b"{\"a\":1}");
        assert!(read_frame(&mut r, MAX_FRAME, &mut body).await.unwrap());
        assert_eq!(body, b"{}");
        assert!(!read_frame(&mut r, MAX_FRAME, &mut body).await.unwrap());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_the_body() {
        let mut buf = (MAX_FRAME + 1).to_be_bytes().to_vec();
        buf.extend_from_slice(b"short");
        let err = read_frame(&mut buf.as_slice(), MAX_FRAME, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_truncated_frame_is_malformed() {
        let mut buf = 10u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"abc");
        let err = read_frame(&mut buf.as_slice(), MAX_FRAME, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("closed inside a frame"), "{err}");
    }
}
