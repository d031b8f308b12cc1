//! Hub tests. `Env` applies writes the way raftcore's apply path does:
//! write under the store lock, collect events only if someone watches,
//! release, then publish.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::*;
use crate::mvcc::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};

struct Env {
    store: Arc<RwLock<Store>>,
    w: Watchable,
}

impl Env {
    fn new() -> Env {
        Env::with(HubConfig::default())
    }

    fn with(cfg: HubConfig) -> Env {
        let store = Arc::new(RwLock::new(Store::new()));
        let hub = Arc::new(Hub::new(cfg));
        hub.publish(1, Vec::new());
        Env {
            w: Watchable::new(hub, store.clone()),
            store,
        }
    }

    fn hub(&self) -> &Hub {
        self.w.hub()
    }

    fn apply(&self, f: impl FnOnce(&mut Store)) {
        let mut events = Vec::new();
        let rev = {
            let mut s = self.store.write().unwrap();
            let watching = self.hub().has_watchers();
            let before = s.current_revision();
            f(&mut s);
            if watching {
                collect_events(&s, before, &mut events);
            }
            s.current_revision()
        };
        self.hub().publish(rev, events);
    }

    fn put(&self, k: &str, v: &str) {
        self.apply(|s| {
            s.put(&PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })
            .unwrap();
        });
    }

    fn delete(&self, k: &str, end: &str) {
        self.apply(|s| {
            s.delete_range(&DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })
            .unwrap();
        });
    }

    fn txn_puts(&self, keys: &[&str]) {
        self.apply(|s| {
            s.txn(&TxnRequest {
                compare: vec![],
                success: keys
                    .iter()
                    .map(|k| {
                        RequestOp::Put(PutRequest {
                            key: (*k).into(),
                            value: b"t".to_vec(),
                            ..Default::default()
                        })
                    })
                    .collect(),
                failure: vec![],
            })
            .unwrap();
        });
    }
}

fn watch(s: &mut WatchStream, key: &str, end: &[u8], start: i64) -> WatchId {
    s.watch(WatchRequest {
        key: key.into(),
        range_end: end.to_vec(),
        start_revision: start,
        ..Default::default()
    })
    .unwrap()
    .id
}

/// Polls until there is no more work; returns everything, in order.
fn drain(s: &mut WatchStream) -> Vec<Notification> {
    let mut all = Vec::new();
    for _ in 0..10_000 {
        all.extend(s.poll().unwrap());
        if !s.has_work() {
            return all;
        }
    }
    panic!("stream never ran out of work");
}

/// (watch id, header revision, [(kind, key, mod revision)]) per notification.
type Seen = Vec<(i64, i64, Vec<(char, String, i64)>)>;

fn seen(ns: &[Notification]) -> Seen {
    ns.iter()
        .map(|n| {
            (
                n.watch_id.0,
                n.revision,
                n.events
                    .iter()
                    .map(|e| {
                        (
                            match e.kind {
                                EventKind::Put => 'P',
                                EventKind::Delete => 'D',
                            },
                            String::from_utf8_lossy(&e.kv.key).into_owned(),
                            e.kv.mod_revision,
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

fn ev(kind: char, key: &str, rev: i64) -> (char, String, i64) {
    (kind, key.to_string(), rev)
}

#[test]
fn fan_out_goes_by_key_prefix_and_from_key() {
    let env = Env::new();
    let mut s = env.w.new_stream();
    let single = watch(&mut s, "a", b"", 0);
    let prefix = watch(&mut s, "a", b"b", 0);
    let from = watch(&mut s, "b", &[0], 0);
    assert_eq!((single.0, prefix.0, from.0), (0, 1, 2), "ids start at 0");
    env.put("a", "1"); // 2
    env.put("ab", "1"); // 3
    env.put("c", "1"); // 4
    env.put("", "x"); // 5: the empty key is not >= "b" and not in ["a", "b")
    let mut got = seen(&drain(&mut s));
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, 2, vec![ev('P', "a", 2)]),
            (1, 2, vec![ev('P', "a", 2)]),
            (1, 3, vec![ev('P', "ab", 3)]),
            (2, 4, vec![ev('P', "c", 4)]),
        ]
    );
}

#[test]
fn a_txn_arrives_as_one_notification_in_order_exactly_once() {
    let env = Env::new();
    let mut s = env.w.new_stream();
    watch(&mut s, "k", b"l", 0);
    env.txn_puts(&["k3", "k1", "k2"]); // 2
    env.delete("k1", "k3"); // 3
    let got = seen(&drain(&mut s));
    assert_eq!(
        got,
        vec![
            (
                0,
                2,
                vec![ev('P', "k3", 2), ev('P', "k1", 2), ev('P', "k2", 2)]
            ),
            (0, 3, vec![ev('D', "k1", 3), ev('D', "k2", 3)]),
        ]
    );
    // A delete carries the value it removed.
    let ns = {
        env.delete("k3", "");
        drain(&mut s)
    };
    assert_eq!(ns[0].events[0].prev_kv.as_ref().unwrap().value, b"t");
}

#[test]
fn filters_drop_puts_or_deletes_and_empty_batches() {
    let env = Env::new();
    let mut s = env.w.new_stream();
    let mut req = |no_put, no_delete| {
        s.watch(WatchRequest {
            key: b"k".to_vec(),
            filters: Filters { no_put, no_delete },
            ..Default::default()
        })
        .unwrap()
        .id
    };
    req(true, false);
    req(false, true);
    env.put("k", "1"); // 2
    env.delete("k", ""); // 3
    let mut got = seen(&drain(&mut s));
    got.sort();
    assert_eq!(
        got,
        vec![(0, 3, vec![ev('D', "k", 3)]), (1, 2, vec![ev('P', "k", 2)])]
    );
}

#[test]
fn history_is_replayed_from_start_revision_then_live() {
    let env = Env::new();
    env.put("a", "1"); // 2
    env.put("b", "1"); // 3
    env.put("a", "2"); // 4
    let mut s = env.w.new_stream();
    let c = s
        .watch(WatchRequest {
            key: b"a".to_vec(),
            start_revision: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(c.revision, 4, "created at the store revision");
    env.put("a", "3"); // 5, published while unsynced
    let got = seen(&drain(&mut s));
    // Catch-up batches several revisions in one response, header = store
    // revision (etcd's syncWatchers).
    assert_eq!(
        got,
        vec![(
            0,
            5,
            vec![ev('P', "a", 2), ev('P', "a", 4), ev('P', "a", 5)]
        )]
    );
    env.put("a", "4"); // 6
    assert_eq!(seen(&drain(&mut s)), vec![(0, 6, vec![ev('P', "a", 6)])]);
    // A future start revision waits for it.
    let f = watch(&mut s, "a", b"", 8);
    env.put("a", "5"); // 7
    env.put("a", "6"); // 8
    let got = seen(&drain(&mut s));
    assert!(got.contains(&(f.0, 8, vec![ev('P', "a", 8)])), "{got:?}");
    assert!(!got.iter().any(|(id, rev, _)| *id == f.0 && *rev == 7));
}

#[test]
fn slow_watcher_goes_unsynced_and_catches_up_without_blocking_publish() {
    let env = Env::with(HubConfig {
        max_pending_revisions: 4,
        max_batch_revisions: 10,
        ..HubConfig::default()
    });
    let mut slow = env.w.new_stream();
    let mut fast = env.w.new_stream();
    watch(&mut slow, "k", b"l", 0);
    watch(&mut fast, "k", b"l", 0);
    let mut fast_seen = Vec::new();
    for i in 0..100 {
        env.put(&format!("k{}", i % 7), &i.to_string()); // 2..=101
        fast_seen.extend(drain(&mut fast));
    }
    let st = env.hub().stats();
    assert_eq!((st.synced, st.unsynced), (1, 1), "{st:?}");
    assert_eq!(st.queued, 4, "queue stops at its bound");
    // The fast watcher saw every revision live, one notification each.
    let revs: Vec<i64> = fast_seen.iter().map(|n| n.revision).collect();
    assert_eq!(revs, (2..=101).collect::<Vec<_>>());
    // The slow one catches up: every event exactly once, in order.
    let got = drain(&mut slow);
    let mods: Vec<i64> = got
        .iter()
        .flat_map(|n| n.events.iter().map(|e| e.kv.mod_revision))
        .collect();
    assert_eq!(mods, (2..=101).collect::<Vec<_>>());
    assert!(
        got.iter()
            .all(|n| n.events.last().unwrap().kv.mod_revision <= n.revision),
        "header revision never below the events'"
    );
    assert_eq!(env.hub().stats().unsynced, 0);
    env.put("k1", "live");
    assert_eq!(
        seen(&drain(&mut slow)),
        vec![(0, 102, vec![ev('P', "k1", 102)])]
    );
}

#[test]
fn queued_bytes_stay_bounded() {
    let env = Env::with(HubConfig {
        max_pending_bytes: 10_000,
        ..HubConfig::default()
    });
    let mut s = env.w.new_stream();
    watch(&mut s, "k", b"", 0);
    let big = "x".repeat(3_000);
    for _ in 0..50 {
        env.put("k", &big);
        let st = env.hub().stats();
        assert!(st.queued_bytes <= 10_000, "{st:?}");
    }
    // ~3 KB for the first event, ~6 KB (with prev_kv) for the next: two fit.
    assert_eq!(env.hub().stats().queued, 2);
    assert_eq!(env.hub().stats().unsynced, 1);
    // A revision larger than the bound still gets through alone.
    let env = Env::with(HubConfig {
        max_pending_bytes: 100,
        ..HubConfig::default()
    });
    let mut s = env.w.new_stream();
    watch(&mut s, "k", b"", 0);
    env.put("k", &big);
    assert_eq!(env.hub().stats().queued, 1);
    assert_eq!(drain(&mut s).len(), 1);
}

#[test]
fn compaction_cancels_a_watcher_that_needs_compacted_history() {
    let env = Env::new();
    env.put("a", "1"); // 2
    env.put("a", "2"); // 3
    env.apply(|s| {
        s.compact(3).unwrap();
    });
    let mut s = env.w.new_stream();
    let id = WatchId(5);
    let req = WatchRequest {
        id,
        key: b"a".to_vec(),
        start_revision: 2,
        ..Default::default()
    };
    // Created first; the cancel follows from the catch-up (etcd: created
    // response, then the compaction response from syncWatchers).
    assert_eq!(s.watch(req.clone()).unwrap().id, id);
    let got = drain(&mut s);
    assert_eq!(
        got,
        vec![Notification {
            watch_id: id,
            revision: 0,
            events: vec![],
            compact_revision: 3,
        }]
    );
    assert_eq!(env.hub().stats().watchers, 0);
    // The id stays taken until the client cancels it, as in etcd.
    assert_eq!(s.watch(req), Err(WatchError::DuplicateId));
    assert_eq!(s.cancel(id), Ok(()));
    assert_eq!(s.cancel(id), Err(WatchError::NotExist));
    // Starting at the compaction revision itself is allowed.
    let ok = watch(&mut s, "a", b"", 3);
    assert_eq!(seen(&drain(&mut s)), vec![(ok.0, 3, vec![ev('P', "a", 3)])]);
}

#[test]
fn slow_watcher_whose_history_is_compacted_gets_the_compaction_cancel() {
    let env = Env::with(HubConfig {
        max_pending_revisions: 1,
        ..HubConfig::default()
    });
    let mut s = env.w.new_stream();
    let id = watch(&mut s, "k", b"", 0);
    env.put("k", "1"); // 2: queued
    env.put("k", "2"); // 3: overflow, unsynced from 3
    env.put("k", "3"); // 4
    env.apply(|s| {
        s.compact(4).unwrap();
    });
    let got = seen(&drain(&mut s));
    assert_eq!(
        got,
        vec![(id.0, 2, vec![ev('P', "k", 2)]), (id.0, 0, vec![])]
    );
}

#[test]
fn ids_duplicates_empty_ranges_and_cancel_follow_etcd() {
    let env = Env::new();
    let mut s = env.w.new_stream();
    let req = |id: i64, key: &str, end: &str| WatchRequest {
        id: WatchId(id),
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    };
    assert_eq!(s.watch(req(1, "a", "")).unwrap().id, WatchId(1));
    // Auto ids skip ids taken by the client.
    assert_eq!(s.watch(req(0, "a", "")).unwrap().id, WatchId(0));
    assert_eq!(s.watch(req(0, "a", "")).unwrap().id, WatchId(2));
    assert_eq!(s.watch(req(2, "a", "")), Err(WatchError::DuplicateId));
    assert_eq!(
        WatchError::DuplicateId.to_string(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    assert_eq!(s.watch(req(0, "b", "a")), Err(WatchError::EmptyRange));
    assert_eq!(s.watch(req(0, "b", "b")), Err(WatchError::EmptyRange));
    assert_eq!(
        WatchError::EmptyRange.to_string(),
        "mvcc: watcher range is empty"
    );
    assert!(s.watch(req(0, "b", "\0")).is_ok(), "from-key is not empty");
    // Ids are per stream.
    let mut other = env.w.new_stream();
    assert_eq!(other.watch(req(0, "a", "")).unwrap().id, WatchId(0));
    // Cancel drops what is queued.
    env.put("a", "1");
    assert_eq!(s.cancel(WatchId(1)), Ok(()));
    assert_eq!(s.cancel(WatchId(7)), Err(WatchError::NotExist));
    let ids: Vec<i64> = drain(&mut s).iter().map(|n| n.watch_id.0).collect();
    assert!(!ids.contains(&1), "{ids:?}");
    assert_eq!(env.hub().stats().watchers, 4);
    drop(s);
    drop(other);
    assert_eq!(env.hub().stats(), HubStats::default());
    assert!(!env.hub().has_watchers());
}

#[test]
fn progress_goes_to_synced_watchers_after_their_queued_events() {
    let env = Env::new();
    let mut s = env.w.new_stream();
    let live = watch(&mut s, "a", b"", 0);
    env.put("a", "1"); // 2
    env.put("b", "1"); // 3
    s.request_progress(live);
    let got = seen(&drain(&mut s));
    assert_eq!(got, vec![(0, 2, vec![ev('P', "a", 2)]), (0, 3, vec![])]);
    // An unsynced watcher gets no progress notification.
    let behind = watch(&mut s, "b", b"", 2);
    s.request_progress(behind);
    let got = seen(&drain(&mut s));
    assert_eq!(got, vec![(behind.0, 3, vec![ev('P', "b", 3)])]);
    assert_eq!(s.rev(), 3);
}

#[test]
fn no_events_are_collected_while_nobody_watches() {
    let env = Env::new();
    env.put("a", "1");
    assert_eq!(env.hub().published_revision(), 2);
    let mut s = env.w.new_stream();
    watch(&mut s, "a", b"", 0);
    assert!(env.hub().has_watchers());
    env.put("a", "2");
    assert_eq!(seen(&drain(&mut s)), vec![(0, 3, vec![ev('P', "a", 3)])]);
}

#[test]
fn a_publish_on_another_thread_wakes_the_stream_task() {
    let env = Env::new();
    let mut s = env.w.new_stream();
    watch(&mut s, "a", b"", 0);
    let store = env.store.clone();
    let hub = env.w.hub().clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut events = Vec::new();
        let rev = {
            let mut st = store.write().unwrap();
            st.put(&PutRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })
            .unwrap();
            collect_events(&st, 1, &mut events);
            st.current_revision()
        };
        hub.publish(rev, events);
    });
    let got = glommio::LocalExecutorBuilder::default()
        .io_memory(64 << 10)
        .spawn(move || async move {
            loop {
                let n = s.poll().unwrap();
                if !n.is_empty() {
                    return n.len();
                }
                s.notified().await;
            }
        })
        .unwrap()
        .join()
        .unwrap();
    writer.join().unwrap();
    assert_eq!(got, 1);
}

#[test]
fn a_replaced_store_is_caught_up_from_history_by_every_watcher() {
    let env = Env::new();
    let mut s = env.w.new_stream();
    watch(&mut s, "a", b"", 0);
    env.put("a", "1"); // 2
    assert_eq!(drain(&mut s).len(), 1);
    // Install a "snapshot": a store that went on to revision 4 elsewhere.
    {
        let mut st = env.store.write().unwrap();
        let mut other = st.clone();
        other
            .put(&PutRequest {
                key: b"b".to_vec(),
                ..Default::default()
            })
            .unwrap(); // 3
        other
            .put(&PutRequest {
                key: b"a".to_vec(),
                value: b"2".to_vec(),
                ..Default::default()
            })
            .unwrap(); // 4
        *st = other;
    }
    env.hub().restore(4);
    assert_eq!(env.hub().stats().unsynced, 1);
    assert_eq!(seen(&drain(&mut s)), vec![(0, 4, vec![ev('P', "a", 4)])]);
    env.put("a", "3"); // 5, live again
    assert_eq!(seen(&drain(&mut s)), vec![(0, 5, vec![ev('P', "a", 5)])]);
}
