//! The server process's own figures for `/metrics` (resident memory, CPU time, open
//! file descriptors, start time), read from `/proc/self` on Linux. `prometheus-client`
//! has no process collector, and these are the series every Prometheus dashboard for a
//! process expects, under their usual names (`process_*`, no `cacheflow_` prefix).
//!
//! Elsewhere than Linux (no `/proc`) nothing is read and the series stay absent.

use std::fs;
use std::path::Path;

/// One reading of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessReading {
    /// `VmRSS` of `/proc/self/status`.
    pub resident_memory_bytes: u64,
    /// `VmSize` of `/proc/self/status`.
    pub virtual_memory_bytes: u64,
    /// User plus system CPU time (`utime + stime` of `/proc/self/stat`).
    pub cpu_seconds: f64,
    /// Entries of `/proc/self/fd`.
    pub open_fds: u64,
    /// The soft limit `Max open files` of `/proc/self/limits` (`None`: unlimited).
    pub max_fds: Option<u64>,
    /// Seconds since the epoch the process started (`starttime` of `/proc/self/stat`
    /// after `btime` of `/proc/stat`).
    pub start_time_seconds: f64,
}

/// Clock ticks per second of `/proc/*/stat`: `USER_HZ`, fixed at 100 in the kernel's
/// user ABI on every architecture Linux supports (what `sysconf(_SC_CLK_TCK)` answers),
/// so no libc call is needed to learn it.
const USER_HZ: f64 = 100.0;

/// Read this process, or `None` where `/proc/self` cannot be read (not Linux).
pub fn read() -> Option<ProcessReading> {
    read_from(Path::new("/proc"))
}

/// Read `proc/self` under `proc` (a directory laid out like `/proc`, for tests).
pub fn read_from(proc: &Path) -> Option<ProcessReading> {
    let me = proc.join("self");
    let status = fs::read_to_string(me.join("status")).ok()?;
    let stat = fs::read_to_string(me.join("stat")).ok()?;
    let boot = fs::read_to_string(proc.join("stat")).ok()?;
    let (ticks, start_ticks) = cpu_and_start_ticks(&stat)?;
    let btime = boot_time(&boot)?;
    Some(ProcessReading {
        resident_memory_bytes: kib_field(&status, "VmRSS:").unwrap_or(0) * 1024,
        virtual_memory_bytes: kib_field(&status, "VmSize:").unwrap_or(0) * 1024,
        cpu_seconds: ticks as f64 / USER_HZ,
        open_fds: fs::read_dir(me.join("fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0),
        max_fds: fs::read_to_string(me.join("limits"))
            .ok()
            .and_then(|l| max_open_files(&l)),
        start_time_seconds: btime as f64 + start_ticks as f64 / USER_HZ,
    })
}

/// `VmRSS:     1234 kB` → 1234.
fn kib_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime` and `starttime` from `/proc/self/stat`. The second field (the
/// command name, in parentheses) may hold spaces and parentheses itself: fields are
/// counted after its last `)`.
fn cpu_and_start_ticks(stat: &str) -> Option<(u64, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some((field(14)? + field(15)?, field(22)?))
}

/// `btime 1733450000` of `/proc/stat`: when the machine booted.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|n| n.trim().parse().ok())
}

/// The soft limit of `Max open files  1024  524288  files`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_tree_reads_as_memory_cpu_fds_and_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let me = dir.path().join("self");
        fs::create_dir_all(me.join("fd")).unwrap();
        for n in 0..3 {
            fs::write(me.join("fd").join(n.to_string()), "").unwrap();
        }
        fs::write(
            me.join("status"),
            "Name:\tcacheflow\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\n",
        )
        .unwrap();
        // A command name with a space and a parenthesis, as a process may set it.
        let mut stat = String::from("4242 (cache flow) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 ");
        stat.push_str("250 50 0 0 20 0 8 0 12300 0 0");
        fs::write(me.join("stat"), stat).unwrap();
        fs::write(
            me.join("limits"),
            "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n",
        )
        .unwrap();
        fs::write(dir.path().join("stat"), "cpu  1 2 3\nbtime 1700000000\n").unwrap();
        let r = read_from(dir.path()).unwrap();
        assert_eq!(
            r,
            ProcessReading {
                resident_memory_bytes: 10_485_760,
                virtual_memory_bytes: 209_715_200,
                cpu_seconds: 3.0,
                open_fds: 3,
                max_fds: Some(1024),
                start_time_seconds: 1_700_000_123.0,
            }
        );
    }

    #[test]
    fn this_process_reads_on_linux() {
        if !cfg!(target_os = "linux") {
            assert_eq!(read(), None);
            return;
        }
        let r = read().expect("/proc/self reads on Linux");
        assert!(r.resident_memory_bytes > 0, "{r:?}");
        assert!(r.open_fds > 0, "{r:?}");
        assert!(r.start_time_seconds > 1_600_000_000.0, "{r:?}");
    }
}
