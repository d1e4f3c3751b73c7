//! `blindfold-load` as a process against the `blindfold-relay` process: a short run must
//! connect everyone, deliver media with (almost) no loss and no integrity failure, and
//! write its JSON report. Both binaries are built for this test's profile by
//! [`blindfold_tests::process::binary`]; every wait is bounded.

// Real processes and deadlines: the test reads the clock.
#![allow(clippy::disallowed_methods)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blindfold_tests::process::{Relay, binary};

/// The number after `"key":` in the report (its keys are unique).
fn field(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    let rest = &json[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e} in {json}"))
}

#[test]
fn load_generator_runs_a_conference_through_the_relay_process() {
    let relay = Relay::start(2);
    let json = load_report(&relay, |cmd| {
        cmd.args([
            "--conferences",
            "1",
            "--participants",
            "3",
            "--duration",
            "2",
        ])
        .args(["--full-subscribers", "1", "--connect-timeout", "10"])
        .arg("--relay-pid")
        .arg(relay.pid().to_string());
    });

    assert_eq!(field(&json, "sessions"), 3.0, "{json}");
    assert!(field(&json, "offered_pps") > 0.0, "{json}");
    let delivered = field(&json, "delivered_packets");
    let expected = field(&json, "expected_deliveries");
    assert!(delivered > 0.0 && expected > 0.0, "{json}");
    assert!(field(&json, "loss_ratio") < 0.01, "{json}");
    assert_eq!(field(&json, "integrity_failures"), 0.0, "{json}");
    assert_eq!(field(&json, "decrypt_failures"), 0.0, "{json}");
    // The relay's figures are there because --relay-pid was given.
    assert!(field(&json, "relay_rss_kib") > 0.0, "{json}");
    // Its CPU over the media phase, in /proc's 10 ms ticks: at most its two workers'
    // whole time (a figure read from another process, or a sum of the wrong fields,
    // would not fit).
    let cpu = field(&json, "relay_cpu_s");
    assert!(
        (0.0..=2.0 * field(&json, "duration_s") + 0.1).contains(&cpu),
        "{json}"
    );
    assert!(field(&json, "p99") > 0.0, "{json}");
}

/// `--streams none`: members that send nothing stay connected on the relay's
/// keepalives (the idle-session cost in docs/benchmarks.md is measured this way).
#[test]
fn load_generator_idle_members_send_nothing_and_hear_the_relays_keepalives() {
    let relay = Relay::start(2);
    let json = load_report(&relay, |cmd| {
        cmd.args(["--conferences", "2", "--participants", "3"])
            .args(["--streams", "none", "--duration", "3"]);
    });
    assert_eq!(field(&json, "sessions"), 6.0, "{json}");
    assert_eq!(field(&json, "sent_packets"), 0.0, "{json}");
    // A keepalive a second to each of the six: three each in the 3 s (18 measured),
    // at least two whatever the timing.
    let keepalives = relay.metric("blindfold_srtcp_keepalives_sent_total");
    assert!(keepalives >= 6 * 2, "{keepalives}");
}

#[test]
fn load_generator_fixed_rate_mode_reports_in_udp_blast_format() {
    // 1000 packets/s on one audio stream: past the relay's default cap of 500.
    let relay = Relay::start_with(2, &["--max-audio-pps", "0"]);
    let json = run_fixed_rate(|cmd| {
        cmd.arg("--control")
            .arg(&relay.control)
            .args(["--conferences", "1", "--participants", "3"])
            .arg("--relay-pid")
            .arg(relay.pid().to_string());
    });
    check_fixed_rate_report(&json);
    // The relay's CPU, from --relay-pid.
    assert!(field(&json, "relay_rss_kib") > 0.0, "{json}");
}

#[test]
fn load_generator_drives_the_bare_forwarder_the_same_way() {
    // A free port for the forwarder (bound and released; the forwarder binds it again).
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let target = format!("127.0.0.1:{port}");
    let forwarder = binary("blindfold-benches", "bare-forwarder");
    let json = run_fixed_rate(|cmd| {
        cmd.args(["--bare-target", &target, "--participants", "3", "--"])
            .arg(&forwarder)
            .args(["--listen", &target]);
    });
    check_fixed_rate_report(&json);
    // The spawned forwarder's CPU and memory, read from /proc while it ran.
    assert!(field(&json, "relay_rss_kib") > 0.0, "{json}");
}

/// Runs `blindfold-load` against `relay` with the flags `args` adds (besides
/// `--control` and `--json`); returns its JSON report.
fn load_report(relay: &Relay, args: impl FnOnce(&mut Command)) -> String {
    let report = relay.dir.join("load.json");
    run_load(|cmd| {
        cmd.arg("--control")
            .arg(&relay.control)
            .arg("--json")
            .arg(&report);
        args(cmd);
    });
    std::fs::read_to_string(&report).expect("the JSON report")
}

/// Runs `blindfold-load --no-progress` with the flags `args` adds and returns its
/// stdout; fails the test if it does not exit successfully within 30 s.
fn run_load(args: impl FnOnce(&mut Command)) -> String {
    let mut cmd = Command::new(binary("blindfold-client", "blindfold-load"));
    cmd.arg("--no-progress");
    args(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting blindfold-load");
    let status = wait_for(&mut child, Duration::from_secs(30));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    {
        use std::io::Read;
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut stdout);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
    }
    assert!(status.success(), "blindfold-load: {status:?}\n{stderr}");
    stdout
}

/// Runs `blindfold-load` in fixed-rate mode (one sender at 1000 pps of 200-byte payloads
/// for 2 s, udp-blast report) with the target flags `target` adds; returns the report.
fn run_fixed_rate(target: impl FnOnce(&mut Command)) -> String {
    let stdout = run_load(|cmd| {
        cmd.args([
            "--duration",
            "2",
            "--fixed-size",
            "200",
            "--fixed-pps",
            "1000",
        ])
        .args(["--report-format", "udp-blast", "--connect-timeout", "10"]);
        target(cmd);
    });
    stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("a report line")
        .to_owned()
}

/// What every fixed-rate run of [`run_fixed_rate`] must report: one sender at 1000 pps for 2 s,
/// two receivers (fan-out 2), nothing lost, every datagram timed.
fn check_fixed_rate_report(json: &str) {
    let offered = field(json, "offered_pps");
    let sent = field(json, "sent_pps");
    let received = field(json, "received_pps_total");
    assert!(offered > 900.0 && offered <= 1001.0, "{json}");
    assert!(sent > 0.99 * offered, "{json}");
    assert!((received - 2.0 * sent).abs() < 0.01 * 2.0 * sent, "{json}");
    assert!(field(json, "loss") < 0.01, "{json}");
    assert!(field(json, "loss_after_send") < 0.01, "{json}");
    assert!(field(json, "cpu_util") > 0.0, "{json}");
    assert_eq!(field(json, "send_rtp_errors"), 0.0, "{json}");
    // Every counted datagram carried its abs-send-time and was timed; the delays are
    // real ones (positive, and far below the 64 s at which the stamp wraps).
    let timed = field(json, "latency_samples");
    assert!(
        (timed - received * field(json, "duration_s")).abs() <= 0.02 * timed,
        "{json}"
    );
    assert!(field(json, "latency_p50_us") > 0.0, "{json}");
    assert!(field(json, "latency_max_us") < 10_000_000.0, "{json}");
    // Nothing was lost here, so neither side's socket dropped anything.
    assert_eq!(field(json, "drops_forwarder"), 0.0, "{json}");
    assert_eq!(field(json, "drops_sinks"), 0.0, "{json}");
}

/// Waits for `child` to exit; kills it and fails the test after `limit`.
fn wait_for(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("blindfold-load did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Out-of-range durations are refused with a message, before anything starts, not a
/// panic (`Duration::from_secs_f64` would panic on them).
#[test]
fn load_generator_refuses_durations_it_cannot_count() {
    for args in [
        ["--duration", "1e300", "--connect-timeout", "5"],
        ["--duration", "5", "--connect-timeout", "inf"],
    ] {
        let out = Command::new(binary("blindfold-client", "blindfold-load"))
            .args(["--control", "/nonexistent/relay.sock"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run blindfold-load");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains("at most 86400"), "{args:?}: {stderr}");
    }
}
