//! Alarms and the backend quota, as etcd v3.5 has them:
//!
//! * **Quota** (etcd's `quotaKVServer` / `quotaLeaseServer`, quota.go): before
//!   a Put, a Txn or a LeaseGrant is proposed, its cost (256 + key + value
//!   per put, the larger branch of a txn, nested txns included; 64 per
//!   lease) is added to the backend size. If that is not below
//!   `--quota-backend-bytes`, the request is refused with "etcdserver: mvcc:
//!   database space exceeded" and this member raises the NOSPACE alarm
//!   through Raft. As in etcd 3.5.1, a txn that costs nothing (read-only or
//!   delete-only) is checked too, so it is refused once the size itself has
//!   reached the quota (etcd 3.5.7 and later let such txns through:
//!   etcd PR #14884). The size is bbolt's `Size()`: the pages the file's last
//!   commit uses, free ones included (`page_count × page size`), not the
//!   preallocated tail.
//! * **Alarms** (etcd's `alarmStore` and `applierV3backend.Alarm`): ACTIVATE
//!   and DEACTIVATE are Raft entries, applied on every member into
//!   `engine::alarm::Alarms` and checkpointed into the B-tree with the key
//!   space; GET reads the applied set after a read barrier.
//! * **Capped apply** (etcd's `applierV3Capped`): while a NOSPACE alarm is
//!   raised, applying a Put, a Txn that writes, or a LeaseGrant fails with
//!   the same error on every member; Range, DeleteRange, Compact,
//!   LeaseRevoke and read-only or delete-only txns go on. Disarming
//!   (DEACTIVATE) lifts the cap. The decision is made at apply time from
//!   replicated state, so all members agree.
//!
//! Not done: etcd's `quotaApplierV3` (which, at apply time, applies a write
//! that no longer fits and still answers it with the NOSPACE error) and
//! the CORRUPT alarm's applier (ferrocd raises no CORRUPT alarm).

use engine::alarm::{AlarmMember, AlarmType, Alarms};
use engine::mvcc::{PutRequest, RequestOp, TxnRequest};

use super::{Applied, Error, Node};
use crate::proposal::{AlarmAction, Request};

/// etcd's `kvOverhead`: the estimated cost of a key's metadata.
const KV_OVERHEAD: u64 = 256;
/// etcd's `leaseOverhead`.
const LEASE_OVERHEAD: u64 = 64;
/// etcd's `DefaultQuotaBytes` (2 GiB), used when `--quota-backend-bytes` is 0.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

fn cost_put(p: &PutRequest) -> u64 {
    KV_OVERHEAD + p.key.len() as u64 + p.value.len() as u64
}

/// The larger of the two branches (etcd's `costTxn`); 0 for a txn that
/// does not put.
fn cost_txn(t: &TxnRequest) -> u64 {
    let branch = |ops: &[RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match op {
                RequestOp::Put(p) => cost_put(p),
                RequestOp::Txn(t) => cost_txn(t),
                _ => 0,
            })
            .sum()
    };
    branch(&t.success).max(branch(&t.failure))
}

/// What an `Alarm` request asks for (etcd's `AlarmRequest.AlarmAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmRequestAction {
    Get,
    Activate,
    Deactivate,
}

/// Applies an Alarm entry, or refuses a write that a raised NOSPACE alarm
/// caps. `None`: not ours, apply it normally.
pub(super) fn intercept(
    alarms: &std::sync::Mutex<Alarms>,
    req: &Request,
) -> Option<Result<Applied, Error>> {
    let mut alarms = match alarms.lock() {
        Ok(a) => a,
        Err(_) => return Some(Err(Error::Stopped)),
    };
    match req {
        Request::Alarm {
            action,
            member_id,
            alarm,
        } => {
            let Some(alarm) = AlarmType::from_code(i64::from(*alarm)) else {
                // NONE (or unknown): etcd changes nothing and answers with
                // no alarms.
                return Some(Ok(Applied::Alarms(Vec::new())));
            };
            let m = AlarmMember {
                member_id: *member_id,
                alarm,
            };
            let out = match action {
                AlarmAction::Activate => vec![alarms.activate(m)],
                AlarmAction::Deactivate => alarms.deactivate(m).into_iter().collect(),
            };
            Some(Ok(Applied::Alarms(out)))
        }
        Request::Put(_) | Request::LeaseGrant { .. } if alarms.is_raised(AlarmType::Nospace) => {
            Some(Err(Error::NoSpace))
        }
        Request::Txn(t) if alarms.is_raised(AlarmType::Nospace) && cost_txn(t) > 0 => {
            Some(Err(Error::NoSpace))
        }
        _ => None,
    }
}

/// The alarms persisted in the backend file, if there is one.
pub(super) fn recover(db: Option<&engine::btree::Db>) -> Result<Alarms, Error> {
    let Some(db) = db else {
        return Ok(Alarms::default());
    };
    let v =
        engine::alarm::load(db).map_err(|e| Error::Backend(format!("cannot load alarms: {e}")))?;
    Ok(Alarms::from_records(v))
}

impl Node {
    /// etcd's quota check for a Put (see the module docs).
    pub async fn check_quota_put(&self, p: &PutRequest) -> Result<(), Error> {
        self.check_quota(cost_put(p)).await
    }

    /// etcd 3.5.1's quota check for a Txn (also one that does not put).
    pub async fn check_quota_txn(&self, t: &TxnRequest) -> Result<(), Error> {
        self.check_quota(cost_txn(t)).await
    }

    /// etcd's quota check for a LeaseGrant.
    pub async fn check_quota_lease_grant(&self) -> Result<(), Error> {
        self.check_quota(LEASE_OVERHEAD).await
    }

    /// The size the quota is measured against: the pages of the backend
    /// file's last commit (bbolt's `Size()`).
    fn quota_size(&self) -> Option<u64> {
        let db = self.shared.db.read().ok()?.clone()?;
        Some(db.allocated_bytes())
    }

    async fn check_quota(&self, cost: u64) -> Result<(), Error> {
        let Some(quota) = self.shared.cfg.quota_bytes else {
            return Ok(());
        };
        let Some(size) = self.quota_size() else {
            return Ok(());
        };
        if size.saturating_add(cost) < quota {
            return Ok(());
        }
        // etcd raises the alarm and refuses the request whatever the
        // alarm's fate (its error is ignored there too).
        let _ = self
            .alarm(
                AlarmRequestAction::Activate,
                self.shared.cfg.member_id,
                AlarmType::Nospace.code(),
            )
            .await;
        Err(Error::NoSpace)
    }

    /// etcd's `Maintenance.Alarm`: GET lists the raised alarms of type
    /// `alarm` (0: all); ACTIVATE / DEACTIVATE go through Raft and return
    /// the alarm they changed.
    pub async fn alarm(
        &self,
        action: AlarmRequestAction,
        member_id: u64,
        alarm: u8,
    ) -> Result<Vec<AlarmMember>, Error> {
        let action = match action {
            AlarmRequestAction::Get => {
                self.read_barrier().await?;
                return Ok(self.alarm_list(AlarmType::from_code(i64::from(alarm))));
            }
            AlarmRequestAction::Activate => AlarmAction::Activate,
            AlarmRequestAction::Deactivate => AlarmAction::Deactivate,
        };
        match self
            .propose(Request::Alarm {
                action,
                member_id,
                alarm,
            })
            .await?
        {
            Applied::Alarms(v) => Ok(v),
            _ => Err(Error::Stopped),
        }
    }

    /// The raised alarms as applied here (of one type, or all).
    pub fn alarm_list(&self, alarm: Option<AlarmType>) -> Vec<AlarmMember> {
        self.shared
            .alarms
            .lock()
            .map(|a| a.get(alarm))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::mvcc::{DeleteRangeRequest, RangeRequest};

    fn put(k: &str, v: &str) -> PutRequest {
        PutRequest {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn costs_follow_etcd() {
        assert_eq!(cost_put(&put("ab", "xyz")), 256 + 5);
        let t = TxnRequest {
            success: vec![
                RequestOp::Put(put("a", "b")),
                RequestOp::DeleteRange(DeleteRangeRequest::default()),
            ],
            failure: vec![RequestOp::Txn(TxnRequest {
                success: vec![RequestOp::Put(put("a", "b")), RequestOp::Put(put("c", ""))],
                ..Default::default()
            })],
            ..Default::default()
        };
        assert_eq!(cost_txn(&t), 258 + 257);
        let reads = TxnRequest {
            success: vec![
                RequestOp::Range(RangeRequest::default()),
                RequestOp::DeleteRange(DeleteRangeRequest::default()),
            ],
            ..Default::default()
        };
        assert_eq!(cost_txn(&reads), 0);
    }

    #[test]
    fn nospace_caps_writes_that_need_space_only() {
        let alarms = std::sync::Mutex::new(Alarms::default());
        let p = Request::Put(put("k", "v"));
        assert!(intercept(&alarms, &p).is_none());
        let raise = Request::Alarm {
            action: AlarmAction::Activate,
            member_id: 9,
            alarm: 1,
        };
        match intercept(&alarms, &raise) {
            Some(Ok(Applied::Alarms(v))) => assert_eq!(
                v,
                vec![AlarmMember {
                    member_id: 9,
                    alarm: AlarmType::Nospace
                }]
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(intercept(&alarms, &p), Some(Err(Error::NoSpace))));
        assert!(matches!(
            intercept(&alarms, &Request::LeaseGrant { id: 1, ttl: 5 }),
            Some(Err(Error::NoSpace))
        ));
        let del = Request::DeleteRange(DeleteRangeRequest::default());
        assert!(intercept(&alarms, &del).is_none());
        assert!(intercept(
            &alarms,
            &Request::Compact {
                revision: 1,
                physical: false
            }
        )
        .is_none());
        assert!(intercept(&alarms, &Request::LeaseRevoke { id: 1 }).is_none());
        let delete_txn = Request::Txn(TxnRequest {
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest::default())],
            ..Default::default()
        });
        assert!(intercept(&alarms, &delete_txn).is_none());
        let put_txn = Request::Txn(TxnRequest {
            failure: vec![RequestOp::Put(put("k", "v"))],
            ..Default::default()
        });
        assert!(matches!(
            intercept(&alarms, &put_txn),
            Some(Err(Error::NoSpace))
        ));
        // NONE changes nothing; disarming another member's alarm neither.
        for (action, member_id, alarm) in [
            (AlarmAction::Deactivate, 9, 0),
            (AlarmAction::Deactivate, 8, 1),
        ] {
            match intercept(
                &alarms,
                &Request::Alarm {
                    action,
                    member_id,
                    alarm,
                },
            ) {
                Some(Ok(Applied::Alarms(v))) => assert!(v.is_empty()),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(intercept(&alarms, &p), Some(Err(Error::NoSpace))));
        let disarm = Request::Alarm {
            action: AlarmAction::Deactivate,
            member_id: 9,
            alarm: 1,
        };
        assert!(matches!(
            intercept(&alarms, &disarm),
            Some(Ok(Applied::Alarms(v))) if v.len() == 1
        ));
        assert!(intercept(&alarms, &p).is_none());
    }

    /// An alarm raised through one member is applied on all three: every
    /// member refuses puts (whoever receives them) and lease grants, serves
    /// ranges and deletes, and lists the alarm; disarming it through another
    /// member lifts the cap everywhere.
    #[test]
    fn alarm_is_replicated_to_every_member() {
        use glommio::timer::sleep;
        use glommio::LocalExecutorBuilder;
        use std::time::Duration;
        LocalExecutorBuilder::default()
            .io_memory(256 << 10)
            .spawn(|| async {
                const IDS: &[u64] = &[11, 22, 33];
                let (nodes, _cut) = crate::node::test_cluster::start(IDS, |_| {});
                for n in &nodes {
                    assert!(n.wait_leader(Duration::from_secs(5)).await);
                }
                nodes[0].put(put("a", "1")).await.unwrap();
                let raised = nodes[1]
                    .alarm(AlarmRequestAction::Activate, 22, 1)
                    .await
                    .unwrap();
                let want = vec![AlarmMember {
                    member_id: 22,
                    alarm: AlarmType::Nospace,
                }];
                assert_eq!(raised, want);
                for n in &nodes {
                    for _ in 0..500 {
                        if !n.alarm_list(None).is_empty() {
                            break;
                        }
                        sleep(Duration::from_millis(10)).await;
                    }
                    assert_eq!(n.alarm_list(None), want, "member {}", n.config().member_id);
                    assert_eq!(n.alarm(AlarmRequestAction::Get, 0, 0).await.unwrap(), want);
                    assert!(matches!(n.put(put("b", "2")).await, Err(Error::NoSpace)));
                    assert!(matches!(n.lease_grant(0, 60).await, Err(Error::NoSpace)));
                    let r = n
                        .range(
                            &RangeRequest {
                                key: b"a".to_vec(),
                                ..Default::default()
                            },
                            false,
                        )
                        .await
                        .unwrap();
                    assert_eq!(r.kvs.len(), 1);
                }
                nodes[2]
                    .delete_range(DeleteRangeRequest {
                        key: b"a".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                let disarmed = nodes[2]
                    .alarm(AlarmRequestAction::Deactivate, 22, 1)
                    .await
                    .unwrap();
                assert_eq!(disarmed, want);
                for n in &nodes {
                    for _ in 0..500 {
                        if n.alarm_list(None).is_empty() {
                            break;
                        }
                        sleep(Duration::from_millis(10)).await;
                    }
                    assert!(n.alarm_list(None).is_empty());
                    n.put(put("c", "3")).await.unwrap();
                }
            })
            .expect("executor")
            .join()
            .expect("test");
    }
}
