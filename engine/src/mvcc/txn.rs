//! Transactions: compares, branch choice, validation, application.
//!
//! As in etcd's applier, a txn runs in three steps:
//!
//! 1. **Plan.** Every compare, including those of nested txns in the chosen
//!    branches, is evaluated against the store *before* the txn; this fixes
//!    the path through the txn tree.
//! 2. **Check.** The chosen ops are validated against the same pre-txn
//!    state, all puts first and then all ranges (etcd's `checkRequests` order):
//!    a put with `ignore_value`/`ignore_lease` needs the key to exist, a put
//!    with a lease needs the lease to exist (the caller's lease table), a
//!    range with a revision must not be in the future or compacted.
//! 3. **Apply.** The chosen ops run in order in one write txn (one revision).
//!    Anything that still fails (e.g. a put with `ignore_value` on a key an
//!    earlier op of the same txn deleted, where etcd itself would crash) rolls
//!    the whole txn back and returns the error.

use super::error::Error;
use super::key_range::KeyRange;
use super::kv::KeyValue;
use super::requests::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};
use super::view::View;
use super::write::WriteTxn;

/// A txn with its branch chosen, recursively.
pub(crate) struct Plan<'r> {
    succeeded: bool,
    ops: Vec<PlannedOp<'r>>,
}

enum PlannedOp<'r> {
    Range(&'r RangeRequest),
    Put(&'r PutRequest),
    DeleteRange(&'r DeleteRangeRequest),
    Txn(Plan<'r>),
}

/// Step 1: evaluates all compares on `view` and chooses the branches.
pub(crate) fn plan<'r>(view: &View<'_>, req: &'r TxnRequest) -> Result<Plan<'r>, Error> {
    let mut succeeded = true;
    for c in &req.compare {
        if !compare_holds(view, c)? {
            succeeded = false;
            break;
        }
    }
    let branch = if succeeded {
        &req.success
    } else {
        &req.failure
    };
    let ops = branch
        .iter()
        .map(|op| {
            Ok(match op {
                RequestOp::Range(r) => PlannedOp::Range(r),
                RequestOp::Put(p) => PlannedOp::Put(p),
                RequestOp::DeleteRange(d) => PlannedOp::DeleteRange(d),
                RequestOp::Txn(t) => PlannedOp::Txn(plan(view, t)?),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Plan { succeeded, ops })
}

/// etcd's `applyCompare`: the compare must hold for every key in its range;
/// an empty range is compared as one zero-valued key-value, except that a
/// value compare on missing keys always fails.
fn compare_holds(view: &View<'_>, c: &Compare) -> Result<bool, Error> {
    let kvs = view.all_in(KeyRange::new(&c.key, &c.range_end))?;
    if kvs.is_empty() {
        if matches!(c.target, CompareTarget::Value(_)) {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

/// Step 2: validates the chosen ops against the pre-txn `view`;
/// `lease_exists` tells whether a put's non-zero lease exists.
pub(crate) fn check(
    view: &View<'_>,
    plan: &Plan<'_>,
    lease_exists: &dyn Fn(i64) -> bool,
) -> Result<(), Error> {
    check_puts(view, plan, lease_exists)?;
    check_ranges(view, plan)
}

/// etcd's `checkRequestPut` per put of the chosen branches, in order: the
/// key for `ignore_*`, then the lease.
fn check_puts(
    view: &View<'_>,
    plan: &Plan<'_>,
    lease_exists: &dyn Fn(i64) -> bool,
) -> Result<(), Error> {
    for op in &plan.ops {
        match op {
            PlannedOp::Put(p) => {
                if (p.ignore_value || p.ignore_lease) && view.get(&p.key)?.is_none() {
                    return Err(Error::KeyNotFound);
                }
                if p.lease != 0 && !lease_exists(p.lease) {
                    return Err(Error::LeaseNotFound);
                }
            }
            PlannedOp::Txn(nested) => check_puts(view, nested, lease_exists)?,
            _ => {}
        }
    }
    Ok(())
}

fn check_ranges(view: &View<'_>, plan: &Plan<'_>) -> Result<(), Error> {
    for op in &plan.ops {
        match op {
            PlannedOp::Range(r) => {
                // Mirrors etcd, including its quirk for negative revisions:
                // they are compared against the raw compaction revision (-1
                // before the first compaction), so before any compaction
                // revision -1 passes (and reads the current revision) while
                // -2 and below are refused as compacted; afterwards every
                // negative revision is. A standalone range accepts them all.
                if r.revision == 0 {
                    continue;
                }
                if r.revision > view.rev {
                    return Err(Error::FutureRevision);
                }
                if r.revision < view.compact_rev {
                    return Err(Error::Compacted);
                }
            }
            PlannedOp::Txn(nested) => check_ranges(view, nested)?,
            _ => {}
        }
    }
    Ok(())
}

/// Step 3: runs the chosen ops in `tx`. The returned response's `revision`
/// is 0 (etcd fills only the outermost txn's header; the caller does that).
pub(crate) fn apply(tx: &mut WriteTxn<'_>, plan: &Plan<'_>) -> Result<TxnResponse, Error> {
    let mut responses = Vec::with_capacity(plan.ops.len());
    for op in &plan.ops {
        responses.push(match op {
            PlannedOp::Range(r) => ResponseOp::Range(tx.range(r)?),
            PlannedOp::Put(p) => ResponseOp::Put(tx.put(p)?),
            PlannedOp::DeleteRange(d) => ResponseOp::DeleteRange(tx.delete_range(d)?),
            PlannedOp::Txn(nested) => ResponseOp::Txn(apply(tx, nested)?),
        });
    }
    Ok(TxnResponse {
        succeeded: plan.succeeded,
        responses,
        revision: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(result: CompareResult, target: CompareTarget) -> Compare {
        Compare {
            result,
            target,
            key: b"k".to_vec(),
            range_end: Vec::new(),
        }
    }

    #[test]
    fn compare_kv_covers_every_target_and_result() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            value: b"m".to_vec(),
            lease: 7,
        };
        use CompareResult::*;
        use CompareTarget as T;
        let cases = [
            (Equal, T::Version(3), true),
            (Greater, T::Version(2), true),
            (Less, T::Version(3), false),
            (NotEqual, T::Version(3), false),
            (Equal, T::Create(2), true),
            (Less, T::Create(3), true),
            (Equal, T::Mod(5), true),
            (Greater, T::Mod(5), false),
            (Equal, T::Lease(7), true),
            (NotEqual, T::Lease(0), true),
            (Equal, T::Value(b"m".to_vec()), true),
            (Greater, T::Value(b"l".to_vec()), true),
            (Greater, T::Value(b"ma".to_vec()), false),
            (Less, T::Value(b"ma".to_vec()), true),
            (Less, T::Value(Vec::new()), false),
        ];
        for (result, target, want) in cases {
            let c = cmp(result, target);
            assert_eq!(compare_kv(&c, &kv), want, "{c:?}");
        }
    }
}
