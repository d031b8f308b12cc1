use super::*;
use crate::btree::{Db, Options};
use crate::mvcc::{AppliedState, PutRequest, Store};

fn cfg() -> LessorConfig {
    LessorConfig {
        min_ttl: 2,
        checkpoint_interval: Duration::from_secs(60),
        expired_retry_interval: Duration::from_secs(7),
    }
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn grant_applies_etcds_ttl_rules_and_refuses_duplicates() {
    let now = Instant::now();
    let mut l = Lessor::new(cfg());
    assert_eq!(l.grant(LeaseId(1), 10, now), Ok(10));
    assert_eq!(l.grant(LeaseId(2), 1, now), Ok(2), "raised to the minimum");
    assert_eq!(l.grant(LeaseId(3), -5, now), Ok(2));
    assert_eq!(l.grant(LeaseId(1), 10, now), Err(LeaseError::Exists));
    assert_eq!(
        l.grant(LeaseId(4), MAX_LEASE_TTL + 1, now),
        Err(LeaseError::TtlTooLarge)
    );
    assert_eq!(l.grant(LeaseId(4), MAX_LEASE_TTL, now), Ok(MAX_LEASE_TTL));
    // The TTL check comes before the duplicate check, as in etcd.
    assert_eq!(
        l.grant(LeaseId(1), MAX_LEASE_TTL + 1, now),
        Err(LeaseError::TtlTooLarge)
    );
    assert_eq!(l.grant(LeaseId::NONE, 10, now), Err(LeaseError::NotFound));
    assert_eq!(l.len(), 4);
    l.assert_invariants();
}

#[test]
fn keys_attach_move_between_leases_and_detach_on_delete() {
    let now = Instant::now();
    let mut l = Lessor::new(cfg());
    l.grant(LeaseId(1), 10, now).unwrap();
    l.grant(LeaseId(2), 10, now).unwrap();
    assert!(l.set_key_lease(b"a", LeaseId(1)));
    assert!(l.set_key_lease(b"b", LeaseId(1)));
    assert!(l.set_key_lease(b"c", LeaseId(2)));
    assert_eq!(
        l.keys(LeaseId(1)).unwrap(),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    // A put with another lease moves the key.
    assert!(l.set_key_lease(b"a", LeaseId(2)));
    assert_eq!(l.keys(LeaseId(1)).unwrap(), vec![b"b".to_vec()]);
    assert_eq!(
        l.keys(LeaseId(2)).unwrap(),
        vec![b"a".to_vec(), b"c".to_vec()]
    );
    // A put without a lease, or a delete, detaches it.
    assert!(l.set_key_lease(b"b", LeaseId::NONE));
    assert!(l.keys(LeaseId(1)).unwrap().is_empty());
    assert_eq!(l.lease_of(b"b"), LeaseId::NONE);
    // An unknown lease attaches nothing.
    assert!(!l.set_key_lease(b"z", LeaseId(99)));
    assert_eq!(l.lease_of(b"z"), LeaseId::NONE);
    l.assert_invariants();
    // Revoke detaches every key.
    l.revoke(LeaseId(2)).unwrap();
    assert_eq!(l.lease_of(b"a"), LeaseId::NONE);
    assert_eq!(l.revoke(LeaseId(2)), Err(LeaseError::NotFound));
    assert_eq!(l.keys(LeaseId(2)), Err(LeaseError::NotFound));
    l.assert_invariants();
}

#[test]
fn only_the_primary_keeps_deadlines_and_expires_leases_in_deadline_order() {
    let t0 = Instant::now();
    let mut l = Lessor::new(cfg());
    l.grant(LeaseId(1), 30, t0).unwrap();
    l.grant(LeaseId(2), 10, t0).unwrap();
    // A follower never expires anything and cannot renew.
    assert!(l.expired(t0 + s(1000), 10).is_empty());
    assert_eq!(l.renew(LeaseId(1), t0), Err(LeaseError::NotPrimary));
    assert_eq!(
        l.time_to_live(LeaseId(1), t0).unwrap().remaining,
        9_223_372_036
    );
    l.promote(t0, s(1));
    l.assert_invariants();
    l.grant(LeaseId(3), 20, t0).unwrap();
    assert_eq!(l.leases(), vec![LeaseId(2), LeaseId(3), LeaseId(1)]);
    assert!(l.expired(t0 + s(10), 10).is_empty(), "extend applies");
    assert_eq!(l.expired(t0 + s(11), 10), vec![LeaseId(2)]);
    // Reported once, then only again after the retry interval.
    assert!(l.expired(t0 + s(12), 10).is_empty());
    // Lease 2 is due again at its retry time (t0+18 s), before the
    // deadlines of 3 (t0+20 s) and 1 (t0+31 s).
    assert_eq!(
        l.expired(t0 + s(40), 10),
        vec![LeaseId(2), LeaseId(3), LeaseId(1)],
        "soonest first"
    );
    // The limit holds back the rest.
    assert_eq!(l.expired(t0 + s(100), 1).len(), 1);
    l.assert_invariants();
    l.demote();
    assert!(l.expired(t0 + s(1000), 10).is_empty());
    l.assert_invariants();
}

#[test]
fn renew_restarts_the_full_ttl_and_refuses_expired_leases() {
    let t0 = Instant::now();
    let mut l = Lessor::new(cfg());
    l.promote(t0, Duration::ZERO);
    l.grant(LeaseId(1), 10, t0).unwrap();
    let ttl = |l: &Lessor, at| l.time_to_live(LeaseId(1), at).unwrap().remaining;
    assert_eq!(ttl(&l, t0 + Duration::from_millis(500)), 9, "truncated");
    let r = l.renew(LeaseId(1), t0 + s(8)).unwrap();
    assert_eq!(
        r,
        Renewed {
            ttl: 10,
            clear_checkpoint: false
        }
    );
    assert_eq!(ttl(&l, t0 + s(8)), 10);
    assert!(
        l.expired(t0 + s(17), 10).is_empty(),
        "renewal moved the deadline"
    );
    assert_eq!(l.renew(LeaseId(1), t0 + s(18)), Err(LeaseError::Expired));
    assert_eq!(ttl(&l, t0 + s(19) + Duration::from_millis(500)), -1);
    assert_eq!(l.renew(LeaseId(7), t0), Err(LeaseError::NotFound));
    // A checkpointed remainder is reported for clearing; the renewal still
    // grants the full TTL.
    l.grant(LeaseId(2), 100, t0).unwrap();
    l.checkpoint(LeaseId(2), 40, t0);
    let r = l.renew(LeaseId(2), t0 + s(1)).unwrap();
    assert_eq!(
        r,
        Renewed {
            ttl: 100,
            clear_checkpoint: true
        }
    );
    assert_eq!(
        l.time_to_live(LeaseId(2), t0 + s(1)).unwrap().remaining,
        100
    );
    l.assert_invariants();
}

#[test]
fn checkpoints_carry_the_remaining_ttl_to_the_next_primary() {
    let t0 = Instant::now();
    let mut a = Lessor::new(cfg());
    let mut b = Lessor::new(cfg());
    a.promote(t0, s(1));
    for l in [&mut a, &mut b] {
        l.grant(LeaseId(1), 300, t0).unwrap();
        l.grant(LeaseId(2), 30, t0).unwrap(); // shorter than the interval
    }
    assert!(a.due_checkpoints(t0 + s(59), 100).is_empty());
    let due = a.due_checkpoints(t0 + s(60), 100);
    assert_eq!(
        due,
        vec![(LeaseId(1), 240)],
        "only leases outliving an interval"
    );
    // Applied on both members (a is primary: it schedules the next one).
    for l in [&mut a, &mut b] {
        for (id, rem) in &due {
            l.checkpoint(*id, *rem, t0 + s(60));
        }
    }
    assert_eq!(a.due_checkpoints(t0 + s(120), 100), vec![(LeaseId(1), 180)]);
    // Leadership moves to b at t0+100s: lease 1 starts from its checkpoint
    // (240 s + extend), not from its full TTL.
    a.demote();
    let t1 = t0 + s(100);
    b.promote(t1, s(1));
    assert_eq!(b.time_to_live(LeaseId(1), t1).unwrap().remaining, 241);
    assert_eq!(b.time_to_live(LeaseId(2), t1).unwrap().remaining, 31);
    // An expired lease is not checkpointed.
    assert!(b.due_checkpoints(t1 + s(300), 100).is_empty());
    a.assert_invariants();
    b.assert_invariants();
}

#[test]
fn a_checkpoint_of_all_leases_before_a_handover_keeps_short_leases_short() {
    let t0 = Instant::now();
    let mut a = Lessor::new(cfg());
    let mut b = Lessor::new(cfg());
    assert!(a.remaining_ttls(t0).is_empty(), "not primary: nothing");
    a.promote(t0, s(1));
    for l in [&mut a, &mut b] {
        l.grant(LeaseId(1), 30, t0).unwrap(); // shorter than the interval
        l.grant(LeaseId(2), 300, t0).unwrap();
        l.grant(LeaseId(3), 30, t0 + s(20)).unwrap(); // granted later
    }
    let t1 = t0 + s(20);
    a.renew(LeaseId(3), t1).unwrap();
    // Lease 3 has its full TTL left: no checkpoint needed.
    let all = a.remaining_ttls(t1);
    assert_eq!(all, vec![(LeaseId(1), 10), (LeaseId(2), 280)]);
    for l in [&mut a, &mut b] {
        for (id, rem) in &all {
            l.checkpoint(*id, *rem, t1);
        }
    }
    a.demote();
    b.promote(t1, s(1));
    assert_eq!(b.time_to_live(LeaseId(1), t1).unwrap().remaining, 11);
    assert_eq!(b.time_to_live(LeaseId(2), t1).unwrap().remaining, 281);
    assert_eq!(b.time_to_live(LeaseId(3), t1).unwrap().remaining, 31);
    a.assert_invariants();
    b.assert_invariants();
}

#[test]
fn promote_spreads_piled_up_expiries() {
    let t0 = Instant::now();
    let mut l = Lessor::new(cfg());
    let n = 2000;
    for i in 1..=n {
        l.grant(LeaseId(i), 10, t0).unwrap();
    }
    l.promote(t0, s(1));
    // At most 750 per second expire at first (etcd's target rate).
    assert!(l.expired(t0 + s(11), n as usize).len() <= 760);
    let all = l.expired(t0 + s(20), n as usize).len();
    assert!(all > 0);
    l.assert_invariants();
}

#[test]
fn changes_are_taken_once_and_reflect_the_latest_record() {
    let t0 = Instant::now();
    let mut l = Lessor::new(cfg());
    l.grant(LeaseId(1), 10, t0).unwrap();
    l.grant(LeaseId(2), 10, t0).unwrap();
    l.checkpoint(LeaseId(1), 4, t0);
    l.revoke(LeaseId(2)).unwrap();
    let ch = l.take_changes();
    assert_eq!(
        ch,
        LeaseChanges::new(vec![
            (
                LeaseId(1),
                Some(LeaseRecord {
                    id: LeaseId(1),
                    ttl: 10,
                    remaining_ttl: 4
                })
            ),
            (LeaseId(2), None),
        ])
    );
    assert!(l.take_changes().is_empty());
}

/// Leases go into the `lease` bucket in the same commit as the key space
/// and come back with their TTLs and remaining TTLs; keys re-attach from
/// the store.
#[test]
fn leases_are_persisted_with_the_key_space_and_restored() {
    let dir = std::env::temp_dir().join(format!("lease-backend-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("db");
    let t0 = Instant::now();
    let mut store = Store::new();
    let mut l = Lessor::new(cfg());
    for (id, ttl) in [(1, 100), (2, 50), (-3, 7)] {
        l.grant(LeaseId(id), ttl, t0).unwrap();
    }
    l.checkpoint(LeaseId(1), 42, t0);
    for (k, lease) in [("a", 1), ("b", 2), ("c", 0)] {
        store
            .put(&PutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                lease,
                ..Default::default()
            })
            .unwrap();
    }
    let db = Db::open(&path, Options::default()).unwrap();
    let mut cp = store.take_checkpoint();
    cp.set_leases(l.take_changes());
    crate::mvcc::save(&db, &cp, AppliedState { index: 5, term: 2 }).unwrap();
    // Revoke lease 2 in a later checkpoint.
    l.revoke(LeaseId(2)).unwrap();
    let mut cp = store.take_checkpoint();
    cp.set_leases(l.take_changes());
    crate::mvcc::save(&db, &cp, AppliedState { index: 6, term: 2 }).unwrap();
    drop(db);

    let db = Db::open(&path, Options::default()).unwrap();
    let (store, applied) = crate::mvcc::load(&db).unwrap();
    assert_eq!(applied.index, 6);
    let mut recs = load(&db).unwrap();
    recs.sort_by_key(|r| r.id);
    assert_eq!(
        recs,
        vec![
            LeaseRecord {
                id: LeaseId(-3),
                ttl: 7,
                remaining_ttl: 0
            },
            LeaseRecord {
                id: LeaseId(1),
                ttl: 100,
                remaining_ttl: 42
            },
        ]
    );
    let mut r = Lessor::restore(cfg(), recs);
    store
        .key_leases_since(0, |k, lease| {
            r.set_key_lease(k, LeaseId(lease));
        })
        .unwrap();
    assert_eq!(r.keys(LeaseId(1)).unwrap(), vec![b"a".to_vec()]);
    assert_eq!(r.lease_of(b"b"), LeaseId::NONE, "its lease is gone");
    r.promote(t0, Duration::ZERO);
    assert_eq!(r.time_to_live(LeaseId(1), t0).unwrap().remaining, 42);
    r.assert_invariants();
    let _ = std::fs::remove_dir_all(&dir);
}
