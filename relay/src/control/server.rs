//! The control-socket server as a state machine (sans-IO): bytes from the signaling
//! client and reports from the workers go in; bytes for the client and commands for
//! each worker come out. The binary only moves them between sockets, channels and this.
//!
//! What it decides:
//!
//! - **One client at a time.** [`ControlServer::accept`] refuses a second connection
//!   with the bytes of a goodbye to write to it.
//! - **Hello first.** Each side sends its hello at once; the client's must come first
//!   and match our major version, else goodbye and close ([`Message::check_order`],
//!   [`Hello::negotiate`]).
//! - **Requests** go through the [`Registry`]; its commands are queued for *every*
//!   worker, in order.
//! - **`ok` means applied everywhere.** A response is held until every worker reported
//!   (with [`ControlServer::handle_applied`]) that it applied every command queued up
//!   to that request, so a check sent right after an `ok` finds its session on
//!   whichever worker receives it. Everything sent to the client keeps its order:
//!   notifications that arrive meanwhile wait behind the held response.
//! - **Never wait for a worker.** Commands wait in a queue per worker until the shell
//!   hands them over ([`ControlServer::poll_command`], and
//!   [`ControlServer::return_command`] when the worker's channel is full). When a
//!   worker's queue holds [`Limits::max_queued`] commands, a request that would change
//!   state is answered `overloaded` and changes nothing (counted in
//!   [`ServerStats::overloaded`]); `get_stats` is still answered.
//! - **Backlog.** A client that stops reading is hung up on once
//!   [`Limits::max_backlog`] bytes, or [`Limits::max_held`] messages held behind a
//!   response the workers have not applied yet, wait for it; sessions keep running.
//! - **Snapshot catch-up.** After answering a snapshot, every connected session is
//!   announced again (`session_connected`): the client may have missed notifications
//!   while away.
//! - **Goodbye.** The client's goodbye, or [`ControlServer::handle_shutdown`], closes
//!   the connection once what is queued is written ([`ControlServer::wants_close`]).
//!
//! ```
//! use blindfold_relay::control::server::{ControlServer, Limits};
//! use blindfold_relay::control::{self, Fingerprint, Hello, Message, Request, RequestBody,
//!                                RequestId, FrameDecoder};
//!
//! let hello = Hello::relay("relay/1", Fingerprint([1; 32]), vec!["192.0.2.1:10000".parse().unwrap()]);
//! let mut server = ControlServer::new(hello, 2, Limits::default());
//! server.accept(std::time::Instant::now()).unwrap();
//! let mut input = Vec::new();
//! control::encode(&Message::Hello(Hello::signaling("signaling/1")), &mut input).unwrap();
//! let get = Request { id: RequestId(1), body: RequestBody::GetStats };
//! control::encode(&Message::Request(get), &mut input).unwrap();
//! server.handle_data(&input);
//! // Our hello, then the stats response (get_stats changes nothing: no wait).
//! let out = server.transmit().to_vec();
//! server.advance(out.len());
//! let (mut dec, mut rest, mut got) = (FrameDecoder::new(), &out[..], Vec::new());
//! while !rest.is_empty() {
//!     rest = &rest[dec.push(rest)..];
//!     while let Some(frame) = dec.next_frame().unwrap() {
//!         got.push(control::decode(&frame).unwrap());
//!     }
//! }
//! assert!(matches!(got[..], [Message::Hello(_), Message::Response(_)]));
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::registry::Registry;
use super::rules;
use super::{
    ControlError, Disposition, EndReason, ErrorCode, ErrorReply, FrameDecoder, Goodbye, Hello,
    Message, NotificationBody, RequestBody, Response, ResponseBody, Role, StatsReport,
};
use crate::engine::{Command, SessionEvent, SessionRule};

/// `note` as a peer speaking `minor` knows it: before minor 1 there is no reason
/// `closed`, and a participant's close was reported as `dtls_failed`.
fn for_minor(note: NotificationBody, minor: u32) -> NotificationBody {
    let old = |reason| match reason {
        EndReason::Closed if minor < 1 => EndReason::DtlsFailed,
        r => r,
    };
    match note {
        NotificationBody::SessionClosed { session_id, reason } => NotificationBody::SessionClosed {
            session_id,
            reason: old(reason),
        },
        NotificationBody::SessionFailed {
            session_id,
            reason,
            detail,
        } => NotificationBody::SessionFailed {
            session_id,
            reason: old(reason),
            detail,
        },
        other => other,
    }
}

/// How long a client has, from connecting, to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds of the server's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Commands that may wait for one worker before state-changing requests are
    /// refused as `overloaded`.
    pub max_queued: usize,
    /// Unsent bytes for the client before it is hung up on.
    pub max_backlog: usize,
    /// Messages held (behind a response that waits for the workers) before it is.
    pub max_held: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A snapshot of 10 000 sessions is about 10 000 commands per worker.
            max_queued: 64 * 1024,
            max_backlog: 64 << 20,
            // Notifications behind a snapshot of 10 000 sessions: a few per session.
            max_held: 256 * 1024,
        }
    }
}

/// What a worker tells the control side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerReport {
    /// Something happened to a session (becomes a notification for signaling).
    Session(SessionEvent),
    /// The relay closed this session on its own, for this reason (the engine's `Ended`
    /// event).
    Ended(SessionRule, crate::engine::EndReason),
}

/// Counters of the server's own decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Requests answered `overloaded` because a worker's queue was full.
    pub overloaded: u64,
    /// Clients hung up on for not reading.
    pub backlog_hangups: u64,
    /// Second clients turned away.
    pub refused_clients: u64,
    /// Requests handled.
    pub requests: u64,
}

/// A message for the client, held until the workers applied the commands before it.
#[derive(Debug)]
struct Held {
    msg: Message,
    /// Per worker, the number of commands that must be applied first.
    after: Option<Vec<u64>>,
}

#[derive(Debug)]
struct Conn {
    decoder: FrameDecoder,
    /// The client's hello arrived and was accepted.
    hello: bool,
    /// The minor version both sides speak (from the hellos).
    minor: u32,
    /// When the connection is closed if its hello has not arrived.
    hello_by: Instant,
    /// Say what is queued, then close.
    closing: bool,
    held: VecDeque<Held>,
    /// Encoded, released messages; `out[sent..]` is unwritten.
    out: Vec<u8>,
    sent: usize,
}

#[derive(Debug, Default)]
struct WorkerQueue {
    queue: VecDeque<Command>,
    /// Commands ever queued for this worker.
    queued: u64,
    /// Commands the worker reported applied.
    applied: u64,
}

/// Fills the traffic counters of a `get_stats` answer (the shell's metrics).
pub type TrafficFn = Box<dyn Fn(&mut StatsReport) + Send>;

/// The control-socket server. See the module docs.
pub struct ControlServer {
    hello: Hello,
    registry: Registry,
    conn: Option<Conn>,
    workers: Vec<WorkerQueue>,
    limits: Limits,
    stats: ServerStats,
    traffic: TrafficFn,
    /// When a refused second connection was last logged as a warning: another
    /// signaling instance tries again every half second, so at most one a minute is.
    refusal_warned: Option<Instant>,
}

/// How often a refused second signaling connection is logged as a warning (the others
/// at debug, all counted in `refused_clients`).
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(60);

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("conn", &self.conn.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ControlServer {
    /// A server that greets clients with `hello` and feeds `workers` workers.
    pub fn new(hello: Hello, workers: usize, limits: Limits) -> Self {
        ControlServer {
            hello,
            registry: Registry::new(),
            conn: None,
            workers: (0..workers).map(|_| WorkerQueue::default()).collect(),
            limits,
            stats: ServerStats::default(),
            traffic: Box::new(|_| {}),
            refusal_warned: None,
        }
    }

    /// Sets what fills the traffic counters of `get_stats` answers.
    pub fn set_traffic(&mut self, traffic: TrafficFn) {
        self.traffic = traffic;
    }

    // ----- getters -------------------------------------------------------------------

    /// The rule state.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Whether a client is connected.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Commands waiting for worker `w`.
    pub fn queued(&self, w: usize) -> usize {
        self.workers.get(w).map_or(0, |q| q.queue.len())
    }

    // ----- input ---------------------------------------------------------------------

    /// A client connected at `now`. `Err` carries the goodbye to write to it (best
    /// effort) before closing it: another client is connected. Its hello must arrive
    /// within [`HELLO_TIMEOUT`] ([`handle_timeout`](Self::handle_timeout)).
    pub fn accept(&mut self, now: Instant) -> Result<(), Vec<u8>> {
        if self.conn.is_some() {
            self.stats.refused_clients += 1;
            if self
                .refusal_warned
                .is_none_or(|t| now.saturating_duration_since(t) >= REFUSAL_WARN_EVERY)
            {
                self.refusal_warned = Some(now);
                tracing::warn!(
                    refused = self.stats.refused_clients,
                    "refusing a second signaling connection (another instance? logged once a minute)"
                );
            } else {
                tracing::debug!("refusing a second signaling connection");
            }
            let bye = Message::Goodbye(Goodbye::new(
                ErrorCode::ProtocolViolation,
                "another signaling connection is active; one at a time",
            ));
            let mut out = Vec::new();
            let _ = super::encode(&bye, &mut out);
            return Err(out);
        }
        tracing::info!("signaling connected");
        let mut conn = Conn {
            decoder: FrameDecoder::new(),
            hello: false,
            minor: 0,
            hello_by: now + HELLO_TIMEOUT,
            closing: false,
            held: VecDeque::new(),
            out: Vec::new(),
            sent: 0,
        };
        // Each side sends its hello first, without waiting for the other's.
        conn.held.push_back(Held {
            msg: Message::Hello(self.hello.clone()),
            after: None,
        });
        self.conn = Some(conn);
        self.release();
        Ok(())
    }

    /// When [`handle_timeout`](Self::handle_timeout) has something to do: a connected
    /// client's hello deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn
            .as_ref()
            .filter(|c| !c.hello && !c.closing)
            .map(|c| c.hello_by)
    }

    /// Time passed: a client whose hello is overdue is closed with goodbye
    /// `protocol_violation`, so a connection that never speaks (a probe left open)
    /// cannot hold the one slot signaling needs.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| t <= now) {
            self.refuse(ControlError::ProtocolViolation {
                reason: format!("no hello within {} s", HELLO_TIMEOUT.as_secs()),
            });
            self.release();
        }
    }

    /// Bytes the client sent.
    pub fn handle_data(&mut self, mut input: &[u8]) {
        'input: while !input.is_empty() {
            let Some(conn) = self.conn.as_mut().filter(|c| !c.closing) else {
                break;
            };
            let used = conn.decoder.push(input);
            input = input.get(used..).unwrap_or_default();
            loop {
                // Nothing is read after a goodbye, either way.
                let Some(conn) = self.conn.as_mut().filter(|c| !c.closing) else {
                    break 'input;
                };
                match conn.decoder.next_frame() {
                    Ok(Some(frame)) => self.handle_frame(&frame),
                    Ok(None) => break,
                    Err(e) => self.refuse(e),
                }
            }
        }
        self.release();
    }

    /// The client hung up (end of stream or an error): forget the connection. Sessions
    /// keep running.
    pub fn handle_hangup(&mut self) {
        if let Some(conn) = self.conn.take() {
            if let Err(e) = conn.decoder.finish() {
                tracing::warn!(error = %e, "signaling hung up mid-frame");
            }
            tracing::info!("signaling disconnected; sessions keep running");
        }
    }

    /// A worker's report.
    pub fn handle_report(&mut self, report: WorkerReport) {
        match report {
            WorkerReport::Session(ev) => {
                if self.registry.is_stale(&ev) {
                    tracing::debug!(?ev, "report about an incarnation no longer held; dropped");
                    return;
                }
                let Some(note) = rules::notification(ev) else {
                    return;
                };
                self.registry.observe(&note);
                tracing::debug!(event = note.event(), "notification");
                if let Some(conn) = self.conn.as_mut().filter(|c| c.hello && !c.closing) {
                    conn.held.push_back(Held {
                        msg: Message::Notification(for_minor(note, conn.minor)),
                        after: None,
                    });
                }
            }
            WorkerReport::Ended(spec, reason) => {
                let commands = self.registry.observe_ended(&spec, reason);
                self.queue_commands(commands);
            }
        }
        self.release();
    }

    /// Worker `w` has applied `applied` commands in all (a running count).
    pub fn handle_applied(&mut self, w: usize, applied: u64) {
        if let Some(q) = self.workers.get_mut(w) {
            q.applied = q.applied.max(applied);
        }
        self.release();
    }

    /// The relay is stopping: say goodbye and close.
    pub fn handle_shutdown(&mut self) {
        self.close_with(Message::Goodbye(Goodbye::new(
            ErrorCode::Shutdown,
            "the relay is stopping",
        )));
        self.release();
    }

    // ----- output --------------------------------------------------------------------

    /// The next command for worker `w`, counted as handed over.
    pub fn poll_command(&mut self, w: usize) -> Option<Command> {
        self.workers.get_mut(w)?.queue.pop_front()
    }

    /// The worker's channel was full: `cmd` goes back to the front of its queue.
    pub fn return_command(&mut self, w: usize, cmd: Command) {
        if let Some(q) = self.workers.get_mut(w) {
            q.queue.push_front(cmd);
        }
    }

    /// Bytes to write to the client (empty when there is nothing, or no client).
    pub fn transmit(&self) -> &[u8] {
        self.conn.as_ref().map_or(&[], |c| &c.out[c.sent..])
    }

    /// `n` bytes of [`transmit`](Self::transmit) were written.
    pub fn advance(&mut self, n: usize) {
        if let Some(c) = self.conn.as_mut() {
            c.sent = (c.sent + n).min(c.out.len());
            if c.sent == c.out.len() {
                c.out.clear();
                c.sent = 0;
            }
        }
    }

    /// The connection should be closed once [`transmit`](Self::transmit) is written
    /// (best effort); then call [`handle_hangup`](Self::handle_hangup).
    pub fn wants_close(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.closing)
    }

    // ----- internals -----------------------------------------------------------------

    fn refuse(&mut self, e: ControlError) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match e.disposition() {
            Disposition::Reply(m) => conn.held.push_back(Held {
                msg: m,
                after: None,
            }),
            Disposition::Close(m) => {
                if let Message::Goodbye(g) = &m {
                    tracing::warn!(code = ?g.code, message = %g.message, "closing the control connection");
                }
                self.close_with(m);
            }
        }
    }

    /// Queues `last` and closes once it is written. Responses still waiting for the
    /// workers are dropped, not sent early: `ok` never goes out before the rule is
    /// applied, and requests in flight at a close have unknown outcomes (the protocol
    /// doc's reconnect rule).
    fn close_with(&mut self, last: Message) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.held.retain(|h| h.after.is_none());
        conn.held.push_back(Held {
            msg: last,
            after: None,
        });
        conn.closing = true;
    }

    fn handle_frame(&mut self, frame: &[u8]) {
        let msg = match super::decode(frame) {
            Ok(m) => m,
            Err(e) => return self.refuse(e),
        };
        let hello_seen = self.conn.as_ref().is_some_and(|c| c.hello);
        if let Err(e) = msg.check_order(Role::Relay, hello_seen) {
            return self.refuse(e);
        }
        match msg {
            Message::Hello(peer) => match self.hello.negotiate(&peer) {
                Ok(minor) => {
                    tracing::info!(software = %peer.software, minor, "signaling hello");
                    if let Some(c) = self.conn.as_mut() {
                        c.hello = true;
                        c.minor = minor;
                    }
                }
                Err(e) => self.refuse(e),
            },
            Message::Request(req) => {
                self.stats.requests += 1;
                let method = req.body.method();
                let snapshot = matches!(req.body, RequestBody::Snapshot(_));
                let changes = !matches!(req.body, RequestBody::GetStats);
                let (mut result, commands) = if changes && self.overloaded() {
                    self.stats.overloaded += 1;
                    let reply = ErrorReply::new(
                        ErrorCode::Overloaded,
                        "the workers are behind on rules; retry shortly",
                    );
                    (Err(reply), Vec::new())
                } else {
                    self.registry.apply(req.body)
                };
                if let Ok(ResponseBody::Stats(stats)) = &mut result {
                    (self.traffic)(stats);
                }
                match &result {
                    Ok(_) => tracing::debug!(method, commands = commands.len(), "applied"),
                    Err(e) => {
                        tracing::info!(method, code = ?e.code, message = %e.message, "refused")
                    }
                }
                // Answered once the workers have applied everything queued so far, not
                // only this request's commands: an earlier connection's may still be
                // on their way (a snapshot that outlasted its sender's patience), and a
                // request that changes nothing must not be `ok` before them.
                if !commands.is_empty() {
                    self.queue_commands(commands);
                }
                let after = changes.then(|| self.workers.iter().map(|q| q.queued).collect());
                let ok = result.is_ok();
                let (connected, failed): (Vec<_>, Vec<_>) = if snapshot && ok {
                    (
                        self.registry
                            .connected()
                            .map(|(id, addr)| (id.clone(), addr))
                            .collect(),
                        // Those that ended either way: failed, or closed while
                        // signaling was away (the snapshot, listing them, left them so).
                        self.registry
                            .failed()
                            .chain(self.registry.closed())
                            .cloned()
                            .collect(),
                    )
                } else {
                    (Vec::new(), Vec::new())
                };
                let Some(conn) = self.conn.as_mut() else {
                    return;
                };
                conn.held.push_back(Held {
                    msg: Message::Response(Response { id: req.id, result }),
                    after,
                });
                // Signaling may have missed notifications while away: tell it the true
                // state.
                for (session_id, addr) in connected {
                    conn.held.push_back(Held {
                        msg: Message::Notification(NotificationBody::SessionConnected {
                            session_id,
                            addr,
                        }),
                        after: None,
                    });
                }
                for note in failed {
                    conn.held.push_back(Held {
                        msg: Message::Notification(for_minor(note, conn.minor)),
                        after: None,
                    });
                }
            }
            Message::Goodbye(g) => {
                tracing::info!(code = ?g.code, message = %g.message, "signaling said goodbye");
                if let Some(c) = self.conn.as_mut() {
                    c.closing = true;
                }
            }
            // `check_order` refused these already.
            Message::Response(_) | Message::Notification(_) => {
                self.refuse(ControlError::ProtocolViolation {
                    reason: "message sent in the wrong direction".into(),
                })
            }
        }
    }

    fn overloaded(&self) -> bool {
        self.workers
            .iter()
            .any(|q| q.queue.len() >= self.limits.max_queued)
    }

    fn queue_commands(&mut self, commands: Vec<Command>) {
        let Some((last, rest)) = self.workers.split_last_mut() else {
            return;
        };
        for cmd in commands {
            for q in rest.iter_mut() {
                q.queue.push_back(cmd.clone());
                q.queued += 1;
            }
            last.queue.push_back(cmd);
            last.queued += 1;
        }
    }

    /// Encodes the held messages whose commands every worker applied, in order, and
    /// hangs up on a client that lets too much pile up.
    fn release(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        while let Some(h) = conn.held.front() {
            let ready = h.after.as_ref().is_none_or(|after| {
                after
                    .iter()
                    .zip(&self.workers)
                    .all(|(&need, q)| q.applied >= need)
            });
            if !ready {
                break;
            }
            let Some(h) = conn.held.pop_front() else {
                break;
            };
            if let Err(e) = super::encode(&h.msg, &mut conn.out) {
                tracing::error!(error = %e, "cannot encode a control message");
            }
        }
        let backlog = conn.out.len() - conn.sent;
        if (backlog > self.limits.max_backlog || conn.held.len() > self.limits.max_held)
            && !conn.closing
        {
            tracing::warn!("signaling is not reading its control socket; hanging up");
            self.stats.backlog_hangups += 1;
            conn.out.clear();
            conn.sent = 0;
            conn.held.clear();
            conn.closing = true;
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
