//! Transaction workloads beyond plain puts: compare-and-swap txn-put
//! (`txn-put --cas`, etcd main's `txn_put.go`), and etcd's STM
//! (`clientv3/concurrency/stm.go`, driven as `tools/benchmark/cmd/stm.go`
//! does).
//!
//! CAS: every txn is `If(mod_revision(k) == expected(k) for each k)
//! Then(put k...) Else(get k...)`. `expected` starts at 0 (key absent) and
//! is learnt from the answers: on success the txn's revision, on failure
//! the mod_revision each `get` saw; the txn is then retried. Clients of one
//! executor share what they learnt (etcd shares it across all clients).
//! One request = one successful CAS, however many attempts it took; the
//! extra attempts are the `cas_retries` counter.
//!
//! STM: one request = one STM transaction of `--keys-per-txn` distinct
//! random keys out of `--keys` (16-byte keys, Go's PutVarint), each read
//! with its own txn of one range, the first `keys-per-txn * wr% / 100` of
//! them also written; then a commit txn guarded by the isolation level's
//! compares (`commit_compares`). A failed commit retries the whole
//! transaction (`stm_retries`), as `runSTM` does. Invariants, as etcd's:
//!
//! * `c` (read committed): reads serializable, no compares.
//! * `r` (repeatable reads): reads serializable; commit iff every read
//!   key's mod_revision is still what was read (0 if it was absent).
//! * `s` (serializable): the first read is linearizable and fixes the
//!   revision, later reads are serializable at it; compares as `r`; a
//!   failed commit's Else fetches the read keys afresh for the retry.
//! * `ss`: as `s`, plus every written key's mod_revision must be below
//!   the first read's revision + 1.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use net::client::Client;
use net::grpc::Status;
use net::pb::etcdserverpb::{
    compare, request_op, response_op, Compare, PutRequest, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse,
};

use crate::args::{Isolation, StmArgs};

/// etcd's stm benchmark makes 16-byte keys.
pub const KEY_SIZE: usize = 16;

/// Give up a single request after this many failed attempts (a livelock
/// would otherwise hang the run); counted as an error.
const MAX_ATTEMPTS: u64 = 10_000;

fn cmp_mod(key: &[u8], result: compare::CompareResult, rev: i64) -> Compare {
    Compare {
        result: result as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::ModRevision(rev)),
    }
}

fn op_put(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        })),
    }
}

pub fn op_range(req: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(req)),
    }
}

fn op_get(key: &[u8]) -> RequestOp {
    op_range(RangeRequest {
        key: key.to_vec(),
        ..RangeRequest::default()
    })
}

/// The range answers of a txn, in order (a missing one is an error: the
/// server answered ops we did not send).
fn ranges(resp: &TxnResponse, want: usize) -> Result<Vec<&RangeResponse>, String> {
    let out: Vec<&RangeResponse> = resp
        .responses
        .iter()
        .filter_map(|r| match &r.response {
            Some(response_op::Response::ResponseRange(rr)) => Some(rr),
            _ => None,
        })
        .collect();
    if out.len() != want {
        return Err(format!("txn answered {} ranges, want {want}", out.len()));
    }
    Ok(out)
}

fn mod_rev(rr: &RangeResponse) -> i64 {
    rr.kvs.first().map_or(0, |kv| kv.mod_revision)
}

fn header_rev(resp_header: Option<&net::pb::etcdserverpb::ResponseHeader>) -> i64 {
    resp_header.map_or(0, |h| h.revision)
}

/// The store revision a range inside a txn saw: its own header's, else
/// (no header, or revision 0) the txn's.
fn inner_rev(rr: &RangeResponse, outer: i64) -> i64 {
    match header_rev(rr.header.as_ref()) {
        0 => outer,
        r => r,
    }
}

/// Why one request failed.
#[derive(Debug)]
pub enum TxnError {
    Rpc(Status),
    Protocol(String),
}

impl std::fmt::Display for TxnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxnError::Rpc(s) => write!(f, "{s}"),
            TxnError::Protocol(s) => write!(f, "{s}"),
        }
    }
}

impl From<Status> for TxnError {
    fn from(s: Status) -> Self {
        TxnError::Rpc(s)
    }
}

/// Mod revisions learnt by the clients of one executor.
pub type Revisions = RefCell<HashMap<Vec<u8>, i64>>;

/// The CAS txn for `keys` given the expected mod revisions.
pub fn cas_txn(keys: &[Vec<u8>], expected: &[i64], value: &[u8]) -> TxnRequest {
    TxnRequest {
        compare: keys
            .iter()
            .zip(expected)
            .map(|(k, &r)| cmp_mod(k, compare::CompareResult::Equal, r))
            .collect(),
        success: keys.iter().map(|k| op_put(k, value)).collect(),
        failure: keys.iter().map(|k| op_get(k)).collect(),
    }
}

/// One compare-and-swap put of `keys`, retried until it succeeds. Returns
/// the number of failed attempts.
pub async fn cas_put(
    client: &Client,
    keys: &[Vec<u8>],
    value: &[u8],
    revs: &Revisions,
) -> Result<u64, TxnError> {
    let mut retries = 0;
    loop {
        let expected: Vec<i64> = {
            let r = revs.borrow();
            keys.iter()
                .map(|k| r.get(k).copied().unwrap_or(0))
                .collect()
        };
        let resp = client.txn(&cas_txn(keys, &expected, value)).await?;
        if resp.succeeded {
            let rev = header_rev(resp.header.as_ref());
            let mut r = revs.borrow_mut();
            for k in keys {
                let e = r.entry(k.clone()).or_insert(0);
                *e = (*e).max(rev);
            }
            return Ok(retries);
        }
        let seen = ranges(&resp, keys.len()).map_err(TxnError::Protocol)?;
        {
            // What the server has now, even if lower (a deleted key).
            let mut r = revs.borrow_mut();
            for (k, rr) in keys.iter().zip(seen) {
                r.insert(k.clone(), mod_rev(rr));
            }
        }
        retries += 1;
        if retries >= MAX_ATTEMPTS {
            return Err(TxnError::Protocol(format!(
                "cas: no success after {retries} attempts"
            )));
        }
    }
}

/// What an STM attempt read of one key.
#[derive(Clone, Debug, PartialEq)]
pub struct Read {
    /// The key's mod revision, 0 if absent.
    pub mod_rev: i64,
    /// The store revision of the answer.
    pub header_rev: i64,
}

/// The commit guard of an STM attempt (etcd's `conflicts()`).
pub fn commit_compares(
    iso: Isolation,
    rset: &BTreeMap<Vec<u8>, Read>,
    wset: &[Vec<u8>],
) -> Vec<Compare> {
    use compare::CompareResult::{Equal, Less};
    let reads = || {
        rset.iter()
            .map(|(k, r)| cmp_mod(k, Equal, r.mod_rev))
            .collect::<Vec<_>>()
    };
    match iso {
        Isolation::ReadCommitted => Vec::new(),
        Isolation::RepeatableReads | Isolation::Serializable => reads(),
        Isolation::SerializableSnapshot => {
            // rset.first(): the lowest header revision read (etcd's
            // MaxInt64-1 when nothing was read).
            let first = rset
                .values()
                .map(|r| r.header_rev)
                .min()
                .unwrap_or(i64::MAX - 1);
            let mut c = reads();
            c.extend(
                wset.iter()
                    .map(|k| cmp_mod(k, Less, first.saturating_add(1))),
            );
            c
        }
    }
}

/// One STM transaction (one benchmark request). Returns the failed commits.
pub async fn stm_txn(
    client: &Client,
    a: &StmArgs,
    keys: &[Vec<u8>],
    value: &[u8],
) -> Result<u64, TxnError> {
    let serializable_iso = matches!(
        a.isolation,
        Isolation::Serializable | Isolation::SerializableSnapshot
    );
    let writes = keys.len() * a.write_percent as usize / 100;
    // Reads a failed serializable commit fetched for the next attempt.
    let mut prefetch: BTreeMap<Vec<u8>, Read> = BTreeMap::new();
    let mut retries = 0;
    loop {
        let mut rset: BTreeMap<Vec<u8>, Read> = BTreeMap::new();
        // Serializable levels: the revision every read after the first uses.
        let mut at_rev: Option<i64> = None;
        for k in keys {
            let read = if let Some(r) = prefetch.remove(k) {
                r
            } else {
                let req = RangeRequest {
                    key: k.clone(),
                    // c, r: serializable gets; s, ss: the first read is
                    // linearizable, the others serializable at its revision.
                    serializable: !serializable_iso || at_rev.is_some(),
                    revision: at_rev.unwrap_or(0),
                    ..RangeRequest::default()
                };
                let resp = client
                    .txn(&TxnRequest {
                        success: vec![op_range(req)],
                        ..TxnRequest::default()
                    })
                    .await?;
                let rr = ranges(&resp, 1).map_err(TxnError::Protocol)?[0];
                Read {
                    mod_rev: mod_rev(rr),
                    header_rev: inner_rev(rr, header_rev(resp.header.as_ref())),
                }
            };
            if serializable_iso && at_rev.is_none() {
                at_rev = Some(read.header_rev);
            }
            rset.insert(k.clone(), read);
        }
        let wset: Vec<Vec<u8>> = keys.iter().take(writes).cloned().collect();
        let cmps = commit_compares(a.isolation, &rset, &wset);
        let read_keys: Vec<Vec<u8>> = rset.keys().cloned().collect();
        let txn = TxnRequest {
            compare: cmps,
            success: wset.iter().map(|k| op_put(k, value)).collect(),
            failure: if serializable_iso {
                read_keys.iter().map(|k| op_get(k)).collect()
            } else {
                Vec::new()
            },
        };
        let resp = client.txn(&txn).await?;
        if resp.succeeded {
            return Ok(retries);
        }
        retries += 1;
        if retries >= MAX_ATTEMPTS {
            return Err(TxnError::Protocol(format!(
                "stm: no commit after {retries} attempts"
            )));
        }
        if serializable_iso {
            let seen = ranges(&resp, read_keys.len()).map_err(TxnError::Protocol)?;
            let rev = header_rev(resp.header.as_ref());
            prefetch = read_keys
                .into_iter()
                .zip(seen)
                .map(|(k, rr)| {
                    let r = Read {
                        mod_rev: mod_rev(rr),
                        header_rev: inner_rev(rr, rev),
                    };
                    (k, r)
                })
                .collect();
        }
    }
}

/// The distinct key numbers of STM request: `n` of them uniform in
/// `[0, keys)`, as etcd's benchmark draws them.
pub fn stm_keys(rng: &mut fastrand::Rng, keys: u64, n: usize) -> Vec<Vec<u8>> {
    let mut set = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n.min(keys as usize) {
        let k = rng.u64(..keys.max(1));
        if set.insert(k) {
            out.push(crate::keys::key_bytes(k, KEY_SIZE));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use compare::CompareResult::{Equal, Less};

    fn rs(entries: &[(&[u8], i64, i64)]) -> BTreeMap<Vec<u8>, Read> {
        entries
            .iter()
            .map(|(k, m, h)| {
                (
                    k.to_vec(),
                    Read {
                        mod_rev: *m,
                        header_rev: *h,
                    },
                )
            })
            .collect()
    }

    fn shape(c: &Compare) -> (Vec<u8>, i32, i64) {
        let Some(compare::TargetUnion::ModRevision(r)) = c.target_union else {
            panic!("not a mod revision compare: {c:?}")
        };
        assert_eq!(c.target, compare::CompareTarget::Mod as i32);
        (c.key.clone(), c.result, r)
    }

    #[test]
    fn isolation_levels_guard_the_commit_as_etcd_does() {
        let rset = rs(&[(b"a", 5, 9), (b"b", 0, 7)]);
        let wset = vec![b"a".to_vec()];
        assert!(commit_compares(Isolation::ReadCommitted, &rset, &wset).is_empty());
        let want_reads = vec![
            (b"a".to_vec(), Equal as i32, 5),
            (b"b".to_vec(), Equal as i32, 0),
        ];
        for iso in [Isolation::RepeatableReads, Isolation::Serializable] {
            let got: Vec<_> = commit_compares(iso, &rset, &wset)
                .iter()
                .map(shape)
                .collect();
            assert_eq!(got, want_reads, "{iso:?}");
        }
        // Snapshot: plus "written key not modified after the first read"
        // (lowest header revision 7, so mod_revision < 8).
        let got: Vec<_> = commit_compares(Isolation::SerializableSnapshot, &rset, &wset)
            .iter()
            .map(shape)
            .collect();
        let mut want = want_reads.clone();
        want.push((b"a".to_vec(), Less as i32, 8));
        assert_eq!(got, want);
    }

    #[test]
    fn cas_txn_compares_each_key_and_falls_back_to_gets() {
        let keys = vec![b"k1".to_vec(), b"k2".to_vec()];
        let t = cas_txn(&keys, &[0, 42], b"v");
        let got: Vec<_> = t.compare.iter().map(shape).collect();
        assert_eq!(
            got,
            vec![
                (b"k1".to_vec(), Equal as i32, 0),
                (b"k2".to_vec(), Equal as i32, 42)
            ]
        );
        assert_eq!(t.success.len(), 2);
        assert!(t.success.iter().all(|op| matches!(
            &op.request,
            Some(request_op::Request::RequestPut(p)) if p.value == b"v"
        )));
        assert!(t.failure.iter().zip(&keys).all(|(op, k)| matches!(
            &op.request,
            Some(request_op::Request::RequestRange(r)) if &r.key == k && r.range_end.is_empty()
        )));
    }

    #[test]
    fn stm_keys_are_distinct_16_byte_keys_within_the_key_space() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..200 {
            let k = stm_keys(&mut rng, 10, 4);
            assert_eq!(k.len(), 4);
            let set: std::collections::BTreeSet<_> = k.iter().collect();
            assert_eq!(set.len(), 4);
            assert!(k.iter().all(|k| k.len() == KEY_SIZE));
            assert!(k
                .iter()
                .all(|k| (0..10).any(|n| crate::keys::key_bytes(n, KEY_SIZE) == *k)));
        }
        // All keys of a key space of exactly keys-per-txn.
        assert_eq!(stm_keys(&mut rng, 3, 3).len(), 3);
    }
}
