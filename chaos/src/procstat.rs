//! CPU time and resident memory of another process (the broker under test),
//! read from Linux procfs: `/proc/<pid>/stat` (utime + stime, in clock
//! ticks) and `/proc/<pid>/status` (`VmRSS`, in KiB).
//!
//! Clock ticks are usually 10 ms: a CPU figure is only meaningful over runs
//! long enough to accumulate many ticks.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// One reading of the broker's resource usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time consumed since the process started.
    pub cpu: Duration,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Reads the current CPU time and RSS of `pid`.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat_path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&stat_path).with_context(|| format!("read {stat_path}"))?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| anyhow!("cannot parse {stat_path}"))?;
    let status_path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&status_path).with_context(|| format!("read {status_path}"))?;
    let rss_kib = parse_vmrss_kib(&status).ok_or_else(|| anyhow!("no VmRSS in {status_path}"))?;
    let hz = clock_ticks_per_second();
    let cpu = Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz);
    Ok(ProcSample {
        cpu,
        rss_bytes: rss_kib.saturating_mul(1024),
    })
}

/// `utime + stime` in clock ticks. The command name (field 2) is in
/// parentheses and may itself contain spaces or parentheses, so fields are
/// counted from the last `)`: state is field 3, utime 14, stime 15.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

/// The `VmRSS:   1234 kB` line of `/proc/<pid>/status`, in KiB.
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_utime_plus_stime_even_with_parens_in_the_name() {
        let stat = "4242 (my (odd) broker) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    123 45 0 0 20 0 9 0 5000 100000000 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(168));
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("no parens"), None);
    }

    #[test]
    fn vmrss_is_read_in_kib() {
        let status = "Name:\tmosquitto\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(parse_vmrss_kib(status), Some(5120));
        assert_eq!(parse_vmrss_kib("Name:\tkthread\n"), None);
    }

    #[test]
    fn sampling_this_process_works() {
        let s = sample(std::process::id()).expect("sample self");
        assert!(s.rss_bytes > 0);
    }
}
