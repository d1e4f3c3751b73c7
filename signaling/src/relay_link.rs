//! The link to the relay's control socket (docs/control-protocol.md): connect, hello,
//! request/response matching, notifications, reconnect with backoff.
//!
//! [`RelayLink::spawn`] starts a task that owns the socket. Requests go in through a
//! cloneable [`RelayLink`]; what the relay says comes out as [`LinkEvent`]s. After every
//! (re)connect and hello the link reports [`LinkEvent::Connected`] and accepts nothing
//! but a snapshot until one is answered — the protocol requires the snapshot first, and
//! the service, which owns the desired state, builds it. Requests made while the link is
//! down fail at once with [`RelayError::NotConnected`]: the desired state lives in the
//! service, and the snapshot after the next connect carries it, so nothing is queued.
//!
//! The link never waits for the service to take an event: what the service has not
//! taken yet waits in the link (`Backlog`) while the link goes on reading the relay,
//! so the answer to a request the service is waiting for is read at once, however many
//! notifications came before it (the service takes events in the same task that waits
//! for answers) — up to `MAX_BACKLOG` waiting events, where the link stops reading
//! until the service takes some.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use blindfold_relay::control::{
    self, ErrorCode, ErrorReply, FrameDecoder, Goodbye, Hello, HelloRole, Message,
    NotificationBody, RelayInfo, Request, RequestBody, RequestId, ResponseBody, Snapshot,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

/// Why a relay request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The link is down (or waiting for its snapshot).
    #[error("the relay is not connected")]
    NotConnected,
    /// The link went down before the answer came.
    #[error("the relay connection dropped before it answered")]
    Dropped,
    /// No answer in time.
    #[error("the relay did not answer within {0:?}")]
    Timeout(Duration),
    /// The relay answered with an error.
    #[error("the relay refused: {0:?}: {1}")]
    Refused(ErrorCode, String),
    /// The request did not encode (a bug, or a value outside the protocol's bounds).
    #[error("request does not encode: {0}")]
    Encode(String),
}

/// What the link reports.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// Connected and hello exchanged: send [`RelayLink::snapshot`] now.
    Connected(RelayInfo),
    /// The link went down; it is reconnecting.
    Disconnected(String),
    /// A notification from the relay.
    Notification(NotificationBody),
}

enum Cmd {
    /// Boxed: a request (a session spec) is far larger than the other commands.
    Request(
        Box<RequestBody>,
        oneshot::Sender<Result<ResponseBody, RelayError>>,
    ),
    /// Drop the connection and connect again (the snapshot failed), saying why.
    Reconnect(String),
}

/// A handle for sending requests to the relay.
#[derive(Debug, Clone)]
pub struct RelayLink {
    tx: mpsc::Sender<Cmd>,
    timeout: Duration,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Request(body, _) => write!(f, "Request({})", body.method()),
            Cmd::Reconnect(why) => write!(f, "Reconnect({why})"),
        }
    }
}

/// Delay before reconnect attempt `n`: 50 ms doubling, at most 500 ms, so a restarted
/// relay has its state back well within two seconds. For a relay that cannot be
/// reached, and for one that turns connections away before a snapshot is sent (it
/// serves another signaling instance until that one stops): it says nothing of
/// whether the relay takes our snapshot, and the slot may free at any moment.
fn reconnect_delay(n: u32) -> Duration {
    Duration::from_millis((50u64 << n.min(4)).min(500))
}

/// Delay before connecting again after `n` connections in a row on which a snapshot was
/// sent and not accepted: none after the first (a relay that died mid-snapshot), then 1 s
/// doubling to 30 s, so a relay that keeps refusing it is not sent a full snapshot
/// twice a second. A relay that cannot be reached, or whose socket file is replaced
/// (it restarted), ends the back-off: the new process is owed its snapshot at once.
fn unreconciled_delay(n: u32) -> Duration {
    match n {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis((1000u64 << (n - 2).min(5)).min(30_000)),
    }
}

impl RelayLink {
    /// Starts the link task for the socket at `path`. Events go to `events` as the
    /// receiver makes room (the link keeps the rest meanwhile, see `Backlog`).
    pub fn spawn(path: PathBuf, events: mpsc::Sender<LinkEvent>, timeout: Duration) -> RelayLink {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(path, rx, events));
        RelayLink { tx, timeout }
    }

    /// Sends one request and waits for its answer.
    pub async fn request(&self, body: RequestBody) -> Result<ResponseBody, RelayError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Request(Box::new(body), tx))
            .await
            .map_err(|_| RelayError::NotConnected)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RelayError::Dropped),
            Err(_) => Err(RelayError::Timeout(self.timeout)),
        }
    }

    /// Sends the snapshot that must follow every [`LinkEvent::Connected`].
    pub async fn snapshot(&self, snapshot: Snapshot) -> Result<ResponseBody, RelayError> {
        self.request(RequestBody::Snapshot(snapshot)).await
    }

    /// Drops the connection and connects again, after the reconnect delay: for a
    /// snapshot that was refused or not answered, since the link takes nothing else
    /// until one is. Each retry is a new connection with a new snapshot (and
    /// generation); the delay grows while no snapshot is accepted.
    pub async fn reconnect(&self, why: String) {
        let _ = self.tx.send(Cmd::Reconnect(why)).await;
    }
}

async fn run(path: PathBuf, mut cmds: mpsc::Receiver<Cmd>, events: mpsc::Sender<LinkEvent>) {
    let (mut attempt, mut unreconciled) = (0u32, 0u32);
    // The socket file of the relay last connected to.
    let mut relay_socket = None;
    // What the service has not taken yet, across connections: it hears of the old
    // connection's end after the notifications that came on it.
    let mut backlog = Backlog::default();
    loop {
        match UnixStream::connect(&path).await {
            Ok(stream) => {
                relay_socket = socket_file(&path);
                let Down { why, snapshot } =
                    match session(stream, &mut cmds, &events, &mut backlog).await {
                        Ok(()) => return, // the service is gone
                        Err(down) => down,
                    };
                match snapshot {
                    SnapshotFate::Accepted => (attempt, unreconciled) = (0, 0),
                    SnapshotFate::NotAccepted => {
                        attempt = 0;
                        unreconciled = unreconciled.saturating_add(1);
                    }
                    // Turned away before a snapshot could go (another signaling is
                    // connected, or the relay is stopping): as for a relay that cannot
                    // be reached, try again soon, and say so once in a row.
                    SnapshotFate::NotSent => attempt = attempt.saturating_add(1),
                }
                if attempt <= 1 {
                    tracing::warn!(%why, "relay control link down; reconnecting");
                } else {
                    tracing::debug!(%why, "relay control link down; reconnecting");
                }
                backlog.push(LinkEvent::Disconnected(why));
            }
            Err(e) => {
                if attempt == 0 {
                    tracing::warn!(socket = %path.display(), error = %e, "cannot reach the relay; retrying");
                }
                attempt = attempt.saturating_add(1);
                // The relay is down: the one that comes back is a new process, owed a
                // prompt snapshot whatever its predecessor refused.
                unreconciled = 0;
            }
        }
        // While down, refuse requests at once instead of letting callers wait.
        let sleep =
            tokio::time::sleep(reconnect_delay(attempt).max(unreconciled_delay(unreconciled)));
        tokio::pin!(sleep);
        // A relay restarted during a back-off is a new process too: it binds a new
        // socket file.
        let mut restarted = tokio::time::interval(RESTART_CHECK);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = restarted.tick(), if unreconciled > 1 => {
                    if socket_file(&path) != relay_socket {
                        unreconciled = 0;
                        break;
                    }
                }
                permit = events.reserve(), if !backlog.is_empty() => match permit {
                    Ok(permit) => backlog.hand_over(permit),
                    Err(_) => return,
                },
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Request(_, reply)) => { let _ = reply.send(Err(RelayError::NotConnected)); }
                    Some(Cmd::Reconnect(_)) => {}
                    None => return,
                },
            }
        }
    }
}

/// The most events [`Backlog`] holds before the link stops reading the relay until the
/// service takes some: a bound on memory if the service ever stops taking events
/// altogether, far above what it holds otherwise (see [`Backlog`]). Stopped, the link
/// leaves the relay's notifications in the relay's own bounded backlog.
const MAX_BACKLOG: usize = 1 << 16;

/// The events the service has not taken yet, oldest first.
///
/// What bounds them: the relay reports a session's connection and its end once each
/// (and each connected session again after a snapshot), and only the service creates
/// sessions, at most `max_calls` of them at a time, so those notifications grow only
/// with the service's own requests; an active-speaker change replaces the one still
/// waiting for the same conference, and a stats report the one still waiting (only
/// the newest of each is news). [`MAX_BACKLOG`] bounds them all the same.
#[derive(Debug, Default)]
struct Backlog {
    events: VecDeque<LinkEvent>,
}

impl Backlog {
    /// Adds `ev` behind the others; an older one it makes stale goes (looked for only
    /// for the kinds that make others stale: a catch-up of thousands of session
    /// notifications is not scanned once per notification).
    fn push(&mut self, ev: LinkEvent) {
        use NotificationBody::{ActiveSpeaker, Stats};
        if matches!(ev, LinkEvent::Notification(ActiveSpeaker { .. } | Stats(_)))
            && let Some(stale) = self.events.iter().position(|old| supersedes(&ev, old))
        {
            self.events.remove(stale);
        }
        self.events.push_back(ev);
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    /// Gives the oldest event to the service through `permit` (room in its channel).
    fn hand_over(&mut self, permit: mpsc::Permit<'_, LinkEvent>) {
        if let Some(ev) = self.events.pop_front() {
            permit.send(ev);
        }
    }
}

/// Whether `new` makes `old`, waiting for the service, stale: a newer active speaker of
/// the same conference, or newer stats.
fn supersedes(new: &LinkEvent, old: &LinkEvent) -> bool {
    use NotificationBody::{ActiveSpeaker, Stats};
    match (new, old) {
        (
            LinkEvent::Notification(ActiveSpeaker { conf_id: new, .. }),
            LinkEvent::Notification(ActiveSpeaker { conf_id: old, .. }),
        ) => new == old,
        (LinkEvent::Notification(Stats(_)), LinkEvent::Notification(Stats(_))) => true,
        _ => false,
    }
}

/// How often a link backing off from a relay that refused its snapshots looks for a
/// restarted relay.
const RESTART_CHECK: Duration = Duration::from_millis(250);

/// The identity of the socket file at `path` (device, inode, change time), if there is
/// one: a relay binds a new file each time it starts. The change time tells a new file
/// from an old one whose inode number was reused; a chmod of the same file changes it
/// too, which at worst ends a back-off early.
fn socket_file(path: &std::path::Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// What became of the snapshot on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotFate {
    /// None was sent: the relay turned the connection away first (another signaling
    /// is connected, it is stopping, it broke the protocol), or it went down first.
    NotSent,
    /// One was sent and not accepted: refused, unanswered, or the connection ended
    /// before the answer.
    NotAccepted,
    /// The relay accepted one.
    Accepted,
}

/// Why a connection ended, and what became of its snapshot.
struct Down {
    why: String,
    snapshot: SnapshotFate,
}

/// One connection, until it breaks (`Err`) or the service drops its handles.
async fn session(
    stream: UnixStream,
    cmds: &mut mpsc::Receiver<Cmd>,
    events: &mpsc::Sender<LinkEvent>,
    backlog: &mut Backlog,
) -> Result<(), Down> {
    let mut snapshot = SnapshotFate::NotSent;
    connection(stream, cmds, events, backlog, &mut snapshot)
        .await
        .map_err(|why| Down { why, snapshot })
}

/// The connection itself; `snapshot` says whether a snapshot was sent and accepted
/// (until one is, nothing else is sent). Events for the service go to `backlog`, and
/// from there to `events` as the service takes them.
async fn connection(
    mut stream: UnixStream,
    cmds: &mut mpsc::Receiver<Cmd>,
    events: &mpsc::Sender<LinkEvent>,
    backlog: &mut Backlog,
    snapshot: &mut SnapshotFate,
) -> Result<(), String> {
    let mut out = Vec::new();
    let hello = Hello::signaling(concat!("blindfold-signaling/", env!("CARGO_PKG_VERSION")));
    control::encode(&Message::Hello(hello), &mut out).map_err(|e| e.to_string())?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))?;

    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: HashMap<RequestId, oneshot::Sender<Result<ResponseBody, RelayError>>> =
        HashMap::new();
    let mut next_id = 1u64;
    let mut hello_seen = false;
    // The relay's minor version: what our requests may carry (its hello says).
    let mut relay_minor = 0;
    let mut snapshot_id: Option<RequestId> = None;

    let result: Result<(), String> = 'conn: loop {
        tokio::select! {
            read = stream.read(&mut buf), if backlog.len() < MAX_BACKLOG => {
                let n = match read {
                    Ok(0) => break 'conn Err("the relay closed the connection".into()),
                    Ok(n) => n,
                    Err(e) => break 'conn Err(format!("read: {e}")),
                };
                let mut input = &buf[..n];
                while !input.is_empty() {
                    let used = dec.push(input);
                    input = &input[used..];
                    loop {
                        let frame = match dec.next_frame() {
                            Ok(Some(f)) => f,
                            Ok(None) => break,
                            Err(e) => {
                                say_goodbye(&mut stream, &e).await;
                                break 'conn Err(format!("bad frame from the relay: {e}"));
                            }
                        };
                        let msg = match control::decode(&frame) {
                            Ok(m) => m,
                            Err(e) => {
                                say_goodbye(&mut stream, &e).await;
                                break 'conn Err(format!("bad message from the relay: {e}"));
                            }
                        };
                        if let Err(e) = msg.check_order(control::Role::Signaling, hello_seen) {
                            say_goodbye(&mut stream, &e).await;
                            break 'conn Err(format!("relay broke the protocol: {e}"));
                        }
                        match msg {
                            Message::Hello(Hello { role: HelloRole::Relay(info), minor, .. }) => {
                                hello_seen = true;
                                relay_minor = minor;
                                backlog.push(LinkEvent::Connected(info));
                            }
                            Message::Hello(_) => {
                                let e = control::ControlError::ProtocolViolation {
                                    reason: "the peer's hello claims our role, signaling".into(),
                                };
                                say_goodbye(&mut stream, &e).await;
                                break 'conn Err("the peer is not a relay".into());
                            }
                            Message::Response(r) => {
                                if Some(r.id) == snapshot_id && r.result.is_ok() {
                                    *snapshot = SnapshotFate::Accepted;
                                }
                                if Some(r.id) == snapshot_id {
                                    snapshot_id = None;
                                }
                                if let Some(reply) = pending.remove(&r.id) {
                                    let _ = reply.send(r.result.map_err(|ErrorReply { code, message }| {
                                        RelayError::Refused(code, message)
                                    }));
                                }
                            }
                            Message::Notification(n) => backlog.push(LinkEvent::Notification(n)),
                            Message::Goodbye(Goodbye { code, message }) => {
                                break 'conn Err(format!("the relay said goodbye: {code:?}: {message}"));
                            }
                            Message::Request(_) => break 'conn Err("the relay sent a request".into()),
                        }
                    }
                }
            }
            permit = events.reserve(), if !backlog.is_empty() => match permit {
                Ok(permit) => backlog.hand_over(permit),
                Err(_) => break 'conn Ok(()), // the service is gone
            },
            cmd = cmds.recv() => {
                if let Some(Cmd::Reconnect(why)) = cmd {
                    break 'conn Err(why);
                }
                let Some(Cmd::Request(body, reply)) = cmd else {
                    let mut bye = Vec::new();
                    let g = Goodbye::new(ErrorCode::Shutdown, "signaling is stopping");
                    if control::encode(&Message::Goodbye(g), &mut bye).is_ok() {
                        let _ = stream.write_all(&bye).await;
                    }
                    break 'conn Ok(());
                };
                let is_snapshot = matches!(*body, RequestBody::Snapshot(_));
                let accepted = *snapshot == SnapshotFate::Accepted;
                if !hello_seen || (!accepted && !is_snapshot) {
                    let _ = reply.send(Err(RelayError::NotConnected));
                    continue;
                }
                let body = for_relay_minor(*body, relay_minor);
                let id = RequestId(next_id);
                next_id += 1;
                out.clear();
                if let Err(e) = control::encode(&Message::Request(Request { id, body }), &mut out) {
                    let _ = reply.send(Err(RelayError::Encode(e.to_string())));
                    continue;
                }
                if let Err(e) = stream.write_all(&out).await {
                    let _ = reply.send(Err(RelayError::Dropped));
                    break 'conn Err(format!("write: {e}"));
                }
                if is_snapshot {
                    snapshot_id = Some(id);
                    if !accepted {
                        *snapshot = SnapshotFate::NotAccepted;
                    }
                }
                // Requests whose caller gave up waiting (a relay that stopped answering)
                // are forgotten, not kept until the connection drops.
                pending.retain(|_, r| !r.is_closed());
                pending.insert(id, reply);
            }
        }
    };
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err(RelayError::Dropped));
    }
    result
}

/// `body` as a relay of minor version `minor` reads it: without the fields later minors
/// added (a minor-1 relay refuses a session's `remote_pwd` as an unknown field).
fn for_relay_minor(mut body: RequestBody, minor: u32) -> RequestBody {
    if minor < 2 {
        match &mut body {
            RequestBody::UpsertSession { session, .. } => session.remote_pwd = None,
            RequestBody::Snapshot(snap) => {
                for s in &mut snap.sessions {
                    s.remote_pwd = None;
                }
            }
            _ => {}
        }
    }
    body
}

/// Tells a relay that broke the protocol why we close (best effort): a hello of another
/// major version gets `version_mismatch`, a malformed message `malformed`, and so on.
async fn say_goodbye(stream: &mut UnixStream, e: &control::ControlError) {
    let mut bye = Vec::new();
    let g = Goodbye::new(e.code(), e.to_string());
    if control::encode(&Message::Goodbye(g), &mut bye).is_ok() {
        let _ = stream.write_all(&bye).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blindfold_relay::control::{Fingerprint, Generation, Response};
    use tokio::net::UnixListener;

    /// The relay's side of one connection, scripted: hello, then answers each request
    /// with `answer(request)`; returns when the link closes the connection.
    async fn relay_side(
        stream: UnixStream,
        answer: impl FnMut(&Request) -> Result<ResponseBody, ErrorReply>,
    ) -> Vec<Request> {
        relay_side_notifying(stream, answer, |_| Vec::new()).await
    }

    /// [`relay_side`], and each answer is followed, in the same write, by the
    /// notifications `notify(request)`.
    async fn relay_side_notifying(
        mut stream: UnixStream,
        mut answer: impl FnMut(&Request) -> Result<ResponseBody, ErrorReply>,
        mut notify: impl FnMut(&Request) -> Vec<NotificationBody>,
    ) -> Vec<Request> {
        let mut out = Vec::new();
        let hello = Hello::relay(
            "scripted",
            Fingerprint([7; 32]),
            vec!["127.0.0.1:10000".parse().unwrap()],
        );
        control::encode(&Message::Hello(hello), &mut out).unwrap();
        stream.write_all(&out).await.unwrap();
        let (mut dec, mut buf, mut seen) = (FrameDecoder::new(), vec![0u8; 4096], Vec::new());
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return seen;
            }
            let mut input = &buf[..n];
            while !input.is_empty() {
                input = &input[dec.push(input)..];
                while let Some(frame) = dec.next_frame().unwrap() {
                    if let Message::Request(r) = control::decode(&frame).unwrap() {
                        let reply = Response {
                            id: r.id,
                            result: answer(&r),
                        };
                        out.clear();
                        control::encode(&Message::Response(reply), &mut out).unwrap();
                        for n in notify(&r) {
                            control::encode(&Message::Notification(n), &mut out).unwrap();
                        }
                        stream.write_all(&out).await.unwrap();
                        seen.push(r);
                    }
                }
            }
        }
    }

    fn snapshot(generation: u64) -> Snapshot {
        Snapshot {
            generation: Generation(generation),
            conferences: Vec::new(),
            sessions: Vec::new(),
            subscriptions: Vec::new(),
        }
    }

    #[test]
    fn a_relay_that_keeps_refusing_the_snapshot_is_retried_ever_more_slowly() {
        let delays: Vec<u64> = (0..9)
            .map(|n| unreconciled_delay(n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [0, 0, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]
        );
        // A relay that is simply down is tried again within half a second.
        assert_eq!(reconnect_delay(100), Duration::from_millis(500));
    }

    /// A socket at a fresh path in the temporary directory (`name` tells tests apart),
    /// listened on as the relay would, and a link to it with its events.
    fn scripted_relay(
        name: &str,
    ) -> (
        std::path::PathBuf,
        UnixListener,
        RelayLink,
        mpsc::Receiver<LinkEvent>,
    ) {
        let dir = std::env::temp_dir().join(format!("bf-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let (events_tx, events) = mpsc::channel(16);
        let link = RelayLink::spawn(path.clone(), events_tx, Duration::from_secs(5));
        (path, listener, link, events)
    }

    /// One connection whose snapshot the relay refuses: the link connects, the
    /// snapshot is refused, until one is accepted the link takes nothing else, the
    /// service asks for a new connection, and the old one closes. Returns when it has.
    async fn refuse_one(
        listener: &UnixListener,
        link: &RelayLink,
        events: &mut mpsc::Receiver<LinkEvent>,
        generation: u64,
    ) {
        let (stream, _) = listener.accept().await.unwrap();
        let relay = tokio::spawn(relay_side(stream, |_| {
            Err(ErrorReply {
                code: ErrorCode::Overloaded,
                message: "busy".into(),
            })
        }));
        assert!(matches!(events.recv().await, Some(LinkEvent::Connected(_))));
        assert!(matches!(
            link.snapshot(snapshot(generation)).await,
            Err(RelayError::Refused(ErrorCode::Overloaded, _))
        ));
        assert_eq!(
            link.request(RequestBody::GetStats).await,
            Err(RelayError::NotConnected)
        );
        link.reconnect("the snapshot failed".into()).await;
        assert_eq!(relay.await.unwrap().len(), 1, "the refused snapshot alone");
        assert!(matches!(
            events.recv().await,
            Some(LinkEvent::Disconnected(_))
        ));
    }

    #[tokio::test]
    async fn refused_snapshots_back_off_until_the_relay_is_gone_and_back() {
        use tokio::time::Instant;
        let (path, listener, link, mut events) = scripted_relay("backoff");

        // The first refusal is retried at once (a relay that died mid-snapshot), the
        // second only after a second.
        refuse_one(&listener, &link, &mut events, 1).await;
        let refused = Instant::now();
        refuse_one(&listener, &link, &mut events, 2).await;
        assert!(
            refused.elapsed() < Duration::from_secs(1),
            "retried at once"
        );
        let refused = Instant::now();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(
            refused.elapsed() >= Duration::from_secs(1),
            "then after a second: {:?}",
            refused.elapsed()
        );
        drop(stream);
        assert!(matches!(
            events.recv().await,
            Some(LinkEvent::Disconnected(_))
        ));

        // The relay restarts while the link waits out the 2 s the third refusal in a
        // row earned: the new process binds a new socket file and is owed a snapshot at
        // once, and its first refusal is retried at once too.
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = UnixListener::bind(&path).unwrap();
        refuse_one(&listener, &link, &mut events, 3).await;
        let refused = Instant::now();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(
            refused.elapsed() < Duration::from_secs(1),
            "a new relay's refusal is retried at once: {:?}",
            refused.elapsed()
        );
        drop((stream, link));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A minor-1 relay refuses fields it does not know: the participant's ICE password
    /// (minor 2) is left out for it, kept for a newer one.
    #[test]
    fn a_sessions_remote_pwd_goes_only_to_a_relay_that_reads_it() {
        use blindfold_relay::control::{ConfId, IcePwd, IceUfrag, SessionId, SessionSpec};
        let spec = SessionSpec {
            session_id: SessionId::new("s").unwrap(),
            conf_id: ConfId::new("c").unwrap(),
            ice_ufrag: IceUfrag::new("rlay").unwrap(),
            ice_pwd: IcePwd::new("abcdefghijklmnopqrstuv+/").unwrap(),
            remote_ufrag: IceUfrag::new("peer").unwrap(),
            remote_pwd: Some(IcePwd::new("ABCDEFGHIJKLMNOPQRSTUV+/").unwrap()),
            dtls_fingerprint: Fingerprint([7; 32]),
            streams: Vec::new(),
            extmap: Default::default(),
            tmmbr: false,
        };
        let upsert = |minor| {
            let body = RequestBody::UpsertSession {
                generation: Generation(1),
                session: spec.clone(),
            };
            match for_relay_minor(body, minor) {
                RequestBody::UpsertSession { session, .. } => session.remote_pwd,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(upsert(1), None);
        assert_eq!(upsert(2), spec.remote_pwd);
        let mut snap = snapshot(3);
        snap.sessions.push(spec.clone());
        match for_relay_minor(RequestBody::Snapshot(snap), 1) {
            RequestBody::Snapshot(s) => assert_eq!(s.sessions[0].remote_pwd, None),
            other => panic!("{other:?}"),
        }
    }

    /// A relay that breaks the protocol is told why before the link closes: another
    /// major version, a bad length prefix, a hello claiming signaling's role.
    #[tokio::test]
    async fn a_relay_that_breaks_the_protocol_gets_a_goodbye_saying_why() {
        let frame = |body: &[u8]| {
            let mut out = (body.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(body);
            out
        };
        for (name, sent, code) in [
            (
                "major",
                frame(br#"{"type":"hello","version":99,"role":"relay"}"#),
                ErrorCode::VersionMismatch,
            ),
            ("frame", vec![0, 0, 0, 0], ErrorCode::BadFrame),
            (
                "role",
                frame(br#"{"type":"hello","version":1,"role":"signaling"}"#),
                ErrorCode::ProtocolViolation,
            ),
        ] {
            let (path, listener, link, mut events) = scripted_relay(name);
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(&sent).await.unwrap();
            let mut got = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
            let (mut dec, mut input, mut frames) = (FrameDecoder::new(), &got[..], Vec::new());
            while !input.is_empty() {
                input = &input[dec.push(input)..];
                while let Some(f) = dec.next_frame().unwrap() {
                    frames.push(control::decode(&f).unwrap());
                }
            }
            assert!(
                frames
                    .iter()
                    .any(|m| matches!(m, Message::Goodbye(g) if g.code == code)),
                "{name}: {frames:?}"
            );
            assert!(matches!(
                events.recv().await,
                Some(LinkEvent::Disconnected(_))
            ));
            drop(link);
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }

    #[tokio::test]
    async fn a_refused_snapshot_is_retried_on_a_new_connection() {
        let (path, listener, link, mut events) = scripted_relay("link");
        // First connection: the relay is overloaded and refuses the snapshot; the
        // service asks for a new connection.
        refuse_one(&listener, &link, &mut events, 1).await;
        // The new one's snapshot is taken; then requests flow.
        let (stream, _) = listener.accept().await.unwrap();
        let second = tokio::spawn(relay_side(stream, |_| Ok(ResponseBody::Ok)));
        assert!(matches!(events.recv().await, Some(LinkEvent::Connected(_))));
        assert_eq!(link.snapshot(snapshot(2)).await, Ok(ResponseBody::Ok));
        assert_eq!(
            link.request(RequestBody::GetStats).await,
            Ok(ResponseBody::Ok)
        );
        drop(link);
        let seen = second.await.unwrap();
        assert!(matches!(&seen[0].body, RequestBody::Snapshot(s) if s.generation == Generation(2)));
        assert_eq!(seen.len(), 2);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    fn connected(n: usize) -> NotificationBody {
        NotificationBody::SessionConnected {
            session_id: blindfold_relay::control::SessionId::new(format!("s{n}")).unwrap(),
            addr: "192.0.2.1:5000".parse().unwrap(),
        }
    }

    /// The relay's catch-up after a snapshot (every connected session again) outnumbers
    /// what the service's channel holds, and the service, busy, takes none of it: its
    /// requests are answered all the same, and then it gets every notification, in
    /// order.
    #[tokio::test]
    async fn requests_are_answered_while_the_service_is_behind_with_notifications() {
        const SESSIONS: usize = 200;
        let (path, listener, link, mut events) = scripted_relay("behind");
        let (stream, _) = listener.accept().await.unwrap();
        let relay = tokio::spawn(relay_side_notifying(
            stream,
            |_| Ok(ResponseBody::Ok),
            |r| match r.body {
                RequestBody::Snapshot(_) => (0..SESSIONS).map(connected).collect(),
                _ => Vec::new(),
            },
        ));
        assert!(matches!(events.recv().await, Some(LinkEvent::Connected(_))));
        assert_eq!(link.snapshot(snapshot(1)).await, Ok(ResponseBody::Ok));
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(1), link.request(RequestBody::GetStats)).await,
            Ok(Ok(ResponseBody::Ok)),
            "the answer waited behind the notifications"
        );
        for n in 0..SESSIONS {
            assert_eq!(
                events.recv().await,
                Some(LinkEvent::Notification(connected(n)))
            );
        }
        drop(link);
        assert_eq!(relay.await.unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// While the service is behind, only the newest active speaker of a conference
    /// and the newest stats wait for it; every session notification does, in order.
    #[test]
    fn a_waiting_speaker_change_or_stats_report_gives_way_to_a_newer_one() {
        use blindfold_relay::control::{ConfId, SessionId, StatsReport};
        let speaker = |conf: &str, session: &str| {
            LinkEvent::Notification(NotificationBody::ActiveSpeaker {
                conf_id: ConfId::new(conf).unwrap(),
                session_id: SessionId::new(session).unwrap(),
            })
        };
        let stats = |sessions| {
            LinkEvent::Notification(NotificationBody::Stats(StatsReport {
                sessions,
                ..StatsReport::default()
            }))
        };
        let mut backlog = Backlog::default();
        for ev in [
            speaker("c1", "a"),
            LinkEvent::Notification(connected(1)),
            speaker("c2", "x"),
            stats(1),
            speaker("c1", "b"),
            LinkEvent::Notification(connected(2)),
            stats(2),
        ] {
            backlog.push(ev);
        }
        assert_eq!(
            Vec::from(backlog.events),
            [
                LinkEvent::Notification(connected(1)),
                speaker("c2", "x"),
                speaker("c1", "b"),
                LinkEvent::Notification(connected(2)),
                stats(2),
            ]
        );
    }

    /// A relay that turns connections away before any snapshot (it serves another
    /// signaling instance) is tried again every half second at most, not ever more
    /// slowly: the link is connected soon after the slot frees.
    #[tokio::test]
    async fn a_relay_serving_another_signaling_is_tried_again_promptly() {
        use tokio::time::Instant;
        let (path, listener, link, _events) = scripted_relay("busy");
        let mut bye = Vec::new();
        let g = Goodbye::new(
            ErrorCode::ProtocolViolation,
            "another signaling connection is active; one at a time",
        );
        control::encode(&Message::Goodbye(g), &mut bye).unwrap();
        let mut turned_away = Instant::now();
        for _ in 0..4 {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.write_all(&bye).await;
            drop(stream);
            turned_away = Instant::now();
        }
        let next = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
        assert!(
            next.is_ok() && turned_away.elapsed() < Duration::from_millis(1500),
            "connected again {:?} after the slot freed",
            turned_away.elapsed()
        );
        drop(link);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
