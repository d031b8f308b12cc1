//! CPU time of processes from `/proc/PID/stat` (utime + stime of the whole
//! thread group), in µs.
//!
//! Resolution is one clock tick (`CLK_TCK`, 100 Hz here: 10 ms), so a run
//! should last long enough for the per-request figure to mean something:
//! at 100 µs/request, 2000 requests are 20 ticks (±5%).

use std::io;

/// utime + stime in clock ticks, from the text of `/proc/PID/stat`.
///
/// Fields are counted after the last `)`: `comm` (field 2) is in
/// parentheses and may itself contain spaces and `)`. utime and stime are
/// fields 14 and 15 (proc(5)).
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // After comm: state is field 3, so utime (14) is the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (sysconf `_SC_CLK_TCK`, via rustix so no unsafe).
pub fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// CPU time of a process in µs; `pid` `None` is this process.
pub fn process_cpu_us(pid: Option<u32>) -> io::Result<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(&path)?;
    let ticks = parse_stat_ticks(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: unexpected format"),
        )
    })?;
    Ok(ticks as f64 * 1e6 / ticks_per_second() as f64)
}

/// Summed CPU time of several processes, µs.
pub fn processes_cpu_us(pids: &[u32]) -> io::Result<f64> {
    let mut sum = 0.0;
    for &p in pids {
        sum += process_cpu_us(Some(p))?;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_a_comm_with_spaces_and_parens() {
        // A real line's shape; comm "a) b (c" is legal.
        let line = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 4 0 12345 1000000 100 18446744073709551615";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let before = process_cpu_us(None).unwrap();
        // Burn CPU for at least 60 ms of wall time, and on a loaded machine
        // (where 60 ms of wall time can be less than one 10 ms tick of CPU)
        // until the counter moves, up to 20 s.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while t.elapsed() < std::time::Duration::from_millis(60)
            || (after <= before && t.elapsed() < std::time::Duration::from_secs(20))
        {
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            after = process_cpu_us(None).unwrap();
        }
        std::hint::black_box(x);
        assert!(after > before, "{before} -> {after}");
        let me = std::process::id();
        assert!(processes_cpu_us(&[me]).unwrap() >= after);
        assert!(process_cpu_us(Some(u32::MAX)).is_err());
    }
}
