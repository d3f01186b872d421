//! The buffered, typed connection: frames of [`Message`]s over any async byte stream.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadHalf, WriteHalf};

use super::attached::{self, Parts};
use super::frame::{read_frame, write_frame, MAX_FRAME};
use super::{Message, ProtocolError};

/// A message already encoded as its frame's body: its JSON and its attached bodies. A sender
/// that encodes its next message while it waits for the peer's answer to the previous one takes
/// the encoding off the critical path: the synchronizer encodes batch n+1 while the collector
/// applies batch n.
pub struct Encoded(Parts);

impl Encoded {
    pub fn new(message: &Message) -> Result<Encoded, ProtocolError> {
        attached::encode(message)
            .map(Encoded)
            .map_err(|e| ProtocolError::Malformed(format!("cannot encode a message: {e}")))
    }
}

/// One end of a protocol connection.
pub struct Connection<S> {
    reader: BufReader<ReadHalf<S>>,
    writer: BufWriter<WriteHalf<S>>,
    max_frame: u32,
    /// The last frame read, kept so the next one reuses its memory.
    frame: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite> Connection<S> {
    pub fn new(stream: S) -> Connection<S> {
        let (r, w) = tokio::io::split(stream);
        Connection {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: BufWriter::with_capacity(64 * 1024, w),
            max_frame: MAX_FRAME,
            frame: Vec::new(),
        }
    }

    /// Sends one message and flushes it.
    pub async fn send(&mut self, message: &Message) -> Result<(), ProtocolError> {
        self.send_encoded(&Encoded::new(message)?).await
    }

    /// Sends a message encoded beforehand (see [`Encoded`]) and flushes it.
    pub async fn send_encoded(&mut self, message: &Encoded) -> Result<(), ProtocolError> {
        write_frame(&mut self.writer, &message.0.slices()).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// The next message; `Ok(None)` when the peer closed cleanly.
    pub async fn recv(&mut self) -> Result<Option<Message>, ProtocolError> {
        if !read_frame(&mut self.reader, self.max_frame, &mut self.frame).await? {
            return Ok(None);
        }
        attached::decode(&mut self.frame).map(Some)
    }

    /// The next message, which must be there: a clean close is an error here.
    pub async fn recv_required(&mut self, what: &'static str) -> Result<Message, ProtocolError> {
        match self.recv().await? {
            Some(Message::Error(e)) => Err(ProtocolError::Remote {
                message: e.message,
                retryable: e.retryable,
            }),
            Some(m) => Ok(m),
            None => Err(ProtocolError::Closed { waiting_for: what }),
        }
    }
}
