//! CPU and memory of this process and of others (Linux): `getrusage` and `/proc`. One
//! place for what the load tools and benchmarks measure about processes.

/// This process's (user, system) CPU seconds so far, all threads (`getrusage`); zeros
/// if the call fails.
pub fn cpu_seconds() -> (f64, f64) {
    // SAFETY: all-zero bytes are a valid `rusage` (integers and `timeval`s).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid, exclusively borrowed `rusage` to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// (utime, stime) of `pid` in clock ticks, from `/proc/PID/stat`.
pub fn proc_cpu_split(pid: u32) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_stat_cpu(&text).ok_or_else(|| format!("{path}: no utime/stime"))
}

/// utime and stime from the text of a `/proc/PID/stat`.
fn parse_stat_cpu(text: &str) -> Option<(u64, u64)> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// utime + stime of `pid` in clock ticks.
pub fn proc_cpu_ticks(pid: u32) -> Result<u64, String> {
    proc_cpu_split(pid).map(|(u, s)| u + s)
}

/// VmRSS of `pid`, KiB, from `/proc/PID/status`.
pub fn proc_rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS"))
}

/// The host's UDP `RcvbufErrors` and `SndbufErrors` from `/proc/net/snmp` (datagrams the
/// kernel dropped for full socket buffers, every process's); `None` if unreadable.
pub fn udp_buffer_errors() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut rows = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = rows.next()?.split_whitespace().collect();
    let values: Vec<&str> = rows.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some((get("RcvbufErrors")?, get("SndbufErrors")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let line = "4242 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 111 222 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu(line), Some((111, 222)));
        assert_eq!(parse_stat_cpu("4242 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_measurable() {
        let pid = std::process::id();
        assert!(proc_rss_kib(pid).unwrap() > 0);
        assert!(proc_cpu_split(pid).is_ok());
        let (u, s) = cpu_seconds();
        assert!(u >= 0.0 && s >= 0.0 && u + s > 0.0);
    }
}
