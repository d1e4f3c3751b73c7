//! Join time: from a participant sending its `m.call.invite` to the first packet it
//! decrypts from every other member of the conference, over real processes on
//! loopback (a fresh Synapse, the relay, `blindfold-signaling`, release builds) and
//! participants on the client library's [`Conference`] (matrix-sdk with E2EE and a
//! SQLite store each, real ICE, DTLS and SRTP over UDP), all members sending the
//! synthetic audio, thumbnail and full-resolution streams.
//!
//! The scenario: `--members` standing members are in the call. A joiner — one more
//! member of the room, logging in as a **new device** each time, so that nothing of an
//! earlier join is in its store and the members' earlier key events are undecryptable
//! to it, as for anyone who just arrived — joins, is measured until it decrypted every
//! member and every member decrypted it, hangs up and logs its device out; the members
//! see it leave and rekey, and the next join starts once every member switched to its
//! new key and the relay dropped the joiner's session. One warm-up join (it also
//! creates the joiner's DM with the SFU) is not counted, then `--joins` are.
//!
//! What is timed, from the invite ([`Conference::invited_at`]):
//!
//! - the answer in the joiner's sync ([`Conference::answered_at`]);
//! - ICE and DTLS done ([`ConferenceEvent::Connected`]);
//! - the joiner's key event accepted by the homeserver ([`ConferenceEvent::KeysPublished`]:
//!   for a new device this includes sharing its megolm session with every member's
//!   devices);
//! - every member installed the joiner's key (each member's
//!   [`ConferenceEvent::KeysAccepted`] for the joiner's device), and re-sent its own
//!   key event for the newcomer (its next `KeysPublished`);
//! - the joiner installed every member's key (its `KeysAccepted` per member);
//! - the first packet decrypted from every member (its first [`ConferenceEvent::Media`]
//!   from each): the **join time**;
//! - every member decrypted the joiner (the same, the other way).
//!
//! Events are stamped when a task dedicated to each conference takes them, except
//! `Connected` and `KeysPublished`, which carry their own time (they are often
//! reported while [`Conference::join`] is still running).
//!
//! ```sh
//! cargo run --release -p blindfold-tests --bin join-bench -- --joins 20 [--members 3] [--json]
//! ```
//!
//! Figures and how to read them: docs/benchmarks.md, "Join time".

// A benchmark reads the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blindfold_client::DropReason;
use blindfold_client::conference::{
    Conference, ConferenceConfig, ConferenceEvent, Login, MediaMode, MemberId,
};
use blindfold_tests::bench::{Cpu, Row, load_average};
use blindfold_tests::process::Relay;
use blindfold_tests::signaling::{Signaling, conference_room};
use blindfold_tests::synapse::{PASSWORD, Synapse, unique_localpart};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

/// The longest any one join, leave or set-up step may take before the bench gives up.
const WAIT: Duration = Duration::from_secs(30);
const CONF: &str = "bench";

fn usage() -> ! {
    eprintln!(
        "usage: join-bench [--joins N] [--members M] [--json]\n\
         \n\
         --joins N     measured joins, after one warm-up join (default 20)\n\
         --members M   standing members in the call (default 3)\n\
         --json        also print one JSON line with every figure"
    );
    std::process::exit(2)
}

fn main() {
    let mut joins = 20usize;
    let mut members = 3usize;
    let mut json_line = false;
    let mut args = std::env::args().skip(1);
    let count = |args: &mut dyn Iterator<Item = String>| {
        args.next()
            .and_then(|n| n.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| usage())
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--joins" => joins = count(&mut args),
            "--members" => members = count(&mut args),
            "--json" => json_line = true,
            _ => usage(),
        }
    }

    eprintln!("starting Synapse, the relay and signaling…");
    let synapse = Synapse::start();
    let relay = Relay::start(1);
    let sfu = synapse.register(&unique_localpart("sfu"), PASSWORD, false);
    // One joiner user calls once per join: lift the default 20 invites per user and
    // minute (every call is hung up before the next, so the other limits hold).
    let mut signaling = Signaling::start(
        &synapse,
        &relay.control,
        &sfu.user_id,
        PASSWORD,
        "invites_per_user_per_minute = 100000\n",
    );
    signaling.wait_ready();

    eprintln!("setting up the conference room ({members} members and the joiner)…");
    let users: Vec<_> = (0..members)
        .map(|i| synapse.new_user(&format!("member{i}")))
        .chain(std::iter::once(synapse.new_user("joiner")))
        .collect();
    let others: Vec<_> = users[1..].iter().collect();
    let room = conference_room(&users[0], &others, &sfu.user_id, CONF);
    let ids: Vec<String> = users.iter().map(|u| u.user_id().to_owned()).collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let procs = [
        ("Synapse", synapse.pid().expect("Synapse runs")),
        ("signaling", signaling.pid().expect("signaling runs")),
        ("relay", relay.pid()),
        ("this bench", std::process::id()),
    ];
    let env = Env {
        base_url: synapse.base_url().to_owned(),
        room,
        ids,
        relay: &relay,
    };
    let results = runtime.block_on(bench(&env, joins, &procs));
    runtime.shutdown_timeout(Duration::from_secs(1));
    print(&results, members, json_line);
}

/// What the rounds need to know of the set-up.
struct Env<'a> {
    base_url: String,
    room: String,
    /// User ids: the members, then the joiner.
    ids: Vec<String>,
    relay: &'a Relay,
}

impl Env<'_> {
    fn joiner(&self) -> usize {
        self.ids.len() - 1
    }

    fn config(&self, who: usize, epoch: Instant) -> ConferenceConfig {
        let store = std::env::temp_dir().join(format!(
            "bf-join-bench-{}",
            unique_localpart(if who == self.joiner() {
                "joiner"
            } else {
                "member"
            })
        ));
        let mut cfg = ConferenceConfig::new(
            self.base_url.clone(),
            Login::Password {
                user: self.ids[who].clone(),
                password: PASSWORD.to_owned(),
            },
            store,
            self.room.clone(),
            CONF,
        );
        cfg.media = MediaMode::Synthetic {
            epoch,
            seed: who as u64 + 1,
        };
        cfg.timeout = WAIT;
        cfg
    }

    /// The relay's sessions (configured, whatever their state).
    fn relay_sessions(&self) -> u64 {
        self.relay
            .metric("blindfold_sessions{state=\"configured\"}")
    }
}

/// What a conference reported, as the bench needs it.
#[derive(Debug)]
enum Seen {
    Connected(Instant),
    KeysPublished(Instant),
    KeysAccepted(MemberId),
    MemberLeft(MemberId),
    KeyActivated,
    /// The first packet decrypted from this member's device.
    FirstMedia(MemberId),
    /// A packet on a declared stream that did not decrypt.
    DecryptFailure,
    Ended(String),
}

/// One report: from conference `who` (an index into [`Env::ids`]), taken at `at`.
#[derive(Debug)]
struct Report {
    who: usize,
    at: Instant,
    seen: Seen,
}

/// Takes `conf`'s events as they come and reports what the bench needs, until told to
/// stop; then hands the conference back.
async fn watch(
    mut conf: Conference,
    who: usize,
    tx: mpsc::UnboundedSender<Report>,
    mut stop: oneshot::Receiver<()>,
) -> Conference {
    let mut heard: HashSet<(String, String)> = HashSet::new();
    loop {
        let ev = tokio::select! {
            _ = &mut stop => return conf,
            ev = conf.next_event() => ev,
        };
        let at = Instant::now();
        let seen = match ev {
            None => {
                let _ = tx.send(Report {
                    who,
                    at,
                    seen: Seen::Ended("the conference's tasks stopped".into()),
                });
                let _ = stop.await;
                return conf;
            }
            Some(ConferenceEvent::Connected { at }) => Seen::Connected(at),
            Some(ConferenceEvent::KeysPublished { at, .. }) => Seen::KeysPublished(at),
            Some(ConferenceEvent::KeysAccepted { member, .. }) => Seen::KeysAccepted(member),
            Some(ConferenceEvent::MemberLeft { member }) => Seen::MemberLeft(member),
            Some(ConferenceEvent::KeyActivated { .. }) => Seen::KeyActivated,
            Some(ConferenceEvent::Media {
                from: Some(from), ..
            }) => {
                if !heard.insert((from.user_id.clone(), from.device_id.clone())) {
                    continue;
                }
                Seen::FirstMedia(from)
            }
            Some(ConferenceEvent::Undecryptable {
                reason: DropReason::Srtp(_),
                ..
            }) => Seen::DecryptFailure,
            Some(ConferenceEvent::Ended { reason, .. }) => Seen::Ended(reason),
            Some(_) => continue,
        };
        let _ = tx.send(Report { who, at, seen });
    }
}

/// A conference running in its own [`watch`] task.
struct Watched {
    handle: tokio::task::JoinHandle<Conference>,
    stop: oneshot::Sender<()>,
    device: String,
    store: PathBuf,
}

impl Watched {
    fn start(
        conf: Conference,
        who: usize,
        tx: &mpsc::UnboundedSender<Report>,
        store: PathBuf,
    ) -> Watched {
        let (stop, stop_rx) = oneshot::channel();
        let device = conf.device_id().to_owned();
        Watched {
            handle: tokio::spawn(watch(conf, who, tx.clone(), stop_rx)),
            stop,
            device,
            store,
        }
    }

    /// Hangs up; with `logout`, also logs the device out (a joiner's device is used
    /// once). Removes its store.
    async fn leave(self, logout: bool) {
        let _ = self.stop.send(());
        let conf = self.handle.await.expect("a watch task panicked");
        let client = conf.client().clone();
        conf.hangup().await.expect("hang up");
        if logout {
            client.logout().await.expect("log the joiner's device out");
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Receives reports until `done` holds; panics naming `what` after `limit`, or when a
/// conference ends.
async fn until(
    rx: &mut mpsc::UnboundedReceiver<Report>,
    limit: Duration,
    what: &str,
    mut on: impl FnMut(Report) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let r = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
            .expect("the report channel is open");
        if let Seen::Ended(reason) = &r.seen {
            panic!(
                "conference {} ended while waiting for {what}: {reason}",
                r.who
            );
        }
        if on(r) {
            return;
        }
    }
}

/// One join's milestones.
#[derive(Debug, Default)]
struct Join {
    invited: Option<Instant>,
    answered: Option<Instant>,
    connected: Option<Instant>,
    published: Option<Instant>,
    /// Per member: it installed the joiner's key; then its re-sent key event went out.
    member_installed: HashMap<usize, Instant>,
    member_resent: HashMap<usize, Instant>,
    /// Per member: the joiner installed its key; decrypted its first packet.
    keys_from: HashMap<usize, Instant>,
    media_from: HashMap<usize, Instant>,
    /// Per member: it decrypted the joiner's first packet.
    decrypted_by: HashMap<usize, Instant>,
    decrypt_failures: u64,
}

/// One join's figures, in ms from the invite.
#[derive(Debug, Clone)]
struct Times {
    answer: f64,
    connected: f64,
    published: f64,
    members_installed: f64,
    members_resent: f64,
    keys_in: f64,
    /// The join time.
    decrypted_all: f64,
    members_decrypted: f64,
    /// Keys (rather than the connection) came last before the first packets.
    keys_last: bool,
}

impl Join {
    fn complete(&self, members: usize) -> bool {
        self.media_from.len() == members && self.decrypted_by.len() == members
    }

    fn times(&self) -> Times {
        let t0 = self.invited.expect("invited");
        let ms = |t: Instant| t.saturating_duration_since(t0).as_secs_f64() * 1e3;
        let last = |m: &HashMap<usize, Instant>| ms(*m.values().max().expect("every member"));
        let connected = ms(self.connected.expect("connected"));
        let keys_in = last(&self.keys_from);
        Times {
            answer: ms(self.answered.expect("answered")),
            connected,
            published: ms(self.published.expect("published")),
            members_installed: last(&self.member_installed),
            members_resent: last(&self.member_resent),
            keys_in,
            decrypted_all: last(&self.media_from),
            members_decrypted: last(&self.decrypted_by),
            keys_last: keys_in >= connected,
        }
    }
}

struct Results {
    joins: Vec<Times>,
    decrypt_failures: u64,
    cpu: Cpu,
    load_before: String,
    load_after: String,
}

async fn bench(env: &Env<'_>, joins: usize, procs: &[(&'static str, u32)]) -> Results {
    let members = env.joiner();
    let epoch = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let who_is = |user: &str| env.ids.iter().position(|u| u == user);

    // The standing members join together and wait until everyone decrypts everyone.
    let joining: Vec<_> = (0..members)
        .map(|i| {
            let cfg = env.config(i, epoch);
            let store = cfg.store.clone();
            (tokio::spawn(Conference::join(cfg)), store)
        })
        .collect();
    let mut standing = Vec::new();
    for (i, (j, store)) in joining.into_iter().enumerate() {
        let conf = j
            .await
            .expect("a join task panicked")
            .unwrap_or_else(|e| panic!("member {i} joins: {e}"));
        standing.push(Watched::start(conf, i, &tx, store));
    }
    let mut heard = HashSet::new();
    until(&mut rx, WAIT, "the members decrypt each other", |r| {
        if let Seen::FirstMedia(from) = &r.seen
            && let Some(k) = who_is(&from.user_id)
        {
            heard.insert((r.who, k));
        }
        heard.len() == members * (members - 1)
    })
    .await;
    eprintln!("{members} members decrypt each other; joining…");

    let mut results = Vec::new();
    let mut failures = 0;
    let mut cpu_start = None;
    let mut load_before = String::new();
    for round in 0..=joins {
        if round == 1 {
            // The warm-up join is done.
            cpu_start = Some(Cpu::of(procs));
            load_before = load_average();
        }
        let j = join_once(env, &tx, &mut rx).await;
        let t = j.times();
        failures += j.decrypt_failures;
        eprintln!(
            "{} {round}: {:.0} ms (answer {:.0}, connected {:.0}, own keys out {:.0}, \
             members installed them {:.0}, re-sent {:.0}, joiner installed all {:.0}; \
             members decrypted the joiner {:.0})",
            if round == 0 { "warm-up" } else { "join" },
            t.decrypted_all,
            t.answer,
            t.connected,
            t.published,
            t.members_installed,
            t.members_resent,
            t.keys_in,
            t.members_decrypted,
        );
        if round > 0 {
            results.push(t);
        }
    }
    let cpu = Cpu::of(procs).since(&cpu_start.expect("at least one measured join"));
    let load_after = load_average();
    for w in standing {
        w.leave(false).await;
    }
    Results {
        joins: results,
        decrypt_failures: failures,
        cpu,
        load_before,
        load_after,
    }
}

/// One join: the joiner joins, is timed until it and the members decrypt each other,
/// leaves, and the members settle (rekeyed, the relay session gone).
async fn join_once(
    env: &Env<'_>,
    tx: &mpsc::UnboundedSender<Report>,
    rx: &mut mpsc::UnboundedReceiver<Report>,
) -> Join {
    let members = env.joiner();
    let joiner = env.joiner();
    let who_is = |user: &str| env.ids[..members].iter().position(|u| u == user);
    let cfg = env.config(joiner, Instant::now());
    let store = cfg.store.clone();
    // Reports from the members while the joiner is still in Conference::join wait in the
    // channel with their times.
    let conf = Conference::join(cfg)
        .await
        .unwrap_or_else(|e| panic!("the joiner joins: {e}"));
    let mut j = Join {
        invited: Some(conf.invited_at()),
        answered: Some(conf.answered_at()),
        ..Join::default()
    };
    let w = Watched::start(conf, joiner, tx, store);
    let device = w.device.clone();
    until(
        rx,
        WAIT,
        "the joiner and the members decrypt each other",
        |r| {
            match (r.who == joiner, r.seen) {
                (true, Seen::Connected(at)) => j.connected = Some(at),
                (true, Seen::KeysPublished(at)) => {
                    j.published.get_or_insert(at);
                }
                (true, Seen::KeysAccepted(m)) => {
                    if let Some(k) = who_is(&m.user_id) {
                        j.keys_from.entry(k).or_insert(r.at);
                    }
                }
                (true, Seen::FirstMedia(m)) => {
                    if let Some(k) = who_is(&m.user_id) {
                        j.media_from.entry(k).or_insert(r.at);
                    }
                }
                (false, Seen::KeysAccepted(m)) if m.device_id == device => {
                    j.member_installed.entry(r.who).or_insert(r.at);
                }
                (false, Seen::KeysPublished(at))
                    if j.member_installed.get(&r.who).is_some_and(|t| at >= *t) =>
                {
                    j.member_resent.entry(r.who).or_insert(at);
                }
                (false, Seen::FirstMedia(m)) if m.device_id == device => {
                    j.decrypted_by.entry(r.who).or_insert(r.at);
                }
                (_, Seen::DecryptFailure) => j.decrypt_failures += 1,
                _ => {}
            }
            j.complete(members)
        },
    )
    .await;

    w.leave(true).await;
    // Every member saw the joiner leave and switched to its fresh key.
    let mut left = HashSet::new();
    let mut switched = HashSet::new();
    until(rx, WAIT, "the members rekey after the joiner left", |r| {
        match r.seen {
            Seen::MemberLeft(m) if m.device_id == device => {
                left.insert(r.who);
            }
            Seen::KeyActivated if left.contains(&r.who) => {
                switched.insert(r.who);
            }
            Seen::DecryptFailure => j.decrypt_failures += 1,
            _ => {}
        }
        switched.len() == members
    })
    .await;
    let deadline = Instant::now() + WAIT;
    while env.relay_sessions() != members as u64 {
        assert!(
            Instant::now() < deadline,
            "the relay still has the joiner's session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    j
}

fn print(r: &Results, members: usize, json_line: bool) {
    let col = |f: fn(&Times) -> f64| r.joins.iter().map(f).collect::<Vec<f64>>();
    let milestones = [
        Row::of_ms("answer", "answer in the joiner's sync", &col(|t| t.answer)),
        Row::of_ms("connected", "ICE + DTLS connected", &col(|t| t.connected)),
        Row::of_ms(
            "published",
            "joiner's key event accepted by the homeserver",
            &col(|t| t.published),
        ),
        Row::of_ms(
            "members_installed",
            "every member installed the joiner's key",
            &col(|t| t.members_installed),
        ),
        Row::of_ms(
            "members_resent",
            "every member's re-sent key event accepted",
            &col(|t| t.members_resent),
        ),
        Row::of_ms(
            "keys_in",
            "the joiner installed every member's key",
            &col(|t| t.keys_in),
        ),
        Row::of_ms(
            "join",
            "JOIN: first packet decrypted from every member",
            &col(|t| t.decrypted_all),
        ),
        Row::of_ms(
            "members_decrypted",
            "every member decrypted the joiner",
            &col(|t| t.members_decrypted),
        ),
    ];
    let phases = [
        Row::of_ms("invite_answer", "invite → answer", &col(|t| t.answer)),
        Row::of_ms(
            "answer_connected",
            "answer → ICE + DTLS connected",
            &col(|t| t.connected - t.answer),
        ),
        Row::of_ms(
            "answer_published",
            "answer → joiner's key event out (megolm share)",
            &col(|t| t.published - t.answer),
        ),
        Row::of_ms(
            "published_installed",
            "key event out → every member installed it",
            &col(|t| t.members_installed - t.published),
        ),
        Row::of_ms(
            "installed_resent",
            "→ every member's re-sent key event out",
            &col(|t| t.members_resent - t.members_installed),
        ),
        Row::of_ms(
            "resent_keys_in",
            "→ the joiner installed every key",
            &col(|t| t.keys_in - t.members_resent),
        ),
        Row::of_ms(
            "ready_first_packets",
            "max(keys in, connected) → first packet from every member",
            &col(|t| t.decrypted_all - t.keys_in.max(t.connected)),
        ),
    ];
    let keys_last = r.joins.iter().filter(|t| t.keys_last).count();
    println!(
        "{} joins into a conference of {members} members (ms from the joiner's m.call.invite)",
        r.joins.len()
    );
    Row::print_table("milestone", &milestones, 58);
    Row::print_table("phase", &phases, 58);
    println!(
        "last before the first packets: the keys in {keys_last} joins, the connection in {}",
        r.joins.len() - keys_last
    );
    println!("decrypt failures (any conference): {}", r.decrypt_failures);
    println!(
        "CPU seconds over the measured joins ({:.1} s wall):",
        r.cpu.wall
    );
    for (name, s) in &r.cpu.used {
        println!("  {name:<12} {s:>6.2}");
    }
    println!(
        "1-minute load average: {} before, {} after",
        r.load_before, r.load_after
    );
    if json_line {
        let mut line = json!({"joins": r.joins.len(), "members": members});
        for row in milestones.iter().chain(&phases) {
            line[row.key] = row.json();
        }
        line["join_ms_each"] = json!(
            r.joins
                .iter()
                .map(|t| (t.decrypted_all * 10.0).round() / 10.0)
                .collect::<Vec<_>>()
        );
        line["keys_last"] = json!(keys_last);
        line["decrypt_failures"] = json!(r.decrypt_failures);
        line["cpu_s"] = r.cpu.json();
        line["load_before"] = json!(r.load_before);
        line["load_after"] = json!(r.load_after);
        println!("{line}");
    }
}
