//! The standard `process_*` metrics, read from `/proc` at scrape time (Linux only; on
//! any read error they are left out).

use super::Out;

pub(super) fn render(o: &mut Out) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `man 5 proc`: utime and stime are fields 14 and 15, starttime 22, rss 24;
    // `rest` starts at field 3.
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    if ticks <= 0.0 || page <= 0.0 {
        return;
    }
    if let (Some(u), Some(s)) = (field(14), field(15)) {
        o.head(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        o.sample("process_cpu_seconds_total", &[], (u + s) / ticks);
    }
    if let Some(rss) = field(24) {
        o.head(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        o.sample("process_resident_memory_bytes", &[], rss * page);
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(start), Some(boot)) = (field(22), boot) {
        o.head(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        o.sample("process_start_time_seconds", &[], boot + start / ticks);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        o.head(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        o.sample("process_open_fds", &[], fds.count() as f64);
    }
}
