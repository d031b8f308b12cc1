//! Table tests of the store against etcd v3.5's rules, one property each.

use super::*;

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: b(key),
        value: b(value),
        ..PutRequest::default()
    }
}

fn put(s: &mut Store, key: &str, value: &str) -> PutResponse {
    let resp = s.put(&put_req(key, value)).unwrap();
    s.assert_invariants();
    resp
}

fn range_req(key: &str, end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: b(key),
        range_end: end.to_vec(),
        ..RangeRequest::default()
    }
}

fn range(s: &Store, key: &str, end: &[u8]) -> RangeResponse {
    s.range(&range_req(key, end)).unwrap()
}

fn keys(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn get(s: &Store, key: &str) -> Option<KeyValue> {
    range(s, key, b"").kvs.into_iter().next()
}

fn get_at(s: &Store, key: &str, rev: i64) -> Result<Option<KeyValue>, Error> {
    let req = RangeRequest {
        revision: rev,
        ..range_req(key, b"")
    };
    s.range(&req).map(|r| r.kvs.into_iter().next())
}

fn del_req(key: &str, end: &[u8]) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b(key),
        range_end: end.to_vec(),
        prev_kv: false,
    }
}

fn del(s: &mut Store, key: &str, end: &[u8]) -> DeleteRangeResponse {
    let resp = s.delete_range(&del_req(key, end)).unwrap();
    s.assert_invariants();
    resp
}

fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> KeyValue {
    KeyValue {
        key: b(key),
        create_revision: create,
        mod_revision: modified,
        version,
        value: b(value),
        lease: 0,
    }
}

fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key: b(key),
        range_end: Vec::new(),
    }
}

/// Store with a=1, b=2, c=3, d=4 at revisions 2..=5.
fn abcd() -> Store {
    let mut s = Store::new();
    for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
        put(&mut s, k, &(i + 1).to_string());
    }
    s
}

// ---- revisions -------------------------------------------------------------

#[test]
fn fresh_store_starts_at_revision_one_and_is_not_compacted() {
    let s = Store::new();
    assert_eq!(s.current_revision(), 1);
    assert_eq!(s.compact_revision(), 0);
    let r = range(&s, "", b"\0");
    assert_eq!((r.kvs.len(), r.count, r.revision), (0, 0, 1));
}

#[test]
fn each_put_creates_exactly_one_revision() {
    let mut s = Store::new();
    for want in 2..6 {
        assert_eq!(put(&mut s, "k", "v").revision, want);
        assert_eq!(s.current_revision(), want);
    }
}

#[test]
fn delete_of_nothing_creates_no_revision() {
    let mut s = abcd();
    let r = del(&mut s, "x", b"");
    assert_eq!((r.deleted, r.revision), (0, 5));
    let r = del(&mut s, "e", b"\0");
    assert_eq!((r.deleted, r.revision), (0, 5));
    assert_eq!(s.current_revision(), 5);
}

#[test]
fn txn_without_changes_creates_no_revision() {
    let mut s = abcd();
    let req = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Range(range_req("a", b"")),
            RequestOp::DeleteRange(del_req("zz", b"")),
        ],
        failure: vec![],
    };
    let r = s.txn(&req).unwrap();
    assert_eq!(r.revision, 5);
    assert_eq!(s.current_revision(), 5);
    let empty = s.txn(&TxnRequest::default()).unwrap();
    assert!(empty.succeeded);
    assert_eq!(empty.revision, 5);
    assert_eq!(s.current_revision(), 5);
}

// ---- range -----------------------------------------------------------------

#[test]
fn empty_range_end_reads_a_single_key() {
    let s = abcd();
    let r = range(&s, "b", b"");
    assert_eq!(r.kvs, vec![kv("b", "2", 3, 3, 1)]);
    assert_eq!(r.count, 1);
    let r = range(&s, "bb", b"");
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 0);
}

#[test]
fn range_is_half_open() {
    let s = abcd();
    assert_eq!(keys(&range(&s, "b", b"d")), ["b", "c"]);
    assert_eq!(keys(&range(&s, "a", b"a\0")), ["a"]);
}

#[test]
fn zero_byte_range_end_means_every_key_from_key() {
    let s = abcd();
    assert_eq!(keys(&range(&s, "b", b"\0")), ["b", "c", "d"]);
}

#[test]
fn zero_key_with_zero_range_end_reads_every_key() {
    let s = abcd();
    let req = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    };
    let r = s.range(&req).unwrap();
    assert_eq!(keys(&r), ["a", "b", "c", "d"]);
    assert_eq!(r.count, 4);
}

#[test]
fn range_end_not_after_key_is_empty() {
    let s = abcd();
    for end in [&b"b"[..], b"a", b"\x01", b"a\xff"] {
        let r = range(&s, "b", end);
        assert!(r.kvs.is_empty(), "end {end:?}");
        assert_eq!(r.count, 0);
    }
}

#[test]
fn historical_range_reports_current_revision() {
    let mut s = abcd();
    put(&mut s, "a", "new");
    let req = RangeRequest {
        revision: 2,
        ..range_req("a", b"")
    };
    let r = s.range(&req).unwrap();
    assert_eq!(r.kvs, vec![kv("a", "1", 2, 2, 1)]);
    assert_eq!(r.revision, 6);
}

#[test]
fn historical_range_sees_the_key_space_at_that_revision() {
    let mut s = abcd();
    del(&mut s, "b", b"");
    put(&mut s, "b", "again");
    let at = |rev| {
        let req = RangeRequest {
            revision: rev,
            ..range_req("", b"\0")
        };
        keys(&s.range(&req).unwrap())
    };
    assert_eq!(at(1), Vec::<String>::new());
    assert_eq!(at(3), ["a", "b"]);
    assert_eq!(at(5), ["a", "b", "c", "d"]);
    assert_eq!(at(6), ["a", "c", "d"]);
    assert_eq!(at(7), ["a", "b", "c", "d"]);
    assert_eq!(get(&s, "b"), Some(kv("b", "again", 7, 7, 1)));
}

#[test]
fn range_at_future_revision_is_rejected() {
    let s = abcd();
    let req = RangeRequest {
        revision: 6,
        ..range_req("a", b"")
    };
    assert_eq!(s.range(&req), Err(Error::FutureRevision));
}

#[test]
fn non_positive_revision_reads_current() {
    let mut s = abcd();
    put(&mut s, "a", "x");
    for rev in [0, -1, -100, i64::MIN] {
        assert_eq!(get_at(&s, "a", rev).unwrap().unwrap().value, b("x"));
    }
    s.compact(4).unwrap();
    assert_eq!(get_at(&s, "a", -5).unwrap().unwrap().value, b("x"));
}

#[test]
fn compacted_revision_is_rejected_but_the_compact_revision_itself_is_readable() {
    let mut s = abcd();
    s.compact(3).unwrap();
    assert_eq!(get_at(&s, "a", 2), Err(Error::Compacted));
    assert_eq!(get_at(&s, "b", 3).unwrap(), Some(kv("b", "2", 3, 3, 1)));
    assert_eq!(get_at(&s, "a", 3).unwrap(), Some(kv("a", "1", 2, 2, 1)));
}

#[test]
fn count_ignores_limit_and_filters() {
    let s = abcd();
    let req = RangeRequest {
        limit: 1,
        min_mod_revision: 4,
        ..range_req("", b"\0")
    };
    let r = s.range(&req).unwrap();
    assert_eq!(r.count, 4);
    assert_eq!(keys(&r), ["c"]);
    assert!(r.more);
}

#[test]
fn count_only_returns_count_without_kvs() {
    let s = abcd();
    let req = RangeRequest {
        count_only: true,
        limit: 2,
        ..range_req("b", b"\0")
    };
    let r = s.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more, r.revision), (0, 3, false, 5));
}

#[test]
fn limit_truncates_and_sets_more() {
    let s = abcd();
    let with_limit = |limit| {
        let req = RangeRequest {
            limit,
            ..range_req("", b"\0")
        };
        let r = s.range(&req).unwrap();
        (keys(&r), r.more, r.count)
    };
    assert_eq!(with_limit(2), (vec![b2s("a"), b2s("b")], true, 4));
    assert!(with_limit(3).1);
    assert_eq!(
        with_limit(4),
        (vec![b2s("a"), b2s("b"), b2s("c"), b2s("d")], false, 4)
    );
    assert!(!with_limit(5).1);
    assert_eq!(with_limit(i64::MAX).0.len(), 4);
}

fn b2s(s: &str) -> String {
    s.to_string()
}

#[test]
fn non_positive_limit_means_no_limit() {
    let s = abcd();
    for limit in [0, -1, i64::MIN] {
        let req = RangeRequest {
            limit,
            ..range_req("", b"\0")
        };
        let r = s.range(&req).unwrap();
        assert_eq!((r.kvs.len(), r.more), (4, false), "limit {limit}");
    }
}

#[test]
fn keys_only_clears_values() {
    let s = abcd();
    let req = RangeRequest {
        keys_only: true,
        ..range_req("a", b"c")
    };
    let r = s.range(&req).unwrap();
    assert_eq!(r.kvs, vec![kv("a", "", 2, 2, 1), kv("b", "", 3, 3, 1)]);
}

#[test]
fn sort_target_without_order_sorts_ascending() {
    let mut s = Store::new();
    put(&mut s, "a", "z");
    put(&mut s, "b", "x");
    put(&mut s, "c", "y");
    let req = RangeRequest {
        sort_target: SortTarget::Value,
        ..range_req("", b"\0")
    };
    assert_eq!(keys(&s.range(&req).unwrap()), ["b", "c", "a"]);
}

#[test]
fn sort_target_without_order_sorts_only_the_first_limit_plus_one_keys() {
    // etcd fetches everything only for an explicit sort order or a filter;
    // otherwise it fetches `limit + 1` keys in key order and sorts those.
    let mut s = Store::new();
    put(&mut s, "a", "3");
    put(&mut s, "b", "2");
    put(&mut s, "c", "1");
    let req = |order| RangeRequest {
        sort_order: order,
        sort_target: SortTarget::Value,
        limit: 1,
        ..range_req("", b"\0")
    };
    let r = s.range(&req(SortOrder::None)).unwrap();
    assert_eq!((keys(&r), r.more, r.count), (vec![b2s("b")], true, 3));
    let r = s.range(&req(SortOrder::Ascend)).unwrap();
    assert_eq!((keys(&r), r.more, r.count), (vec![b2s("c")], true, 3));
}

#[test]
fn sort_by_key_in_both_orders() {
    let s = abcd();
    let sorted = |order| {
        let req = RangeRequest {
            sort_order: order,
            sort_target: SortTarget::Key,
            ..range_req("", b"\0")
        };
        keys(&s.range(&req).unwrap())
    };
    assert_eq!(sorted(SortOrder::None), ["a", "b", "c", "d"]);
    assert_eq!(sorted(SortOrder::Ascend), ["a", "b", "c", "d"]);
    assert_eq!(sorted(SortOrder::Descend), ["d", "c", "b", "a"]);
}

#[test]
fn sort_by_each_target_then_limit() {
    let mut s = Store::new();
    put(&mut s, "a", "3"); // rev 2
    put(&mut s, "b", "1"); // rev 3
    put(&mut s, "c", "2"); // rev 4
    put(&mut s, "a", "3"); // rev 5: a version 2, mod 5
    put(&mut s, "a", "0"); // rev 6: a version 3, mod 6
    let sorted = |order, target, limit| {
        let req = RangeRequest {
            sort_order: order,
            sort_target: target,
            limit,
            ..range_req("", b"\0")
        };
        let r = s.range(&req).unwrap();
        (keys(&r), r.more)
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(Descend, Version, 0).0, ["a", "b", "c"]);
    assert_eq!(sorted(Ascend, Version, 0).0, ["b", "c", "a"]);
    assert_eq!(sorted(Ascend, Create, 0).0, ["a", "b", "c"]);
    assert_eq!(sorted(Descend, Create, 0).0, ["c", "b", "a"]);
    assert_eq!(sorted(Ascend, Mod, 0).0, ["b", "c", "a"]);
    assert_eq!(sorted(Descend, Mod, 2), (vec![b2s("a"), b2s("c")], true));
    assert_eq!(sorted(Ascend, Value, 0).0, ["a", "b", "c"]);
    assert_eq!(sorted(Descend, Value, 1), (vec![b2s("c")], true));
}

#[test]
fn sort_is_stable_for_ties() {
    let s = abcd(); // every version is 1
    let sorted = |order| {
        let req = RangeRequest {
            sort_order: order,
            sort_target: SortTarget::Version,
            ..range_req("", b"\0")
        };
        keys(&s.range(&req).unwrap())
    };
    assert_eq!(sorted(SortOrder::Ascend), ["a", "b", "c", "d"]);
    assert_eq!(sorted(SortOrder::Descend), ["a", "b", "c", "d"]);
}

#[test]
fn sort_by_value_compares_bytes() {
    let mut s = Store::new();
    put(&mut s, "a", "b");
    put(&mut s, "b", "ab");
    put(&mut s, "c", "");
    put(&mut s, "d", "\u{7f}");
    let req = RangeRequest {
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Value,
        ..range_req("", b"\0")
    };
    assert_eq!(keys(&s.range(&req).unwrap()), ["c", "b", "a", "d"]);
}

#[test]
fn mod_and_create_revision_filters_drop_kvs_outside_them() {
    let mut s = abcd();
    put(&mut s, "a", "again"); // a: create 2, mod 6
    let filtered = |min_mod, max_mod, min_create, max_create| {
        let req = RangeRequest {
            min_mod_revision: min_mod,
            max_mod_revision: max_mod,
            min_create_revision: min_create,
            max_create_revision: max_create,
            ..range_req("", b"\0")
        };
        let r = s.range(&req).unwrap();
        assert_eq!(r.count, 4);
        keys(&r)
    };
    assert_eq!(filtered(4, 0, 0, 0), ["a", "c", "d"]);
    assert_eq!(filtered(0, 4, 0, 0), ["b", "c"]);
    assert_eq!(filtered(0, 0, 3, 0), ["b", "c", "d"]);
    assert_eq!(filtered(0, 0, 0, 3), ["a", "b"]);
    assert_eq!(filtered(4, 5, 0, 4), ["c"]);
    assert_eq!(filtered(-1, 0, 0, 0), ["a", "b", "c", "d"]);
    assert_eq!(filtered(0, -1, 0, 0), Vec::<String>::new());
}

#[test]
fn filters_apply_before_limit() {
    let s = abcd();
    let req = RangeRequest {
        limit: 1,
        min_create_revision: 4,
        ..range_req("", b"\0")
    };
    let r = s.range(&req).unwrap();
    assert_eq!(keys(&r), ["c"]);
    assert!(r.more);
    let req = RangeRequest {
        limit: 2,
        min_create_revision: 4,
        ..range_req("", b"\0")
    };
    let r = s.range(&req).unwrap();
    assert_eq!(keys(&r), ["c", "d"]);
    assert!(!r.more);
}

// ---- put -------------------------------------------------------------------

#[test]
fn put_bumps_version_and_keeps_create_revision() {
    let mut s = Store::new();
    put(&mut s, "k", "1");
    put(&mut s, "other", "x");
    put(&mut s, "k", "2");
    assert_eq!(get(&s, "k"), Some(kv("k", "2", 2, 4, 2)));
}

#[test]
fn version_resets_after_delete() {
    let mut s = Store::new();
    put(&mut s, "k", "1");
    put(&mut s, "k", "2");
    del(&mut s, "k", b"");
    assert_eq!(get(&s, "k"), None);
    put(&mut s, "k", "3");
    assert_eq!(get(&s, "k"), Some(kv("k", "3", 5, 5, 1)));
    assert_eq!(get_at(&s, "k", 3).unwrap(), Some(kv("k", "2", 2, 3, 2)));
    assert_eq!(get_at(&s, "k", 4).unwrap(), None);
}

#[test]
fn put_prev_kv_returns_the_previous_key_value() {
    let mut s = Store::new();
    let req = PutRequest {
        prev_kv: true,
        ..put_req("k", "1")
    };
    let r = s.put(&req).unwrap();
    assert_eq!((r.prev_kv, r.revision), (None, 2));
    let req = PutRequest {
        prev_kv: true,
        ..put_req("k", "2")
    };
    let r = s.put(&req).unwrap();
    assert_eq!(r.prev_kv, Some(kv("k", "1", 2, 2, 1)));
    let r = s.put(&put_req("k", "3")).unwrap();
    assert_eq!(r.prev_kv, None);
}

#[test]
fn ignore_value_keeps_the_value_and_ignore_lease_keeps_the_lease() {
    let mut s = Store::new();
    s.put(&PutRequest {
        lease: 7,
        ..put_req("k", "v")
    })
    .unwrap();
    s.put(&PutRequest {
        ignore_value: true,
        lease: 9,
        ..put_req("k", "ignored")
    })
    .unwrap();
    let got = get(&s, "k").unwrap();
    assert_eq!((got.value, got.lease, got.version), (b("v"), 9, 2));
    s.put(&PutRequest {
        ignore_lease: true,
        ..put_req("k", "w")
    })
    .unwrap();
    let got = get(&s, "k").unwrap();
    assert_eq!((got.value, got.lease, got.version), (b("w"), 9, 3));
}

#[test]
fn ignore_flags_on_missing_key_are_key_not_found_and_change_nothing() {
    let mut s = abcd();
    for (iv, il) in [(true, false), (false, true), (true, true)] {
        let req = PutRequest {
            ignore_value: iv,
            ignore_lease: il,
            ..put_req("missing", "v")
        };
        assert_eq!(s.put(&req), Err(Error::KeyNotFound));
        assert_eq!(s.current_revision(), 5);
        assert_eq!(get(&s, "missing"), None);
        s.assert_invariants();
    }
    del(&mut s, "a", b"");
    let req = PutRequest {
        ignore_value: true,
        ..put_req("a", "v")
    };
    assert_eq!(s.put(&req), Err(Error::KeyNotFound));
}

#[test]
fn key_not_found_display_is_etcds() {
    assert_eq!(Error::KeyNotFound.to_string(), "etcdserver: key not found");
    assert_eq!(
        Error::Compacted.to_string(),
        "mvcc: required revision has been compacted"
    );
    assert_eq!(
        Error::FutureRevision.to_string(),
        "mvcc: required revision is a future revision"
    );
}

// ---- delete ----------------------------------------------------------------

#[test]
fn delete_range_deletes_live_keys_in_one_revision() {
    let mut s = abcd();
    let r = s
        .delete_range(&DeleteRangeRequest {
            prev_kv: true,
            ..del_req("b", b"d")
        })
        .unwrap();
    assert_eq!(r.deleted, 2);
    assert_eq!(r.revision, 6);
    assert_eq!(
        r.prev_kvs,
        vec![kv("b", "2", 3, 3, 1), kv("c", "3", 4, 4, 1)]
    );
    assert_eq!(keys(&range(&s, "", b"\0")), ["a", "d"]);
    // Deleting again finds nothing live.
    let r = del(&mut s, "b", b"d");
    assert_eq!((r.deleted, r.revision), (0, 6));
    // Both tombstones share revision 6 with sub revisions 0 and 1.
    let events = s.events_since(6, b"", b"\0").unwrap();
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 6));
}

#[test]
fn delete_range_with_zero_range_end_deletes_everything_from_key() {
    let mut s = abcd();
    let r = del(&mut s, "b", b"\0");
    assert_eq!(r.deleted, 3);
    assert!(r.prev_kvs.is_empty());
    assert_eq!(keys(&range(&s, "", b"\0")), ["a"]);
}

#[test]
fn deleted_key_is_still_visible_at_earlier_revisions() {
    let mut s = abcd();
    del(&mut s, "a", b"");
    assert_eq!(get(&s, "a"), None);
    assert_eq!(get_at(&s, "a", 5).unwrap(), Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(get_at(&s, "a", 6).unwrap(), None);
}

#[test]
fn odd_ranges_never_panic() {
    let mut s = abcd();
    let odd: &[(&[u8], &[u8])] = &[
        (b"", b""),
        (b"", b"\0"),
        (b"\0", b"\0"),
        (b"\xff\xff", b"\0"),
        (b"z", b"a"),
        (b"a", b"a"),
        (b"", b"\0\0"),
    ];
    for (key, end) in odd {
        let req = RangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            limit: -3,
            revision: -7,
            ..RangeRequest::default()
        };
        s.range(&req).unwrap();
        s.delete_range(&DeleteRangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            prev_kv: true,
        })
        .unwrap();
        s.events_since(1, key, end).unwrap();
        // Below etcd's initial compaction revision (-1): refused, not a panic.
        assert_eq!(s.events_since(i64::MIN, key, end), Err(Error::Compacted));
        s.assert_invariants();
    }
}

// ---- txn -------------------------------------------------------------------

#[test]
fn txn_version_zero_compare_matches_a_missing_key() {
    let mut s = abcd();
    let req = TxnRequest {
        compare: vec![cmp("new", CompareResult::Equal, CompareTarget::Version(0))],
        success: vec![RequestOp::Put(put_req("new", "v"))],
        failure: vec![],
    };
    let r = s.txn(&req).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 6);
    // Second time the key exists, so the compare fails.
    let r = s.txn(&req).unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.revision, 6);
    for target in [
        CompareTarget::Create(0),
        CompareTarget::Mod(0),
        CompareTarget::Lease(0),
    ] {
        let req = TxnRequest {
            compare: vec![cmp("missing", CompareResult::Equal, target)],
            ..TxnRequest::default()
        };
        assert!(s.txn(&req).unwrap().succeeded);
    }
}

#[test]
fn txn_value_compare_on_a_missing_key_is_false() {
    let mut s = abcd();
    for result in [
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Less,
        CompareResult::Greater,
    ] {
        let req = TxnRequest {
            compare: vec![cmp("missing", result, CompareTarget::Value(Vec::new()))],
            ..TxnRequest::default()
        };
        assert!(!s.txn(&req).unwrap().succeeded, "{result:?}");
    }
}

#[test]
fn txn_range_compare_must_hold_for_every_key() {
    let mut s = abcd(); // mod revisions 2..=5
    let with = |result, target, end: &[u8]| TxnRequest {
        compare: vec![Compare {
            range_end: end.to_vec(),
            ..cmp("a", result, target)
        }],
        ..TxnRequest::default()
    };
    use CompareResult::*;
    use CompareTarget::*;
    assert!(s.txn(&with(Less, Mod(6), b"\0")).unwrap().succeeded);
    assert!(!s.txn(&with(Less, Mod(5), b"\0")).unwrap().succeeded);
    assert!(s.txn(&with(Less, Mod(5), b"d")).unwrap().succeeded);
    assert!(s.txn(&with(Equal, Version(1), b"\0")).unwrap().succeeded);
    assert!(!s.txn(&with(Equal, Value(b("1")), b"c")).unwrap().succeeded);
    assert!(
        s.txn(&with(Greater, Value(b("0")), b"\0"))
            .unwrap()
            .succeeded
    );
}

#[test]
fn txn_compare_on_an_empty_range_uses_a_zero_key_value() {
    let mut s = abcd();
    let with = |target| TxnRequest {
        compare: vec![Compare {
            range_end: b("y"),
            ..cmp("x", CompareResult::Equal, target)
        }],
        ..TxnRequest::default()
    };
    assert!(s.txn(&with(CompareTarget::Version(0))).unwrap().succeeded);
    assert!(s.txn(&with(CompareTarget::Create(0))).unwrap().succeeded);
    assert!(!s.txn(&with(CompareTarget::Version(1))).unwrap().succeeded);
    assert!(
        !s.txn(&with(CompareTarget::Value(Vec::new())))
            .unwrap()
            .succeeded
    );
}

#[test]
fn txn_runs_the_failure_branch_when_a_compare_fails() {
    let mut s = abcd();
    let req = TxnRequest {
        compare: vec![
            cmp("a", CompareResult::Equal, CompareTarget::Value(b("1"))),
            cmp("b", CompareResult::Equal, CompareTarget::Value(b("nope"))),
        ],
        success: vec![RequestOp::Put(put_req("s", "1"))],
        failure: vec![RequestOp::Put(put_req("f", "1"))],
    };
    let r = s.txn(&req).unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.responses.len(), 1);
    assert!(get(&s, "f").is_some());
    assert!(get(&s, "s").is_none());
}

#[test]
fn txn_ops_share_one_revision_with_sub_revisions() {
    let mut s = abcd();
    let req = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("x", "1")),
            RequestOp::DeleteRange(del_req("a", b"")),
            RequestOp::Put(put_req("y", "2")),
        ],
        ..TxnRequest::default()
    };
    let r = s.txn(&req).unwrap();
    assert_eq!(r.revision, 6);
    assert_eq!(s.current_revision(), 6);
    let events = s.events_since(6, b"", b"\0").unwrap();
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.kind, String::from_utf8_lossy(&e.kv.key).into_owned()))
        .collect();
    assert_eq!(
        got,
        vec![
            (EventKind::Put, b2s("x")),
            (EventKind::Delete, b2s("a")),
            (EventKind::Put, b2s("y"))
        ]
    );
    assert_eq!(get(&s, "x"), Some(kv("x", "1", 6, 6, 1)));
    assert_eq!(get(&s, "y"), Some(kv("y", "2", 6, 6, 1)));
}

#[test]
fn txn_reads_see_earlier_writes_and_report_the_txn_revision() {
    let mut s = abcd();
    let req = TxnRequest {
        success: vec![
            RequestOp::Range(range_req("a", b"")),
            RequestOp::DeleteRange(del_req("zz", b"")),
            RequestOp::Put(put_req("a", "new")),
            RequestOp::Range(range_req("a", b"")),
            RequestOp::DeleteRange(del_req("zz", b"")),
            RequestOp::Range(RangeRequest {
                revision: 5,
                ..range_req("a", b"")
            }),
        ],
        ..TxnRequest::default()
    };
    let r = s.txn(&req).unwrap();
    let ResponseOp::Range(before) = &r.responses[0] else {
        panic!("not a range")
    };
    assert_eq!(before.kvs, vec![kv("a", "1", 2, 2, 1)]);
    assert_eq!(before.revision, 5);
    let ResponseOp::DeleteRange(nothing_yet) = &r.responses[1] else {
        panic!("not a delete")
    };
    assert_eq!(nothing_yet.revision, 5);
    let ResponseOp::Put(p) = &r.responses[2] else {
        panic!("not a put")
    };
    assert_eq!(p.revision, 6);
    let ResponseOp::Range(after) = &r.responses[3] else {
        panic!("not a range")
    };
    assert_eq!(after.kvs, vec![kv("a", "new", 2, 6, 2)]);
    assert_eq!(after.revision, 6);
    let ResponseOp::DeleteRange(nothing_after) = &r.responses[4] else {
        panic!("not a delete")
    };
    assert_eq!((nothing_after.deleted, nothing_after.revision), (0, 6));
    let ResponseOp::Range(old) = &r.responses[5] else {
        panic!("not a range")
    };
    assert_eq!(old.kvs, vec![kv("a", "1", 2, 2, 1)]);
    assert_eq!(old.revision, 6);
    assert_eq!(r.revision, 6);
}

#[test]
fn txn_put_twice_bumps_version_twice() {
    let mut s = Store::new();
    let req = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("k", "1")),
            RequestOp::Put(PutRequest {
                prev_kv: true,
                ..put_req("k", "2")
            }),
        ],
        ..TxnRequest::default()
    };
    let r = s.txn(&req).unwrap();
    let ResponseOp::Put(second) = &r.responses[1] else {
        panic!("not a put")
    };
    assert_eq!(second.prev_kv, Some(kv("k", "1", 2, 2, 1)));
    assert_eq!(get(&s, "k"), Some(kv("k", "2", 2, 2, 2)));
    s.assert_invariants();
}

#[test]
fn txn_delete_then_put_starts_a_new_generation() {
    let mut s = abcd();
    put(&mut s, "a", "v2"); // a: version 2 at rev 6
    let req = TxnRequest {
        success: vec![
            RequestOp::DeleteRange(del_req("a", b"")),
            RequestOp::Put(put_req("a", "fresh")),
        ],
        ..TxnRequest::default()
    };
    s.txn(&req).unwrap();
    s.assert_invariants();
    assert_eq!(get(&s, "a"), Some(kv("a", "fresh", 7, 7, 1)));
    assert_eq!(get_at(&s, "a", 6).unwrap(), Some(kv("a", "v2", 2, 6, 2)));
}

#[test]
fn txn_put_then_delete_leaves_the_key_absent() {
    let mut s = Store::new();
    let req = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("k", "1")),
            RequestOp::DeleteRange(del_req("k", b"")),
        ],
        ..TxnRequest::default()
    };
    let r = s.txn(&req).unwrap();
    assert_eq!(r.revision, 2);
    assert_eq!(get(&s, "k"), None);
    s.assert_invariants();
    s.compact(2).unwrap();
    s.assert_invariants();
    assert_eq!(s.events_since(3, b"", b"\0").unwrap(), vec![]);
}

#[test]
fn nested_txn_compares_see_the_state_before_the_txn() {
    let mut s = Store::new();
    // The outer txn creates k, but the nested compare "k missing" was
    // evaluated before, so the nested success branch runs.
    let nested = TxnRequest {
        compare: vec![cmp("k", CompareResult::Equal, CompareTarget::Version(0))],
        success: vec![RequestOp::Put(put_req("nested", "ok"))],
        failure: vec![RequestOp::Put(put_req("nested", "saw-write"))],
    };
    let req = TxnRequest {
        success: vec![RequestOp::Put(put_req("k", "1")), RequestOp::Txn(nested)],
        ..TxnRequest::default()
    };
    let r = s.txn(&req).unwrap();
    assert_eq!(get(&s, "nested").unwrap().value, b("ok"));
    let ResponseOp::Txn(inner) = &r.responses[1] else {
        panic!("not a txn")
    };
    assert!(inner.succeeded);
    // etcd fills only the outermost header.
    assert_eq!(inner.revision, 0);
    assert_eq!(r.revision, 2);
    assert_eq!(get(&s, "nested").unwrap().mod_revision, 2);
}

#[test]
fn txn_check_error_leaves_the_store_untouched() {
    let mut s = abcd();
    let req = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("x", "1")),
            RequestOp::Txn(TxnRequest {
                success: vec![RequestOp::Range(RangeRequest {
                    revision: 99,
                    ..range_req("a", b"")
                })],
                ..TxnRequest::default()
            }),
        ],
        ..TxnRequest::default()
    };
    assert_eq!(s.txn(&req), Err(Error::FutureRevision));
    assert_eq!(s.current_revision(), 5);
    assert_eq!(get(&s, "x"), None);
    s.assert_invariants();
}

#[test]
fn txn_checks_puts_before_ranges() {
    let mut s = abcd();
    let req = TxnRequest {
        success: vec![
            RequestOp::Range(RangeRequest {
                revision: 99,
                ..range_req("a", b"")
            }),
            RequestOp::Put(PutRequest {
                ignore_value: true,
                ..put_req("missing", "")
            }),
        ],
        ..TxnRequest::default()
    };
    assert_eq!(s.txn(&req), Err(Error::KeyNotFound));
}

#[test]
fn txn_only_checks_the_chosen_branch() {
    let mut s = abcd();
    let req = TxnRequest {
        compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Version(1))],
        success: vec![RequestOp::Put(put_req("ok", "1"))],
        failure: vec![RequestOp::Put(PutRequest {
            ignore_value: true,
            ..put_req("missing", "")
        })],
    };
    assert!(s.txn(&req).unwrap().succeeded);
}

#[test]
fn txn_ignore_value_is_checked_against_the_state_before_the_txn() {
    let mut s = Store::new();
    let req = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("k", "1")),
            RequestOp::Put(PutRequest {
                ignore_value: true,
                ..put_req("k", "")
            }),
        ],
        ..TxnRequest::default()
    };
    assert_eq!(s.txn(&req), Err(Error::KeyNotFound));
    assert_eq!(s.current_revision(), 1);
}

#[test]
fn txn_failure_while_applying_rolls_everything_back() {
    // etcd crashes here (the check passes on the pre-txn state, the apply
    // then misses the key); we refuse the txn and change nothing.
    let mut s = abcd();
    let before = range(&s, "", b"\0");
    let req = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("new", "1")),
            RequestOp::DeleteRange(del_req("a", b"c")),
            RequestOp::Put(PutRequest {
                ignore_value: true,
                ..put_req("a", "")
            }),
        ],
        ..TxnRequest::default()
    };
    assert_eq!(s.txn(&req), Err(Error::KeyNotFound));
    s.assert_invariants();
    assert_eq!(s.current_revision(), 5);
    assert_eq!(range(&s, "", b"\0"), before);
    assert_eq!(s.events_since(6, b"", b"\0").unwrap(), vec![]);
    // The store still works normally afterwards.
    assert_eq!(put(&mut s, "a", "x").revision, 6);
    assert_eq!(get(&s, "a"), Some(kv("a", "x", 2, 6, 2)));
}

#[test]
fn txn_range_revision_checks_follow_etcd() {
    let mut s = abcd();
    let with_rev = |revision| TxnRequest {
        success: vec![RequestOp::Range(RangeRequest {
            revision,
            ..range_req("a", b"")
        })],
        ..TxnRequest::default()
    };
    assert!(s.txn(&with_rev(5)).is_ok());
    assert!(s.txn(&with_rev(-1)).is_ok());
    assert_eq!(s.txn(&with_rev(6)), Err(Error::FutureRevision));
    assert_eq!(s.txn(&with_rev(-2)), Err(Error::Compacted));
    s.compact(3).unwrap();
    assert_eq!(s.txn(&with_rev(2)), Err(Error::Compacted));
    assert!(s.txn(&with_rev(3)).is_ok());
    assert!(s.txn(&with_rev(0)).is_ok());
    assert_eq!(s.txn(&with_rev(-1)), Err(Error::Compacted));
}

// ---- compaction ------------------------------------------------------------

#[test]
fn compact_at_or_below_the_compact_revision_is_compacted() {
    let mut s = abcd();
    s.compact(3).unwrap();
    assert_eq!(s.compact(3), Err(Error::Compacted));
    assert_eq!(s.compact(2), Err(Error::Compacted));
    assert_eq!(s.compact(-1), Err(Error::Compacted));
    assert_eq!(s.compact_revision(), 3);
}

#[test]
fn compact_in_the_future_is_rejected() {
    let mut s = abcd();
    assert_eq!(s.compact(6), Err(Error::FutureRevision));
    assert_eq!(s.compact_revision(), 0);
    assert_eq!(s.compact(5).unwrap().revision, 5);
}

#[test]
fn compact_zero_on_a_fresh_store_is_accepted_once() {
    let mut s = Store::new();
    assert_eq!(s.compact(0).unwrap().revision, 1);
    assert_eq!(s.compact(0), Err(Error::Compacted));
    assert_eq!(s.compact(1).unwrap().revision, 1);
}

#[test]
fn compact_returns_the_current_revision() {
    let mut s = abcd();
    assert_eq!(s.compact(2).unwrap(), CompactResponse { revision: 5 });
    assert_eq!(s.current_revision(), 5);
}

#[test]
fn compact_keeps_reads_at_and_after_the_compact_revision() {
    let mut s = Store::new();
    put(&mut s, "k", "1"); // 2
    put(&mut s, "k", "2"); // 3
    put(&mut s, "other", "x"); // 4
    put(&mut s, "k", "3"); // 5
    s.compact(4).unwrap();
    s.assert_invariants();
    assert_eq!(get_at(&s, "k", 4).unwrap(), Some(kv("k", "2", 2, 3, 2)));
    assert_eq!(get_at(&s, "k", 5).unwrap(), Some(kv("k", "3", 2, 5, 3)));
    assert_eq!(get_at(&s, "k", 3), Err(Error::Compacted));
    // Version and create revision keep counting from before the compaction.
    put(&mut s, "k", "4");
    assert_eq!(get(&s, "k"), Some(kv("k", "4", 2, 6, 4)));
}

#[test]
fn compact_removes_keys_deleted_by_then() {
    let mut s = abcd();
    del(&mut s, "a", b""); // 6
    put(&mut s, "b", "x"); // 7
    s.compact(6).unwrap();
    s.assert_invariants();
    assert_eq!(get_at(&s, "a", 6).unwrap(), None);
    assert_eq!(keys(&range(&s, "", b"\0")), ["b", "c", "d"]);
    // The delete at the compact revision is still an event of it ...
    let events = s.events_since(6, b"", b"\0").unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, EventKind::Delete);
    assert_eq!(events[0].kv.key, b("a"));
    assert_eq!(events[1].kv, kv("b", "x", 3, 7, 2));
    // ... until a later compaction passes it.
    s.compact(7).unwrap();
    s.assert_invariants();
    let events = s.events_since(7, b"", b"\0").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kv, kv("b", "x", 3, 7, 2));
    assert!(s.index.iter().all(|(k, _)| k != b"a"));
    // Re-creating the key starts from scratch.
    put(&mut s, "a", "again");
    assert_eq!(get(&s, "a"), Some(kv("a", "again", 8, 8, 1)));
}

/// etcd#18089: a watch resuming at the compaction revision (after a compact
/// cancel) must get every event of that revision, its deletes included.
#[test]
fn history_from_the_compact_revision_keeps_its_deletes() {
    let mut s = abcd();
    put(&mut s, "a", "2"); // 6
    del(&mut s, "a", b"c"); // 7: a and b
    put(&mut s, "a", "3"); // 8
    let before = s.events_since(7, b"", b"\0").unwrap();
    s.compact(7).unwrap();
    s.assert_invariants();
    let after = s.events_since(7, b"", b"\0").unwrap();
    assert_eq!(
        after
            .iter()
            .map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision))
            .collect::<Vec<_>>(),
        vec![
            (EventKind::Delete, b("a"), 7),
            (EventKind::Delete, b("b"), 7),
            (EventKind::Put, b("a"), 8),
        ]
    );
    // The same events; only prev_kv at the compact revision is compacted.
    for (a, b) in after.iter().zip(&before) {
        assert_eq!((a.kind, &a.kv), (b.kind, &b.kv));
    }
    assert_eq!(after[0].prev_kv, None);
    assert_eq!(after[2].prev_kv, None);
    let page = s.events_between(7, 7, b"", b"\0", 1).unwrap();
    assert_eq!(page.events, after[..2].to_vec());
    assert_eq!(page.more, None);
    // Reads at and after the compact revision are unchanged.
    let at7 = RangeRequest {
        revision: 7,
        ..range_req("", b"\0")
    };
    assert_eq!(keys(&s.range(&at7).unwrap()), ["c", "d"]);
    assert_eq!(get(&s, "a"), Some(kv("a", "3", 8, 8, 1)));
    // A later compaction drops the tombstones.
    s.compact(8).unwrap();
    s.assert_invariants();
    assert_eq!(s.events_since(8, b"", b"\0").unwrap().len(), 1);
    assert!(s.index.iter().all(|(k, _)| k != b"b"));
}

/// etcd#22376: a txn at the compaction revision deleted a key and put it
/// again; compaction keeps both changes and the value stays readable.
#[test]
fn compact_at_a_delete_and_recreate_in_one_txn_keeps_both() {
    let mut s = abcd();
    let txn = TxnRequest {
        compare: Vec::new(),
        success: vec![
            RequestOp::DeleteRange(del_req("a", b"")),
            RequestOp::Put(put_req("a", "new")),
        ],
        failure: Vec::new(),
    };
    s.txn(&txn).unwrap(); // 6
    s.assert_invariants();
    s.compact(6).unwrap();
    s.assert_invariants();
    assert_eq!(get(&s, "a"), Some(kv("a", "new", 6, 6, 1)));
    let events = s.events_since(6, b"a", b"").unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Delete, EventKind::Put]
    );
    put(&mut s, "x", "1"); // 7
    s.compact(7).unwrap();
    s.assert_invariants();
    assert_eq!(get(&s, "a"), Some(kv("a", "new", 6, 6, 1)));
}

#[test]
fn compact_keeps_a_tombstone_after_the_compact_revision() {
    let mut s = abcd();
    del(&mut s, "a", b""); // 6
    s.compact(5).unwrap();
    s.assert_invariants();
    assert_eq!(get_at(&s, "a", 5).unwrap(), Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(get_at(&s, "a", 6).unwrap(), None);
    let events = s.events_since(6, b"a", b"").unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Delete);
    assert_eq!(events[0].prev_kv, Some(kv("a", "1", 2, 2, 1)));
}

// ---- events ----------------------------------------------------------------

#[test]
fn events_since_replays_puts_and_deletes_in_order() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "b", "1"); // 3
    put(&mut s, "a", "2"); // 4
    del(&mut s, "a", b""); // 5
    let events = s.events_since(3, b"", b"\0").unwrap();
    let want = vec![
        Event {
            kind: EventKind::Put,
            kv: kv("b", "1", 3, 3, 1),
            prev_kv: None,
        },
        Event {
            kind: EventKind::Put,
            kv: kv("a", "2", 2, 4, 2),
            prev_kv: Some(kv("a", "1", 2, 2, 1)),
        },
        Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: b("a"),
                mod_revision: 5,
                ..KeyValue::default()
            },
            prev_kv: Some(kv("a", "2", 2, 4, 2)),
        },
    ];
    assert_eq!(events, want);
    assert_eq!(s.events_since(6, b"", b"\0").unwrap(), vec![]);
    assert_eq!(s.events_since(100, b"", b"\0").unwrap(), vec![]);
}

#[test]
fn events_since_filters_by_key_range() {
    let s = abcd();
    let only = |key: &str, end: &[u8]| {
        s.events_since(0, key.as_bytes(), end)
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8_lossy(&e.kv.key).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(only("b", b""), ["b"]);
    assert_eq!(only("b", b"d"), ["b", "c"]);
    assert_eq!(only("c", b"\0"), ["c", "d"]);
    assert_eq!(only("c", b"a"), Vec::<String>::new());
}

#[test]
fn events_since_a_compacted_revision_is_rejected() {
    let mut s = abcd();
    s.compact(4).unwrap();
    assert_eq!(s.events_since(3, b"", b"\0"), Err(Error::Compacted));
    // Starting at the compact revision itself is allowed, as in etcd's watch.
    let events = s.events_since(4, b"", b"\0").unwrap();
    assert_eq!(events.len(), 2);
    // The previous value of an event at the compact revision is compacted.
    assert_eq!(events[0].prev_kv, None);
}

#[test]
fn enum_numbers_match_etcd() {
    assert_eq!(SortOrder::Descend as i32, 2);
    assert_eq!(SortTarget::try_from(4), Ok(SortTarget::Value));
    assert_eq!(SortTarget::try_from(5), Err(5));
    assert_eq!(SortOrder::try_from(1), Ok(SortOrder::Ascend));
    assert_eq!(CompareResult::try_from(3), Ok(CompareResult::NotEqual));
    assert_eq!(CompareResult::Less as i32, 2);
    assert_eq!(EventKind::Delete.as_i32(), 1);
}
