//! gRPC status: the code (a `u32` on the wire) and message that end every
//! RPC, carried in the `grpc-status` / `grpc-message` trailers.

use std::fmt;

/// A gRPC status code. Values are fixed by the gRPC spec (`doc/statuscodes.md`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u32);

impl Code {
    pub const OK: Code = Code(0);
    pub const CANCELLED: Code = Code(1);
    pub const UNKNOWN: Code = Code(2);
    pub const INVALID_ARGUMENT: Code = Code(3);
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    pub const NOT_FOUND: Code = Code(5);
    pub const ALREADY_EXISTS: Code = Code(6);
    pub const PERMISSION_DENIED: Code = Code(7);
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    pub const FAILED_PRECONDITION: Code = Code(9);
    pub const ABORTED: Code = Code(10);
    pub const OUT_OF_RANGE: Code = Code(11);
    pub const UNIMPLEMENTED: Code = Code(12);
    pub const INTERNAL: Code = Code(13);
    pub const UNAVAILABLE: Code = Code(14);
    pub const DATA_LOSS: Code = Code(15);
    pub const UNAUTHENTICATED: Code = Code(16);

    fn name(self) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "Canceled",
            "Unknown",
            "InvalidArgument",
            "DeadlineExceeded",
            "NotFound",
            "AlreadyExists",
            "PermissionDenied",
            "ResourceExhausted",
            "FailedPrecondition",
            "Aborted",
            "OutOfRange",
            "Unimplemented",
            "Internal",
            "Unavailable",
            "DataLoss",
            "Unauthenticated",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("Code")
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

/// The outcome of one RPC that did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::INTERNAL, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::INVALID_ARGUMENT, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::UNIMPLEMENTED, message)
    }

    /// The `grpc-message` header value: percent-encoded as the gRPC HTTP/2
    /// spec asks (every byte outside printable ASCII, and `%` itself).
    pub fn encoded_message(&self) -> String {
        percent_encode(&self.message)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rpc error: code = {} desc = {}",
            self.code.name(),
            self.message
        )
    }
}

impl std::error::Error for Status {}

/// Percent-encodes a `grpc-message` value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(
                char::from_digit(u32::from(b >> 4), 16).map_or('0', |c| c.to_ascii_uppercase()),
            );
            out.push(
                char::from_digit(u32::from(b & 0xf), 16).map_or('0', |c| c.to_ascii_uppercase()),
            );
        }
    }
    out
}

/// Decodes a percent-encoded `grpc-message`; malformed escapes are kept
/// verbatim (the spec asks receivers to be lenient).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_round_trips_and_escapes_non_printables() {
        let m = "etcdserver: 100% \u{e9}\n";
        let e = percent_encode(m);
        assert_eq!(e, "etcdserver: 100%25 %C3%A9%0A");
        assert_eq!(percent_decode(&e), m);
    }

    #[test]
    fn malformed_escape_is_kept() {
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
    }
}
