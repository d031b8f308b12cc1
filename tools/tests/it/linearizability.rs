//! Linearizability checker for key-value histories of put / linearizable get
//! / compare-and-swap (a txn "value(key) == expected → put(key, new)").
//!
//! Linearizability is compositional (Herlihy & Wing, "locality"): a history
//! is linearizable iff each key's sub-history is, so every key is checked on
//! its own. A key's sub-history is checked with Wing & Gong's search as
//! refined by Lowe ("just-in-time linearisation") and Horn & Kroening (the
//! memo of (linearized set, state) pairs already explored), the algorithm of
//! Porcupine:
//!
//! * the call and return events of all operations are sorted by time into a
//!   doubly linked list;
//! * walking the list, an operation whose call is reached may be linearized
//!   now if the model accepts it in the current state (its call and return
//!   are then lifted out of the list and the walk restarts from the head);
//! * reaching a return event means that operation had to be linearized
//!   before this instant and was not: backtrack to the last choice;
//! * a (linearized set, state) pair seen before is not explored again.
//!
//! Indeterminate operations (a put or CAS whose client got an error or a
//! timeout: it may or may not have taken effect, possibly long after the
//! client gave up) get a return time of +infinity: they may be linearized at
//! any point after their call, or never. Once the walk reaches the first
//! infinite return, every completed operation has been linearized and the
//! history is accepted. A failed or timed-out get has no effect and
//! constrains nothing, so it is dropped (see [`History::push`]).
//!
//! Invariants and assumptions:
//! * Times come from one clock shared by all clients (CLOCK_MONOTONIC:
//!   python's `time.monotonic_ns`, `clock_gettime` in Rust); an operation's
//!   call precedes its return. Events at equal times are ordered calls
//!   first, i.e. such operations count as concurrent (never a false alarm).
//! * The model: a key holds `None` (absent) or a value. put sets it; get
//!   returns it; CAS succeeds iff the key exists and holds `expected` (etcd
//!   fails a value compare on a missing key), and then sets `new`.
//! * Writers use unique values, so a lost write (a later read does not see
//!   it, and nothing overwrote it), a duplicated write (a value re-appears
//!   after being overwritten) and a stale read are all non-linearizable.
//! * The search is exponential in the worst case; [`check`] stops after a
//!   budget of steps and reports `Unknown` rather than guessing.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// One operation as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: u64,
    pub key: String,
    pub kind: Kind,
    /// Invocation time, ns on the shared monotonic clock.
    pub call: u64,
    /// Response time; `None`: indeterminate (error or timeout).
    pub ret: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Put {
        value: String,
    },
    /// A linearizable get that answered; `None`: the key was absent.
    Get {
        result: Option<String>,
    },
    /// `succeeded`: the txn's answer; `None` when indeterminate.
    Cas {
        expected: String,
        new: String,
        succeeded: Option<bool>,
    },
}

/// A whole history, in any order.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<Operation>,
}

impl History {
    /// Adds an operation. A get without an answer is dropped: it had no
    /// effect and observed nothing. An indeterminate CAS has no known
    /// outcome, whatever `succeeded` says.
    pub fn push(&mut self, mut op: Operation) {
        if op.ret.is_none() {
            match &mut op.kind {
                Kind::Get { .. } => return,
                Kind::Cas { succeeded, .. } => *succeeded = None,
                Kind::Put { .. } => {}
            }
        }
        if let Some(r) = op.ret {
            assert!(r >= op.call, "operation returns before its call: {op:?}");
        }
        self.ops.push(op);
    }
}

/// Why one key's history is not linearizable (or could not be decided).
#[derive(Clone, Debug)]
pub struct KeyReport {
    pub key: String,
    pub ops: usize,
    /// The most operations linearized in any branch of the search.
    pub longest_prefix: usize,
    /// The operation whose return could not be met at that point, with the
    /// operations concurrent with it and the state before it.
    pub stuck_at: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Verdict {
    Linearizable,
    /// At least one key's history is not linearizable.
    Violation(Vec<KeyReport>),
    /// The search budget ran out on some key (and no key was violating).
    Unknown(Vec<KeyReport>),
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::Violation(_))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, reports) = match self {
            Verdict::Linearizable => return write!(f, "linearizable"),
            Verdict::Violation(r) => ("NOT LINEARIZABLE", r),
            Verdict::Unknown(r) => ("UNDECIDED (search budget exhausted)", r),
        };
        writeln!(f, "{what}:")?;
        for r in reports {
            writeln!(
                f,
                "  key {:?}: {} ops, longest linearizable prefix {}",
                r.key, r.ops, r.longest_prefix
            )?;
            if let Some(s) = &r.stuck_at {
                writeln!(f, "{s}")?;
            }
        }
        Ok(())
    }
}

/// Default search budget per key (steps of the walk).
pub const DEFAULT_BUDGET: u64 = 50_000_000;

/// Checks every key's sub-history.
pub fn check(history: &History) -> Verdict {
    check_with_budget(history, DEFAULT_BUDGET)
}

pub fn check_with_budget(history: &History, budget: u64) -> Verdict {
    let mut by_key: HashMap<&str, Vec<&Operation>> = HashMap::new();
    for op in &history.ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut keys: Vec<&str> = by_key.keys().copied().collect();
    keys.sort_unstable();
    let mut violations = Vec::new();
    let mut unknown = Vec::new();
    for key in keys {
        match check_key(key, &by_key[key], budget) {
            KeyResult::Ok => {}
            KeyResult::Violation(r) => violations.push(r),
            KeyResult::OutOfBudget(r) => unknown.push(r),
        }
    }
    if !violations.is_empty() {
        Verdict::Violation(violations)
    } else if !unknown.is_empty() {
        Verdict::Unknown(unknown)
    } else {
        Verdict::Linearizable
    }
}

// ---------------------------------------------------------------------------
// One key
// ---------------------------------------------------------------------------

/// Values are interned; `ABSENT` is the state of a missing key.
type Val = u32;
const ABSENT: Val = u32::MAX;
/// Any value that no operation observed (see `check_key`).
const UNOBS: Val = u32::MAX - 1;

#[derive(Clone, Copy, Debug)]
enum Step {
    Put(Val),
    Get(Val),
    Cas {
        expected: Val,
        new: Val,
        succeeded: Option<bool>,
    },
}

impl Step {
    /// The model: the state after this operation, or `None` if it cannot
    /// happen in `state`.
    fn apply(self, state: Val) -> Option<Val> {
        match self {
            Step::Put(v) => Some(v),
            Step::Get(v) => (v == state).then_some(state),
            Step::Cas {
                expected,
                new,
                succeeded,
            } => {
                let matches = state != ABSENT && state == expected;
                match succeeded {
                    Some(true) => matches.then_some(new),
                    Some(false) => (!matches).then_some(state),
                    None => Some(if matches { new } else { state }),
                }
            }
        }
    }
}

enum KeyResult {
    Ok,
    Violation(KeyReport),
    OutOfBudget(KeyReport),
}

const NIL: usize = usize::MAX;

struct Node {
    op: usize,
    is_call: bool,
    /// For a call: its return node.
    ret: usize,
    prev: usize,
    next: usize,
}

struct List {
    nodes: Vec<Node>,
    /// `nodes[head]` is a sentinel.
    head: usize,
}

impl List {
    fn unlink(&mut self, n: usize) {
        let (p, x) = (self.nodes[n].prev, self.nodes[n].next);
        self.nodes[p].next = x;
        if x != NIL {
            self.nodes[x].prev = p;
        }
    }
    /// Re-inserts `n` where it was (its neighbours' links are unchanged
    /// since, as lifts and unlifts nest).
    fn relink(&mut self, n: usize) {
        let (p, x) = (self.nodes[n].prev, self.nodes[n].next);
        self.nodes[p].next = n;
        if x != NIL {
            self.nodes[x].prev = n;
        }
    }
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let r = self.nodes[call].ret;
        self.unlink(r);
    }
    fn unlift(&mut self, call: usize) {
        let r = self.nodes[call].ret;
        self.relink(r);
        self.relink(call);
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Rewrites indeterminate operations using what the rest of the history
/// observed (values are unique, so an observed value proves its write):
/// * an indeterminate put of an observed value happened, before the first
///   observer returned: it gets that return time;
/// * an indeterminate CAS whose new value was observed succeeded, likewise;
/// * an indeterminate put of a value nobody observed stays optional.
///
/// "Observed" here = returned by a get, or expected by a CAS that
/// succeeded. Also returns the values the model ever compares the state
/// with (get results, every CAS's expected value).
fn prepare(ops: &[&Operation]) -> (Vec<Operation>, HashSet<String>) {
    let mut first_seen: HashMap<&str, u64> = HashMap::new();
    for op in ops {
        let (Some(ret), Some(v)) = (
            op.ret,
            match &op.kind {
                Kind::Get { result } => result.as_deref(),
                Kind::Cas {
                    expected,
                    succeeded: Some(true),
                    ..
                } => Some(expected.as_str()),
                _ => None,
            },
        ) else {
            continue;
        };
        let e = first_seen.entry(v).or_insert(ret);
        *e = (*e).min(ret);
    }
    // Values the model ever compares the state with.
    let mut observed: HashSet<String> = HashSet::new();
    for op in ops {
        match &op.kind {
            Kind::Get { result: Some(v) } => {
                observed.insert(v.clone());
            }
            Kind::Cas { expected, .. } => {
                observed.insert(expected.clone());
            }
            _ => {}
        }
    }
    let prepared = ops
        .iter()
        .map(|&op| {
            let mut op = op.clone();
            if op.ret.is_none() {
                match &mut op.kind {
                    Kind::Put { value } => {
                        if let Some(&r) = first_seen.get(value.as_str()) {
                            op.ret = Some(r.max(op.call));
                        }
                    }
                    Kind::Cas { new, succeeded, .. } => {
                        if let Some(&r) = first_seen.get(new.as_str()) {
                            op.ret = Some(r.max(op.call));
                            *succeeded = Some(true);
                        }
                    }
                    Kind::Get { .. } => {}
                }
            }
            op
        })
        .collect();
    (prepared, observed)
}

fn check_key(key: &str, original: &[&Operation], budget: u64) -> KeyResult {
    let (prepared, observed) = prepare(original);
    let ops: Vec<&Operation> = prepared.iter().collect();
    let ops = &ops[..];
    // Intern values. Every value that no get returned and no CAS expects is
    // the same state, UNOBS: the model tells states apart only through gets
    // and CAS compares, and none of those names such a value (and UNOBS
    // equals no expected value). This collapses the search.
    let mut steps = Vec::with_capacity(ops.len());
    let lookup = |s: &str, names: &mut Vec<String>, ids: &mut HashMap<String, Val>| -> Val {
        if !observed.contains(s) {
            return UNOBS;
        }
        if let Some(&v) = ids.get(s) {
            return v;
        }
        let v = names.len() as Val;
        names.push(s.to_string());
        ids.insert(s.to_string(), v);
        v
    };
    let mut vnames: Vec<String> = Vec::new();
    let mut vids: HashMap<String, Val> = HashMap::new();
    for op in ops {
        steps.push(match &op.kind {
            Kind::Put { value } => Step::Put(lookup(value, &mut vnames, &mut vids)),
            Kind::Get { result } => Step::Get(match result {
                Some(v) => lookup(v, &mut vnames, &mut vids),
                None => ABSENT,
            }),
            Kind::Cas {
                expected,
                new,
                succeeded,
            } => Step::Cas {
                expected: lookup(expected, &mut vnames, &mut vids),
                new: lookup(new, &mut vnames, &mut vids),
                succeeded: if op.ret.is_some() { *succeeded } else { None },
            },
        });
    }
    // Indeterminate puts of unobserved values all do the same thing (state
    // := UNOBS) and differ only in when they may start: if some linearization
    // uses k of them, one also uses the k called first (swap a later-called
    // one for an earlier unused one: it was called before that point too).
    // So they are taken strictly in call order: rank r only after 0..r.
    let mut optional: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].ret.is_none() && matches!(steps[i], Step::Put(UNOBS)))
        .collect();
    optional.sort_by_key(|&i| (ops[i].call, i));
    let mut rank = vec![usize::MAX; ops.len()];
    for (r, &i) in optional.iter().enumerate() {
        rank[i] = r;
    }
    let mut next_rank = 0usize;

    // Events, sorted: by time, calls before returns at equal times;
    // infinite returns last.
    let n = ops.len();
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, false, i));
        events.push((op.ret.unwrap_or(u64::MAX), true, i));
    }
    events.sort_unstable();
    let mut list = List {
        nodes: Vec::with_capacity(2 * n + 1),
        head: 0,
    };
    list.nodes.push(Node {
        op: NIL,
        is_call: false,
        ret: NIL,
        prev: NIL,
        next: NIL,
    });
    let mut call_node = vec![NIL; n];
    for (k, &(_, is_ret, i)) in events.iter().enumerate() {
        let idx = k + 1;
        list.nodes.push(Node {
            op: i,
            is_call: !is_ret,
            ret: NIL,
            prev: idx - 1,
            next: if k + 1 < events.len() { idx + 1 } else { NIL },
        });
        if is_ret {
            let c = call_node[i];
            list.nodes[c].ret = idx;
        } else {
            call_node[i] = idx;
        }
    }
    list.nodes[0].next = if events.is_empty() { NIL } else { 1 };

    let mut state: Val = ABSENT;
    let mut linearized = Bits::new(n);
    let mut memo: HashSet<(Bits, Val)> = HashSet::new();
    let mut stack: Vec<(usize, Val)> = Vec::new();
    let mut longest = 0usize;
    let mut stuck: Option<String> = None;
    let mut stuck_op: Option<usize> = None;
    let context = |stuck: Option<String>, op: Option<usize>| -> Option<String> {
        match (stuck, op) {
            (Some(s), Some(i)) => Some(s + &describe_context(ops, i)),
            (s, _) => s,
        }
    };
    let mut spent = 0u64;
    let mut entry = list.nodes[list.head].next;
    loop {
        spent += 1;
        if spent > budget {
            return KeyResult::OutOfBudget(KeyReport {
                key: key.to_string(),
                ops: n,
                longest_prefix: longest,
                stuck_at: context(stuck, stuck_op),
            });
        }
        if entry == NIL {
            return KeyResult::Ok;
        }
        let node = &list.nodes[entry];
        let i = node.op;
        if node.is_call {
            let in_turn = rank[i] == usize::MAX || rank[i] == next_rank;
            if let Some(next_state) = steps[i].apply(state).filter(|_| in_turn) {
                linearized.set(i);
                if memo.insert((linearized.clone(), next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    if rank[i] != usize::MAX {
                        next_rank += 1;
                    }
                    list.lift(entry);
                    entry = list.nodes[list.head].next;
                    continue;
                }
                linearized.clear(i);
            }
            entry = list.nodes[entry].next;
        } else {
            if ops[i].ret.is_none() {
                // Only infinite returns are left: every completed operation
                // is linearized; the indeterminate rest may never have
                // happened.
                return KeyResult::Ok;
            }
            if stack.len() >= longest && (stuck.is_none() || stack.len() > longest) {
                longest = stack.len();
                stuck = Some(describe_stuck(ops, i, state, &vnames, &list, entry));
                stuck_op = Some(i);
            }
            match stack.pop() {
                None => {
                    return KeyResult::Violation(KeyReport {
                        key: key.to_string(),
                        ops: n,
                        longest_prefix: longest,
                        stuck_at: context(stuck, stuck_op),
                    })
                }
                Some((call, prev_state)) => {
                    state = prev_state;
                    let op = list.nodes[call].op;
                    if rank[op] != usize::MAX {
                        next_rank -= 1;
                    }
                    linearized.clear(op);
                    list.unlift(call);
                    entry = list.nodes[call].next;
                }
            }
        }
    }
}

fn show_val(v: Val, names: &[String]) -> String {
    if v == ABSENT {
        "<absent>".to_string()
    } else if v == UNOBS {
        "<a value nobody observed>".to_string()
    } else {
        format!("{:?}", names[v as usize])
    }
}

/// The operation that had to return, the state it met, and the operations
/// still open before its return (the candidates that did not fit).
fn describe_stuck(
    ops: &[&Operation],
    i: usize,
    state: Val,
    names: &[String],
    list: &List,
    ret_node: usize,
) -> String {
    let t0 = ops.iter().map(|o| o.call).min().unwrap_or(0);
    let show = |o: &Operation| -> String {
        let when = match o.ret {
            Some(r) => format!(
                "[{:.3}s..{:.3}s]",
                (o.call - t0) as f64 / 1e9,
                (r - t0) as f64 / 1e9
            ),
            None => format!("[{:.3}s..?]", (o.call - t0) as f64 / 1e9),
        };
        format!("client {} {when} {:?}", o.client, o.kind)
    };
    let mut s = format!(
        "    state {} when this had to take effect:\n      {}\n    not yet linearized, called before that:",
        show_val(state, names),
        show(ops[i])
    );
    let mut n = list.nodes[list.head].next;
    let mut shown = 0;
    while n != NIL && n != ret_node {
        let node = &list.nodes[n];
        if node.is_call && node.op != i {
            if shown == 12 {
                s.push_str("\n      ...");
                break;
            }
            s.push_str("\n      ");
            s.push_str(&show(ops[node.op]));
            shown += 1;
        }
        n = node.next;
    }
    if shown == 0 {
        s.push_str(" (none)");
    }
    s
}

/// Where the value the stuck operation needed came from, and the writes
/// completed just before it was called (computed once, for the report).
fn describe_context(ops: &[&Operation], i: usize) -> String {
    let t0 = ops.iter().map(|o| o.call).min().unwrap_or(0);
    let show = |o: &Operation| -> String {
        let when = match o.ret {
            Some(r) => format!(
                "[{:.3}s..{:.3}s]",
                (o.call - t0) as f64 / 1e9,
                (r - t0) as f64 / 1e9
            ),
            None => format!("[{:.3}s..?]", (o.call - t0) as f64 / 1e9),
        };
        format!("client {} {when} {:?}", o.client, o.kind)
    };
    let mut s = String::new();
    let writes = |v: &str| -> Vec<&Operation> {
        ops.iter()
            .copied()
            .filter(|o| match &o.kind {
                Kind::Put { value } => value == v,
                Kind::Cas { new, .. } => new == v,
                Kind::Get { .. } => false,
            })
            .collect()
    };
    if let Kind::Get { result: Some(v) } | Kind::Cas { expected: v, .. } = &ops[i].kind {
        for w in writes(v) {
            s.push_str(&format!("\n    {v:?} was written by: {}", show(w)));
        }
    }
    let mut before: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|o| !matches!(o.kind, Kind::Get { .. }) && o.ret.is_some_and(|r| r < ops[i].call))
        .collect();
    before.sort_by_key(|o| o.ret);
    s.push_str("\n    last writes completed before it was called:");
    for w in before.iter().rev().take(3) {
        s.push_str("\n      ");
        s.push_str(&show(w));
    }
    s
}

// ---------------------------------------------------------------------------
// Unit tests: crafted histories
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a one-key history from `(client, call, ret, kind)`; `ret` 0 =
    /// indeterminate.
    fn h(ops: &[(u64, u64, u64, Kind)]) -> History {
        let mut hist = History::default();
        for (client, call, ret, kind) in ops {
            hist.push(Operation {
                client: *client,
                key: "k".into(),
                kind: kind.clone(),
                call: *call,
                ret: (*ret != 0).then_some(*ret),
            });
        }
        hist
    }
    fn put(v: &str) -> Kind {
        Kind::Put { value: v.into() }
    }
    fn get(v: Option<&str>) -> Kind {
        Kind::Get {
            result: v.map(Into::into),
        }
    }
    fn cas(e: &str, n: &str, ok: bool) -> Kind {
        Kind::Cas {
            expected: e.into(),
            new: n.into(),
            succeeded: Some(ok),
        }
    }

    #[track_caller]
    fn assert_lin(hist: &History) {
        let v = check(hist);
        assert!(v.is_linearizable(), "expected linearizable, got {v}");
    }
    #[track_caller]
    fn assert_violation(hist: &History) {
        let v = check(hist);
        assert!(v.is_violation(), "expected a violation, got {v}");
    }

    #[test]
    fn sequential_history_is_linearizable() {
        assert_lin(&h(&[
            (1, 1, 2, get(None)),
            (1, 3, 4, put("a")),
            (1, 5, 6, get(Some("a"))),
            (1, 7, 8, cas("a", "b", true)),
            (1, 9, 10, cas("a", "c", false)),
            (1, 11, 12, get(Some("b"))),
        ]));
    }

    #[test]
    fn stale_read_after_completed_write_is_rejected() {
        // put b completes before the read starts; the read returns a.
        assert_violation(&h(&[
            (1, 1, 2, put("a")),
            (1, 3, 4, put("b")),
            (2, 5, 6, get(Some("a"))),
        ]));
        // Stale read of "absent" after a completed write.
        assert_violation(&h(&[(1, 1, 2, put("a")), (2, 3, 4, get(None))]));
    }

    #[test]
    fn read_may_see_either_value_of_a_concurrent_write() {
        for seen in ["a", "b"] {
            assert_lin(&h(&[
                (1, 1, 2, put("a")),
                (1, 3, 10, put("b")),
                (2, 4, 6, get(Some(seen))),
            ]));
        }
    }

    #[test]
    fn reads_must_not_go_back_in_time() {
        // Two sequential reads during one concurrent write: new then old is
        // not linearizable (the write cannot be undone)...
        assert_violation(&h(&[
            (1, 1, 2, put("a")),
            (1, 3, 20, put("b")),
            (2, 4, 5, get(Some("b"))),
            (3, 6, 7, get(Some("a"))),
        ]));
        // ...old then new is.
        assert_lin(&h(&[
            (1, 1, 2, put("a")),
            (1, 3, 20, put("b")),
            (2, 4, 5, get(Some("a"))),
            (3, 6, 7, get(Some("b"))),
        ]));
    }

    #[test]
    fn lost_write_is_rejected() {
        // put b acknowledged, nothing else writes, yet a later read misses it.
        assert_violation(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 4, put("b")),
            (3, 10, 11, get(Some("a"))),
            (3, 12, 13, get(Some("a"))),
        ]));
    }

    #[test]
    fn duplicated_write_is_rejected() {
        // a, then b overwrote it, then a re-appears: put a applied twice.
        assert_violation(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 4, put("b")),
            (3, 5, 6, get(Some("b"))),
            (3, 7, 8, get(Some("a"))),
        ]));
        // Also when put a's ack was lost (indeterminate): it may take effect
        // late, but only once.
        assert_violation(&h(&[
            (1, 1, 0, put("a")),
            (3, 2, 3, get(Some("a"))),
            (2, 4, 5, put("b")),
            (3, 6, 7, get(Some("b"))),
            (3, 8, 9, get(Some("a"))),
        ]));
    }

    #[test]
    fn inconsistent_cas_is_rejected() {
        // CAS reported success although the value was not the expected one.
        assert_violation(&h(&[(1, 1, 2, put("a")), (2, 3, 4, cas("x", "b", true))]));
        // CAS reported failure although the value was the expected one and
        // nothing concurrent changed it.
        assert_violation(&h(&[(1, 1, 2, put("a")), (2, 3, 4, cas("a", "b", false))]));
        // Two CASes from the same expected value both succeeded.
        assert_violation(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 10, cas("a", "b", true)),
            (3, 3, 10, cas("a", "c", true)),
        ]));
        // A CAS on a missing key never succeeds (etcd's value compare).
        assert_violation(&h(&[(2, 3, 4, cas("", "b", true))]));
        // A successful CAS's write must be visible afterwards.
        assert_violation(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 4, cas("a", "b", true)),
            (3, 5, 6, get(Some("a"))),
        ]));
    }

    #[test]
    fn concurrent_cas_race_is_linearizable() {
        // Two concurrent CAS from a: exactly one wins; the reader sees the
        // winner's value.
        assert_lin(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 10, cas("a", "b", false)),
            (3, 4, 9, cas("a", "c", true)),
            (4, 11, 12, get(Some("c"))),
        ]));
        // A failed CAS is fine if a concurrent write changed the value first.
        assert_lin(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 10, cas("a", "b", false)),
            (3, 4, 5, put("z")),
            (4, 11, 12, get(Some("z"))),
        ]));
    }

    #[test]
    fn indeterminate_write_may_or_may_not_happen() {
        // It happened (seen later)...
        assert_lin(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 0, put("b")),
            (3, 50, 51, get(Some("b"))),
        ]));
        // ...it did not...
        assert_lin(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 0, put("b")),
            (3, 50, 51, get(Some("a"))),
        ]));
        // ...it happened long after its client gave up (a timed-out
        // proposal committed later), after another completed write.
        assert_lin(&h(&[
            (2, 3, 0, put("b")),
            (1, 10, 11, put("a")),
            (3, 12, 13, get(Some("a"))),
            (3, 20, 21, get(Some("b"))),
        ]));
        // But never before it was called.
        assert_violation(&h(&[(3, 1, 2, get(Some("b"))), (2, 3, 0, put("b"))]));
        // An indeterminate CAS may have succeeded (only if it could have).
        assert_lin(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 0, cas("a", "b", false)),
            (3, 10, 11, get(Some("b"))),
        ]));
        assert_violation(&h(&[
            (1, 1, 2, put("a")),
            (1, 3, 4, put("q")),
            (2, 5, 0, cas("a", "b", true)),
            (3, 10, 11, get(Some("b"))),
        ]));
        // A failed get observed nothing and is dropped.
        let hist = h(&[(1, 1, 2, put("a")), (3, 3, 0, get(Some("zzz")))]);
        assert_eq!(hist.ops.len(), 1);
        assert_lin(&hist);
    }

    #[test]
    fn unobserved_indeterminate_writes_can_explain_failed_cas_only_once() {
        // x and y were never read, but one of them may have landed between
        // put a and the failed CAS from a: accepted.
        assert_lin(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 0, put("x")),
            (1, 5, 6, cas("a", "b", false)),
        ]));
        // Without a lost write nothing explains the failed CAS.
        assert_violation(&h(&[(1, 1, 2, put("a")), (1, 5, 6, cas("a", "b", false))]));
        // A lost write called after the CAS returned cannot explain it.
        assert_violation(&h(&[
            (1, 1, 2, put("a")),
            (1, 5, 6, cas("a", "b", false)),
            (2, 7, 0, put("x")),
        ]));
        // One lost write explains one failed CAS, not two separated by a
        // rewrite of a (each write takes effect at most once).
        assert_violation(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 0, put("x")),
            (1, 5, 6, cas("a", "b", false)),
            (1, 7, 8, put("a")),
            (1, 9, 10, cas("a", "c", false)),
        ]));
        // Two lost writes explain both.
        assert_lin(&h(&[
            (1, 1, 2, put("a")),
            (2, 3, 0, put("x")),
            (3, 4, 0, put("y")),
            (1, 5, 6, cas("a", "b", false)),
            (1, 7, 8, put("a")),
            (1, 9, 10, cas("a", "c", false)),
        ]));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut hist = History::default();
        let mut add = |key: &str, call, ret, kind| {
            hist.push(Operation {
                client: 1,
                key: key.into(),
                kind,
                call,
                ret: Some(ret),
            })
        };
        add("x", 1, 2, put("a"));
        add("y", 3, 4, put("a"));
        add("x", 5, 6, get(Some("a")));
        add("y", 7, 8, get(None)); // stale on y only
        let v = check(&hist);
        match v {
            Verdict::Violation(r) => {
                assert_eq!(r.len(), 1);
                assert_eq!(r[0].key, "y");
            }
            other => panic!("expected a violation on y, got {other}"),
        }
    }

    #[test]
    fn equal_times_count_as_concurrent() {
        // The read's call and the write's return carry the same timestamp:
        // either order is possible.
        assert_lin(&h(&[(1, 1, 5, put("a")), (2, 5, 6, get(None))]));
    }

    /// A larger valid history: a simulated register with many clients,
    /// random overlapping operations that take effect at a random instant
    /// inside their interval, some with lost acks. Must be accepted quickly
    /// (memoization); flipping one read to a stale value must be rejected.
    #[test]
    fn simulated_concurrent_history() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // Each client runs sequentially; build intervals first, then pick a
        // linearization point inside each and apply in that order.
        struct Pending {
            client: u64,
            call: u64,
            ret: u64,
            point: u64,
            what: u8,
            lost_ack: bool,
        }
        let mut pend = Vec::new();
        for client in 0..8u64 {
            let mut t = next() % 50;
            for _ in 0..150 {
                let call = t + 1 + next() % 20;
                let ret = call + 1 + next() % 60;
                let point = call + next() % (ret - call + 1);
                pend.push(Pending {
                    client,
                    call,
                    ret,
                    point,
                    what: (next() % 3) as u8,
                    lost_ack: next() % 100 == 0,
                });
                t = ret;
            }
        }
        pend.sort_by_key(|p| (p.point, p.client));
        let mut state: Option<String> = None;
        let mut hist = History::default();
        let mut seq = 0;
        let mut last_read_idx = None;
        for p in &pend {
            seq += 1;
            let kind = match p.what {
                0 => {
                    let v = format!("v{seq}");
                    state = Some(v.clone());
                    Kind::Put { value: v }
                }
                1 => Kind::Get {
                    result: state.clone(),
                },
                _ => {
                    let expected = if next() % 2 == 0 {
                        state.clone().unwrap_or_default()
                    } else {
                        "nope".to_string()
                    };
                    let ok = state.as_deref() == Some(expected.as_str());
                    let new = format!("c{seq}");
                    if ok {
                        state = Some(new.clone());
                    }
                    Kind::Cas {
                        expected,
                        new,
                        succeeded: Some(ok),
                    }
                }
            };
            let is_get = matches!(kind, Kind::Get { .. });
            hist.push(Operation {
                client: p.client,
                key: "k".into(),
                kind,
                call: p.call,
                ret: (!(p.lost_ack && !is_get)).then_some(p.ret),
            });
            if is_get {
                last_read_idx = Some(hist.ops.len() - 1);
            }
        }
        assert!(hist.ops.len() > 1000);
        assert_lin(&hist);

        // Plant a stale read: the last read returns a value that was
        // overwritten well before it was called.
        let i = last_read_idx.unwrap();
        let call = hist.ops[i].call;
        let stale = hist
            .ops
            .iter()
            .filter(|o| o.ret.is_some_and(|r| r + 200 < call))
            .filter_map(|o| match &o.kind {
                Kind::Put { value } => Some(value.clone()),
                _ => None,
            })
            .next()
            .expect("an old put");
        hist.ops[i].kind = Kind::Get {
            result: Some(stale),
        };
        assert_violation(&hist);
    }
}
