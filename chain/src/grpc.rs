//! gRPC and gRPC-Web framing (the gRPC over HTTP/2 spec and the gRPC-Web protocol note):
//! each message is `flag(1) ‖ length(4, big-endian) ‖ bytes`; flag bit 0x80 marks a gRPC-Web
//! trailer frame, whose bytes are HTTP/1-style `name: value\r\n` lines. `grpc-web-text` is the
//! same byte stream in base64. Parsing is bounded: a frame longer than the caller's limit is an
//! error before any of it is buffered.

use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// gRPC status codes used here.
pub mod code {
    pub const OK: u32 = 0;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const NOT_FOUND: u32 = 5;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
}

/// The flag of a gRPC-Web trailer frame.
pub const TRAILER_FLAG: u8 = 0x80;
/// The flag of a compressed message (refused: neither side here compresses).
pub const COMPRESSED_FLAG: u8 = 0x01;

/// Why a framed body does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    #[error("the body ends inside a frame")]
    Truncated,
    #[error("a compressed frame, though no compression was negotiated")]
    Compressed,
    #[error("unknown frame flag {0:#04x}")]
    BadFlag(u8),
    #[error("the gRPC-Web text body is not base64")]
    BadBase64,
}

/// One parsed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(Bytes),
    /// gRPC-Web trailers as `(lower-case name, value)` pairs.
    Trailers(Vec<(String, String)>),
}

/// Frame `message` for the wire.
pub fn encode_message(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).expect("messages fit in 4 GiB"));
    out.put_slice(message);
    out.freeze()
}

/// A gRPC-Web trailer frame carrying `grpc-status` and, if not empty, `grpc-message`.
pub fn encode_trailers(status: u32, message: &str) -> Bytes {
    let mut text = format!("grpc-status:{status}\r\n");
    if !message.is_empty() {
        text.push_str(&format!("grpc-message:{}\r\n", percent_encode(message)));
    }
    let mut out = BytesMut::with_capacity(5 + text.len());
    out.put_u8(TRAILER_FLAG);
    out.put_u32(text.len() as u32);
    out.put_slice(text.as_bytes());
    out.freeze()
}

/// Parse a whole body into frames, refusing any frame over `limit` bytes.
pub fn decode_frames(mut body: Bytes, limit: usize) -> Result<Vec<Frame>, FrameError> {
    let mut frames = Vec::new();
    while body.has_remaining() {
        if body.len() < 5 {
            return Err(FrameError::Truncated);
        }
        let flag = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if len > limit {
            return Err(FrameError::TooLarge { len, limit });
        }
        if body.len() < 5 + len {
            return Err(FrameError::Truncated);
        }
        body.advance(5);
        let payload = body.split_to(len);
        frames.push(match flag {
            0 => Frame::Message(payload),
            TRAILER_FLAG => Frame::Trailers(parse_trailers(&payload)),
            f if f & COMPRESSED_FLAG != 0 => return Err(FrameError::Compressed),
            f => return Err(FrameError::BadFlag(f)),
        });
    }
    Ok(frames)
}

fn parse_trailers(payload: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(payload)
        .split("\r\n")
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect()
}

/// Decode a `grpc-web-text` body: base64 of the frame stream, possibly as several padded
/// base64 chunks one after another (the protocol allows a sender to flush in pieces).
pub fn decode_text(body: &[u8]) -> Result<Bytes, FrameError> {
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    // Split after each run of padding, so concatenated padded chunks decode one by one.
    let mut start = 0;
    let mut i = 0;
    while i < clean.len() {
        if clean[i] == b'=' {
            while i < clean.len() && clean[i] == b'=' {
                i += 1;
            }
            decode_chunk(&clean[start..i], &mut out)?;
            start = i;
        } else {
            i += 1;
        }
    }
    decode_chunk(&clean[start..], &mut out)?;
    Ok(Bytes::from(out))
}

fn decode_chunk(chunk: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if chunk.is_empty() {
        return Ok(());
    }
    base64::engine::general_purpose::STANDARD
        .decode_vec(chunk, out)
        .map_err(|_| FrameError::BadBase64)
}

/// Encode bytes as a `grpc-web-text` body.
pub fn encode_text(bytes: &[u8]) -> Bytes {
    Bytes::from(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// `grpc-message` values are percent-encoded (gRPC over HTTP/2 spec).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_binary_and_text() {
        let mut body = BytesMut::new();
        body.extend_from_slice(&encode_message(b"hello"));
        body.extend_from_slice(&encode_trailers(5, "no such object: 0x1 ✗"));
        let body = body.freeze();
        let frames = decode_frames(body.clone(), 64).unwrap();
        assert_eq!(frames[0], Frame::Message(Bytes::from_static(b"hello")));
        let Frame::Trailers(t) = &frames[1] else {
            panic!("{frames:?}")
        };
        assert_eq!(t[0], ("grpc-status".into(), "5".into()));
        assert_eq!(percent_decode(&t[1].1), "no such object: 0x1 ✗");
        // Text mode, sent as two separately padded chunks.
        let mut text = encode_text(&encode_message(b"hello")).to_vec();
        text.extend_from_slice(&encode_text(&encode_trailers(0, "")));
        let decoded = decode_text(&text).unwrap();
        assert_eq!(decode_frames(decoded, 64).unwrap().len(), 2);
    }

    #[test]
    fn bad_bodies_are_refused() {
        assert_eq!(
            decode_frames(Bytes::from_static(&[0, 0, 0, 1, 0, 1, 2]), 100),
            Err(FrameError::TooLarge {
                len: 256,
                limit: 100
            })
        );
        assert_eq!(
            decode_frames(Bytes::from_static(&[0, 0, 0, 0, 5, 1]), 100),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            decode_frames(Bytes::from_static(&[1, 0, 0, 0, 0]), 100),
            Err(FrameError::Compressed)
        );
        assert_eq!(
            decode_frames(Bytes::from_static(&[0, 0]), 100),
            Err(FrameError::Truncated)
        );
        assert_eq!(decode_text(b"!!!"), Err(FrameError::BadBase64));
    }
}
