//! `watch-latency` (etcd's tools/benchmark watch_latency.go): `--streams`
//! gRPC Watch streams over `--conns` connections, `--watchers-per-stream`
//! watches on each, all on one key prefix; then `--put-total` puts of that
//! key at `--put-rate` (open loop: put `i` is sent at `start + i / rate`).
//! Latency is from a put's send to each watcher's receipt of its event (the
//! put's number is in the first 8 bytes of the value), one sample per (put,
//! watcher). Events that never arrive (30 s after the last put) are errors.
//!
//! Memory per watcher: the server's RSS once every watch is created minus
//! before the streams were opened, divided by the watchers.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::timer::sleep;
use glommio::LocalExecutorBuilder;
use net::client::{Client, ClientConfig};
use net::pb::etcdserverpb::{
    watch_request::RequestUnion, PutRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};

use crate::keys::prefix_end;
use crate::report::{Recorder, Report};
use crate::run::read_cpu;
use crate::stream_cmd::{rss_kib, Extra, StreamGlobal, WatchLatencyArgs};

const WATCH: &str = "/etcdserverpb.Watch/Watch";
/// How long events may still come after the last put.
const DRAIN: Duration = Duration::from_secs(30);
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(g: &StreamGlobal, a: &WatchLatencyArgs) -> Result<(Report, Extra), String> {
    let (g, a) = (g.clone(), a.clone());
    LocalExecutorBuilder::default()
        .name("ferrobench-watch")
        .io_memory(256 << 10)
        .spawn(move || async move { run_local(&g, &a).await })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|e| e.to_string())?
}

async fn run_local(g: &StreamGlobal, a: &WatchLatencyArgs) -> Result<(Report, Extra), String> {
    let cfg = ClientConfig {
        connect_timeout: g.dial_timeout,
        ..ClientConfig::default()
    };
    let mut clients = Vec::new();
    for j in 0..g.conns {
        clients.push(
            Client::connect_with(&g.endpoints[j % g.endpoints.len()], cfg.clone())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let mut rng = fastrand::Rng::new();
    let key: Vec<u8> = (0..a.key_size).map(|_| rng.alphanumeric() as u8).collect();
    let watchers = a.streams * a.watchers_per_stream;
    let starts: Rc<RefCell<Vec<Option<Instant>>>> =
        Rc::new(RefCell::new(vec![
            None;
            usize::try_from(a.put_total).unwrap_or(0)
        ]));
    let rec = Rc::new(RefCell::new(Recorder::new()));
    let created = Rc::new(Cell::new(0usize));
    // Per stream, for the report when creation stalls.
    let per_stream: Vec<Rc<Cell<usize>>> = (0..a.streams).map(|_| Rc::new(Cell::new(0))).collect();
    let received = Rc::new(Cell::new(0u64));
    let last_event = Rc::new(Cell::new(None::<Instant>));
    let pid = g.server_pids.first().copied();
    let rss_before = pid.and_then(rss_kib);

    let mut tasks = Vec::new();
    for s in 0..a.streams {
        let client = &clients[s % clients.len()];
        let (mut tx, mut rx) = client
            .streaming(WATCH, false)
            .await
            .map_err(|e| format!("open watch stream: {e}"))?;
        for _ in 0..a.watchers_per_stream {
            tx.send(&WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: key.clone(),
                    range_end: prefix_end(&key),
                    prev_kv: a.prevkv,
                    ..Default::default()
                })),
            })
            .map_err(|e| format!("create watch: {e}"))?;
        }
        let mine = per_stream[s].clone();
        let (starts, rec, created, received, last_event) = (
            starts.clone(),
            rec.clone(),
            created.clone(),
            received.clone(),
            last_event.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            let _tx = tx; // the stream lives as long as this task
            loop {
                match rx.next::<WatchResponse>().await {
                    Ok(Some(r)) => {
                        if r.created {
                            created.set(created.get() + 1);
                            mine.set(mine.get() + 1);
                        }
                        if r.canceled {
                            rec.borrow_mut()
                                .err(format!("watch canceled: {}", r.cancel_reason));
                        }
                        let now = Instant::now();
                        for ev in &r.events {
                            let Some(kv) = &ev.kv else { continue };
                            let mut idx = [0u8; 8];
                            let n = kv.value.len().min(8);
                            idx[..n].copy_from_slice(&kv.value[..n]);
                            let idx = usize::try_from(u64::from_le_bytes(idx)).unwrap_or(0);
                            let start = starts.borrow().get(idx).copied().flatten();
                            match start {
                                Some(st) => rec.borrow_mut().ok(now.duration_since(st)),
                                None => rec.borrow_mut().err("event of an unknown put".into()),
                            }
                            received.set(received.get() + 1);
                        }
                        if !r.events.is_empty() {
                            last_event.set(Some(now));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        rec.borrow_mut().err(format!("watch stream: {e}"));
                        break;
                    }
                }
            }
        }));
    }
    let t0 = Instant::now();
    while created.get() < watchers {
        if t0.elapsed() > CREATE_TIMEOUT {
            return Err(format!(
                "only {} of {watchers} watches created in {CREATE_TIMEOUT:?}; {}",
                created.get(),
                stalled_streams(&per_stream, a.watchers_per_stream, clients.len())
            ));
        }
        sleep(Duration::from_millis(10)).await;
    }
    let create_time = t0.elapsed();
    // Let the server settle (allocations freed, queues drained).
    sleep(Duration::from_millis(500)).await;
    let rss_watchers = pid.and_then(rss_kib);

    let cpu_before = read_cpu(&g.server_pids);
    let start = Instant::now();
    let putter = clients[0].clone();
    let val_size = a.val_size.max(8);
    let mut puts = Vec::new();
    for i in 0..a.put_total {
        let due = start + Duration::from_secs_f64(i as f64 / a.put_rate);
        let now = Instant::now();
        if due > now {
            sleep(due - now).await;
        }
        let mut value = vec![0u8; val_size];
        value[..8].copy_from_slice(&i.to_le_bytes());
        if let Some(slot) = starts.borrow_mut().get_mut(usize::try_from(i).unwrap_or(0)) {
            *slot = Some(Instant::now());
        }
        let (c, rec, key) = (putter.clone(), rec.clone(), key.clone());
        puts.push(glommio::spawn_local(async move {
            if let Err(e) = c
                .put(&PutRequest {
                    key,
                    value,
                    ..Default::default()
                })
                .await
            {
                rec.borrow_mut().err(format!("put: {e}"));
            }
        }));
    }
    for p in puts {
        p.await;
    }
    let want = a.put_total * watchers as u64;
    let deadline = Instant::now() + DRAIN;
    while received.get() < want && Instant::now() < deadline {
        sleep(Duration::from_millis(5)).await;
    }
    let cpu_after = read_cpu(&g.server_pids);
    let rss_after = pid.and_then(rss_kib);
    let missing = want.saturating_sub(received.get());
    let mut rec = std::mem::take(&mut *rec.borrow_mut());
    for _ in 0..missing {
        rec.err("event never received".into());
    }
    let end = last_event.get().unwrap_or(start);
    let diff = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
    let report = Report {
        cmd: "watch-latency".into(),
        total: want,
        clients: watchers,
        conns: g.conns,
        executors: 1,
        duration: end.saturating_duration_since(start),
        rec,
        cpu: crate::report::CpuUse {
            client_us: diff(cpu_before.client_us, cpu_after.client_us),
            server_us: diff(cpu_before.server_us, cpu_after.server_us),
        },
        rate: None,
    };
    let mut extra = Extra::default();
    extra.lines.push(format!(
        "watchers {watchers} ({} streams x {}), {} puts at {}/s; all watches created in {:.2?}",
        a.streams, a.watchers_per_stream, a.put_total, a.put_rate, create_time
    ));
    extra
        .json
        .push(("watchers".into(), serde_json::json!(watchers)));
    if let Some(us) = report.cpu.server_us {
        let per_put = us / a.put_total.max(1) as f64;
        extra.lines.push(format!(
            "server CPU per put (all its events): {per_put:.0} µs"
        ));
        extra
            .json
            .push(("server_cpu_us_per_put".into(), serde_json::json!(per_put)));
    }
    if let (Some(b), Some(w)) = (rss_before, rss_watchers) {
        let per = (w as f64 - b as f64) * 1024.0 / watchers as f64;
        extra.lines.push(format!(
            "server RSS: {b} KiB before the watches, {w} KiB with them, {} KiB after the puts; \
             {per:.0} bytes per watcher",
            rss_after.unwrap_or(0)
        ));
        extra.json.push((
            "server_rss_bytes_per_watcher".into(),
            serde_json::json!(per),
        ));
        extra
            .json
            .push(("server_rss_kib_before".into(), serde_json::json!(b)));
        extra
            .json
            .push(("server_rss_kib_watchers".into(), serde_json::json!(w)));
    }
    drop(tasks);
    Ok((report, extra))
}

/// Which streams (and on which connection) have not seen all their
/// watches created: what to look at when creation stalls.
fn stalled_streams(per_stream: &[Rc<Cell<usize>>], want: usize, conns: usize) -> String {
    let stalled: Vec<String> = per_stream
        .iter()
        .enumerate()
        .filter(|(_, c)| c.get() < want)
        .map(|(i, c)| format!("stream {i} (conn {}): {}", i % conns.max(1), c.get()))
        .collect();
    format!(
        "{} of {} streams incomplete: {}",
        stalled.len(),
        per_stream.len(),
        stalled[..stalled.len().min(12)].join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_streams_names_the_incomplete_ones() {
        let counts: Vec<Rc<Cell<usize>>> = [2, 1, 0]
            .into_iter()
            .map(|n| Rc::new(Cell::new(n)))
            .collect();
        assert_eq!(
            stalled_streams(&counts, 2, 2),
            "2 of 3 streams incomplete: stream 1 (conn 1): 1, stream 2 (conn 0): 0"
        );
    }
}
