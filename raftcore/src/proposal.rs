//! The payload of a Raft log entry: one client request, encoded in our own
//! compact binary format (documented byte by byte in engine/FORMAT.md,
//! "Raft entry payload"). Everything is fixed-width little-endian;
//! byte strings are `u32 len | bytes`.
//!
//! ```text
//! proposal := version:u8 (=1) | proposer:u64 | id:u64 | kind:u8 | body
//! kind 1 Put         body := key | value | lease:i64 | flags:u8 (bit0 prev_kv, bit1 ignore_value, bit2 ignore_lease)
//! kind 2 DeleteRange body := key | range_end | prev_kv:u8
//! kind 3 Txn         body := txn
//! kind 4 Compact     body := revision:i64 | physical:u8
//! kind 5 Publish     body := member_id:u64 | name | n:u32 client_url*n
//! kind 6 LeaseGrant  body := lease_id:i64 | ttl:i64
//! kind 7 LeaseRevoke body := lease_id:i64
//! kind 8 LeaseCheckpoint body := n:u32 (lease_id:i64 | remaining_ttl:i64)*n
//! kind 9 Alarm       body := action:u8 (1 activate, 2 deactivate) | member_id:u64 | alarm:u8 (etcd's AlarmType)
//! txn     := n:u32 compare*n | n:u32 op*n (success) | n:u32 op*n (failure)
//! compare := result:u8 | target:u8 | key | range_end | value (target 3: bytes, else i64)
//! op      := tag:u8 (1 range, 2 put, 3 delete, 4 txn) | body (range: see `put_range`)
//! ```
//!
//! Decoding checks every length against the remaining input: a corrupt or
//! truncated entry is an error, never a panic or a huge allocation.

use engine::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    SortOrder, SortTarget, TxnRequest,
};

const VERSION: u8 = 1;

/// A client request as ordered by Raft.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact {
        revision: i64,
        physical: bool,
    },
    /// A member announces its name and client URLs (etcd's publish).
    Publish {
        member_id: u64,
        name: String,
        client_urls: Vec<String>,
    },
    /// etcd's LeaseGrant; the ID is chosen before proposing (never 0).
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    /// etcd's LeaseRevoke, from a client or from the leader's expiry tick.
    LeaseRevoke {
        id: i64,
    },
    /// etcd's LeaseCheckpoint: `(lease, remaining TTL)`; 0 clears it.
    LeaseCheckpoint(Vec<(i64, i64)>),
    /// etcd's Alarm ACTIVATE / DEACTIVATE (GET is served locally).
    Alarm {
        action: AlarmAction,
        member_id: u64,
        /// etcd's `AlarmType` number (0 NONE, 1 NOSPACE, 2 CORRUPT).
        alarm: u8,
    },
}

/// The replicated actions of etcd's `AlarmRequest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmAction {
    Activate,
    Deactivate,
}

/// A request with the identity of its waiter.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    /// Member that proposed it (only that member has a waiter).
    pub proposer: u64,
    /// Unique per proposer for its lifetime.
    pub id: u64,
    pub request: Request,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("corrupt raft entry payload: {0}")]
pub struct DecodeError(pub &'static str);

// ---- encoding ----

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Requests are bounded by --max-request-bytes, far below 4 GiB.
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
}

impl Proposal {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(64));
        w.u8(VERSION);
        w.u64(self.proposer);
        w.u64(self.id);
        match &self.request {
            Request::Put(p) => {
                w.u8(1);
                put_put(&mut w, p);
            }
            Request::DeleteRange(d) => {
                w.u8(2);
                put_delete(&mut w, d);
            }
            Request::Txn(t) => {
                w.u8(3);
                put_txn(&mut w, t);
            }
            Request::Compact { revision, physical } => {
                w.u8(4);
                w.i64(*revision);
                w.u8(u8::from(*physical));
            }
            Request::Publish {
                member_id,
                name,
                client_urls,
            } => {
                w.u8(5);
                w.u64(*member_id);
                w.bytes(name.as_bytes());
                w.len(client_urls.len());
                for u in client_urls {
                    w.bytes(u.as_bytes());
                }
            }
            Request::LeaseGrant { id, ttl } => {
                w.u8(6);
                w.i64(*id);
                w.i64(*ttl);
            }
            Request::LeaseRevoke { id } => {
                w.u8(7);
                w.i64(*id);
            }
            Request::LeaseCheckpoint(cps) => {
                w.u8(8);
                w.len(cps.len());
                for (id, remaining) in cps {
                    w.i64(*id);
                    w.i64(*remaining);
                }
            }
            Request::Alarm {
                action,
                member_id,
                alarm,
            } => {
                w.u8(9);
                w.u8(match action {
                    AlarmAction::Activate => 1,
                    AlarmAction::Deactivate => 2,
                });
                w.u64(*member_id);
                w.u8(*alarm);
            }
        }
        w.0
    }

    pub fn decode(b: &[u8]) -> Result<Proposal, DecodeError> {
        let mut r = R(b);
        if r.u8()? != VERSION {
            return Err(DecodeError("unknown version"));
        }
        let proposer = r.u64()?;
        let id = r.u64()?;
        let request = match r.u8()? {
            1 => Request::Put(get_put(&mut r)?),
            2 => Request::DeleteRange(get_delete(&mut r)?),
            3 => Request::Txn(get_txn(&mut r, 0)?),
            4 => Request::Compact {
                revision: r.i64()?,
                physical: r.u8()? != 0,
            },
            5 => {
                let member_id = r.u64()?;
                let name = String::from_utf8(r.bytes()?).map_err(|_| DecodeError("member name"))?;
                let n = r.count(4)?;
                let mut client_urls = Vec::with_capacity(n);
                for _ in 0..n {
                    client_urls.push(
                        String::from_utf8(r.bytes()?).map_err(|_| DecodeError("client url"))?,
                    );
                }
                Request::Publish {
                    member_id,
                    name,
                    client_urls,
                }
            }
            6 => Request::LeaseGrant {
                id: r.i64()?,
                ttl: r.i64()?,
            },
            7 => Request::LeaseRevoke { id: r.i64()? },
            8 => {
                let n = r.count(16)?;
                let mut cps = Vec::with_capacity(n);
                for _ in 0..n {
                    cps.push((r.i64()?, r.i64()?));
                }
                Request::LeaseCheckpoint(cps)
            }
            9 => Request::Alarm {
                action: match r.u8()? {
                    1 => AlarmAction::Activate,
                    2 => AlarmAction::Deactivate,
                    _ => return Err(DecodeError("unknown alarm action")),
                },
                member_id: r.u64()?,
                alarm: r.u8()?,
            },
            _ => return Err(DecodeError("unknown request kind")),
        };
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(Proposal {
            proposer,
            id,
            request,
        })
    }
}

fn put_put(w: &mut W, p: &PutRequest) {
    w.bytes(&p.key);
    w.bytes(&p.value);
    w.i64(p.lease);
    w.u8(u8::from(p.prev_kv) | u8::from(p.ignore_value) << 1 | u8::from(p.ignore_lease) << 2);
}

fn put_delete(w: &mut W, d: &DeleteRangeRequest) {
    w.bytes(&d.key);
    w.bytes(&d.range_end);
    w.u8(u8::from(d.prev_kv));
}

fn put_range(w: &mut W, r: &RangeRequest) {
    w.bytes(&r.key);
    w.bytes(&r.range_end);
    w.i64(r.limit);
    w.i64(r.revision);
    w.u8(r.sort_order as u8);
    w.u8(r.sort_target as u8);
    w.u8(u8::from(r.keys_only) | u8::from(r.count_only) << 1);
    w.i64(r.min_mod_revision);
    w.i64(r.max_mod_revision);
    w.i64(r.min_create_revision);
    w.i64(r.max_create_revision);
}

fn put_txn(w: &mut W, t: &TxnRequest) {
    w.len(t.compare.len());
    for c in &t.compare {
        w.u8(c.result as u8);
        match &c.target {
            CompareTarget::Version(v) => {
                w.u8(0);
                w.i64(*v)
            }
            CompareTarget::Create(v) => {
                w.u8(1);
                w.i64(*v)
            }
            CompareTarget::Mod(v) => {
                w.u8(2);
                w.i64(*v)
            }
            CompareTarget::Value(v) => {
                w.u8(3);
                w.bytes(v)
            }
            CompareTarget::Lease(v) => {
                w.u8(4);
                w.i64(*v)
            }
        }
        w.bytes(&c.key);
        w.bytes(&c.range_end);
    }
    for ops in [&t.success, &t.failure] {
        w.len(ops.len());
        for op in ops.iter() {
            match op {
                RequestOp::Range(r) => {
                    w.u8(1);
                    put_range(w, r)
                }
                RequestOp::Put(p) => {
                    w.u8(2);
                    put_put(w, p)
                }
                RequestOp::DeleteRange(d) => {
                    w.u8(3);
                    put_delete(w, d)
                }
                RequestOp::Txn(t) => {
                    w.u8(4);
                    put_txn(w, t)
                }
            }
        }
    }
}

// ---- decoding ----

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    /// A count of items, each at least `min_size` bytes: refuses counts the
    /// remaining input cannot hold, so no huge `Vec` is reserved.
    fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.0.len() {
            return Err(DecodeError("count exceeds input"));
        }
        Ok(n)
    }
}

fn get_put(r: &mut R) -> Result<PutRequest, DecodeError> {
    let key = r.bytes()?;
    let value = r.bytes()?;
    let lease = r.i64()?;
    let f = r.u8()?;
    Ok(PutRequest {
        key,
        value,
        lease,
        prev_kv: f & 1 != 0,
        ignore_value: f & 2 != 0,
        ignore_lease: f & 4 != 0,
    })
}

fn get_delete(r: &mut R) -> Result<DeleteRangeRequest, DecodeError> {
    Ok(DeleteRangeRequest {
        key: r.bytes()?,
        range_end: r.bytes()?,
        prev_kv: r.u8()? != 0,
    })
}

fn get_range(r: &mut R) -> Result<RangeRequest, DecodeError> {
    let key = r.bytes()?;
    let range_end = r.bytes()?;
    let limit = r.i64()?;
    let revision = r.i64()?;
    let sort_order =
        SortOrder::try_from(i32::from(r.u8()?)).map_err(|_| DecodeError("sort order"))?;
    let sort_target =
        SortTarget::try_from(i32::from(r.u8()?)).map_err(|_| DecodeError("sort target"))?;
    let f = r.u8()?;
    Ok(RangeRequest {
        key,
        range_end,
        limit,
        revision,
        sort_order,
        sort_target,
        keys_only: f & 1 != 0,
        count_only: f & 2 != 0,
        min_mod_revision: r.i64()?,
        max_mod_revision: r.i64()?,
        min_create_revision: r.i64()?,
        max_create_revision: r.i64()?,
    })
}

/// Nested txns are bounded by --max-txn-ops at the edge; this bound only
/// stops a corrupt entry from recursing without end.
const MAX_DEPTH: usize = 64;

fn get_txn(r: &mut R, depth: usize) -> Result<TxnRequest, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError("txn nested too deeply"));
    }
    let n = r.count(10)?;
    let mut compare = Vec::with_capacity(n);
    for _ in 0..n {
        let result = CompareResult::try_from(i32::from(r.u8()?))
            .map_err(|_| DecodeError("compare result"))?;
        let target = match r.u8()? {
            0 => CompareTarget::Version(r.i64()?),
            1 => CompareTarget::Create(r.i64()?),
            2 => CompareTarget::Mod(r.i64()?),
            3 => CompareTarget::Value(r.bytes()?),
            4 => CompareTarget::Lease(r.i64()?),
            _ => return Err(DecodeError("compare target")),
        };
        compare.push(Compare {
            result,
            target,
            key: r.bytes()?,
            range_end: r.bytes()?,
        });
    }
    let mut branches = [Vec::new(), Vec::new()];
    for ops in branches.iter_mut() {
        let n = r.count(1)?;
        ops.reserve(n);
        for _ in 0..n {
            ops.push(match r.u8()? {
                1 => RequestOp::Range(get_range(r)?),
                2 => RequestOp::Put(get_put(r)?),
                3 => RequestOp::DeleteRange(get_delete(r)?),
                4 => RequestOp::Txn(get_txn(r, depth + 1)?),
                _ => return Err(DecodeError("txn op")),
            });
        }
    }
    let [success, failure] = branches;
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_txn() -> TxnRequest {
        TxnRequest {
            compare: vec![
                Compare {
                    result: CompareResult::Greater,
                    target: CompareTarget::Value(b"v".to_vec()),
                    key: b"k".to_vec(),
                    range_end: vec![],
                },
                Compare {
                    result: CompareResult::NotEqual,
                    target: CompareTarget::Mod(7),
                    key: b"a".to_vec(),
                    range_end: b"z".to_vec(),
                },
            ],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: b"x".to_vec(),
                    value: b"1".to_vec(),
                    lease: 5,
                    prev_kv: true,
                    ignore_value: false,
                    ignore_lease: true,
                }),
                RequestOp::Range(RangeRequest {
                    key: b"x".to_vec(),
                    limit: 3,
                    sort_order: SortOrder::Descend,
                    sort_target: SortTarget::Mod,
                    count_only: true,
                    max_create_revision: 9,
                    ..Default::default()
                }),
            ],
            failure: vec![RequestOp::Txn(TxnRequest {
                compare: vec![],
                success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b"d".to_vec(),
                    range_end: vec![0],
                    prev_kv: true,
                })],
                failure: vec![],
            })],
        }
    }

    #[test]
    fn every_request_kind_round_trips() {
        for request in [
            Request::Put(PutRequest {
                key: b"k".to_vec(),
                value: vec![0, 1, 2],
                ..Default::default()
            }),
            Request::DeleteRange(DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                prev_kv: true,
            }),
            Request::Txn(sample_txn()),
            Request::Compact {
                revision: 42,
                physical: true,
            },
            Request::Publish {
                member_id: 9,
                name: "m1".into(),
                client_urls: vec!["http://127.0.0.1:2379".into(), "http://[::1]:2379".into()],
            },
            Request::LeaseGrant {
                id: 0x694d_7c1d_4f25_f80a,
                ttl: 9_000_000_000,
            },
            Request::LeaseGrant { id: -1, ttl: -5 },
            Request::LeaseRevoke { id: i64::MAX },
            Request::LeaseCheckpoint(vec![]),
            Request::LeaseCheckpoint(vec![(1, 240), (-7, 0)]),
            Request::Alarm {
                action: AlarmAction::Activate,
                member_id: u64::MAX,
                alarm: 1,
            },
            Request::Alarm {
                action: AlarmAction::Deactivate,
                member_id: 7,
                alarm: 0,
            },
        ] {
            let p = Proposal {
                proposer: 0xdead_beef,
                id: 77,
                request,
            };
            assert_eq!(Proposal::decode(&p.encode()), Ok(p));
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let p = Proposal {
            proposer: 1,
            id: 2,
            request: Request::Txn(sample_txn()),
        };
        let b = p.encode();
        for cut in 0..b.len() {
            assert!(Proposal::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(Proposal::decode(&extra).is_err());
    }

    #[test]
    fn lease_kinds_have_the_documented_bytes() {
        let p = Proposal {
            proposer: 1,
            id: 2,
            request: Request::LeaseCheckpoint(vec![(3, 4)]),
        };
        let mut want = vec![VERSION];
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&2u64.to_le_bytes());
        want.push(8);
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&3i64.to_le_bytes());
        want.extend_from_slice(&4i64.to_le_bytes());
        assert_eq!(p.encode(), want);
        for request in [
            Request::LeaseGrant { id: 5, ttl: 60 },
            Request::LeaseRevoke { id: 5 },
            Request::LeaseCheckpoint(vec![(5, 1), (6, 2)]),
        ] {
            let b = Proposal {
                proposer: 1,
                id: 2,
                request,
            }
            .encode();
            for cut in 0..b.len() {
                assert!(Proposal::decode(&b[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        let mut b = vec![VERSION];
        b.extend_from_slice(&[0; 16]);
        b.push(3);
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Proposal::decode(&b),
            Err(DecodeError("count exceeds input"))
        );
    }
}
