//! Length-prefixed CBOR frames.
//!
//! `[u32 big-endian length][CBOR payload]`. The receiver checks the length against its limit
//! before allocating; nesting deeper than [`MAX_NESTING`] is refused while decoding.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Size of the length prefix in bytes.
pub const HEADER_LEN: usize = 4;

/// Deepest CBOR nesting a receiver accepts.
pub const MAX_NESTING: usize = 32;

/// Largest frame a node accepts before the client has authenticated.
pub const MAX_UNAUTHENTICATED_FRAME: usize = 64 * 1024;

/// Default largest frame a node accepts after authentication.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// Largest frame a node sends (and a client accepts).
pub const MAX_OUTGOING_FRAME: usize = 16 * 1024 * 1024;

/// Payload buffer allocated up front; larger frames grow the buffer as their bytes arrive, so
/// a header alone cannot make the receiver allocate its whole limit.
const INITIAL_BUFFER: usize = 64 * 1024;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The announced (or produced) length exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// The payload is not valid CBOR for the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// Reading or writing the underlying stream failed.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `value` as one frame: length prefix plus CBOR.
pub fn encode<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; HEADER_LEN];
    ciborium::into_writer(value, &mut buf).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = buf.len() - HEADER_LEN;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    buf[..HEADER_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
}

/// Reads the payload length from a frame header and checks it against `max`.
pub fn payload_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a frame payload (without the length prefix).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    ciborium::de::from_reader_with_recursion_limit(payload, MAX_NESTING)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Reads one frame from an async stream. `Ok(None)` means the stream ended cleanly between
/// frames.
#[cfg(feature = "tokio")]
pub async fn read<T, R>(reader: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    T: DeserializeOwned,
    R: tokio::io::AsyncRead + Unpin,
{
    read_limited(reader, || max).await
}

/// Like [`read`], but the limit is asked for when the header has arrived, so that a limit
/// that changes while waiting (after authentication) applies to the frame that follows.
#[cfg(feature = "tokio")]
pub async fn read_limited<T, R>(
    reader: &mut R,
    max: impl FnOnce() -> usize,
) -> Result<Option<T>, FrameError>
where
    T: DeserializeOwned,
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;

    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        filled += n;
    }
    let len = payload_len(header, max())?;
    let mut payload = Vec::with_capacity(len.min(INITIAL_BUFFER));
    let read = reader.take(len as u64).read_to_end(&mut payload).await?;
    if read < len {
        return Err(FrameError::Truncated);
    }
    decode(&payload).map(Some)
}

/// Writes one frame to an async stream.
#[cfg(feature = "tokio")]
pub async fn write<T, W>(writer: &mut W, value: &T, max: usize) -> Result<(), FrameError>
where
    T: Serialize,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;

    let bytes = encode(value, max)?;
    writer.write_all(&bytes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientFrame, Request};

    #[test]
    fn round_trip() {
        let frame = ClientFrame::Request {
            id: 7,
            request: Request::Ping,
        };
        let bytes = encode(&frame, 1024).unwrap();
        let len = payload_len(bytes[..4].try_into().unwrap(), 1024).unwrap();
        assert_eq!(len, bytes.len() - 4);
        let back: ClientFrame = decode(&bytes[4..]).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn oversize_header_is_refused_before_allocation() {
        let err = payload_len(u32::MAX.to_be_bytes(), 1024).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 1024, .. }));
    }

    #[test]
    fn deep_nesting_is_refused() {
        // 1000 nested one-element CBOR arrays.
        let mut payload = vec![0x81u8; 1000];
        payload.push(0x00);
        assert!(decode::<ClientFrame>(&payload).is_err());
    }

    #[test]
    fn garbage_is_malformed() {
        for payload in [&b"\xff\xff\xff"[..], b"", b"\x00", b"hello"] {
            assert!(matches!(
                decode::<ClientFrame>(payload),
                Err(FrameError::Malformed(_))
            ));
        }
    }

    /// Deterministic xorshift, so failures reproduce without a seed file.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let valid = encode(
            &ClientFrame::Request {
                id: 9,
                request: Request::Login {
                    login: "ivanov".into(),
                    password: "secret".into(),
                    device_id: "d".into(),
                    device_name: "Ноутбук".into(),
                },
            },
            1024,
        )
        .unwrap();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..20_000 {
            let payload: Vec<u8> = if round % 2 == 0 {
                let len = (xorshift(&mut rng) % 96) as usize;
                (0..len).map(|_| xorshift(&mut rng) as u8).collect()
            } else {
                let mut p = valid[HEADER_LEN..].to_vec();
                for _ in 0..=(xorshift(&mut rng) % 4) {
                    let i = (xorshift(&mut rng) as usize) % p.len();
                    p[i] = xorshift(&mut rng) as u8;
                }
                p
            };
            let _ = decode::<ClientFrame>(&payload);
            let _ = decode::<crate::ServerFrame>(&payload);
        }
    }

    #[tokio::test]
    async fn async_read_reports_truncation() {
        let bytes = encode(
            &ClientFrame::Request {
                id: 1,
                request: Request::Ping,
            },
            1024,
        )
        .unwrap();
        let mut short = &bytes[..bytes.len() - 1];
        let err = read::<ClientFrame, _>(&mut short, 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
        let mut empty: &[u8] = &[];
        assert!(
            read::<ClientFrame, _>(&mut empty, 1024)
                .await
                .unwrap()
                .is_none()
        );
    }
}
