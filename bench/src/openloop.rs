//! Open-loop pacing (`--rate R`) with coordinated-omission correction.
//!
//! A closed loop (etcd's benchmark, and ours without `--rate`) sends the
//! next request when the previous one returns, and times it from the send.
//! When the server stalls, the requests that *would* have been sent during
//! the stall are simply not sent, so their waiting never shows: one slow
//! sample instead of hundreds ("coordinated omission").
//!
//! Here request `n` (the run-wide request number every client takes from
//! the shared counter) is *due* at `start + n / R`, fixed before the run
//! starts. A client that takes number `n` waits until it is due, sends it,
//! and its latency is `completion - due`. If every client is busy when `n`
//! falls due, `n` waits in the queue until a client is free; that wait is
//! part of its latency, as it would be for a real caller arriving at that
//! time. Invariants:
//!
//! * Due times are computed from `n`, never accumulated, so there is no
//!   drift: `due(n) = start + floor(n * 1e9 / R)` ns, exactly.
//! * A request is never sent before it is due.
//! * Latency is measured from the due time even when the send is late, so
//!   it is never less than the closed-loop latency of the same request.
//!
//! Achieved throughput can be below `R` (the server or the clients cannot
//! keep up); the report shows both, and then the latency grows with the
//! run's length, which is the honest answer for an overloaded server.

use std::time::{Duration, Instant};

/// The fixed schedule of an open-loop run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Requests per second, positive and finite.
    rate: f64,
}

impl Schedule {
    /// `rate` must be positive and finite (`args` checks `--rate`); other
    /// values are replaced by 1 request per second rather than panicking.
    pub fn new(rate: f64) -> Schedule {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        Schedule { rate }
    }

    /// How long after the start request `n` is due.
    pub fn offset(&self, n: u64) -> Duration {
        // n * 1e9 / rate in f64 loses nothing below 2^53 ns (104 days).
        let ns = (n as f64) * 1e9 / self.rate;
        Duration::from_nanos(ns.min(u64::MAX as f64) as u64)
    }

    /// When request `n` is due.
    pub fn due(&self, start: Instant, n: u64) -> Instant {
        start + self.offset(n)
    }
}

/// The time request `n` counts from: with a schedule, waits until it is due
/// and returns the due time (even if that has long passed); without one,
/// returns now (closed loop).
pub async fn begin(schedule: Option<(Schedule, Instant)>, n: u64) -> Instant {
    let Some((s, start)) = schedule else {
        return Instant::now();
    };
    let due = s.due(start, n);
    let now = Instant::now();
    if due > now {
        glommio::timer::sleep(due - now).await;
    }
    due
}

/// The latency of a request that counts from `t0` and finished at `done`:
/// zero rather than negative if the clock was read out of order.
pub fn latency(t0: Instant, done: Instant) -> Duration {
    done.saturating_duration_since(t0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_follow_the_rate_without_drift() {
        let s = Schedule::new(5000.0);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_micros(200));
        assert_eq!(s.offset(5000), Duration::from_secs(1));
        // After ten million requests still exact: computed, not summed.
        assert_eq!(s.offset(10_000_000), Duration::from_secs(2000));
        // A rate that is not a divisor of 1e9: 3/s -> 333,333,333 ns each,
        // and request 3 is exactly 1 s (no accumulated rounding).
        let t = Schedule::new(3.0);
        assert_eq!(t.offset(1), Duration::from_nanos(333_333_333));
        assert_eq!(t.offset(3), Duration::from_secs(1));
        // Strictly increasing.
        let s = Schedule::new(123_456.7);
        let mut last = Duration::ZERO;
        for n in 1..10_000 {
            let o = s.offset(n);
            assert!(o > last, "offset({n}) = {o:?} <= {last:?}");
            last = o;
        }
    }

    #[test]
    fn invalid_rates_do_not_panic() {
        for r in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Schedule::new(r), Schedule::new(1.0));
        }
    }

    #[test]
    fn begin_waits_until_due_and_counts_from_the_due_time() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 << 10)
            .spawn(|| async {
                let s = Schedule::new(100.0); // one every 10 ms
                let start = Instant::now();
                // Request 5 is due at +50 ms: begin returns no earlier and
                // returns the due time itself.
                let t0 = begin(Some((s, start)), 5).await;
                assert_eq!(t0, start + Duration::from_millis(50));
                assert!(Instant::now() >= t0);
                // A request already overdue is not delayed, and still
                // counts from its (past) due time.
                let before = Instant::now();
                let t1 = begin(Some((s, start)), 1).await;
                assert_eq!(t1, start + Duration::from_millis(10));
                assert!(t1 < before);
                // Closed loop: now.
                let t2 = begin(None, 1_000_000).await;
                assert!(t2 >= before);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn latency_never_goes_negative() {
        let a = Instant::now();
        let b = a + Duration::from_millis(3);
        assert_eq!(latency(a, b), Duration::from_millis(3));
        assert_eq!(latency(b, a), Duration::ZERO);
    }
}
