//! Black-box compatibility suite: the real etcdctl 3.5.1 must see no
//! difference between ferrocd and real etcd 3.5.1 for the KV API.
//!
//! One integration-test binary (linking is slow); modules:
//! - `harness`: locate etcd/etcdctl, start/stop servers, run etcdctl;
//! - `mask`: what legitimately differs (IDs, raft term, etcdctl log noise);
//! - `compare`: scenario runner (etcd vs subject, step by step);
//! - scenario modules: `kv_compare`, `txn_compare`, `errors`, `defaults`,
//!   `lifecycle` (restart/stop), and `selfcheck` (etcd vs etcd, validates
//!   the masking).
//! - `watchck` (+ `watchck.py`): the watch-guarantee checker over random
//!   histories with reconnects and compactions (python grpcio watchers);
//!   `leader_change` (+ `require_leader.py`): lease TTL across leader
//!   changes and require-leader watches on 3 members.
//!
//! `FERROCD_IT_SUBJECT=etcd cargo nextest run -p tools --test it` runs every
//! comparison etcd-vs-etcd (harness validation without ferrocd).

mod cluster;
mod compare;
mod crash;
mod defaults;
mod defrag;
mod errors;
mod faultcluster;
mod harness;
mod http;
mod kv_compare;
mod leader_change;
mod lease;
mod lifecycle;
mod linearizability;
mod linfault;
mod lock;
mod mask;
mod membership;
mod netfault;
mod partition;
mod quota;
mod selfcheck;
mod txn_compare;
mod watch;
mod watchck;
