//! gRPC message framing ("Length-Prefixed-Message" of the gRPC HTTP/2 spec):
//!
//! ```text
//! | compressed: u8 (0 or 1) | length: u32 big-endian | message: length bytes |
//! ```
//!
//! The decoder is fed whatever DATA frames brought and tells an incomplete
//! frame (wait for more) from an invalid one (fail this stream). It checks the
//! declared length against the receive limit *before* buffering the body, so a
//! peer cannot make us allocate more than the limit.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::status::{Code, Status};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;

/// Encodes `msg` into one frame appended to `buf`.
pub fn encode<M: prost::Message>(msg: &M, buf: &mut BytesMut) {
    let len = msg.encoded_len();
    buf.reserve(HEADER_LEN + len);
    buf.put_u8(0);
    // A message larger than 4 GiB cannot be framed; our limits keep every
    // response far below (etcd caps responses by --max-request-bytes-ish
    // limits on the client side too).
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // `encode` only fails on insufficient capacity, which we reserved.
    let _ = msg.encode(buf);
}

/// Encodes `msg` as a standalone frame.
pub fn encode_frame<M: prost::Message>(msg: &M) -> Bytes {
    let mut buf = BytesMut::new();
    encode(msg, &mut buf);
    buf.freeze()
}

/// Outcome of trying to cut one frame out of the buffered bytes.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A complete message body.
    Message(Bytes),
    /// More bytes are needed.
    Incomplete,
}

/// Incremental frame decoder for one stream.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_message: usize,
}

impl Decoder {
    /// `max_message`: the largest message body accepted (etcd: grpc's
    /// MaxRecvMsgSize = --max-request-bytes + 512 KiB).
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            max_message,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// True when no partial frame is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Cuts the next complete frame, if any.
    pub fn decode(&mut self) -> Result<Decoded, Status> {
        if self.buf.len() < HEADER_LEN {
            return Ok(Decoded::Incomplete);
        }
        let compressed = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        match compressed {
            0 => {}
            // We never advertise a grpc-encoding, so a compressed message is
            // a protocol violation (grpc-go answers the same way).
            1 => {
                return Err(Status::internal(
                    "grpc: compressed flag set with identity or empty encoding",
                ))
            }
            other => {
                return Err(Status::internal(format!(
                    "grpc: received unexpected payload format {other}"
                )))
            }
        }
        if len > self.max_message {
            return Err(Status::new(
                Code::RESOURCE_EXHAUSTED,
                format!(
                    "grpc: received message larger than max ({} vs. {})",
                    len, self.max_message
                ),
            ));
        }
        if self.buf.len() < HEADER_LEN + len {
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(Decoded::Incomplete);
        }
        self.buf.advance(HEADER_LEN);
        Ok(Decoded::Message(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let mut d = Decoder::new(10);
        d.push(&[0, 0, 0, 0, 11]);
        let err = d.decode().unwrap_err();
        assert_eq!(err.code, Code::RESOURCE_EXHAUSTED);
        assert_eq!(
            err.message,
            "grpc: received message larger than max (11 vs. 10)"
        );
    }

    #[test]
    fn compressed_frame_is_invalid() {
        let mut d = Decoder::new(10);
        d.push(&[1, 0, 0, 0, 1, 7]);
        assert_eq!(d.decode().unwrap_err().code, Code::INTERNAL);
    }

    proptest! {
        #[test]
        fn frames_split_anywhere_decode_whole(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
            cuts in proptest::collection::vec(1usize..17, 0..30),
        ) {
            let wire: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
            let mut d = Decoder::new(64);
            let mut out = Vec::new();
            let mut pos = 0;
            let mut cuts = cuts.into_iter();
            while pos < wire.len() {
                let n = cuts.next().unwrap_or(wire.len()).min(wire.len() - pos);
                d.push(&wire[pos..pos + n]);
                pos += n;
                while let Decoded::Message(m) = d.decode().unwrap() {
                    out.push(m.to_vec());
                }
            }
            prop_assert_eq!(out, bodies);
            prop_assert!(d.is_empty());
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut d = Decoder::new(32);
            d.push(&data);
            for _ in 0..50 {
                match d.decode() {
                    Ok(Decoded::Message(_)) => continue,
                    _ => break,
                }
            }
        }
    }
}
