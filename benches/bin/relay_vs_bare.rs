//! `relay-vs-bare`: the delivered-vs-offered ladder for the bare forwarder and the relay
//! over fan-out × packet-size scenarios, printed as tables and drawn as SVG.
//!
//! Each point is one `udp-blast` run that spawns a fresh `bare-forwarder` (both found
//! next to this binary): with `--pin`, `taskset -c 0` for the blaster and its sinks and
//! `taskset -c 1` for the forwarder, as docs/benchmarks.md ("Method") says. Rates are
//! offered *egress* packets/s (ingress × fan-out), the figure the baseline is quoted in.
//!
//! The relay side needs connected sessions, which only the `blindfold-load` generator
//! sets up: [`run_relay_scenario`] reports "not measured" unless a `--relay-cmd` hook is
//! given (see its docs; `scripts/relay-ladder-cmd` is the one for a 1-worker relay and
//! `blindfold-load`'s fixed-rate mode). No relay figure is ever invented.
//!
//! With `--bare-cmd 'scripts/bare-ladder-cmd …'` the bare side is driven by the relay's
//! own generator (`blindfold-load --bare-target`): same sockets, pacing, packets and
//! receive path, only the forwarder differs — the comparison to quote. Both generators
//! pace in 100 µs bursts, time every datagram from send to receipt (a
//! stamp in the payload for udp-blast, abs-send-time for blindfold-load) and read the
//! kernel's per-socket drop counters, so each point says where loss happened: at the
//! forwarder's socket (it was the limit) or at the generator's receivers (the generator
//! was). With `--latency-at-half`, each scenario gets one more point for both at half of
//! the bare forwarder's saturation, and a latency table compares them there.

// A benchmark driver, not an engine: it may read the clock.
#![allow(clippy::disallowed_methods)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use blindfold_benches::blast::BlastReport;
use blindfold_benches::svg::{Chart, Series, render, si};
use clap::Parser;

/// Bare forwarder (and relay) delivered-vs-offered ladder.
#[derive(Debug, Parser)]
#[command(name = "relay-vs-bare")]
struct Args {
    /// Fan-outs to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4,10")]
    fanouts: Vec<usize>,
    /// Packet sizes in bytes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "200,1200")]
    sizes: Vec<usize>,
    /// Offered egress packets/s (ingress × fan-out), comma-separated, ascending.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100000,200000,300000,400000,500000,600000,700000,800000,900000,1000000"
    )]
    rates: Vec<f64>,
    /// Seconds per point.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Forwarder worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Blaster source sockets.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Pin: forwarder on CPU 1, blaster and sinks on CPU 0 (taskset).
    #[arg(long)]
    pin: bool,
    /// First UDP port for the forwarder; each point uses the next one.
    #[arg(long, default_value_t = 47000)]
    port: u16,
    /// Stop a scenario's ladder after this many consecutive points above 5% loss.
    #[arg(long, default_value_t = 2)]
    stop_after: usize,
    /// Where to write the chart.
    #[arg(long, default_value = "docs/bench/relay-vs-bare.svg")]
    svg: PathBuf,
    /// Directory with udp-blast and bare-forwarder (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Before each point, wait up to this many seconds for the machine to be quiet
    /// (other processes using < 0.3 cores over 1 s); 0: do not wait.
    #[arg(long, default_value_t = 0.0)]
    quiet_wait: f64,
    /// Hook for the relay side: a shell command run once per point with `{fanout}`,
    /// `{size}`, `{rate}` (egress pps), `{ingress}` (pps), `{duration}` and `{port}`
    /// substituted; it must print a udp-blast JSON report as its last stdout line.
    #[arg(long)]
    relay_cmd: Option<String>,
    /// The same hook for the bare forwarder's side (`scripts/bare-ladder-cmd` runs
    /// `blindfold-load` against it, so both sides share one generator); without it the
    /// bare side is `udp-blast` spawning `bare-forwarder`.
    #[arg(long)]
    bare_cmd: Option<String>,
    /// After each scenario's ladder, run one more point for both at half of the bare
    /// forwarder's saturation (its highest offered rate with < 1% loss) and print the
    /// one-way latencies there.
    #[arg(long)]
    latency_at_half: bool,
}

/// One fan-out × size combination.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    fanout: usize,
    size: usize,
}

impl Scenario {
    fn name(&self) -> String {
        format!("fan-out {}, {} B", self.fanout, self.size)
    }
}

/// A scenario's bare ladder and its relay ladder (or why the relay was not measured).
type ScenarioResult = (Scenario, Vec<Point>, Result<Vec<Point>, String>);

/// A scenario's extra point at half of the bare saturation: the rate, bare, relay.
type HalfResult = (Scenario, f64, Result<Point, String>, Result<Point, String>);

/// One measured point of a ladder.
#[derive(Debug, Clone, Copy)]
struct Point {
    /// Offered egress packets/s (the generator's schedule × fan-out).
    offered: f64,
    /// Delivered egress packets/s (all sinks).
    delivered: f64,
    /// Loss against the schedule.
    loss: f64,
    /// Forwarder CPU (user + sys) per packet it sent, ns; NaN if unknown.
    ns_per_egress: f64,
    /// The generator's CPU utilisation (near 1.0: it may be the limit).
    gen_cpu: f64,
    /// Packets/s the generator could not send on time.
    shortfall: f64,
    /// CPU (in cores) that other processes on the machine used during the point: the
    /// machine's busy time minus the generator's and the forwarder's. Much above 0 and
    /// the point measured the neighbours, not the forwarder.
    other_cores: f64,
    /// One-way latency, generator to receiver, median and 99th percentile, µs (NaN if
    /// the generator timed nothing).
    p50_us: f64,
    p99_us: f64,
    /// Datagrams the kernel dropped at the forwarder's socket (it was the limit) and at
    /// the generator's receivers (the generator was), if known.
    drops: (Option<u64>, Option<u64>),
}

/// Busy CPU seconds of the whole machine so far (`/proc/stat`: everything but idle and
/// iowait), or NaN if unreadable.
fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(line) = stat.lines().next() else {
        return f64::NAN;
    };
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest* are inside user/nice).
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    // SAFETY: `sysconf` takes a constant and returns a value; no memory is involved.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    if hz > 0.0 { busy / hz } else { f64::NAN }
}

impl Point {
    /// The point in `r`; `busy_s` and `wall_s` are the machine's busy CPU seconds and
    /// the wall time around the run (for [`other_cores`](Self::other_cores)).
    fn from_report(r: &BlastReport, fanout: usize, busy_s: f64, wall_s: f64) -> Self {
        let f = fanout as f64;
        let fwd_cpu = r
            .forwarder
            .as_ref()
            .and_then(|v| Some(v.get("cpu_user_s")?.as_f64()? + v.get("cpu_sys_s")?.as_f64()?));
        // The forwarder's own count of datagrams sent if it reports one (the bare
        // forwarder does); otherwise what the receivers got over the sending phase (the
        // relay runs without metrics here; the two agree whenever nothing is dropped at
        // the receivers, which `drops_sinks` says).
        let sent = r
            .forwarder
            .as_ref()
            .and_then(|v| v.get("sent")?.as_f64())
            .unwrap_or(r.received_pps_total * r.duration_s);
        let ns = match fwd_cpu {
            Some(cpu) if sent > 0.0 => cpu * 1e9 / sent,
            _ => f64::NAN,
        };
        let ours = r.cpu_user_s + r.cpu_sys_s + fwd_cpu.unwrap_or(0.0);
        let other_cores = ((busy_s - ours) / wall_s.max(1e-9)).max(0.0);
        Self {
            offered: r.offered_pps * f,
            delivered: r.received_pps_total,
            loss: r.loss,
            ns_per_egress: ns,
            gen_cpu: r.cpu_util,
            shortfall: r.shortfall_pps,
            other_cores,
            p50_us: r.latency_p50_us.unwrap_or(f64::NAN),
            p99_us: r.latency_p99_us.unwrap_or(f64::NAN),
            drops: (r.drops_forwarder, r.drops_sinks),
        }
    }
}

struct Env {
    bin_dir: PathBuf,
    pin: bool,
    workers: usize,
    senders: usize,
    duration: f64,
    relay_cmd: Option<String>,
    bare_cmd: Option<String>,
}

fn pinned(env: &Env, cpu: u32, prog: &Path) -> Vec<String> {
    let mut v = Vec::new();
    if env.pin {
        v.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
    }
    v.push(prog.display().to_string());
    v
}

fn parse_report(stdout: &[u8]) -> Result<BlastReport, String> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("no report on stdout")?;
    serde_json::from_str(line).map_err(|e| format!("bad report: {e}"))
}

/// One bare-forwarder point: `--bare-cmd` if given, else `udp-blast` (CPU 0) spawning
/// `bare-forwarder` (CPU 1).
fn run_bare_point(env: &Env, sc: Scenario, rate: f64, port: u16) -> Result<Point, String> {
    if let Some(template) = &env.bare_cmd {
        return run_hook(template, env, sc, rate, port, "bare command");
    }
    let target = format!("127.0.0.1:{port}");
    let ingress = rate / sc.fanout as f64;
    let mut argv = pinned(env, 0, &env.bin_dir.join("udp-blast"));
    argv.extend([
        "--target".into(),
        target.clone(),
        "--sinks".into(),
        sc.fanout.to_string(),
        "--size".into(),
        sc.size.to_string(),
        "--rate".into(),
        format!("{ingress:.0}"),
        "--duration".into(),
        env.duration.to_string(),
        "--senders".into(),
        env.senders.to_string(),
        "--".into(),
    ]);
    argv.extend(pinned(env, 1, &env.bin_dir.join("bare-forwarder")));
    argv.extend([
        "--listen".into(),
        target,
        "--workers".into(),
        env.workers.to_string(),
    ]);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    measure_point(cmd, "udp-blast", sc)
}

/// The relay side of one point: runs `--relay-cmd` (see `Args::relay_cmd`; the
/// repository's is `scripts/relay-ladder-cmd`) and uses its udp-blast-format report
/// as-is. Without `--relay-cmd` the relay is reported as "not measured"; no relay
/// figure is ever invented.
fn run_relay_scenario(env: &Env, sc: Scenario, rate: f64, port: u16) -> Result<Point, String> {
    let Some(template) = &env.relay_cmd else {
        return Err("no --relay-cmd given".into());
    };
    run_hook(template, env, sc, rate, port, "relay command")
}

/// Runs a point's hook command (`--relay-cmd`, `--bare-cmd`) with the scenario
/// substituted.
fn run_hook(
    template: &str,
    env: &Env,
    sc: Scenario,
    rate: f64,
    port: u16,
    what: &str,
) -> Result<Point, String> {
    let cmd = template
        .replace("{fanout}", &sc.fanout.to_string())
        .replace("{size}", &sc.size.to_string())
        .replace("{rate}", &format!("{rate:.0}"))
        .replace("{ingress}", &format!("{:.0}", rate / sc.fanout as f64))
        .replace("{duration}", &env.duration.to_string())
        .replace("{port}", &port.to_string());
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(&cmd);
    measure_point(sh, what, sc)
}

/// Runs one point's load command, timing it and the machine's busy time, and turns its
/// udp-blast-format report (the last stdout line) into a [`Point`].
fn measure_point(mut cmd: Command, what: &str, sc: Scenario) -> Result<Point, String> {
    let busy0 = machine_busy_seconds();
    let t0 = Instant::now();
    let out = cmd.output().map_err(|e| format!("running {what}: {e}"))?;
    let wall = t0.elapsed().as_secs_f64();
    let busy = machine_busy_seconds() - busy0;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Point::from_report(
        &parse_report(&out.stdout)?,
        sc.fanout,
        busy,
        wall,
    ))
}

/// Waits up to `max_s` seconds for a 1-second window in which the machine is busy for
/// less than 0.3 cores; returns the busy cores of the last window.
fn wait_quiet(max_s: f64) -> f64 {
    let start = Instant::now();
    let mut last = f64::NAN;
    while start.elapsed().as_secs_f64() < max_s {
        let b0 = machine_busy_seconds();
        std::thread::sleep(std::time::Duration::from_secs(1));
        last = machine_busy_seconds() - b0;
        if last < 0.3 {
            break;
        }
    }
    last
}

/// The highest offered rate with < 1% loss, if any.
fn best(points: &[Point]) -> Option<Point> {
    points
        .iter()
        .filter(|p| p.loss < 0.01)
        .copied()
        .max_by(|a, b| a.offered.total_cmp(&b.offered))
}

fn fmt_ns(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "-".into()
    }
}

/// "forwarder / receivers" kernel drops of a point.
fn fmt_drops(p: &Point) -> String {
    let d = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    format!("{} / {}", d(p.drops.0), d(p.drops.1))
}

/// "p50 / p99 (loss)" of a point, latencies in µs.
fn fmt_latency(p: &Point) -> String {
    format!(
        "{} / {} ({:.2}% loss)",
        fmt_ns(p.p50_us),
        fmt_ns(p.p99_us),
        p.loss * 100.0
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bin_dir = args.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let env = Env {
        bin_dir,
        pin: args.pin,
        workers: args.workers,
        senders: args.senders,
        duration: args.duration,
        relay_cmd: args.relay_cmd.clone(),
        bare_cmd: args.bare_cmd.clone(),
    };
    let scenarios: Vec<Scenario> = args
        .fanouts
        .iter()
        .flat_map(|&fanout| {
            args.sizes
                .iter()
                .map(move |&size| Scenario { fanout, size })
        })
        .collect();
    println!(
        "# relay-vs-bare: {} s per point, {} worker(s), {} sender(s), {}",
        args.duration,
        args.workers,
        args.senders,
        if args.pin {
            "pinned (forwarder CPU 1, blaster+sinks CPU 0)"
        } else {
            "NOT pinned"
        }
    );
    println!(
        "# bare side: {}\n# relay side: {}",
        args.bare_cmd
            .as_deref()
            .unwrap_or("udp-blast spawning bare-forwarder"),
        args.relay_cmd.as_deref().unwrap_or("not measured")
    );
    let mut port = args.port;
    let mut results: Vec<ScenarioResult> = Vec::new();
    let mut halves: Vec<HalfResult> = Vec::new();
    for &sc in &scenarios {
        println!("\n## {}", sc.name());
        println!(
            "| offered egress pps | bare delivered pps | bare loss | fwd ns/egress pkt | gen CPU | gen shortfall pps | other load (cores) | bare p99 µs | bare drops fwd / rx | relay delivered pps |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut bare = Vec::new();
        let mut relay: Result<Vec<Point>, String> = Ok(Vec::new());
        let mut bad_streak = 0;
        for &rate in &args.rates {
            let relay_cell = match &mut relay {
                Ok(points) => match run_relay_scenario(&env, sc, rate, port) {
                    Ok(p) => {
                        points.push(p);
                        format!(
                            "{:.0} ({:.2}% loss, {} ns/egress pkt, gen CPU {:.0}%, p99 {} µs, drops {})",
                            p.delivered,
                            p.loss * 100.0,
                            fmt_ns(p.ns_per_egress),
                            p.gen_cpu * 100.0,
                            fmt_ns(p.p99_us),
                            fmt_drops(&p)
                        )
                    }
                    Err(e) => {
                        relay = Err(e);
                        "not measured".into()
                    }
                },
                Err(_) => "not measured".into(),
            };
            port = port.wrapping_add(1).max(1024);
            if args.quiet_wait > 0.0 {
                let busy = wait_quiet(args.quiet_wait);
                if busy >= 0.3 {
                    eprintln!(
                        "relay-vs-bare: machine still busy ({busy:.2} cores), measuring anyway"
                    );
                }
            }
            match run_bare_point(&env, sc, rate, port) {
                Ok(p) => {
                    println!(
                        "| {:.0} | {:.0} | {:.2}% | {} | {:.0}% | {:.0} | {:.2} | {} | {} | {relay_cell} |",
                        p.offered,
                        p.delivered,
                        p.loss * 100.0,
                        fmt_ns(p.ns_per_egress),
                        p.gen_cpu * 100.0,
                        p.shortfall,
                        p.other_cores,
                        fmt_ns(p.p99_us),
                        fmt_drops(&p)
                    );
                    bad_streak = if p.loss > 0.05 { bad_streak + 1 } else { 0 };
                    bare.push(p);
                }
                Err(e) => {
                    println!("| {rate:.0} | error: {e} | | | | | | | | {relay_cell} |");
                    bad_streak += 1;
                }
            }
            port = port.wrapping_add(1).max(1024);
            if args.stop_after > 0 && bad_streak >= args.stop_after {
                println!("(stopping this ladder: {bad_streak} points above 5% loss)");
                break;
            }
        }
        if let Err(e) = &relay {
            println!("relay: not measured — {e}");
        }
        if args.latency_at_half
            && let Some(sat) = best(&bare)
        {
            let rate = (sat.offered / 2.0).round();
            let mut point = |run: &dyn Fn(u16) -> Result<Point, String>| {
                if args.quiet_wait > 0.0 {
                    wait_quiet(args.quiet_wait);
                }
                let p = run(port);
                port = port.wrapping_add(1).max(1024);
                p
            };
            let r = point(&|port| run_relay_scenario(&env, sc, rate, port));
            let b = point(&|port| run_bare_point(&env, sc, rate, port));
            halves.push((sc, rate, b, r));
        }
        results.push((sc, bare, relay));
    }

    println!("\n## Highest offered egress rate with < 1% loss");
    println!(
        "| scenario | bare egress pps | bare ingress pps | fwd ns/egress pkt there | other load there (cores) | relay egress pps | relay gen CPU there | relay/bare |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (sc, bare, relay) in &results {
        let relay_best = relay.as_ref().ok().and_then(|ps| best(ps));
        let relay_cells = match (relay, relay_best) {
            (Ok(_), Some(p)) => format!("{} | {:.0}%", si(p.offered), p.gen_cpu * 100.0),
            (Ok(_), None) => "none < 1% | ".into(),
            (Err(_), _) => "not measured | ".into(),
        };
        let bare_best = best(bare);
        let ratio = match (relay_best, bare_best) {
            (Some(r), Some(b)) if b.offered > 0.0 => format!("{:.2}", r.offered / b.offered),
            _ => "-".into(),
        };
        match bare_best {
            Some(p) => println!(
                "| {} | {} | {} | {} | {:.2} | {relay_cells} | {ratio} |",
                sc.name(),
                si(p.offered),
                si(p.offered / sc.fanout as f64),
                fmt_ns(p.ns_per_egress),
                p.other_cores
            ),
            None => println!(
                "| {} | none < 1% | | | | {relay_cells} | {ratio} |",
                sc.name()
            ),
        }
    }
    if results.iter().any(|(_, _, r)| r.is_ok()) {
        println!(
            "(relay/bare: the ratio of the highest offered egress rates with < 1% loss; a rate \
             ladder's step limits its resolution)"
        );
    }

    if args.latency_at_half {
        println!("\n## One-way latency at half of the bare forwarder's saturation");
        println!(
            "| scenario | offered egress pps | bare p50 / p99 µs | relay p50 / p99 µs | relay − bare, p99 µs | CPU ns per egress packet, bare / relay |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for (sc, rate, b, r) in &halves {
            let cell = |p: &Result<Point, String>| match p {
                Ok(p) => fmt_latency(p),
                Err(e) => format!("error: {e}"),
            };
            let (added, cpu) = match (b, r) {
                (Ok(b), Ok(r)) => (
                    fmt_ns(r.p99_us - b.p99_us),
                    format!("{} / {}", fmt_ns(b.ns_per_egress), fmt_ns(r.ns_per_egress)),
                ),
                _ => ("-".into(), "-".into()),
            };
            println!(
                "| {} | {} | {} | {} | {added} | {cpu} |",
                sc.name(),
                si(*rate),
                cell(b),
                cell(r)
            );
        }
        println!(
            "(generator to receiver, both through loopback and the generator's own queues; \
             the relay's figure is an upper bound on what it adds)"
        );
    }

    let charts: Vec<Chart> = results
        .iter()
        .map(|(sc, bare, relay)| Chart {
            title: sc.name(),
            series: vec![
                Series {
                    name: "bare forwarder".into(),
                    color: "#1f77b4".into(),
                    points: bare.iter().map(|p| (p.offered, p.delivered)).collect(),
                },
                Series {
                    name: "relay".into(),
                    color: "#d62728".into(),
                    points: relay
                        .as_ref()
                        .map(|ps| ps.iter().map(|p| (p.offered, p.delivered)).collect())
                        .unwrap_or_default(),
                },
            ],
        })
        .collect();
    let mut title = String::new();
    let _ = write!(
        title,
        "Delivered vs offered egress packets/s, loopback, {} s/point, {}",
        args.duration,
        if args.pin { "pinned" } else { "unpinned" }
    );
    let svg = render(
        &charts,
        args.sizes.len().max(1),
        &title,
        "offered egress pkt/s",
        "delivered pkt/s",
    );
    if let Some(dir) = args.svg.parent()
        && !dir.as_os_str().is_empty()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("relay-vs-bare: creating {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::write(&args.svg, svg) {
        eprintln!("relay-vs-bare: writing {}: {e}", args.svg.display());
        return ExitCode::FAILURE;
    }
    println!("\nchart: {}", args.svg.display());
    ExitCode::SUCCESS
}
