//! `lease-keepalive` (etcd's tools/benchmark lease.go): every client grants
//! a lease (TTL 100 s), then the clients share `--total` keep-alives. One
//! keep-alive is what clientv3's `KeepAliveOnce` does, which etcd's tool
//! calls: open a LeaseKeepAlive stream, send the lease ID, read one answer
//! (a TTL of 0 or less would mean the lease is gone: an error), cancel the
//! stream. Latency is timed around that.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use glommio::LocalExecutorBuilder;
use net::client::{Client, ClientConfig};
use net::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
};

use crate::report::{CpuUse, Recorder, Report};
use crate::run::read_cpu;
use crate::stream_cmd::{Extra, LeaseKeepaliveArgs, StreamGlobal};

const GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
const KEEPALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";

pub fn run(g: &StreamGlobal, a: &LeaseKeepaliveArgs) -> Result<(Report, Extra), String> {
    let (g, a) = (g.clone(), a.clone());
    LocalExecutorBuilder::default()
        .name("ferrobench-lease")
        .io_memory(256 << 10)
        .spawn(move || async move { run_local(&g, &a).await })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|e| e.to_string())?
}

/// One `KeepAliveOnce`.
async fn keep_alive_once(c: &Client, id: i64) -> Result<(), String> {
    let (mut tx, mut rx) = c
        .streaming(KEEPALIVE, false)
        .await
        .map_err(|e| e.to_string())?;
    tx.send(&LeaseKeepAliveRequest { id })
        .map_err(|e| e.to_string())?;
    match rx.next::<LeaseKeepAliveResponse>().await {
        Ok(Some(r)) if r.ttl > 0 => Ok(()),
        Ok(Some(r)) => Err(format!("lease {:x} not found (ttl {})", r.id, r.ttl)),
        Ok(None) => Err("keep-alive stream ended without an answer".into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn run_local(g: &StreamGlobal, a: &LeaseKeepaliveArgs) -> Result<(Report, Extra), String> {
    let cfg = ClientConfig {
        connect_timeout: g.dial_timeout,
        ..ClientConfig::default()
    };
    let mut conns = Vec::new();
    for j in 0..g.conns {
        conns.push(
            Client::connect_with(&g.endpoints[j % g.endpoints.len()], cfg.clone())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    // Client i uses connection i % conns (etcd's mustCreateClients).
    let mut leases = Vec::new();
    for i in 0..g.clients {
        let c = conns[i % conns.len()].clone();
        let r: LeaseGrantResponse = c
            .unary(GRANT, &LeaseGrantRequest { ttl: 100, id: 0 })
            .await
            .map_err(|e| format!("lease grant: {e}"))?;
        leases.push((c, r.id));
    }
    let rec = Rc::new(RefCell::new(Recorder::new()));
    let next = Rc::new(Cell::new(0u64));
    let cpu_before = read_cpu(&g.server_pids);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, id) in leases {
        let (rec, next, total) = (rec.clone(), next.clone(), a.total);
        tasks.push(glommio::spawn_local(async move {
            loop {
                let n = next.get();
                if n >= total {
                    break;
                }
                next.set(n + 1);
                let st = Instant::now();
                match keep_alive_once(&c, id).await {
                    Ok(()) => rec.borrow_mut().ok(st.elapsed()),
                    Err(e) => rec.borrow_mut().err(e),
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let duration = start.elapsed();
    let cpu_after = read_cpu(&g.server_pids);
    let rec = std::mem::take(&mut *rec.borrow_mut());
    let diff = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
    let report = Report {
        cmd: "lease-keepalive".into(),
        total: a.total,
        clients: g.clients,
        conns: g.conns,
        executors: 1,
        duration,
        rec,
        cpu: CpuUse {
            client_us: diff(cpu_before.client_us, cpu_after.client_us),
            server_us: diff(cpu_before.server_us, cpu_after.server_us),
        },
        rate: None,
    };
    Ok((report, Extra::default()))
}
