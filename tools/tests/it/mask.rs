//! Masking of the values that legitimately differ between two independent
//! single-member clusters — and nothing else.
//!
//! Server-side (differ per cluster by design):
//! - `cluster_id`, `member_id`, `raft_term` in `-w json`,
//! - `"ClusterID"`, `"MemberID"`, `"RaftTerm"` lines in `-w fields`,
//! - header fields 1 (cluster_id), 2 (member_id), 4 (raft_term) in `-w protobuf`.
//!
//! Only NON-ZERO values are masked: etcd leaves them zero (and JSON omits
//! them) in the per-operation headers nested inside a txn response, and a
//! server that filled them in there (or left them zero at the top level)
//! would be visibly different.
//!
//! Client-side (inherent to the etcdctl process, not the server): etcdctl's
//! zap warning line on a failed RPC carries a timestamp (`"ts"`), a Go
//! pointer (`etcd-endpoints://0xc000394380/...`) and the endpoint address,
//! whose port necessarily differs between the two servers.

const JSON_KEYS: [&str; 3] = ["\"cluster_id\":", "\"member_id\":", "\"raft_term\":"];
const FIELDS_KEYS: [&str; 3] = ["\"ClusterID\" : ", "\"MemberID\" : ", "\"RaftTerm\" : "];
pub const MASK: &str = "<masked>";

fn replace_nonzero_number_after(input: &[u8], key: &[u8], require_line_start: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i..].starts_with(key) && (!require_line_start || i == 0 || input[i - 1] == b'\n') {
            let start = i + key.len();
            let mut end = start;
            while end < input.len() && input[end].is_ascii_digit() {
                end += 1;
            }
            out.extend_from_slice(key);
            let digits = &input[start..end];
            if !digits.is_empty() && digits.iter().any(|&d| d != b'0') {
                out.extend_from_slice(MASK.as_bytes());
            } else {
                out.extend_from_slice(digits);
            }
            i = end;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// Mask IDs/term in `-w json` and `-w fields` output (no-op on other output).
pub fn mask_text_ids(stdout: &[u8]) -> Vec<u8> {
    let mut v = stdout.to_vec();
    for k in JSON_KEYS {
        v = replace_nonzero_number_after(&v, k.as_bytes(), false);
    }
    for k in FIELDS_KEYS {
        v = replace_nonzero_number_after(&v, k.as_bytes(), true);
    }
    v
}

// --- protobuf ---------------------------------------------------------------

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One wire-format field: tag, raw bytes (tag included), payload range.
type Field<'a> = (u64, &'a [u8], std::ops::Range<usize>);

/// Splits a message into its fields.
fn fields(b: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut i = 0;
    let mut res = vec![];
    while i < b.len() {
        let start = i;
        let tag = read_varint(b, &mut i)?;
        let payload = match tag & 7 {
            0 => {
                let s = i;
                read_varint(b, &mut i)?;
                s..i
            }
            1 => {
                i += 8;
                (i - 8)..i
            }
            2 => {
                let len = read_varint(b, &mut i)? as usize;
                i = i.checked_add(len)?;
                (i - len)..i
            }
            5 => {
                i += 4;
                (i - 4)..i
            }
            _ => return None,
        };
        if i > b.len() {
            return None;
        }
        res.push((tag, &b[start..i], payload));
    }
    Some(res)
}

/// Mask the response header (field 1 of every etcd KV response) of a
/// `-w protobuf` output: cluster_id (1), member_id (2) and raft_term (4) are
/// replaced by the varint 0x7f7f when non-zero. Returns the input unchanged
/// if it does not parse as protobuf.
pub fn mask_protobuf_header(b: &[u8]) -> Vec<u8> {
    let Some(top) = fields(b) else {
        return b.to_vec();
    };
    let mut out = Vec::with_capacity(b.len());
    for (tag, raw, payload) in top {
        if tag == (1 << 3) | 2 {
            let hdr = &b[payload];
            let Some(hf) = fields(hdr) else {
                return b.to_vec();
            };
            let mut inner = Vec::new();
            for (htag, hraw, hpayload) in hf {
                let masked =
                    matches!(htag, 0x08 | 0x10 | 0x20) && hdr[hpayload].iter().any(|&x| x != 0);
                if masked {
                    write_varint(&mut inner, htag);
                    write_varint(&mut inner, 0x7f7f);
                } else {
                    inner.extend_from_slice(hraw);
                }
            }
            write_varint(&mut out, tag);
            write_varint(&mut out, inner.len() as u64);
            out.extend_from_slice(&inner);
        } else {
            out.extend_from_slice(raw);
        }
    }
    out
}

// --- client-side noise ---------------------------------------------------------

/// Mask the per-process parts of etcdctl's zap log lines on stderr and the
/// endpoint address.
pub fn mask_client_noise(stderr: &[u8], endpoint: &str) -> Vec<u8> {
    let s = String::from_utf8_lossy(stderr).into_owned();
    let s = s.replace(endpoint, "<endpoint>");
    let s = mask_after(&s, "\"ts\":\"", |c| c != '"', "<ts>");
    let s = mask_after(
        &s,
        "etcd-endpoints://0x",
        |c| c.is_ascii_hexdigit(),
        "<ptr>",
    );
    s.into_bytes()
}

fn mask_after(s: &str, key: &str, keep_going: impl Fn(char) -> bool, repl: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(key) {
        out.push_str(&rest[..pos + key.len()]);
        rest = &rest[pos + key.len()..];
        let end = rest.find(|c| !keep_going(c)).unwrap_or(rest.len());
        out.push_str(repl);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_json_nonzero_only() {
        let a = br#"{"header":{"cluster_id":15118495548433857066,"member_id":13668033151171901709,"revision":3,"raft_term":2},"responses":[{"Response":{"response_put":{"header":{"revision":3}}}}]}"#;
        let m = String::from_utf8(mask_text_ids(a)).unwrap();
        assert_eq!(
            m,
            r#"{"header":{"cluster_id":<masked>,"member_id":<masked>,"revision":3,"raft_term":<masked>},"responses":[{"Response":{"response_put":{"header":{"revision":3}}}}]}"#
        );
        let z = br#"{"header":{"cluster_id":0,"revision":3}}"#;
        assert_eq!(mask_text_ids(z), z.to_vec());
    }

    #[test]
    fn mask_fields_lines() {
        let a = b"\"ClusterID\" : 151\n\"MemberID\" : 13\n\"Revision\" : 5\n\"RaftTerm\" : 2\n\"ClusterID\" : 0\n\"Key\" : \"x\"\n";
        let m = String::from_utf8(mask_text_ids(a)).unwrap();
        assert_eq!(
            m,
            "\"ClusterID\" : <masked>\n\"MemberID\" : <masked>\n\"Revision\" : 5\n\"RaftTerm\" : <masked>\n\"ClusterID\" : 0\n\"Key\" : \"x\"\n"
        );
    }

    #[test]
    fn mask_protobuf() {
        // RangeResponse{header{cluster_id: 300, member_id: 5, revision: 6, raft_term: 2}, count: 1}
        let mut hdr = vec![];
        for (t, v) in [(0x08u64, 300u64), (0x10, 5), (0x18, 6), (0x20, 2)] {
            write_varint(&mut hdr, t);
            write_varint(&mut hdr, v);
        }
        let mut msg = vec![0x0a, hdr.len() as u8];
        msg.extend_from_slice(&hdr);
        msg.extend_from_slice(&[0x20, 0x01]);
        let mut hdr2 = vec![];
        for (t, v) in [(0x08u64, 999_999u64), (0x10, 7), (0x18, 6), (0x20, 3)] {
            write_varint(&mut hdr2, t);
            write_varint(&mut hdr2, v);
        }
        let mut msg2 = vec![0x0a, hdr2.len() as u8];
        msg2.extend_from_slice(&hdr2);
        msg2.extend_from_slice(&[0x20, 0x01]);
        assert_ne!(msg, msg2);
        assert_eq!(mask_protobuf_header(&msg), mask_protobuf_header(&msg2));
        // revision is not masked
        let mut msg3 = msg2.clone();
        msg3[2 + 3 + 1 + 2 + 1] = 7; // revision value byte
        assert_ne!(mask_protobuf_header(&msg), mask_protobuf_header(&msg3));
        // garbage passes through
        assert_eq!(mask_protobuf_header(b"Error: x\n"), b"Error: x\n".to_vec());
    }

    #[test]
    fn mask_noise() {
        let a = br#"{"level":"warn","ts":"2026-11-28T03:19:41.042Z","logger":"etcd-client","caller":"v3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":"etcd-endpoints://0xc000394380/127.0.0.1:23791","attempt":0,"error":"rpc error: code = OutOfRange desc = x"}
Error: x
"#;
        let m = String::from_utf8(mask_client_noise(a, "127.0.0.1:23791")).unwrap();
        assert_eq!(
            m,
            r#"{"level":"warn","ts":"<ts>","logger":"etcd-client","caller":"v3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":"etcd-endpoints://0x<ptr>/<endpoint>","attempt":0,"error":"rpc error: code = OutOfRange desc = x"}
Error: x
"#
        );
    }
}
