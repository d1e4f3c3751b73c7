//! `bare-forwarder`: the physical-limit baseline for the relay. Every datagram received
//! on `--listen` is sent unchanged to every `--dest`, through the relay's own batched
//! UDP path; nothing else. See `blindfold_benches::forward`.
//!
//! On SIGTERM/SIGINT it stops and prints one JSON line to stdout:
//! `{"received":…,"sent":…,"dropped":…,…,"cpu_user_s":…,"cpu_sys_s":…,"wall_s":…}`.
//! With `--stats` it also prints the per-second deltas to stderr.

// A benchmark binary reads the clock for its stats line.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use blindfold_benches::cpu_seconds;
use blindfold_benches::forward::{DEFAULT_BUFFER, Forwarder, ForwarderConfig, Totals};
use blindfold_relay::shell::signals::Shutdown;
use clap::Parser;

/// Forwards every datagram on --listen to every --dest (the relay's baseline).
#[derive(Debug, Parser)]
#[command(name = "bare-forwarder")]
struct Args {
    /// Address to listen on (each worker binds it with SO_REUSEPORT).
    #[arg(long)]
    listen: SocketAddr,
    /// Worker threads, each with its own socket and mio loop.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// A destination of the fan-out (repeat for more).
    #[arg(long = "dest", required = true)]
    dests: Vec<SocketAddr>,
    /// SO_RCVBUF per socket, bytes.
    #[arg(long, default_value_t = DEFAULT_BUFFER)]
    recv_buffer: usize,
    /// SO_SNDBUF per socket, bytes.
    #[arg(long, default_value_t = DEFAULT_BUFFER)]
    send_buffer: usize,
    /// Print per-second counters to stderr.
    #[arg(long)]
    stats: bool,
}

fn json(t: &Totals, wall: Duration) -> String {
    let (user, sys) = cpu_seconds();
    format!(
        "{{\"received\":{},\"sent\":{},\"dropped\":{},\"dropped_full\":{},\"dropped_error\":{},\"dropped_recv\":{},\"cpu_user_s\":{user:.6},\"cpu_sys_s\":{sys:.6},\"wall_s\":{:.6}}}",
        t.received,
        t.sent,
        t.dropped(),
        t.dropped_full,
        t.dropped_error,
        t.dropped_recv,
        wall.as_secs_f64()
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    let shutdown = match Shutdown::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bare-forwarder: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = ForwarderConfig {
        listen: args.listen,
        workers: args.workers,
        dests: args.dests,
        recv_buffer: args.recv_buffer,
        send_buffer: args.send_buffer,
    };
    let start = Instant::now();
    let fwd = match Forwarder::start(&config, shutdown) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bare-forwarder: starting on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "bare-forwarder: {} worker(s) on {} → {} destination(s)",
        config.workers.max(1),
        fwd.local_addr(),
        config.dests.len()
    );
    let mut last = Totals::default();
    let mut next = Instant::now() + Duration::from_secs(1);
    while !fwd.is_stopping() {
        std::thread::sleep(Duration::from_millis(50));
        if args.stats && Instant::now() >= next {
            let now = fwd.totals();
            let d = now.since(&last);
            eprintln!(
                "rx {} pps  tx {} pps  drop {} pps",
                d.received,
                d.sent,
                d.dropped()
            );
            last = now;
            next += Duration::from_secs(1);
        }
    }
    match fwd.join() {
        Ok(t) => {
            println!("{}", json(&t, start.elapsed()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bare-forwarder: worker failed: {e}");
            ExitCode::FAILURE
        }
    }
}
