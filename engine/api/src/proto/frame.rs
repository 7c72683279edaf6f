//! Frames: a message encoded and decoded with its length prefix, volume
//! stream chunks as binary frames, and reading and writing both on
//! blocking streams.

use std::any::{Any, TypeId};
use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ClientMessage, FrameError, MAX_FRAME, STREAM_FRAME, ServerMessage};

pub(super) fn check_len(len: usize) -> Result<(), FrameError> {
    if len > MAX_FRAME {
        Err(FrameError::TooLarge(len))
    } else {
        Ok(())
    }
}

/// The bytes in front of a stream chunk's data: the frame's length, then
/// [`STREAM_FRAME`] and the call id.
pub const STREAM_HEADER: usize = 4 + 1 + 8;

/// The header of a stream frame carrying `len` bytes of call `id`.
pub(super) fn stream_header(id: u64, len: usize) -> Result<[u8; STREAM_HEADER], FrameError> {
    let payload = 1 + 8 + len;
    check_len(payload)?;
    let mut header = [0u8; STREAM_HEADER];
    header[..4].copy_from_slice(&(payload as u32).to_be_bytes());
    header[4] = STREAM_FRAME;
    header[5..].copy_from_slice(&id.to_be_bytes());
    Ok(header)
}

/// The call id and bytes of a message that is a stream chunk.
pub(super) fn as_stream_chunk<T: Any>(msg: &T) -> Option<(u64, &[u8])> {
    let any = msg as &dyn Any;
    match (
        any.downcast_ref::<ClientMessage>(),
        any.downcast_ref::<ServerMessage>(),
    ) {
        (Some(ClientMessage::StreamData { id, data }), _)
        | (_, Some(ServerMessage::StreamData { id, data })) => Some((*id, data)),
        _ => None,
    }
}

pub(super) fn malformed(why: &str) -> FrameError {
    FrameError::Malformed(serde::de::Error::custom(why))
}

/// A stream chunk as a message of type `T`.
pub(super) fn stream_message<T: Any>(id: u64, data: Vec<u8>) -> Result<T, FrameError> {
    let msg: Box<dyn Any> = if TypeId::of::<T>() == TypeId::of::<ClientMessage>() {
        Box::new(ClientMessage::StreamData { id, data })
    } else if TypeId::of::<T>() == TypeId::of::<ServerMessage>() {
        Box::new(ServerMessage::StreamData { id, data })
    } else {
        return Err(malformed("a stream frame where a message was expected"));
    };
    msg.downcast::<T>()
        .map(|m| *m)
        .map_err(|_| malformed("a stream frame of the wrong type"))
}

/// Encodes one message as a frame (length prefix included).
pub fn encode<T: Serialize + Any>(msg: &T) -> Result<Vec<u8>, FrameError> {
    if let Some((id, data)) = as_stream_chunk(msg) {
        let mut buf = Vec::with_capacity(STREAM_HEADER + data.len());
        buf.extend_from_slice(&stream_header(id, data.len())?);
        buf.extend_from_slice(data);
        return Ok(buf);
    }
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, msg)?;
    let len = buf.len() - 4;
    check_len(len)?;
    let len = u32::try_from(len).map_err(|_| FrameError::TooLarge(len))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// The call id and bytes of a stream frame's payload, borrowed; `None` for
/// a message frame (see [`decode`]).
pub fn stream_chunk(payload: &[u8]) -> Result<Option<(u64, &[u8])>, FrameError> {
    let Some((&STREAM_FRAME, rest)) = payload.split_first() else {
        return Ok(None);
    };
    let Some((id, data)) = rest.split_first_chunk::<8>() else {
        return Err(malformed("a stream frame shorter than its header"));
    };
    Ok(Some((u64::from_be_bytes(*id), data)))
}

/// Decodes a frame's payload.
pub fn decode<T: DeserializeOwned + Any>(payload: &[u8]) -> Result<T, FrameError> {
    match stream_chunk(payload)? {
        Some((id, data)) => stream_message(id, data.to_vec()),
        None => Ok(serde_json::from_slice(payload)?),
    }
}

/// Steps the pair of buffers `a` then `b` past `n` written bytes.
pub(super) fn advance<'a>(a: &mut &'a [u8], b: &mut &'a [u8], n: usize) {
    if n < a.len() {
        *a = &a[n..];
    } else {
        *b = &b[n - a.len()..];
        *a = &[];
    }
}

/// Writes a stream chunk straight from `data` (one vectored write; no
/// frame is built in memory).
pub fn write_stream_chunk<W: Write>(w: &mut W, id: u64, data: &[u8]) -> Result<(), FrameError> {
    let header = stream_header(id, data.len())?;
    let (mut a, mut b) = (&header[..], data);
    while !a.is_empty() {
        match w.write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)]) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Ok(n) => advance(&mut a, &mut b, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    w.write_all(b)?;
    w.flush()?;
    Ok(())
}

/// Writes one message to a blocking stream.
pub fn write_message<W: Write, T: Serialize + Any>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    if let Some((id, data)) = as_stream_chunk(msg) {
        return write_stream_chunk(w, id, data);
    }
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one message from a blocking stream.
pub fn read_message<R: Read, T: DeserializeOwned + Any>(r: &mut R) -> Result<T, FrameError> {
    let mut payload = Vec::new();
    decode(read_frame(r, &mut payload)?)
}

/// Reads one frame from a blocking stream into `buf`, whose memory is
/// reused from frame to frame (it only grows, to the largest frame read),
/// and returns its payload: for [`stream_chunk`] or [`decode`]. Loops that
/// receive many stream chunks read them this way, without an allocation
/// per chunk.
pub fn read_frame<'a, R: Read>(r: &mut R, buf: &'a mut Vec<u8>) -> Result<&'a [u8], FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        other => other?,
    }
    let len = u32::from_be_bytes(len) as usize;
    check_len(len)?;
    if buf.len() < len {
        buf.resize(len, 0);
    }
    r.read_exact(&mut buf[..len])?;
    Ok(&buf[..len])
}
