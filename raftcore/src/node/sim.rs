//! A simulated network for in-process clusters, in the style of raft-rs's
//! test harness (`Network` with `cut`, `isolate`, `drop`): every Raft
//! message between two members passes `SimNet::fate`, which drops it (a cut
//! link, an isolated member, a random loss) or delivers it after a random
//! delay. Each delayed message is its own task, so messages overtake each
//! other: the network also reorders.
//!
//! The chaos test below runs five members under such a network with a
//! nemesis that isolates members (the leader too), cuts links and splits
//! the cluster, while clients put, compare-and-swap and read linearizably
//! through random members. Afterwards the members must converge, and the
//! history must be explained by the one sequence of revisions every member
//! holds:
//! * every acknowledged write is in it, at the revision it was acknowledged
//!   with, and no value appears twice (no write applied twice) or was never
//!   sent (nothing invented);
//! * a linearizable read returns what that sequence holds at the read's
//!   revision, and that revision is at least that of every write
//!   acknowledged before the read was sent (no stale read);
//! * a compare-and-swap succeeded exactly when its compare held at the
//!   revision before it.
//!
//! Checked to fail: with `Node::range` skipping its read barrier (reads
//! served from local state), it reports a stale read in every run tried.
//! `FERROCD_SIM_SEED` replays a run (the seed is printed).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::timer::sleep;

use super::{Node, NodeConfig};
use crate::log_store::MemLog;

/// xorshift64*: a small seeded generator, so a failing run can be replayed.
#[derive(Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default)]
struct Rules {
    /// Members cut off from everyone.
    isolated: HashSet<u64>,
    /// Directed links that drop everything.
    cut: HashSet<(u64, u64)>,
    /// Messages lost at random, per thousand.
    drop_per_mille: u64,
    /// Random delay bounds (inclusive), in microseconds.
    delay_us: (u64, u64),
    dropped: u64,
    delivered: u64,
}

/// What happens to one message.
enum Fate {
    Drop,
    After(Duration),
}

/// The rules of the simulated network; shared by the delivery tasks.
pub(crate) struct SimNet {
    rules: RefCell<Rules>,
    rng: RefCell<Rng>,
}

impl SimNet {
    pub(crate) fn new(seed: u64) -> Rc<SimNet> {
        Rc::new(SimNet {
            rules: RefCell::default(),
            rng: RefCell::new(Rng::new(seed)),
        })
    }

    pub(crate) fn isolate(&self, id: u64) {
        self.rules.borrow_mut().isolated.insert(id);
    }

    /// Cuts both directions between `a` and `b`.
    pub(crate) fn cut(&self, a: u64, b: u64) {
        let mut r = self.rules.borrow_mut();
        r.cut.insert((a, b));
        r.cut.insert((b, a));
    }

    /// Splits the members into `side` and the rest.
    pub(crate) fn split(&self, side: &[u64], all: &[u64]) {
        for &a in side {
            for &b in all.iter().filter(|b| !side.contains(b)) {
                self.cut(a, b);
            }
        }
    }

    /// Removes every cut and isolation (loss and delay stay).
    pub(crate) fn heal(&self) {
        let mut r = self.rules.borrow_mut();
        r.isolated.clear();
        r.cut.clear();
    }

    pub(crate) fn set_loss(&self, per_mille: u64, delay_us: (u64, u64)) {
        let mut r = self.rules.borrow_mut();
        r.drop_per_mille = per_mille;
        r.delay_us = delay_us;
    }

    fn blocked(&self, from: u64, to: u64) -> bool {
        let r = self.rules.borrow();
        r.isolated.contains(&from) || r.isolated.contains(&to) || r.cut.contains(&(from, to))
    }

    fn fate(&self, from: u64, to: u64) -> Fate {
        if self.blocked(from, to) {
            self.rules.borrow_mut().dropped += 1;
            return Fate::Drop;
        }
        let mut rng = self.rng.borrow_mut();
        let mut r = self.rules.borrow_mut();
        if rng.below(1000) < r.drop_per_mille {
            r.dropped += 1;
            return Fate::Drop;
        }
        let (lo, hi) = r.delay_us;
        Fate::After(Duration::from_micros(lo + rng.below(hi - lo + 1)))
    }

    /// (delivered, dropped) so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let r = self.rules.borrow();
        (r.delivered, r.dropped)
    }
}

/// Starts one member per id (10 ms heartbeat, `tweak` for anything else)
/// on the current executor, every message passing `net`.
pub(crate) fn start(
    ids: &'static [u64],
    net: Rc<SimNet>,
    tweak: impl Fn(&mut NodeConfig),
) -> Vec<Arc<Node>> {
    let mut nodes = Vec::new();
    for &id in ids {
        let mut cfg = NodeConfig::new(1, id);
        cfg.voters = ids.to_vec();
        cfg.heartbeat = Duration::from_millis(10);
        cfg.request_timeout = Duration::from_secs(3);
        tweak(&mut cfg);
        let log = crate::wal_log::bootstrap_log(ids).expect("bootstrap log");
        let (node, lp) = Node::start(cfg, log).expect("start member");
        glommio::spawn_local(lp.run(MemLog::default())).detach();
        nodes.push(node);
    }
    for (i, n) in nodes.iter().enumerate() {
        let out = n.take_outbound().expect("outbound queue");
        let peers = nodes.clone();
        let net = net.clone();
        let from = ids[i];
        glommio::spawn_local(async move {
            while let Ok((to, m)) = out.recv().await {
                let Some(p) = ids.iter().position(|x| *x == to) else {
                    continue;
                };
                match net.fate(from, to) {
                    Fate::Drop => {}
                    Fate::After(d) => {
                        let peer = peers[p].clone();
                        let net = net.clone();
                        glommio::spawn_local(async move {
                            sleep(d).await;
                            // A link cut while the message was in flight
                            // loses it.
                            if net.blocked(from, to) {
                                net.rules.borrow_mut().dropped += 1;
                                return;
                            }
                            net.rules.borrow_mut().delivered += 1;
                            let _ = peer.step(&m).await;
                        })
                        .detach();
                    }
                }
            }
        })
        .detach();
    }
    for n in &nodes {
        for &id in ids {
            n.peer_directory().note_up(id);
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::mvcc::{
        Compare, CompareResult, CompareTarget, PutRequest, RangeRequest, RequestOp, TxnRequest,
    };
    use glommio::LocalExecutorBuilder;

    const IDS: &[u64] = &[1, 2, 3, 4, 5];
    const KEYS: u64 = 3;

    #[derive(Debug, Clone)]
    enum Op {
        /// An acknowledged put of a unique value, with its revision.
        Put { key: u64, value: String, rev: i64 },
        /// A linearizable get: what it saw (value, mod revision) at `rev`.
        Get {
            key: u64,
            seen: Option<(String, i64)>,
            rev: i64,
        },
        /// An acknowledged compare-and-swap: `mod_revision(key) == expect`
        /// then put `value`; `rev` is the new revision if it succeeded, else
        /// the revision the compare was judged at.
        Cas {
            key: u64,
            expect: i64,
            value: String,
            ok: bool,
            rev: i64,
        },
    }

    #[derive(Debug, Clone)]
    struct Done {
        /// When the call was sent and when its answer came back.
        sent: Instant,
        acked: Instant,
        op: Op,
    }

    fn key(k: u64) -> Vec<u8> {
        format!("k{k}").into_bytes()
    }

    fn get(k: u64, revision: i64) -> RangeRequest {
        RangeRequest {
            key: key(k),
            revision,
            ..Default::default()
        }
    }

    fn put(k: u64, v: &str) -> PutRequest {
        PutRequest {
            key: key(k),
            value: v.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn seed() -> u64 {
        std::env::var("FERROCD_SIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(7)
            })
    }

    /// One client: random operations through random members until `until`.
    /// Only answered calls are recorded; failed ones (timeouts, no leader)
    /// may or may not have taken effect, which the checks allow for.
    async fn client(
        c: usize,
        nodes: Vec<Arc<Node>>,
        mut rng: Rng,
        until: Instant,
        sent_values: Rc<RefCell<HashSet<String>>>,
    ) -> Vec<Done> {
        let mut done = Vec::new();
        let mut n = 0u64;
        // The last mod revision this client saw per key, for its CAS.
        let mut seen_mod: HashMap<u64, i64> = HashMap::new();
        while Instant::now() < until {
            let node = &nodes[rng.below(nodes.len() as u64) as usize];
            let k = rng.below(KEYS);
            let sent = Instant::now();
            match rng.below(10) {
                0..=3 => {
                    n += 1;
                    let value = format!("c{c}-{n}");
                    sent_values.borrow_mut().insert(value.clone());
                    if let Ok(r) = node.put(put(k, &value)).await {
                        done.push(Done {
                            sent,
                            acked: Instant::now(),
                            op: Op::Put {
                                key: k,
                                value,
                                rev: r.revision,
                            },
                        });
                    }
                }
                4..=6 => {
                    if let Ok(r) = node.range(&get(k, 0), false).await {
                        let seen = r.kvs.first().map(|kv| {
                            (
                                String::from_utf8_lossy(&kv.value).into_owned(),
                                kv.mod_revision,
                            )
                        });
                        seen_mod.insert(k, seen.as_ref().map_or(0, |s| s.1));
                        done.push(Done {
                            sent,
                            acked: Instant::now(),
                            op: Op::Get {
                                key: k,
                                seen,
                                rev: r.revision,
                            },
                        });
                    }
                }
                _ => {
                    n += 1;
                    let value = format!("c{c}-{n}");
                    sent_values.borrow_mut().insert(value.clone());
                    let expect = seen_mod.get(&k).copied().unwrap_or(0);
                    let txn = TxnRequest {
                        compare: vec![Compare {
                            result: CompareResult::Equal,
                            target: CompareTarget::Mod(expect),
                            key: key(k),
                            range_end: Vec::new(),
                        }],
                        success: vec![RequestOp::Put(put(k, &value))],
                        failure: vec![],
                    };
                    if let Ok(r) = node.txn(txn, false).await {
                        if r.succeeded {
                            seen_mod.insert(k, r.revision);
                        }
                        done.push(Done {
                            sent,
                            acked: Instant::now(),
                            op: Op::Cas {
                                key: k,
                                expect,
                                value,
                                ok: r.succeeded,
                                rev: r.revision,
                            },
                        });
                    }
                }
            }
        }
        done
    }

    /// The nemesis: every 150-400 ms heal, or isolate a member (the leader
    /// half of the time), or cut a link, or split 2/3.
    async fn nemesis(nodes: Vec<Arc<Node>>, net: Rc<SimNet>, mut rng: Rng, until: Instant) -> u32 {
        let mut faults = 0;
        while Instant::now() < until {
            sleep(Duration::from_millis(150 + rng.below(250))).await;
            net.heal();
            match rng.below(5) {
                0 => {}
                1 => {
                    let leader = nodes[0].leader();
                    let id = if leader != 0 && rng.below(2) == 0 {
                        leader
                    } else {
                        IDS[rng.below(IDS.len() as u64) as usize]
                    };
                    net.isolate(id);
                    faults += 1;
                }
                2 => {
                    let a = IDS[rng.below(5) as usize];
                    let b = IDS[rng.below(5) as usize];
                    if a != b {
                        net.cut(a, b);
                        faults += 1;
                    }
                }
                _ => {
                    let mut side: Vec<u64> = Vec::new();
                    while side.len() < 2 {
                        let id = IDS[rng.below(5) as usize];
                        if !side.contains(&id) {
                            side.push(id);
                        }
                    }
                    net.split(&side, IDS);
                    faults += 1;
                }
            }
        }
        net.heal();
        faults
    }

    /// Every write in the members' common history, per key: revision →
    /// value, read back revision by revision from one member.
    fn history(node: &Node, current: i64) -> BTreeMap<(u64, i64), String> {
        let mut h = BTreeMap::new();
        for k in 0..KEYS {
            let mut last = 0;
            for rev in 1..=current {
                let r = node.read_store().unwrap().range(&get(k, rev)).unwrap();
                if let Some(kv) = r.kvs.first() {
                    if kv.mod_revision != last {
                        last = kv.mod_revision;
                        h.insert(
                            (k, kv.mod_revision),
                            String::from_utf8_lossy(&kv.value).into_owned(),
                        );
                    }
                }
            }
        }
        h
    }

    /// The value of `k` at revision `rev`: its latest write at or below it.
    fn value_at(h: &BTreeMap<(u64, i64), String>, k: u64, rev: i64) -> Option<(String, i64)> {
        h.range((k, 0)..=(k, rev))
            .next_back()
            .map(|((_, r), v)| (v.clone(), *r))
    }

    #[test]
    fn five_members_stay_linearizable_under_a_lossy_reordering_partitioned_network() {
        let seed = seed();
        eprintln!("FERROCD_SIM_SEED={seed}");
        LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(move || async move {
                let net = SimNet::new(seed);
                // Up to 6 ms of delay against a 10 ms heartbeat: messages
                // overtake each other all the time; 3% are lost.
                net.set_loss(30, (0, 6000));
                let nodes = start(IDS, net.clone(), |_| {});
                let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
                let until = Instant::now() + Duration::from_secs(4);
                let sent_values: Rc<RefCell<HashSet<String>>> = Rc::default();
                let mut tasks = Vec::new();
                for c in 0..6 {
                    tasks.push(glommio::spawn_local(client(
                        c,
                        nodes.clone(),
                        Rng::new(rng.next()),
                        until,
                        sent_values.clone(),
                    )));
                }
                let faults =
                    glommio::spawn_local(nemesis(nodes.clone(), net.clone(), Rng::new(rng.next()), until))
                        .await;
                let mut done = Vec::new();
                for t in tasks {
                    done.extend(t.await);
                }
                // Healed, loss off: the members converge.
                net.set_loss(0, (0, 500));
                let mut converged = None;
                for _ in 0..1000 {
                    let revs: Vec<i64> = nodes.iter().map(|n| n.current_revision().unwrap()).collect();
                    let applied: Vec<u64> = nodes.iter().map(|n| n.applied_index()).collect();
                    if revs.iter().all(|r| *r == revs[0]) && applied.iter().all(|a| *a == applied[0]) {
                        converged = Some(revs[0]);
                        break;
                    }
                    sleep(Duration::from_millis(10)).await;
                }
                let current = converged.expect("members converge after healing");
                let (delivered, dropped) = net.counts();
                let puts = done.iter().filter(|d| matches!(d.op, Op::Put { .. })).count();
                let gets = done.iter().filter(|d| matches!(d.op, Op::Get { .. })).count();
                let cas = done.iter().filter(|d| matches!(d.op, Op::Cas { .. })).count();
                eprintln!(
                    "faults {faults}, messages delivered {delivered} dropped {dropped}, \
                     answered puts {puts} gets {gets} cas {cas}, revision {current}"
                );
                assert!(faults > 0 && puts > 0 && gets > 0 && cas > 0, "the run did something");

                let h = history(&nodes[0], current);
                for n in &nodes[1..] {
                    assert_eq!(history(n, current), h, "member {} holds another history", n.config().member_id);
                }
                // One write per revision, each value written once and sent by
                // a client.
                let mut by_value: HashMap<&str, (u64, i64)> = HashMap::new();
                let mut revs = HashSet::new();
                for ((k, r), v) in &h {
                    assert!(revs.insert(*r), "two writes at revision {r}");
                    assert!(sent_values.borrow().contains(v), "value {v} was never sent");
                    if let Some(prev) = by_value.insert(v.as_str(), (*k, *r)) {
                        panic!("value {v} applied twice: {prev:?} and {:?}", (k, r));
                    }
                }
                // Acknowledged writes present at their revisions.
                for d in &done {
                    match &d.op {
                        Op::Put { key, value, rev } | Op::Cas { key, value, ok: true, rev, .. } => {
                            assert_eq!(
                                by_value.get(value.as_str()),
                                Some(&(*key, *rev)),
                                "acknowledged write {value} at revision {rev}"
                            );
                        }
                        _ => {}
                    }
                }
                // Reads and failed compares against the history, and no read
                // older than a write acknowledged before it was sent.
                let mut acks: Vec<(Instant, i64)> = done
                    .iter()
                    .filter_map(|d| match &d.op {
                        Op::Put { rev, .. } | Op::Cas { rev, ok: true, .. } => Some((d.acked, *rev)),
                        _ => None,
                    })
                    .collect();
                acks.sort();
                let max_acked_before = |t: Instant| {
                    acks.iter()
                        .take_while(|(at, _)| *at < t)
                        .map(|(_, r)| *r)
                        .max()
                        .unwrap_or(0)
                };
                for d in &done {
                    match &d.op {
                        Op::Get { key, seen, rev } => {
                            let floor = max_acked_before(d.sent);
                            assert!(
                                *rev >= floor,
                                "stale read of k{key}: revision {rev}, but revision {floor} was acknowledged before it was sent"
                            );
                            assert_eq!(&value_at(&h, *key, *rev), seen, "read of k{key} at revision {rev}");
                        }
                        Op::Cas { key, expect, ok, rev, .. } => {
                            let before = if *ok { rev - 1 } else { *rev };
                            let m = value_at(&h, *key, before).map_or(0, |v| v.1);
                            assert_eq!(
                                m == *expect,
                                *ok,
                                "CAS on k{key} expecting mod {expect}: judged at revision {before} where it is {m}"
                            );
                            if !*ok {
                                let floor = max_acked_before(d.sent);
                                assert!(*rev >= floor, "failed CAS judged at stale revision {rev} < {floor}");
                            }
                        }
                        Op::Put { .. } => {}
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
