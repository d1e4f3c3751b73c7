//! What the end-to-end benchmarks (`signaling-bench`, `join-bench`) share: order
//! statistics of durations, the CPU time of processes from `/proc`, and the load
//! average (the machines are shared: a figure comes with how busy the machine was).

use std::time::{Duration, Instant};

/// Median, p95 (nearest rank), min and max of some durations, in ms.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its name in the JSON line.
    pub key: &'static str,
    /// Its label in the table.
    pub what: String,
    /// How many samples.
    pub n: usize,
    /// Median (nearest rank), ms.
    pub median: f64,
    /// 95th percentile (nearest rank), ms.
    pub p95: f64,
    /// Smallest, ms.
    pub min: f64,
    /// Largest, ms.
    pub max: f64,
}

impl Row {
    /// The statistics of `samples` (at least one).
    pub fn of(key: &'static str, what: &str, samples: &[Duration]) -> Row {
        Row::of_ms(
            key,
            what,
            &samples
                .iter()
                .map(|d| d.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        )
    }

    /// The statistics of `ms` (at least one sample, in ms).
    pub fn of_ms(key: &'static str, what: &str, ms: &[f64]) -> Row {
        assert!(!ms.is_empty(), "no samples for {what}");
        let mut ms = ms.to_vec();
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Row {
            key,
            what: what.to_owned(),
            n: ms.len(),
            median: rank(0.5),
            p95: rank(0.95),
            min: ms[0],
            max: ms[ms.len() - 1],
        }
    }

    /// Prints `rows` as a table headed `title` (milliseconds), the first column `width`
    /// wide.
    pub fn print_table(title: &str, rows: &[Row], width: usize) {
        println!(
            "{title:<width$} {:>4} {:>9} {:>9} {:>9} {:>9}",
            "n", "median", "p95", "min", "max"
        );
        for r in rows {
            println!(
                "{:<width$} {:>4} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                r.what, r.n, r.median, r.p95, r.min, r.max
            );
        }
    }

    /// `{"n", "median_ms", "p95_ms", "min_ms", "max_ms"}`, to 0.1 ms.
    pub fn json(&self) -> serde_json::Value {
        let ms = |x: f64| (x * 10.0).round() / 10.0;
        serde_json::json!({"n": self.n, "median_ms": ms(self.median), "p95_ms": ms(self.p95),
                           "min_ms": ms(self.min), "max_ms": ms(self.max)})
    }
}

/// CPU seconds (user + system) each process has used, at one moment or between two.
#[derive(Debug, Clone)]
pub struct Cpu {
    /// Wall time between the two moments (0 for one moment).
    pub wall: f64,
    at: Instant,
    /// Per process: its name and CPU seconds.
    pub used: Vec<(&'static str, f64)>,
}

impl Cpu {
    /// The CPU time so far of each `(name, pid)`; panics if one is gone.
    pub fn of(procs: &[(&'static str, u32)]) -> Cpu {
        // SAFETY: sysconf reads a constant of the system.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let used = procs
            .iter()
            .map(|&(name, pid)| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_else(|e| panic!("reading /proc/{pid}/stat ({name}): {e}"));
                // After the command name in parentheses: state is field 3, utime and
                // stime are fields 14 and 15.
                let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks: f64 =
                    f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
                (name, ticks / tick)
            })
            .collect();
        Cpu {
            wall: 0.0,
            at: Instant::now(),
            used,
        }
    }

    /// What was used between `earlier` and this moment.
    pub fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            wall: (self.at - earlier.at).as_secs_f64(),
            at: self.at,
            used: self
                .used
                .iter()
                .zip(&earlier.used)
                .map(|((n, a), (_, b))| (*n, a - b))
                .collect(),
        }
    }

    /// `{"wall_s": …, "<name>": seconds, …}`.
    pub fn json(&self) -> serde_json::Value {
        let mut o = serde_json::json!({"wall_s": (self.wall * 10.0).round() / 10.0});
        for (name, s) in &self.used {
            o[*name] = serde_json::json!((s * 100.0).round() / 100.0);
        }
        o
    }
}

/// The 1-minute load average (`/proc/loadavg`), or "?" where there is none.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
