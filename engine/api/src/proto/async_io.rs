//! Frames on tokio streams: messages written and read asynchronously,
//! stream chunks read into recycled buffers.

use std::any::Any;
use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::FrameError;
use super::frame::{
    STREAM_HEADER, advance, as_stream_chunk, check_len, decode, encode, stream_chunk,
    stream_header, stream_message,
};

/// Writes one message to an async stream.
pub async fn write_message_async<W: AsyncWrite + Unpin, T: Serialize + Any>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    if let Some((id, data)) = as_stream_chunk(msg) {
        // Header and bytes go out as they are, not copied into one frame.
        let header = stream_header(id, data.len())?;
        let (mut a, mut b) = (&header[..], data);
        while !a.is_empty() {
            let n = w
                .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
                .await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero).into());
            }
            advance(&mut a, &mut b, n);
        }
        w.write_all(b).await?;
    } else {
        w.write_all(&encode(msg)?).await?;
    }
    w.flush().await?;
    Ok(())
}

/// Reads one message from an async stream.
pub async fn read_message_async<R: AsyncRead + Unpin, T: DeserializeOwned + Any>(
    r: &mut R,
) -> Result<T, FrameError> {
    read_message_async_with(r, Vec::new).await
}

/// Like [`read_message_async`], with the bytes of a stream chunk read
/// straight into the buffer `spare` returns (resized to fit; its memory is
/// reused when it has the capacity), so a receiver that recycles the
/// buffers of chunks it has consumed allocates nothing per chunk.
pub async fn read_message_async_with<R, T, F>(r: &mut R, spare: F) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned + Any,
    F: FnOnce() -> Vec<u8>,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        other => {
            other?;
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    check_len(len)?;
    // The stream frame's kind and call id, or the start of a message.
    let mut head = [0u8; STREAM_HEADER - 4];
    let head_len = len.min(head.len());
    r.read_exact(&mut head[..head_len]).await?;
    if head_len == head.len()
        && let Some((id, _)) = stream_chunk(&head)?
    {
        let mut data = spare();
        data.resize(len - head_len, 0);
        r.read_exact(&mut data).await?;
        return stream_message(id, data);
    }
    let mut payload = vec![0u8; len];
    payload[..head_len].copy_from_slice(&head[..head_len]);
    r.read_exact(&mut payload[head_len..]).await?;
    decode(&payload)
}
