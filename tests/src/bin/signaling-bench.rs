//! How long a Matrix call takes to be answered by `blindfold-signaling`: from the
//! caller sending `m.call.invite` to the caller's own long-polling `/sync` seeing the
//! SFU's `m.call.answer`, over real processes on loopback (a fresh Synapse, the relay,
//! signaling). Three measurements in one run:
//!
//! - a plain room message round trip (user A sends an `m.room.message`, user B's
//!   long-polling `/sync` receives it): what the homeserver alone costs per hop;
//! - invite → answer for `--calls` sequential calls (one caller after another);
//! - invite → answer for `--calls` concurrent callers (each on its own thread, started
//!   together).
//!
//! An answer needs two such hops (the invite to signaling, the answer back) plus
//! signaling's own work. Signaling's `invite_to_answer_seconds` histogram (invite seen
//! in its sync → the homeserver accepted the answer) is read from its `/metrics` before
//! and after each phase, and the time the caller's `PUT` of the invite took is reported
//! too, to split signaling's share from Synapse's.
//!
//! ```sh
//! cargo run --release -p blindfold-tests --bin signaling-bench -- --calls 50 [--json]
//! ```
//!
//! Figures and how to read them: docs/benchmarks.md, "Signaling: invite to answer".

// A benchmark reads the clock.
#![allow(clippy::disallowed_methods)]

use std::sync::Barrier;
use std::time::{Duration, Instant};

use blindfold_tests::bench::{Cpu, Row, load_average};
use blindfold_tests::matrix::{MatrixUser, pointer_token};
use blindfold_tests::process::Relay;
use blindfold_tests::signaling::{
    Caller, Signaling, conference_room, create_dm, invite_content, sfu_reply, wait_joined,
};
use blindfold_tests::synapse::{PASSWORD, Synapse, unique_localpart};
use serde_json::json;

/// The longest any one call, message or set-up step may take before the bench gives up.
const WAIT: Duration = Duration::from_secs(60);
const CONF: &str = "bench";
/// Signaling's histogram series.
const HISTOGRAM: &str = "blindfold_signaling_invite_to_answer_seconds";
/// Its bucket bounds (signaling's `LATENCY_BUCKETS`), for reading a median off it.
const BUCKETS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.15", "0.25", "0.5", "1", "2.5", "5", "10",
];

fn usage() -> ! {
    eprintln!(
        "usage: signaling-bench [--calls N] [--json]\n\
         \n\
         --calls N   calls per phase, and concurrent callers (default 50)\n\
         --json      also print one JSON line with every figure"
    );
    std::process::exit(2)
}

fn main() {
    let mut calls = 50usize;
    let mut json_line = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--calls" => {
                calls = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage())
            }
            "--json" => json_line = true,
            _ => usage(),
        }
    }

    eprintln!("starting Synapse, the relay and signaling…");
    let synapse = Synapse::start();
    let relay = Relay::start(1);
    let sfu = synapse.register(&unique_localpart("sfu"), PASSWORD, false);
    // Defaults allow 100 calls per conference and 20 invites per user per minute; each
    // caller places at most three calls here, all in one conference.
    let limits = format!(
        "max_calls = {}\nmax_calls_per_conference = {}\n",
        4 * calls + 10,
        4 * calls + 10
    );
    let mut signaling = Signaling::start(&synapse, &relay.control, &sfu.user_id, PASSWORD, &limits);
    signaling.wait_ready();

    eprintln!("setting up {calls} callers, their DMs with the SFU and the conference…");
    let owner = synapse.new_user("owner");
    let users: Vec<MatrixUser> = (0..calls)
        .map(|i| synapse.new_user(&format!("caller{i}")))
        .collect();
    let members: Vec<&MatrixUser> = users.iter().collect();
    let room = conference_room(&owner, &members, &sfu.user_id, CONF);
    let dms: Vec<String> = users.iter().map(|u| create_dm(u, &sfu.user_id)).collect();
    for (u, dm) in users.iter().zip(&dms) {
        wait_joined(u, dm, &sfu.user_id);
    }
    let mut callers: Vec<BenchCaller> = users
        .iter()
        .zip(dms)
        .enumerate()
        .map(|(i, (u, dm))| BenchCaller::new(u, dm, &room, Caller::new(100 + i)))
        .collect();

    // The message round trip: A sends in a room both joined, B's sync receives.
    let a = synapse.new_user("a");
    let b = synapse.new_user("b");
    let plain = a
        .create_room(&json!({"preset": "private_chat", "invite": [b.user_id()]}))
        .expect("create the message room");
    b.join(&plain).expect("B joins the message room");
    let mut b_sync = Syncer::new(&b);

    // Warm-up, not counted: the first message and call pay for caches and connections.
    message_round_trip(&a, &mut b_sync, &plain, "warm-up");
    callers[0].call("warm-up");

    eprintln!("measuring…");
    let load_before = load_average();
    let procs = [
        ("Synapse", synapse.pid().expect("Synapse runs")),
        ("signaling", signaling.pid().expect("signaling runs")),
        ("relay", relay.pid()),
        ("this bench", std::process::id()),
    ];
    let cpu_start = Cpu::of(&procs);
    let messages: Vec<Duration> = (0..calls)
        .map(|i| message_round_trip(&a, &mut b_sync, &plain, &format!("ping {i}")))
        .collect();

    let cpu_before = Cpu::of(&procs);
    let before = histogram(&signaling);
    let sequential: Vec<Timed> = callers
        .iter_mut()
        .enumerate()
        .map(|(i, c)| c.call(&format!("seq-{i}")))
        .collect();
    let after_sequential = histogram(&signaling);
    let cpu_sequential = Cpu::of(&procs);

    let start = Barrier::new(calls);
    let concurrent: Vec<Timed> = std::thread::scope(|s| {
        let threads: Vec<_> = callers
            .iter_mut()
            .enumerate()
            .map(|(i, c)| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    c.call(&format!("con-{i}"))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a caller thread panicked"))
            .collect()
    });
    let after_concurrent = histogram(&signaling);
    let cpu_concurrent = Cpu::of(&procs);
    // Every answer was a call signaling admitted onto the relay (the relay's own session
    // count is no check here: a session nobody connects to fails after 30 s).
    assert_eq!(
        signaling.metric("blindfold_signaling_calls_admitted_total"),
        Some((2 * calls + 1) as f64),
        "signaling admitted another number of calls than were answered"
    );

    let rows = [
        Row::of("message", "room message, A's send → B's sync", &messages),
        Row::of(
            "answer_sequential",
            "invite → answer, sequential",
            &sequential.iter().map(|t| t.answer).collect::<Vec<_>>(),
        ),
        Row::of(
            "invite_put_sequential",
            "  of which the invite's PUT",
            &sequential.iter().map(|t| t.put).collect::<Vec<_>>(),
        ),
        Row::of(
            "answer_concurrent",
            &format!("invite → answer, {calls} concurrent"),
            &concurrent.iter().map(|t| t.answer).collect::<Vec<_>>(),
        ),
        Row::of(
            "invite_put_concurrent",
            "  of which the invite's PUT",
            &concurrent.iter().map(|t| t.put).collect::<Vec<_>>(),
        ),
    ];
    let load_after = load_average();
    let sig_seq = after_sequential.since(&before);
    let sig_con = after_concurrent.since(&after_sequential);

    Row::print_table("what (ms)", &rows, 40);
    println!(
        "signaling, invite in its sync → answer accepted (its histogram):\n  \
         sequential: n {} mean {:.1} ms, median ≤ {} s\n  \
         concurrent: n {} mean {:.1} ms, median ≤ {} s",
        sig_seq.count,
        sig_seq.mean_ms(),
        sig_seq.median_bound(),
        sig_con.count,
        sig_con.mean_ms(),
        sig_con.median_bound(),
    );
    let cpu_msg = cpu_before.since(&cpu_start);
    let cpu_seq = cpu_sequential.since(&cpu_before);
    let cpu_con = cpu_concurrent.since(&cpu_sequential);
    println!(
        "CPU seconds used by phase (wall time): messages {:.1} s | sequential calls {:.1} s | \
         concurrent calls {:.1} s",
        cpu_msg.wall, cpu_seq.wall, cpu_con.wall
    );
    for (((name, m), (_, s)), (_, c)) in cpu_msg.used.iter().zip(&cpu_seq.used).zip(&cpu_con.used) {
        println!("  {name:<12} {m:>6.2} | {s:>6.2} | {c:>6.2}");
    }
    // The machine is shared: say how busy it was.
    println!("1-minute load average: {load_before} before, {load_after} after");
    if json_line {
        let ms = |x: f64| (x * 10.0).round() / 10.0;
        let mut line = json!({"calls": calls});
        for r in &rows {
            line[r.key] = r.json();
        }
        let sig = |h: &Histogram| json!({"n": h.count, "mean_ms": ms(h.mean_ms()), "median_le_s": h.median_bound()});
        line["load_before"] = json!(load_before);
        line["load_after"] = json!(load_after);
        line["cpu_s_messages"] = cpu_msg.json();
        line["cpu_s_sequential"] = cpu_seq.json();
        line["cpu_s_concurrent"] = cpu_con.json();
        line["signaling_sequential"] = sig(&sig_seq);
        line["signaling_concurrent"] = sig(&sig_con);
        println!("{line}");
    }
}

/// Long-polls `/sync` for one account, as a client does all the time.
struct Syncer {
    user: MatrixUser,
}

impl Syncer {
    /// A second handle on `user`'s device (its own `since`), positioned at now.
    fn new(user: &MatrixUser) -> Syncer {
        let mut user = MatrixUser::new(
            user.base_url(),
            user.user_id(),
            user.device_id(),
            user.access_token(),
        );
        user.wait_for("the initial sync", WAIT, |_| Some(()));
        Syncer { user }
    }
}

/// A message from `a` in `room`, timed until `b` sees it in its sync.
fn message_round_trip(a: &MatrixUser, b: &mut Syncer, room: &str, body: &str) -> Duration {
    let pointer = format!("/rooms/join/{}/timeline/events", pointer_token(room));
    std::thread::scope(|s| {
        let seen = s.spawn(|| {
            b.user.wait_for(&format!("message {body:?}"), WAIT, |sync| {
                sync.pointer(&pointer)?
                    .as_array()?
                    .iter()
                    .any(|e| e["type"] == "m.room.message" && e["content"]["body"] == body)
                    .then(Instant::now)
            })
        });
        let sent = Instant::now();
        a.send_event(
            room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": body}),
        )
        .expect("send a message");
        seen.join().expect("the receiving thread panicked") - sent
    })
}

/// One caller: a device that sends, the same device's sync, its DM with the SFU.
struct BenchCaller<'a> {
    sender: &'a MatrixUser,
    sync: Syncer,
    dm: String,
    conference_room: String,
    offer: String,
}

/// One call's times.
struct Timed {
    /// Sending the invite → the answer in the caller's sync.
    answer: Duration,
    /// The invite's `PUT /send` alone.
    put: Duration,
}

impl<'a> BenchCaller<'a> {
    fn new(sender: &'a MatrixUser, dm: String, room: &str, caller: Caller) -> Self {
        BenchCaller {
            sync: Syncer::new(sender),
            sender,
            dm,
            conference_room: room.to_owned(),
            offer: caller.offer(),
        }
    }

    /// Calls the SFU and waits for its answer; panics on a hangup.
    fn call(&mut self, call_id: &str) -> Timed {
        let content = invite_content(call_id, &self.conference_room, CONF, &self.offer);
        let me = self.sender.user_id().to_owned();
        let (dm, sync) = (&self.dm, &mut self.sync);
        std::thread::scope(|s| {
            let reply = s.spawn(|| {
                sync.user
                    .wait_for(&format!("the answer to {call_id}"), WAIT, |r| {
                        sfu_reply(r, dm, &me, call_id)
                    })
            });
            let sent = Instant::now();
            self.sender
                .send_event(dm, "m.call.invite", &content)
                .expect("send the invite");
            let put = sent.elapsed();
            let (kind, content) = reply.join().expect("the syncing thread panicked");
            let answer = sent.elapsed();
            assert_eq!(kind, "m.call.answer", "{call_id} refused: {content}");
            Timed { answer, put }
        })
    }
}

/// Signaling's invite-to-answer histogram at one moment (or a difference of two).
struct Histogram {
    count: f64,
    sum: f64,
    /// Cumulative counts per bucket of [`BUCKETS`].
    buckets: Vec<f64>,
}

fn histogram(s: &Signaling) -> Histogram {
    let get = |series: &str| {
        s.metric(series)
            .unwrap_or_else(|| panic!("no {series} in signaling's /metrics"))
    };
    Histogram {
        count: get(&format!("{HISTOGRAM}_count")),
        sum: get(&format!("{HISTOGRAM}_sum")),
        buckets: BUCKETS
            .iter()
            .map(|b| get(&format!("{HISTOGRAM}_bucket{{le=\"{b}\"}}")))
            .collect(),
    }
}

impl Histogram {
    fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            count: self.count - earlier.count,
            sum: self.sum - earlier.sum,
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| a - b)
                .collect(),
        }
    }

    fn mean_ms(&self) -> f64 {
        if self.count == 0.0 {
            return f64::NAN;
        }
        self.sum / self.count * 1e3
    }

    /// The smallest bucket bound that holds half the observations.
    fn median_bound(&self) -> &'static str {
        BUCKETS
            .iter()
            .zip(&self.buckets)
            .find(|(_, n)| **n * 2.0 >= self.count)
            .map_or("+Inf", |(b, _)| b)
    }
}
