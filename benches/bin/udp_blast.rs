//! `udp-blast`: the raw load side of the relay baseline.
//!
//! Binds `--sinks N` counting sockets (or `--sink-ports`), optionally spawns the system
//! under test (everything after `--`, with `--dest SINK` appended once per sink), waits
//! until probes reach every sink, offers `--rate` packets/s of `--size` bytes to
//! `--target` for `--duration` seconds, drains, stops the child with SIGTERM and prints
//! one JSON line (see `BlastReport`: rates, loss, one-way latency percentiles, and the
//! kernel's drops at the target's and the sinks' sockets). One command line runs a whole
//! measurement:
//!
//! ```text
//! taskset -c 0 udp-blast --target 127.0.0.1:47000 --sinks 4 --size 200 --rate 100000 \
//!     --duration 3 -- taskset -c 1 bare-forwarder --listen 127.0.0.1:47000
//! ```
//!
//! Without `--`, it prints the sinks' addresses to stderr and waits (up to
//! `--ready-timeout`) for a forwarder started by hand with them as `--dest`.

// A benchmark binary reads the clock to time its phases.
#![allow(clippy::disallowed_methods)]

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use blindfold_benches::blast::{BlastConfig, BlastReport, Sinks, blast, wait_ready};
use blindfold_benches::cpu_seconds;
use blindfold_client::measure::udp_socket_drops;
use clap::Parser;

/// Paced UDP load with counting sinks; prints a JSON report.
#[derive(Debug, Parser)]
#[command(name = "udp-blast")]
struct Args {
    /// The forwarder (or relay) to load.
    #[arg(long)]
    target: SocketAddr,
    /// Source sockets (an SO_REUSEPORT forwarder spreads them over its workers).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Datagram size, bytes.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Total offered packets/s.
    #[arg(long)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Bind this many counting sinks on --sink-ip, on free ports.
    #[arg(long, default_value_t = 0)]
    sinks: usize,
    /// Bind sinks on these ports instead (comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "sinks")]
    sink_ports: Vec<u16>,
    /// The sinks' address.
    #[arg(long, default_value = "127.0.0.1")]
    sink_ip: IpAddr,
    /// Pacing quantum in microseconds: each sendmmsg carries rate × this many packets.
    #[arg(long, default_value_t = 100)]
    burst_us: u64,
    /// Seconds to wait for probes to reach every sink before giving up.
    #[arg(long, default_value_t = 10.0)]
    ready_timeout: f64,
    /// Milliseconds to keep counting after the last send.
    #[arg(long, default_value_t = 200)]
    drain_ms: u64,
    /// The command to spawn as the system under test; `--dest SINK` is appended per sink.
    #[arg(last = true)]
    spawn: Vec<String>,
}

fn stop_child(child: Child) -> Option<serde_json::Value> {
    // SAFETY: `kill` takes a pid and a signal number; the pid is our own child, not yet
    // reaped (we hold its `Child`), so it cannot name another process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut child = child;
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        let _ = so.read_to_string(&mut out);
    }
    let _ = child.wait();
    out.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok())
}

fn run(args: &Args) -> Result<BlastReport, String> {
    let ports: Vec<u16> = if args.sink_ports.is_empty() {
        vec![0; args.sinks]
    } else {
        args.sink_ports.clone()
    };
    let sinks = Sinks::bind(args.sink_ip, &ports).map_err(|e| format!("binding sinks: {e}"))?;
    let addrs: Vec<String> = sinks.addrs().iter().map(ToString::to_string).collect();
    let mut child = None;
    if let Some((prog, rest)) = args.spawn.split_first() {
        let mut cmd = Command::new(prog);
        cmd.args(rest);
        for a in &addrs {
            cmd.arg("--dest").arg(a);
        }
        cmd.stdout(Stdio::piped()).stdin(Stdio::null());
        child = Some(cmd.spawn().map_err(|e| format!("spawning {prog}: {e}"))?);
    } else if !addrs.is_empty() {
        let dests: Vec<String> = addrs.iter().map(|a| format!("--dest {a}")).collect();
        eprintln!("udp-blast: sinks ready: {}", dests.join(" "));
    }
    if !addrs.is_empty() {
        let ready = wait_ready(
            args.target,
            &sinks,
            args.size,
            Duration::from_secs_f64(args.ready_timeout),
        )
        .map_err(|e| format!("probing {}: {e}", args.target))?;
        if !ready {
            if let Some(c) = child {
                let _ = stop_child(c);
            }
            return Err(format!(
                "no probe reached every sink through {} within {} s",
                args.target, args.ready_timeout
            ));
        }
        // Let the probes settle before the counted phase.
        std::thread::sleep(Duration::from_millis(50));
    }
    let config = BlastConfig {
        target: args.target,
        senders: args.senders,
        size: args.size,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        burst: Duration::from_micros(args.burst_us),
    };
    let before = sinks.counts();
    let sink_ports: Vec<u16> = sinks.addrs().iter().map(SocketAddr::port).collect();
    let drops = || {
        (
            udp_socket_drops(&[args.target.port()]),
            udp_socket_drops(&sink_ports),
        )
    };
    let drops_before = drops();
    let (u0, s0) = cpu_seconds();
    let t0 = Instant::now();
    let stats = blast(&config).map_err(|e| format!("sending: {e}"));
    std::thread::sleep(Duration::from_millis(args.drain_ms));
    let wall = t0.elapsed().as_secs_f64();
    let (u1, s1) = cpu_seconds();
    let drops_after = drops();
    let since = |before: Option<u64>, after: Option<u64>| Some(after?.saturating_sub(before?));
    let after = sinks.stop().map_err(|e| format!("sinks: {e}"));
    let forwarder = child.map(stop_child).unwrap_or_default();
    let stats = stats?;
    let after = after?;
    let us = |ns: Option<u64>| ns.map(|n| n as f64 / 1000.0);
    let latency = &after.latency;
    let (latency_samples, latency_p50_us, latency_p99_us, latency_max_us) = (
        latency.count(),
        us(latency.quantile(0.5)),
        us(latency.quantile(0.99)),
        us(latency.max()),
    );
    let after = after.counts;
    let secs = stats.elapsed.as_secs_f64().max(1e-9);
    let per_sink: Vec<f64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b) as f64 / secs)
        .collect();
    let total: f64 = per_sink.iter().sum();
    let n = per_sink.len() as f64;
    let offered_pps = stats.offered as f64 / secs;
    let sent_pps = stats.sent as f64 / secs;
    let loss = |base: f64| {
        if n == 0.0 || base <= 0.0 {
            0.0
        } else {
            1.0 - total / (base * n)
        }
    };
    Ok(BlastReport {
        target: args.target.to_string(),
        size: args.size,
        senders: args.senders,
        sinks: addrs,
        duration_s: args.duration,
        rate_pps: args.rate,
        offered_pps,
        sent_pps,
        shortfall_pps: stats.shortfall as f64 / secs,
        received_pps_per_sink: per_sink,
        received_pps_total: total,
        loss: loss(offered_pps),
        loss_after_send: loss(sent_pps),
        cpu_user_s: u1 - u0,
        cpu_sys_s: s1 - s0,
        cpu_util: (u1 - u0 + s1 - s0) / wall.max(1e-9),
        forwarder,
        latency_samples,
        latency_p50_us,
        latency_p99_us,
        latency_max_us,
        drops_forwarder: since(drops_before.0, drops_after.0),
        drops_sinks: since(drops_before.1, drops_after.1),
        generator: None,
        send_rtp_errors: None,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("udp-blast: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("udp-blast: {e}");
            ExitCode::FAILURE
        }
    }
}
