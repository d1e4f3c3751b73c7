//! The IO shell around [`Core`]: login, the `/sync` loop, the relay link, the store, the
//! outgoing Matrix events and the metrics endpoint.
//!
//! One task (the loop in [`run`]) owns the core and the store and handles, one at a
//! time, a sync batch or a relay event, then carries out the core's actions in order.
//! Relay requests are awaited in that loop (a local socket: sub-millisecond), so the
//! relay sees changes in the order the core made them. Matrix sends go to a per-room
//! queue (`Outbox`) so a slow homeserver never holds up the loop, while events of one
//! room (an answer, then a hangup) keep their order. Each event is written to the store
//! before the sync batch that caused it is marked handled, and deleted once sent: a
//! crash loses none, the next start sends them (with the same transaction ids, so the
//! homeserver drops any it already had).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blindfold_relay::control::{ConferenceSpec, ErrorCode, RequestBody};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{Config, Credentials};
use crate::core::{Action, Core, CoreConfig};
use crate::matrix::{self, Matrix, MatrixError};
use crate::metrics::{self, Metrics};
use crate::relay_link::{LinkEvent, RelayError, RelayLink};
use crate::store::{SavedSession, Store, StoreError};
use crate::sync::{Event, SyncResponse, filter_json, gap_filter_json};

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The homeserver refused or failed in a way retrying cannot fix.
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// The SFU account has end-to-end encryption keys.
    #[error(
        "the SFU account {user} has end-to-end encryption keys on device(s) {}: members' clients \
         would share their room keys, and so their media keys, with it. Use an account that has \
         never run an encrypting client, or delete those devices (Element: Settings > Sessions; \
         or DELETE /_matrix/client/v3/devices/<id>), then start again",
        devices.join(", ")
    )]
    HasDeviceKeys {
        /// The account.
        user: String,
        /// Its devices with keys.
        devices: Vec<String>,
    },
    /// The metrics port could not be bound.
    #[error("metrics: {0}")]
    Metrics(std::io::Error),
    /// The access token stopped working.
    #[error("the homeserver no longer accepts the SFU's access token ({0}); log in again")]
    LoggedOut(String),
    /// The homeserver refused to log the SFU account in: a wrong password or access
    /// token, which no retry mends.
    #[error(
        "the homeserver refused to log in {user} ({source}): check its password or access token"
    )]
    LoginRefused {
        /// The account, as configured.
        user: String,
        /// The homeserver's answer.
        source: MatrixError,
    },
}

/// The wall clock, ms since the Unix epoch (invite lifetimes are wall-clock).
#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The monotonic clock, for latencies.
#[allow(clippy::disallowed_methods)]
fn instant() -> Instant {
    Instant::now()
}

fn os_random(buf: &mut [u8]) {
    aws_lc_rs::rand::fill(buf).expect("the OS random generator failed");
}

/// Whether `id` (a full user id) is the account `user` names (a full id or a localpart).
fn same_user(user: &str, id: &str) -> bool {
    id == user
        || id
            .strip_prefix('@')
            .and_then(|r| r.split_once(':'))
            .is_some_and(|(l, _)| l == user)
}

/// The SFU account, logged in.
struct LoggedIn {
    /// The Matrix client, with the session's access token.
    mx: Matrix,
    session: SavedSession,
    /// Whether the session is a new one, to be saved (else it is the stored one).
    new: bool,
    /// The account's devices that have published encryption keys: there must be none.
    keyed_devices: Vec<String>,
}

/// Logs in, reusing `stored` (the store's session of the configured account on the
/// configured homeserver) while its token still works, and lists the account's devices
/// that have encryption keys.
///
/// A homeserver that does not answer or fails transiently (a 5xx, a 429) is asked
/// again for as long as it takes, each failure logged: signaling may start before its
/// homeserver, as after a host's reboot. A refusal (a wrong password or access token)
/// is final.
async fn login(
    cfg: &Config,
    stored: Option<SavedSession>,
    mut mx: Matrix,
) -> Result<LoggedIn, ServiceError> {
    // A new login keeps the stored device: the homeserver de-duplicates sends by
    // transaction id per device, and the events the last run left queued go again.
    let device = stored.as_ref().map(|s| s.device_id.clone());
    let mut reused = None;
    if let Some(s) = stored {
        mx.set_token(&s.access_token);
        match until_answered("checking the stored session", || mx.whoami()).await {
            Ok((user, _)) if user == s.user_id => reused = Some(s),
            Ok(_) => {}
            Err(e) if matrix::is_unknown_token(&e) => {
                tracing::info!("stored session expired; logging in again")
            }
            Err(e) => return Err(e.into()),
        }
    }
    let refused = |e: MatrixError| match e {
        MatrixError::Api {
            status: 401 | 403, ..
        } => ServiceError::LoginRefused {
            user: cfg.user.clone(),
            source: e,
        },
        e => e.into(),
    };
    let (session, new) = match reused {
        Some(s) => (s, false),
        None => {
            let (user_id, device_id, access_token) = match &cfg.credentials {
                Credentials::Password(pw) => {
                    let on_device = until_answered("logging in", || {
                        mx.login_password(&cfg.user, pw, device.as_deref())
                    });
                    let l = match on_device.await {
                        // A server that will not take our device back: a new one.
                        Err(MatrixError::Api {
                            status: 400 | 403, ..
                        }) if device.is_some() => {
                            tracing::info!(
                                "the homeserver refused the stored device; logging in on a new one"
                            );
                            until_answered("logging in", || mx.login_password(&cfg.user, pw, None))
                                .await
                        }
                        r => r,
                    }
                    .map_err(refused)?;
                    (l.user_id, l.device_id, l.access_token)
                }
                Credentials::AccessToken(t) => {
                    mx.set_token(t);
                    let (user, device) =
                        until_answered("checking the access token", || mx.whoami())
                            .await
                            .map_err(refused)?;
                    let device = device.ok_or_else(|| {
                        MatrixError::Decode(
                            "the access token has no device (an appservice token?)".into(),
                        )
                    })?;
                    (user, device, t.clone())
                }
            };
            mx.set_token(&access_token);
            tracing::info!(%user_id, %device_id, "logged in");
            let session = SavedSession {
                user_id,
                device_id,
                access_token,
                homeserver: cfg.homeserver.clone(),
            };
            (session, true)
        }
    };
    let keyed_devices = until_answered("checking the account's devices", || {
        mx.own_device_keys(&session.user_id)
    })
    .await?;
    Ok(LoggedIn {
        mx,
        session,
        new,
        keyed_devices,
    })
}

/// Runs a request of the start-up (see [`login`]) until the homeserver answers it other
/// than with a transient failure, logging each of those with `what` was being done.
async fn until_answered<T, F>(what: &str, mut request: impl FnMut() -> F) -> Result<T, MatrixError>
where
    F: std::future::Future<Output = Result<T, MatrixError>>,
{
    with_retries(None, matrix::SYNC_RETRY_MAX, || {
        let answer = request();
        async move {
            let answer = answer.await;
            if let Err(e) = &answer
                && e.is_transient()
            {
                tracing::warn!(error = %e, "{what}: the homeserver failed; trying again");
            }
            answer
        }
    })
    .await
}

/// Refuses to go on if any device of the account has published encryption keys.
pub async fn check_no_device_keys(mx: &Matrix, user_id: &str) -> Result<(), ServiceError> {
    let devices = mx.own_device_keys(user_id).await?;
    if devices.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::HasDeviceKeys {
            user: user_id.to_owned(),
            devices,
        })
    }
}

/// One sync response for the main loop, acknowledged once handled (then its token is
/// saved and the next long poll starts).
struct Batch {
    sync: SyncResponse,
    initial: bool,
    received: Instant,
    ack: oneshot::Sender<()>,
}

enum SyncItem {
    Batch(Batch),
    Fatal(String),
}

async fn sync_loop(
    mx: Matrix,
    mut since: Option<String>,
    tx: mpsc::Sender<SyncItem>,
    metrics: Arc<Mutex<Metrics>>,
) {
    let filter = filter_json();
    // After a restart, the first request asks for the full current state of every room
    // (not history) so membership and conferences are known before any call event.
    let mut first = true;
    let mut attempt = 0;
    // The joined rooms whose state this run has read from the homeserver.
    let mut known = HashSet::new();
    loop {
        let full_state = first && since.is_some();
        let timeout = if first {
            Duration::ZERO
        } else {
            Duration::from_secs(30)
        };
        let result = match mx
            .sync(since.as_deref(), &filter, full_state, timeout)
            .await
        {
            Ok(mut sync) => complete(&mx, &mut sync, &mut known, since.as_deref(), &metrics)
                .await
                .map(|()| sync),
            Err(e) => Err(e),
        };
        match result {
            Ok(sync) => {
                attempt = 0;
                let next = sync.next_batch.clone();
                let (ack, done) = oneshot::channel();
                let batch = Batch {
                    sync,
                    initial: since.is_none(),
                    received: instant(),
                    ack,
                };
                if tx.send(SyncItem::Batch(batch)).await.is_err() || done.await.is_err() {
                    return;
                }
                since = Some(next);
                first = false;
            }
            Err(e) if matrix::is_unknown_token(&e) => {
                let _ = tx.send(SyncItem::Fatal(e.to_string())).await;
                return;
            }
            Err(e) => {
                metrics
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .sync_errors += 1;
                let wait = matrix::backoff(&e, attempt, matrix::SYNC_RETRY_MAX);
                tracing::warn!(error = %e, ?wait, "sync failed; retrying");
                attempt += 1;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Completes a sync answer before the core reads it: each joined room whose state
/// this run has not read yet (`known` holds those it has: none at the first sync,
/// then a room is new when the SFU has just joined it) gets its current state
/// ([`current_state`]), and every timeline the homeserver cut short after `since`
/// gets the events it left out ([`fill_gaps`]). `known` changes only if the whole
/// answer is complete, so that a retried answer reads its rooms again.
async fn complete(
    mx: &Matrix,
    sync: &mut SyncResponse,
    known: &mut HashSet<String>,
    since: Option<&str>,
    metrics: &Mutex<Metrics>,
) -> Result<(), MatrixError> {
    let new = sync
        .rooms
        .join
        .keys()
        .filter(|r| !known.contains(*r))
        .cloned()
        .collect();
    let read = current_state(mx, sync, new).await?;
    if let Some(since) = since {
        let events = fill_gaps(mx, sync, since).await?;
        metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gap_events_read += events;
    }
    // A room left, or invited to again, is new again when next joined (the core
    // forgets what it knew of it too).
    for room in sync.rooms.leave.keys().chain(sync.rooms.invite.keys()) {
        known.remove(room);
    }
    known.extend(read);
    Ok(())
}

/// The most events [`fill_gaps`] reads for one room's gap, in pages of [`GAP_PAGE`].
const GAP_EVENTS_MAX: usize = 5_000;

/// The events a `GET /rooms/{roomId}/messages` page asks for.
const GAP_PAGE: u32 = 500;

/// Fills the gap of each timeline the homeserver cut short (`limited`, more events
/// since `since` than the filter's limit) with the events it left out, paged back to
/// `since` with `GET /rooms/{roomId}/messages`: an invite or a hangup in the gap would
/// be missed otherwise. At most [`GAP_EVENTS_MAX`] events a room, the newest: past
/// that, the older events are missed and the timeline stays `limited` (counted in
/// `limited_timelines_total`). How many events it read.
///
/// A lapsed access token fails the whole batch, as for a failed sync. Any other
/// failure (after [`ROOM_READ_TRIES`] tries for a transient one) leaves that room its
/// gap: one room the homeserver cannot page must not hold up every other.
async fn fill_gaps(mx: &Matrix, sync: &mut SyncResponse, since: &str) -> Result<u64, MatrixError> {
    let filter = gap_filter_json();
    let mut read = 0;
    for (room, joined) in &mut sync.rooms.join {
        let timeline = &mut joined.timeline;
        let Some(mut from) = timeline.prev_batch.clone().filter(|_| timeline.limited) else {
            continue;
        };
        let mut gap = Vec::new();
        // A page can be empty and still have more behind it (events the homeserver
        // does not show us); the page count bounds that too.
        let pages = GAP_EVENTS_MAX.div_ceil(GAP_PAGE as usize) * 2;
        let mut whole = false;
        for _ in 0..pages {
            let page = with_retries(Some(ROOM_READ_TRIES), matrix::SYNC_RETRY_MAX, || {
                mx.messages_before(room, &from, since, GAP_PAGE, &filter)
            });
            let (chunk, end) = match page.await {
                Ok(page) => page,
                Err(e) if matrix::is_unknown_token(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(%room, error = %e, "could not read a timeline's gap; events in it are missed");
                    break;
                }
            };
            gap.extend(chunk);
            match end {
                Some(end) if end != from && gap.len() < GAP_EVENTS_MAX => from = end,
                Some(end) if end != from => break,
                _ => {
                    whole = true;
                    break;
                }
            }
        }
        read += gap.len() as u64;
        // Paged newest first.
        gap.reverse();
        timeline.fill_gap(gap, whole);
    }
    Ok(read)
}

/// How many times [`current_state`] and [`fill_gaps`] try one room's read that fails
/// transiently (a 5xx, a 429, no answer), waiting as a failed sync does in between.
const ROOM_READ_TRIES: u32 = 3;

/// How many times a speaker change's send, a join or a decline is tried while it fails
/// transiently.
const CHANGE_TRIES: u32 = 7;

/// Runs `request` until it succeeds, fails other than transiently (a 5xx, a 429, no
/// answer), or has been tried `tries` times (`None`: for as long as it fails
/// transiently), waiting as [`matrix::backoff`] says, at most `max_wait`, in between.
/// The last result.
async fn with_retries<T, F>(
    tries: Option<u32>,
    max_wait: Duration,
    mut request: impl FnMut() -> F,
) -> Result<T, MatrixError>
where
    F: std::future::Future<Output = Result<T, MatrixError>>,
{
    let mut attempt = 0;
    loop {
        match request().await {
            Err(e) if e.is_transient() && tries.is_none_or(|n| attempt + 1 < n) => {
                tokio::time::sleep(matrix::backoff(&e, attempt, max_wait)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// How many `GET /rooms/{roomId}/state` requests [`current_state`] keeps in flight.
const STATE_READS_IN_FLIGHT: usize = 8;

/// Reads the current state of each of `rooms` (joined rooms of `sync`) from the
/// homeserver, to be applied after the sync's state and timeline (see
/// [`JoinedRoom::use_current_state`] for why the two can differ); the rooms it read.
/// One request a room: every joined room at a run's first sync, then each room the
/// SFU joins.
///
/// A lapsed access token fails the whole batch, as for a failed sync. A room whose
/// state cannot be read (after [`ROOM_READ_TRIES`] tries for a transient failure; the
/// SFU has just left it; an answer that is not a list) keeps the sync's state.
///
/// [`JoinedRoom::use_current_state`]: crate::sync::JoinedRoom::use_current_state
async fn current_state(
    mx: &Matrix,
    sync: &mut SyncResponse,
    rooms: Vec<String>,
) -> Result<Vec<String>, MatrixError> {
    let mut rooms = rooms.into_iter();
    let mut done = Vec::new();
    let mut reads = tokio::task::JoinSet::new();
    loop {
        while reads.len() < STATE_READS_IN_FLIGHT {
            let Some(room) = rooms.next() else { break };
            let mx = mx.clone();
            reads.spawn(async move {
                let state = with_retries(Some(ROOM_READ_TRIES), matrix::SYNC_RETRY_MAX, || {
                    mx.room_state(&room)
                })
                .await;
                (room, state)
            });
        }
        let Some(read) = reads.join_next().await else {
            return Ok(done);
        };
        // A read that did not finish (it cannot panic) leaves its room the sync's state.
        let Ok((room, state)) = read else { continue };
        match state {
            Ok(events) => {
                if let Some(joined) = sync.rooms.join.get_mut(&room) {
                    joined.use_current_state(events);
                    done.push(room);
                }
            }
            Err(e) if matrix::is_unknown_token(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(%room, error = %e, "could not read the room's current state; using the sync's")
            }
        }
    }
}

/// What a room's sender does next, in order.
enum Outgoing {
    /// Send one event.
    Event(OutEvent),
    /// Leave the room, once everything queued before is sent.
    Leave,
}

/// One event to send.
struct OutEvent {
    event_type: String,
    content: Value,
    /// For an answer: when its invite arrived, to observe the latency.
    invite_received: Option<Instant>,
    /// Its place in the store's queue, reported on the Outbox's `sent` channel once the
    /// event is sent or given up (`None`: not stored, an active-speaker event).
    stored: Option<i64>,
    /// Its transaction id, the same on every try and after a restart.
    txn: String,
}

/// The transaction id of a stored event: the same for the same event (room, type and
/// content), so that one made again, after a crash between handling a sync batch and
/// saving its token made the batch be read again, is taken by the homeserver as the
/// first one's retry, not sent twice. The events stored are each news once (an answer
/// carries fresh credentials, a hangup or `member_ended` names its call).
fn stored_txn(room: &str, event_type: &str, content: &Value) -> String {
    let mut d = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [room, event_type, &content.to_string()] {
        d.update(&(part.len() as u64).to_be_bytes());
        d.update(part.as_bytes());
    }
    format!("bf-{}", crate::core::hex(&d.finish().as_ref()[..16]))
}

/// A transaction id unique across restarts.
fn new_txn() -> String {
    static TXN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = TXN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("bf{}-{}", now_ms(), n)
}

/// Per-room ordered senders of Matrix events, with retries. A room's sender task ends
/// after [`ROOM_SENDER_IDLE`] without an event, and the map forgets rooms whose task
/// ended, so a long-lived SFU that has answered many DMs keeps tasks only for the rooms
/// it is talking in.
struct Outbox {
    /// The logged-in client; `None` until the login, and what is sent before waits in
    /// `held` (it is in the store already, and goes at the next start if this run ends
    /// first).
    mx: Option<Matrix>,
    held: Vec<(String, Outgoing)>,
    rooms: HashMap<String, (mpsc::UnboundedSender<Outgoing>, JoinHandle<()>)>,
    metrics: Arc<Mutex<Metrics>>,
    /// Where the senders report each stored event done with, and a lapsed token.
    sent: mpsc::UnboundedSender<SenderReport>,
}

impl Outbox {
    /// Starts sending, as `mx`, what was held back until the login, then the rest.
    fn start(&mut self, mx: Matrix) {
        self.mx = Some(mx);
        for (room, out) in std::mem::take(&mut self.held) {
            self.send(room, out);
        }
    }

    fn send(&mut self, room: String, out: Outgoing) {
        let Some(mx) = &self.mx else {
            // Until the login, a speaker change replaces the one held for the same call
            // (only the newest is news), so a homeserver that stays down for hours
            // holds one per call, not one per change.
            if let Some(call) = speaker_call(&out)
                && let Some(i) = self
                    .held
                    .iter()
                    .position(|(r, o)| *r == room && speaker_call(o) == Some(call))
            {
                self.held.remove(i);
            }
            self.held.push((room, out));
            return;
        };
        let out = match self.rooms.get(&room) {
            Some((tx, _)) => match tx.send(out) {
                Ok(()) => return,
                // Its task is ending (idle): start another.
                Err(mpsc::error::SendError(out)) => out,
            },
            None => out,
        };
        // The ending task may still be sending what slipped in before it closed: the
        // new one waits for it, so the room's events keep their order.
        let before = self.rooms.remove(&room).map(|(_, task)| task);
        self.rooms.retain(|_, (tx, _)| !tx.is_closed());
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(room_sender(
            mx.clone(),
            room.clone(),
            rx,
            self.metrics.clone(),
            self.sent.clone(),
            before,
        ));
        let _ = tx.send(out);
        self.rooms.insert(room, (tx, task));
    }

    /// Lets every room's sender send what it holds (answers, hangups, `member_ended`:
    /// what is still unsent after `within` goes at the next start), for at most
    /// `within`; returns how many rooms still had events.
    async fn close(self, within: Duration) -> usize {
        let tasks: Vec<JoinHandle<()>> = self.rooms.into_values().map(|(_, t)| t).collect();
        let deadline = tokio::time::Instant::now() + within;
        let mut unfinished = 0;
        for t in tasks {
            match tokio::time::timeout_at(deadline, t).await {
                Ok(_) => {}
                Err(_) => unfinished += 1,
            }
        }
        unfinished
    }
}

/// How far past a request's generation the store's reservation goes (see
/// `Service::reserve_up_to`).
const GENERATION_RESERVE: u64 = 1_000_000_000;

/// How long a shutdown waits for the events waiting to be sent.
const SHUTDOWN_SEND_WAIT: Duration = Duration::from_secs(5);

/// Whether `out` is an active-speaker event for a call that a later one in `queued`
/// (for the same call) makes stale.
fn superseded(out: &Outgoing, queued: &VecDeque<Outgoing>) -> bool {
    speaker_call(out).is_some_and(|call| queued.iter().any(|q| speaker_call(q) == Some(call)))
}

/// The call an active-speaker event is for (`None` for any other event).
fn speaker_call(o: &Outgoing) -> Option<&Value> {
    match o {
        Outgoing::Event(e) if e.event_type == crate::events::ACTIVE_SPEAKER => {
            e.content.get("call_id")
        }
        _ => None,
    }
}

/// How long a room's sender task waits for its next event before it ends.
const ROOM_SENDER_IDLE: Duration = Duration::from_secs(60);

async fn room_sender(
    mx: Matrix,
    room: String,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    metrics: Arc<Mutex<Metrics>>,
    sent: mpsc::UnboundedSender<SenderReport>,
    before: Option<JoinHandle<()>>,
) {
    if let Some(task) = before {
        let _ = task.await;
    }
    // What came in while the last send was under way, in order.
    let mut queued = VecDeque::new();
    loop {
        let out = match queued.pop_front() {
            Some(out) => out,
            None => match tokio::time::timeout(ROOM_SENDER_IDLE, rx.recv()).await {
                Ok(Some(out)) => out,
                // The Outbox is gone.
                Ok(None) => return,
                // Idle: close, so the Outbox starts a new task for the room's next
                // event, and send what slipped in before the close (nothing is lost).
                Err(_) => {
                    rx.close();
                    match rx.recv().await {
                        Some(out) => out,
                        None => return,
                    }
                }
            },
        };
        while let Ok(next) = rx.try_recv() {
            queued.push_back(next);
        }
        // While the homeserver holds the room's sends back (its rate limit), the
        // speaker changes pile up behind them: only the newest for a call is news.
        if superseded(&out, &queued) {
            metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .speaker_events_superseded += 1;
            continue;
        }
        match out {
            Outgoing::Event(event) => {
                let stored = event.stored;
                match send_event(&mx, &room, event, &metrics).await {
                    Ok(()) => {
                        if let Some(seq) = stored {
                            let _ = sent.send(SenderReport::Done(seq));
                        }
                    }
                    // Nothing more goes out of this room in this run: what is queued
                    // behind it is stored, and keeps its order at the next start.
                    Err(why) => {
                        let _ = sent.send(SenderReport::LoggedOut(why));
                        return;
                    }
                }
            }
            Outgoing::Leave => change_membership(&mx, &room, Membership::Leave).await,
        }
    }
}

/// What a room's sender tells the service.
enum SenderReport {
    /// The stored event with this place in the queue is done with (sent or given up).
    Done(i64),
    /// The homeserver no longer accepts our access token: the service stops for a new
    /// login, and the refused event (still stored) goes at the next start.
    LoggedOut(String),
}

/// Sends one event in `room`, retrying transient failures; a lost one (refused, or a
/// speaker change that kept failing) is counted. An event the homeserver refuses
/// because it no longer accepts our access token is not done with: `Err` says why.
async fn send_event(
    mx: &Matrix,
    room: &str,
    out: OutEvent,
    metrics: &Mutex<Metrics>,
) -> Result<(), String> {
    // A stored event (an answer, a hangup, `member_ended`) is tried for as long as the
    // homeserver fails transiently, at least every few seconds, so it goes soon after
    // the homeserver is back and keeps its place in the room's order; given up, it
    // would be deleted from the store. A speaker change gives up after a few tries (a
    // later one replaces it). The homeserver de-duplicates tries by the transaction id.
    let (tries, max_wait) = match out.stored {
        Some(_) => (None, matrix::SYNC_RETRY_MAX),
        None => (Some(CHANGE_TRIES), matrix::RETRY_MAX),
    };
    let sent = with_retries(tries, max_wait, || {
        mx.send(room, &out.event_type, &out.txn, &out.content)
    });
    match sent.await {
        Ok(_) => {
            if let Some(t) = out.invite_received {
                metrics
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .observe_answer(t.elapsed().as_secs_f64());
            }
            Ok(())
        }
        Err(e) if matrix::is_unknown_token(&e) => {
            tracing::warn!(%room, event = %out.event_type, error = %e,
                "the homeserver no longer accepts our access token; the event waits for the next start");
            Err(e.to_string())
        }
        Err(e) => {
            tracing::warn!(%room, event = %out.event_type, error = %e, "could not send");
            metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send_failures += 1;
            Ok(())
        }
    }
}

/// A change of the SFU's membership of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
    /// Join a room it was invited to.
    Join,
    /// Decline an invite: a few retries, as for a join.
    Decline,
    /// Leave a room nobody else is in: retried for as long as the homeserver fails
    /// transiently, since nothing else will ask again until signaling restarts.
    Leave,
}

/// Carries out `change` for `room`, retrying transient failures.
async fn change_membership(mx: &Matrix, room: &str, change: Membership) {
    let tries = (change != Membership::Leave).then_some(CHANGE_TRIES);
    let changed = with_retries(tries, matrix::RETRY_MAX, || async {
        match change {
            Membership::Join => mx.join(room).await,
            Membership::Decline | Membership::Leave => mx.leave(room).await,
        }
    });
    if let Err(e) = changed.await {
        tracing::warn!(%room, ?change, error = %e, "room membership change failed");
    }
}

/// [`change_membership`] in the background: a join or a declined invite need no order
/// with the room's events (there are none yet).
fn room_membership(mx: &Matrix, room: String, change: Membership) {
    let mx = mx.clone();
    tokio::spawn(async move { change_membership(&mx, &room, change).await });
}

struct Service {
    core: Core,
    store: Store,
    /// The generation reservation recorded in the store (`reserve_up_to`).
    reserved: u64,
    mx: Matrix,
    link: RelayLink,
    outbox: Outbox,
    metrics: Arc<Mutex<Metrics>>,
    relay_up: bool,
}

impl Service {
    /// Carries out the core's actions in order.
    async fn drain(&mut self, received: Option<Instant>) -> Result<(), ServiceError> {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::JoinRoom(room) => room_membership(&self.mx, room, Membership::Join),
                Action::DeclineInvite(room) => room_membership(&self.mx, room, Membership::Decline),
                Action::LeaveRoom(room) => self.outbox.send(room, Outgoing::Leave),
                Action::Send {
                    room,
                    event_type,
                    content,
                } => self.send(room, event_type, content, None, None)?,
                Action::Admit { call, answer, .. } => {
                    let now = now_ms();
                    let conference = RequestBody::UpsertConference {
                        generation: self.core.next_generation(now),
                        conference: ConferenceSpec {
                            conf_id: call.spec.conf_id.clone(),
                        },
                    };
                    let session = RequestBody::UpsertSession {
                        generation: self.core.next_generation(now),
                        session: call.spec.clone(),
                    };
                    self.reserve(&session)?;
                    let mut result = accept_stale(self.link.request(conference).await);
                    if result.is_ok() {
                        result = accept_stale(self.link.request(session).await);
                    }
                    match result {
                        Ok(()) => {
                            self.core.admitted(&call.spec.session_id);
                            tracing::info!(caller = %call.caller, call_id = %call.call_id,
                                session = %call.spec.session_id, "call answered");
                            self.send(
                                call.dm_room.clone(),
                                crate::events::CALL_ANSWER.into(),
                                answer,
                                received,
                                Some(&call),
                            )?;
                        }
                        Err(e) => {
                            tracing::warn!(caller = %call.caller, error = %e, "relay did not take the session; refusing");
                            self.core.admission_failed(&call.spec.session_id, now);
                        }
                    }
                }
                Action::Relay(body) => {
                    let method = body.method();
                    self.reserve(&body)?;
                    match accept_stale(self.link.request(body).await) {
                        Ok(()) => {}
                        // The link is down: the snapshot after it reconnects carries
                        // the change.
                        Err(e @ (RelayError::NotConnected | RelayError::Dropped)) => {
                            tracing::debug!(method, error = %e, "relay request failed");
                        }
                        // Refused or unanswered on a live link: the relay's state and
                        // ours differ now, and nothing else would mend it (a caller's
                        // repeat of an unchanged subscription is not sent on). A new
                        // connection's snapshot does.
                        Err(e) => {
                            tracing::warn!(method, error = %e, "relay request failed; resyncing");
                            self.link.reconnect(format!("{method} failed: {e}")).await;
                        }
                    }
                }
                Action::Persist(call) => self.store.save_call(&call)?,
                Action::Forget { session_id, why } => {
                    tracing::info!(session = %session_id, why, "call ended");
                    self.store.delete_call(session_id.as_str())?
                }
            }
        }
        self.publish_metrics();
        Ok(())
    }

    /// Queues an event for `room`: in the store first (so a crash after this batch is
    /// marked handled loses none; with `call`, the answered call it answers, saved in
    /// the same write), then to the room's sender.
    fn send(
        &mut self,
        room: String,
        event_type: String,
        content: Value,
        invite_received: Option<Instant>,
        call: Option<&crate::core::Call>,
    ) -> Result<(), ServiceError> {
        // A speaker change is news only while fresh: not worth a write, nor a send
        // after a restart (and the same speaker again is news again).
        let (txn, stored) = if event_type == crate::events::ACTIVE_SPEAKER && call.is_none() {
            (new_txn(), None)
        } else {
            let txn = stored_txn(&room, &event_type, &content);
            let seq = self
                .store
                .queue_event(&room, &event_type, &content, &txn, call)?;
            (txn, Some(seq))
        };
        self.outbox.send(
            room,
            Outgoing::Event(OutEvent {
                event_type,
                content,
                invite_received,
                stored,
                txn,
            }),
        );
        Ok(())
    }

    /// Records, before `body` goes out, a generation reservation above its generation
    /// (see [`Self::reserve_up_to`]).
    fn reserve(&mut self, body: &RequestBody) -> Result<(), ServiceError> {
        match body.generation() {
            Some(g) => self.reserve_up_to(g.0),
            None => Ok(()),
        }
    }

    /// Makes sure the store's reservation covers generation `g` before a request
    /// carrying it goes out: a restart continues above the reservation, so the
    /// relay never sees a generation go back, even after the clock did. One write
    /// per [`GENERATION_RESERVE`] of generations (microseconds: about 17 minutes).
    fn reserve_up_to(&mut self, g: u64) -> Result<(), ServiceError> {
        if g > self.reserved {
            self.reserved = g.saturating_add(GENERATION_RESERVE);
            self.store.set_generation_reserved(self.reserved)?;
        }
        Ok(())
    }

    fn publish_metrics(&self) {
        let mut m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        m.core = self.core.stats().clone();
        let connected = self.core.calls().filter(|c| c.connected).count() as u64;
        m.calls_connected = connected;
        m.calls_connecting = self.core.calls().count() as u64 - connected;
        m.relay_up = self.relay_up;
        m.rooms = self.core.room_count() as u64;
    }

    /// The login completed: keeps a new session, refuses an account with device keys,
    /// and starts talking to the homeserver as the session's device.
    fn logged_in(&mut self, l: LoggedIn) -> Result<(), ServiceError> {
        if l.new {
            self.store.save_session(&l.session)?;
        }
        if !l.keyed_devices.is_empty() {
            return Err(ServiceError::HasDeviceKeys {
                user: l.session.user_id,
                devices: l.keyed_devices,
            });
        }
        self.core
            .set_identity(&l.session.user_id, &l.session.device_id);
        self.outbox.start(l.mx.clone());
        self.mx = l.mx;
        Ok(())
    }

    async fn handle_batch(&mut self, b: Batch) -> Result<(), ServiceError> {
        let now = now_ms();
        self.core.handle_sync(&b.sync, now, b.initial);
        self.drain(Some(b.received)).await?;
        self.store.set_sync_token(&b.sync.next_batch)?;
        let newest = b
            .sync
            .rooms
            .join
            .values()
            .flat_map(|r| r.timeline.events.iter())
            .filter_map(|v| Event::from_value(v).and_then(|e| e.origin_server_ts))
            .max();
        if let Some(ts) = newest {
            self.metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sync_lag_seconds = now.saturating_sub(ts) as f64 / 1000.0;
        }
        let _ = b.ack.send(());
        Ok(())
    }

    async fn handle_link(&mut self, ev: LinkEvent) -> Result<(), ServiceError> {
        match ev {
            LinkEvent::Connected(info) => {
                tracing::info!(candidates = ?info.candidates, "relay connected; sending the snapshot");
                self.core.set_relay_info(info, now_ms());
                let snapshot = self.core.snapshot(now_ms());
                self.reserve_up_to(snapshot.generation.0)?;
                let sessions = snapshot.sessions.len();
                match self.link.snapshot(snapshot).await {
                    Ok(_) => {
                        self.relay_up = true;
                        self.metrics
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .relay_connects += 1;
                        tracing::info!(sessions, "relay reconciled");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the relay did not take the snapshot; reconnecting");
                        self.link
                            .reconnect(format!("the snapshot failed: {e}"))
                            .await;
                    }
                }
            }
            LinkEvent::Disconnected(why) => {
                // A link that never got up (the relay turned it away) has said so.
                if self.relay_up {
                    tracing::warn!(%why, "relay link down");
                } else {
                    tracing::debug!(%why, "relay link down");
                }
                self.relay_up = false;
            }
            LinkEvent::Notification(n) => self.core.handle_relay(&n, now_ms()),
        }
        self.drain(None).await
    }
}

/// `stale_generation` on an upsert means the relay already holds newer state for the
/// object, and only this service writes that state: the snapshot after a reconnect got
/// there first. That is success.
fn accept_stale<T>(r: Result<T, RelayError>) -> Result<(), RelayError> {
    match r {
        Ok(_) | Err(RelayError::Refused(ErrorCode::StaleGeneration, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// How often the account's devices are checked for encryption keys after the start.
const KEY_CHECK_EVERY: Duration = Duration::from_secs(300);

/// Checks every `every` that no device of the account has gained encryption keys
/// (someone logged in to it with an encrypting client); if one has, says so on `found`
/// and ends. A task of its own: a homeserver that hangs (a check waits up to 30 s)
/// holds up neither relay events nor sync batches. A failed check is logged, and the
/// next one comes at its time.
async fn watch_device_keys(
    mx: Matrix,
    user_id: String,
    every: Duration,
    found: mpsc::Sender<ServiceError>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = found.closed() => return,
        }
        match check_no_device_keys(&mx, &user_id).await {
            Err(e @ ServiceError::HasDeviceKeys { .. }) => {
                let _ = found.send(e).await;
                return;
            }
            Err(e) => tracing::warn!(error = %e, "device key check failed; will retry"),
            Ok(()) => {}
        }
    }
}

/// Runs the service until `shutdown` resolves or a fatal error.
///
/// The relay does not wait for the homeserver: with a stored session, the calls it
/// holds are restored and the relay link started (and the relay given their snapshot)
/// while the login is still under way, so a relay that restarted together with a
/// homeserver that is slow to come back (a host's reboot) gets its calls back at once.
/// Events meanwhile wait for the login (`Outbox`), and nothing is read from the
/// homeserver before it.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServiceError> {
    let store = Store::open(&cfg.database)?;
    let mx = Matrix::new(&cfg.homeserver)?;

    let metrics = Arc::new(Mutex::new(Metrics::default()));
    if let Some(addr) = cfg.metrics {
        metrics::serve(addr, metrics.clone())
            .await
            .map_err(ServiceError::Metrics)?;
    }
    tokio::pin!(shutdown);

    let stored = store
        .session()?
        .filter(|s| s.homeserver == cfg.homeserver && same_user(&cfg.user, &s.user_id));
    let login = login(&cfg, stored.clone(), mx.clone());
    tokio::pin!(login);
    // The calls were answered as the stored session's device, and the service is that
    // device until the login says otherwise. Without a stored session (a first start,
    // or another account), the login comes first.
    let mut logged_in = None;
    let (user_id, device_id) = match stored {
        Some(s) => (s.user_id, s.device_id),
        None => {
            let l = tokio::select! {
                l = &mut login => l?,
                _ = &mut shutdown => return Ok(()),
            };
            let ids = (l.session.user_id.clone(), l.session.device_id.clone());
            logged_in = Some(l);
            ids
        }
    };

    let mut core_cfg = CoreConfig::new(&user_id, &device_id);
    if !cfg.allow.users.is_empty() || !cfg.allow.servers.is_empty() {
        core_cfg.allow = cfg.allow.clone();
    }
    core_cfg.limits = cfg.limits.clone();
    let mut core = Core::new(core_cfg, Box::new(os_random));
    // Generations grow across restarts, even if the clock went back meanwhile.
    let reserved = store.generation_reserved()?;
    core.generations_above(reserved);
    let restored = store.calls()?;
    tracing::info!(calls = restored.len(), "restored live calls");
    core.restore(restored);

    let (link_tx, mut link_rx) = mpsc::channel(4096);
    let link = RelayLink::spawn(cfg.relay_socket.clone(), link_tx, Duration::from_secs(5));

    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let mut outbox = Outbox {
        mx: None,
        held: Vec::new(),
        rooms: HashMap::new(),
        metrics: metrics.clone(),
        sent: sent_tx,
    };
    // What the last run queued and did not send (it crashed, or stopped before the
    // homeserver took it), first and in order.
    let queued = store.queued_events()?;
    if !queued.is_empty() {
        tracing::info!(
            events = queued.len(),
            "sending the events the last run left unsent"
        );
    }
    for q in queued {
        outbox.send(
            q.room,
            Outgoing::Event(OutEvent {
                event_type: q.event_type,
                content: q.content,
                invite_received: None,
                stored: Some(q.seq),
                txn: q.txn,
            }),
        );
    }

    let mut svc = Service {
        core,
        store,
        reserved,
        outbox,
        mx,
        link,
        metrics,
        relay_up: false,
    };
    let logged_in = match logged_in {
        Some(l) => l,
        None => loop {
            tokio::select! {
                l = &mut login => break l?,
                Some(ev) = link_rx.recv() => svc.handle_link(ev).await?,
                _ = &mut shutdown => {
                    tracing::info!("shutting down before the login completed; calls stay live on the relay");
                    return Ok(());
                }
            }
        },
    };
    let (user_id, device_id) = (
        logged_in.session.user_id.clone(),
        logged_in.session.device_id.clone(),
    );
    svc.logged_in(logged_in)?;

    let (sync_tx, mut sync_rx) = mpsc::channel(1);
    tokio::spawn(sync_loop(
        svc.mx.clone(),
        svc.store.sync_token()?,
        sync_tx,
        svc.metrics.clone(),
    ));
    // Keys can be added to the account behind our back (someone logs in to it with an
    // encrypting client): check again now and then, and stop if so.
    let (keys_tx, mut keys_rx) = mpsc::channel(1);
    tokio::spawn(watch_device_keys(
        svc.mx.clone(),
        user_id.clone(),
        KEY_CHECK_EVERY,
        keys_tx,
    ));
    tracing::info!(user = %user_id, device = %device_id, "signaling running");
    loop {
        tokio::select! {
            item = sync_rx.recv() => match item {
                Some(SyncItem::Batch(b)) => svc.handle_batch(b).await?,
                Some(SyncItem::Fatal(why)) => return Err(ServiceError::LoggedOut(why)),
                None => return Err(ServiceError::LoggedOut("sync stopped".into())),
            },
            Some(ev) = link_rx.recv() => svc.handle_link(ev).await?,
            Some(report) = sent_rx.recv() => match report {
                SenderReport::Done(seq) => svc.store.forget_event(seq)?,
                SenderReport::LoggedOut(why) => return Err(ServiceError::LoggedOut(why)),
            },
            Some(e) = keys_rx.recv() => return Err(e),
            _ = &mut shutdown => {
                tracing::info!("shutting down; calls stay live on the relay and are restored at the next start");
                let unsent = svc.outbox.close(SHUTDOWN_SEND_WAIT).await;
                while let Ok(report) = sent_rx.try_recv() {
                    if let SenderReport::Done(seq) = report {
                        svc.store.forget_event(seq)?;
                    }
                }
                if unsent > 0 {
                    tracing::warn!(rooms = unsent, "shut down with events still to send; they go at the next start");
                }
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A homeserver stand-in on a local port: answers requests, one connection each,
    /// with `replies` in turn (status, JSON body), then stops listening. Its URL, and
    /// how many requests it has answered.
    async fn homeserver(replies: Vec<(u16, &'static str)>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            for (status, body) in replies {
                let (mut sock, _) = listener.accept().await.unwrap();
                // The request: its head, then as many bytes as it says its body has.
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = sock.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                    let body_len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if n == 0 || got.len() >= end + 4 + body_len {
                        break;
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        (url, answered)
    }

    fn token_config(homeserver: &str) -> Config {
        Config::from_toml(&format!(
            "homeserver = \"{homeserver}\"\nuser = \"@sfu:hs\"\naccess_token = \"t\"\n"
        ))
        .unwrap()
    }

    const WHOAMI: &str = r#"{"user_id": "@sfu:hs", "device_id": "SFUDEV"}"#;

    /// Signaling may start before its homeserver: a homeserver that fails (here, the
    /// 502 of a reverse proxy whose homeserver is not up yet) is asked again.
    #[tokio::test]
    async fn the_login_waits_out_a_homeserver_that_is_not_up_yet() {
        let (url, answered) = homeserver(vec![
            (502, "Bad Gateway"),
            (200, WHOAMI),
            (503, "{}"),
            (200, r#"{"device_keys": {}}"#),
        ])
        .await;
        let cfg = token_config(&url);
        let l = tokio::time::timeout(
            Duration::from_secs(10),
            login(&cfg, None, Matrix::new(&url).unwrap()),
        )
        .await
        .expect("logged in in time")
        .unwrap();
        assert_eq!(
            (l.session.user_id.as_str(), l.session.device_id.as_str()),
            ("@sfu:hs", "SFUDEV")
        );
        assert!(l.new && l.keyed_devices.is_empty());
        assert_eq!(answered.load(Ordering::SeqCst), 4);
    }

    /// A wrong access token is refused for good: no retry, and an error that says so.
    #[tokio::test]
    async fn a_refused_access_token_is_not_asked_again() {
        let (url, answered) = homeserver(vec![(
            401,
            r#"{"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token"}"#,
        )])
        .await;
        let cfg = token_config(&url);
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            login(&cfg, None, Matrix::new(&url).unwrap()),
        )
        .await
        .expect("given up at once")
        .err()
        .expect("refused");
        assert!(
            matches!(&err, ServiceError::LoginRefused { user, .. } if user == "@sfu:hs"),
            "{err}"
        );
        assert!(err.to_string().contains("M_UNKNOWN_TOKEN"), "{err}");
        assert_eq!(answered.load(Ordering::SeqCst), 1);
    }

    /// The periodic check finds a device that gained keys, after one that failed.
    #[tokio::test]
    async fn the_periodic_key_check_reports_a_device_with_keys() {
        let (url, _) = homeserver(vec![
            (502, "Bad Gateway"),
            (200, r#"{"device_keys": {"@sfu:hs": {"PHONE": {}}}}"#),
        ])
        .await;
        let (tx, mut rx) = mpsc::channel(1);
        let mx = Matrix::new(&url).unwrap();
        tokio::spawn(watch_device_keys(
            mx,
            "@sfu:hs".into(),
            Duration::from_millis(10),
            tx,
        ));
        let found = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(
            matches!(&found, Ok(Some(ServiceError::HasDeviceKeys { devices, .. })) if devices == &["PHONE"]),
            "{found:?}"
        );
    }

    fn out(event_type: &str, call_id: &str) -> Outgoing {
        Outgoing::Event(OutEvent {
            event_type: event_type.into(),
            content: json!({"call_id": call_id}),
            invite_received: None,
            stored: None,
            txn: new_txn(),
        })
    }

    #[test]
    fn a_stored_event_made_again_has_the_same_transaction_id() {
        let hangup = json!({"call_id": "c1", "reason": "user_hangup"});
        let txn = stored_txn("!dm:x", "m.call.hangup", &hangup);
        assert_eq!(txn, stored_txn("!dm:x", "m.call.hangup", &hangup.clone()));
        assert!(txn.starts_with("bf-") && txn.len() == 35, "{txn}");
        let other = json!({"call_id": "c2", "reason": "user_hangup"});
        assert_ne!(txn, stored_txn("!dm:x", "m.call.hangup", &other));
        assert_ne!(txn, stored_txn("!dm2:x", "m.call.hangup", &hangup));
        assert_ne!(txn, stored_txn("!dm:x", "m.call.answer", &hangup));
        // Parts are length-prefixed: moving bytes between them changes the id.
        assert_ne!(
            stored_txn("ab", "c", &hangup),
            stored_txn("a", "bc", &hangup)
        );
    }

    /// Before the login (a homeserver that is down at start), what signaling sends
    /// waits; speaker changes replace the one held for the same call, so hours of them
    /// hold one per call. The rest waits in order.
    #[test]
    fn before_the_login_only_the_newest_speaker_change_per_call_waits() {
        let (sent, _) = mpsc::unbounded_channel();
        let mut outbox = Outbox {
            mx: None,
            held: Vec::new(),
            rooms: HashMap::new(),
            metrics: Arc::new(Mutex::new(Metrics::default())),
            sent,
        };
        let speaker = crate::events::ACTIVE_SPEAKER;
        outbox.send("!dm1".into(), out(crate::events::CALL_HANGUP, "a"));
        for _ in 0..1000 {
            outbox.send("!dm1".into(), out(speaker, "a"));
            outbox.send("!dm2".into(), out(speaker, "b"));
        }
        let held: Vec<(&str, &str)> = outbox
            .held
            .iter()
            .map(|(room, o)| match o {
                Outgoing::Event(e) => (room.as_str(), e.event_type.as_str()),
                Outgoing::Leave => (room.as_str(), "leave"),
            })
            .collect();
        assert_eq!(
            held,
            [
                ("!dm1", crate::events::CALL_HANGUP),
                ("!dm1", speaker),
                ("!dm2", speaker)
            ]
        );
    }

    #[test]
    fn only_a_newer_speaker_event_for_the_same_call_supersedes_one() {
        let speaker = crate::events::ACTIVE_SPEAKER;
        let answer = crate::events::CALL_ANSWER;
        let queued: VecDeque<Outgoing> = [out(answer, "a"), out(speaker, "a")].into();
        assert!(superseded(&out(speaker, "a"), &queued));
        assert!(!superseded(&out(speaker, "b"), &queued), "another call's");
        assert!(!superseded(&out(answer, "a"), &queued), "never an answer");
        // Each member_ended names another member's call: none stands for another.
        let ended = crate::events::MEMBER_ENDED;
        let queued_ends: VecDeque<Outgoing> = [out(ended, "a"), out(speaker, "a")].into();
        assert!(!superseded(&out(ended, "a"), &queued_ends));
        let only_answers: VecDeque<Outgoing> = [out(answer, "a")].into();
        assert!(!superseded(&out(speaker, "a"), &only_answers));
        assert!(!superseded(&out(speaker, "a"), &VecDeque::new()));
    }
}
