//! Frames: a 4-byte big-endian length, then that many bytes of JSON. The length is checked
//! against the cap *before* the body is read, so an oversized frame costs nothing.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ProtocolError;

/// The largest frame either side accepts: a batch of the biggest size with room to spare.
pub const MAX_FRAME: u32 = 64 * 1024 * 1024;

/// Reads one frame's body; `Ok(None)` when the peer closed cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(ProtocolError::Io(e)),
    }
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(ProtocolError::FrameTooLarge { len, max });
    }
    let mut body = vec![0u8; len as usize];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Malformed(format!("the peer closed inside a frame of {len} bytes"))
        } else {
            ProtocolError::Io(e)
        }
    })?;
    Ok(Some(body))
}

/// Writes one frame (without flushing).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
) -> Result<(), ProtocolError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|len| *len <= MAX_FRAME)
        .ok_or(ProtocolError::FrameTooLarge {
            len: u32::try_from(body.len()).unwrap_or(u32::MAX),
            max: MAX_FRAME,
        })?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(body).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_frame_round_trips_and_eof_between_frames_is_clean() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{\"a\":1}").await.unwrap();
        let mut r = buf.as_slice();
        assert_eq!(
            read_frame(&mut r, MAX_FRAME).await.unwrap().unwrap(),
            b"{\"a\":1}"
        );
        assert!(read_frame(&mut r, MAX_FRAME).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_the_body() {
        let mut buf = (MAX_FRAME + 1).to_be_bytes().to_vec();
        buf.extend_from_slice(b"short");
        let err = read_frame(&mut buf.as_slice(), MAX_FRAME)
            .await
            .unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_truncated_frame_is_malformed() {
        let mut buf = 10u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"abc");
        let err = read_frame(&mut buf.as_slice(), MAX_FRAME)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("closed inside a frame"), "{err}");
    }
}
