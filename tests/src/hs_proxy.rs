//! An HTTP proxy in front of the test homeserver that passes a client's requests on,
//! and on demand makes two faults no local homeserver makes by itself:
//!
//! - it holds back the to-device messages of the `/sync` answers until told to deliver
//!   them: what a client sees when a megolm key travels slower than the room event it
//!   decrypts (over federation the two take different paths);
//! - it refuses event sends (`PUT …/send/…`), with a 502 as a homeserver that is
//!   failing or with a 401 `M_UNKNOWN_TOKEN` as one that no longer takes the client's
//!   token, while syncs and everything else still work;
//! - it cuts the timeline of each room in a `/sync` answer to a few events (by asking
//!   with a smaller timeline limit than the client's filter): what a client sees when
//!   more happened between two syncs than its limit, with a real `prev_batch` to page
//!   back from;
//! - from the client's next call invite on, it holds its `/sync` answers until told
//!   to let them go: whatever happened meanwhile (the SFU's answer and what the SFU
//!   sent right after it) reaches the client in one answer, as from a homeserver that
//!   answers late;
//! - it takes the events of one state type out of every `/sync` answer (its rooms'
//!   `state` and timelines): what Synapse's full state of a room whose event graph has
//!   two branches lacks (it gives the state after the room's latest event, without
//!   what the other branch set), while `GET /rooms/{roomId}/state` still has them.
//!
//! While to-device messages are held or waiting, each `/sync` long-poll is cut to 1 s
//! so that released messages reach the client soon. A login answer loses its
//! `well_known` (which would send the client to the homeserver itself). Plain HTTP/1.1
//! on loopback, requests with a `Content-Length` body (what matrix-sdk and signaling
//! send), one thread per connection. One proxy per client that holds to-device
//! messages: held messages are not told apart by whose they are.
//!
//! ```no_run
//! use blindfold_tests::hs_proxy::HomeserverProxy;
//! use blindfold_tests::synapse::Synapse;
//!
//! let proxy = HomeserverProxy::start(Synapse::shared().base_url());
//! proxy.hold_to_device();
//! // … a client logs in at proxy.base_url(): it gets its room events, no to-device …
//! # let bob = Synapse::shared().new_user("bob");
//! proxy.release_to_device(&bob); // `bob`: the client's account; they come in its next sync
//! ```
#![warn(missing_docs)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::http::{self, Request, Response};
use crate::matrix::MatrixUser;

/// The longest `/sync` long-poll the proxy lets through while it holds to-device
/// messages, in milliseconds.
const SYNC_POLL_MS: u64 = 1_000;

/// `/sync` answers pass.
const GATE_OPEN: u8 = 0;
/// `/sync` answers pass until the client sends a call invite.
const GATE_ARMED: u8 = 1;
/// `/sync` answers wait for [`HomeserverProxy::release_syncs`].
const GATE_HOLDING: u8 = 2;

/// The proxy; it stops accepting connections when dropped.
pub struct HomeserverProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: String,
    agent: ureq::Agent,
    holding: AtomicBool,
    /// The status sends are refused with; 0: they pass.
    refusing: AtomicU16,
    stopped: AtomicBool,
    /// Sends refused so far.
    refused: AtomicUsize,
    /// To-device messages held back, in the order they came.
    held: Mutex<Vec<Value>>,
    /// How many were held in all.
    held_total: AtomicUsize,
    /// Where the `/sync` hold after an invite is: [`GATE_OPEN`], [`GATE_ARMED`] or
    /// [`GATE_HOLDING`].
    gate: AtomicU8,
    /// The room of the invite that closed the gate.
    invite_room: Mutex<Option<String>>,
    /// The event types of each room timeline (that had events) of each `/sync` answer
    /// passed on, as the client got them.
    timelines: Mutex<Vec<std::collections::HashSet<String>>>,
    /// The timeline limit `/sync` requests are given, if any (0: the client's).
    timeline_limit: AtomicUsize,
    /// The state event type `/sync` answers lose, if any.
    hiding: Mutex<Option<String>>,
    /// How many events they lost so far.
    hidden: AtomicUsize,
}

impl HomeserverProxy {
    /// Listens on a loopback port and forwards everything to `upstream`
    /// (`http://host:port`).
    pub fn start(upstream: &str) -> HomeserverProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("sync proxy: bind");
        let addr = listener.local_addr().expect("sync proxy: address");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(60)))
                    .build(),
            ),
            holding: AtomicBool::new(false),
            refusing: AtomicU16::new(0),
            stopped: AtomicBool::new(false),
            refused: AtomicUsize::new(0),
            held: Mutex::new(Vec::new()),
            held_total: AtomicUsize::new(0),
            gate: AtomicU8::new(GATE_OPEN),
            invite_room: Mutex::new(None),
            timelines: Mutex::new(Vec::new()),
            timeline_limit: AtomicUsize::new(0),
            hiding: Mutex::new(None),
            hidden: AtomicUsize::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(&s, conn));
            }
        });
        HomeserverProxy { addr, shared }
    }

    /// The URL clients use instead of the homeserver's.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds back the to-device messages of the `/sync` answers from now on.
    pub fn hold_to_device(&self) {
        self.shared.holding.store(true, Ordering::SeqCst);
    }

    /// Holds no more, and delivers the held to-device messages in the client's next
    /// `/sync` answer that brings anything new: matrix-sdk skips an answer that repeats
    /// its token, so `account` (the client's account, any device of it) gets account
    /// data of its own to make one.
    pub fn release_to_device(&self, account: &MatrixUser) {
        self.shared.holding.store(false, Ordering::SeqCst);
        let path = format!(
            "/_matrix/client/v3/user/{}/account_data/org.blindfold.test.release",
            crate::matrix::escape(account.user_id())
        );
        account
            .call("PUT", &path, Some(&serde_json::json!({})))
            .expect("sync proxy: account data for the release");
    }

    /// How many to-device messages were held back in all.
    pub fn held_to_device(&self) -> usize {
        self.shared.held_total.load(Ordering::SeqCst)
    }

    /// Whether a `/sync` answer passed on to the client carried a room timeline event
    /// of type `event_type` (the client has it, or is reading it now).
    pub fn passed_event(&self, event_type: &str) -> bool {
        self.passed_together(&[event_type])
    }

    /// Refuses event sends with a 502 (`on`), or passes them again.
    pub fn refuse_sends(&self, on: bool) {
        self.shared
            .refusing
            .store(if on { 502 } else { 0 }, Ordering::SeqCst);
    }

    /// Refuses event sends with a 401 `M_UNKNOWN_TOKEN`, as if the client's token had
    /// lapsed for them alone (a lapsed token fails its syncs too, sooner or later).
    pub fn refuse_sends_unauthorized(&self) {
        self.shared.refusing.store(401, Ordering::SeqCst);
    }

    /// From the client's next `m.call.invite` send on, holds its `/sync` requests until
    /// [`release_syncs`](Self::release_syncs); one already on its way is asked again
    /// at the release, so that its answer has everything that happened meanwhile.
    pub fn hold_syncs_after_invite(&self) {
        self.shared.gate.store(GATE_ARMED, Ordering::SeqCst);
    }

    /// The room of the invite that started the hold, once it went.
    pub fn invite_room(&self) -> Option<String> {
        lock(&self.shared.invite_room).clone()
    }

    /// Lets the held `/sync` requests go, and holds no more.
    pub fn release_syncs(&self) {
        self.shared.gate.store(GATE_OPEN, Ordering::SeqCst);
    }

    /// Whether one `/sync` answer passed on carried events of every type of `types` in
    /// the timeline of one room.
    pub fn passed_together(&self, types: &[&str]) -> bool {
        lock(&self.shared.timelines)
            .iter()
            .any(|t| types.iter().all(|k| t.contains(*k)))
    }

    /// From now on, asks `/sync` for at most `events` timeline events a room, whatever
    /// the client's filter says (the filter must be inline JSON).
    pub fn cut_timelines(&self, events: usize) {
        self.shared.timeline_limit.store(events, Ordering::SeqCst);
    }

    /// From now on, takes the events of type `event_type` out of every `/sync`
    /// answer: its rooms' `state` and timelines.
    pub fn hide_from_syncs(&self, event_type: &str) {
        *lock(&self.shared.hiding) = Some(event_type.to_owned());
    }

    /// How many events [`hide_from_syncs`](Self::hide_from_syncs) took out in all.
    pub fn hidden_from_syncs(&self) -> usize {
        self.shared.hidden.load(Ordering::SeqCst)
    }

    /// How many event sends were refused in all.
    pub fn refused_sends(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for HomeserverProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves the requests of one keep-alive connection until the client closes it.
fn serve(s: &Shared, conn: TcpStream) {
    http::serve(conn, |req| {
        forward(s, req).unwrap_or_else(|e| (502, "text/plain".to_owned(), e.into_bytes()))
    });
}

/// Passes `req` on; returns the status, content type and body for the client.
fn forward(s: &Shared, mut req: Request) -> Result<Response, String> {
    if req.method == "PUT"
        && req.target.starts_with("/_matrix/client/v3/rooms/")
        && req.target.contains("/send/")
        && s.refusing.load(Ordering::SeqCst) != 0
    {
        s.refused.fetch_add(1, Ordering::SeqCst);
        let status = s.refusing.load(Ordering::SeqCst);
        let errcode = if status == 401 {
            "M_UNKNOWN_TOKEN"
        } else {
            "M_UNKNOWN"
        };
        let body = format!(r#"{{"errcode":"{errcode}","error":"refused by the test proxy"}}"#);
        return Ok((status, "application/json".into(), body.into_bytes()));
    }
    if req.method == "PUT" && req.target.contains("/send/m.call.invite/") {
        let room = req.target.strip_prefix("/_matrix/client/v3/rooms/");
        let room = room.and_then(|r| r.split('/').next()).map(|r| {
            percent_encoding::percent_decode_str(r)
                .decode_utf8_lossy()
                .into_owned()
        });
        if s.gate
            .compare_exchange(GATE_ARMED, GATE_HOLDING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            *lock(&s.invite_room) = room;
        }
    }
    let sync = req.target.starts_with("/_matrix/client/v3/sync");
    if sync {
        wait_for_gate(s);
    }
    if sync && (s.holding.load(Ordering::SeqCst) || !lock(&s.held).is_empty()) {
        req.target = cut_timeout(&req.target);
    }
    let limit = s.timeline_limit.load(Ordering::SeqCst);
    if sync && limit > 0 {
        req.target = limit_timeline(&req.target, limit);
    }
    let upstream = || {
        let mut b = ureq::http::Request::builder()
            .method(req.method.as_str())
            .uri(format!("{}{}", s.upstream, req.target));
        // What the homeserver needs of the client's headers.
        for (name, value) in &req.headers {
            if name == "authorization" || name == "content-type" {
                b = b.header(name, value);
            }
        }
        let answer = match req.body.is_empty() {
            true => s.agent.run(b.body(()).map_err(|e| e.to_string())?),
            false => s
                .agent
                .run(b.body(req.body.clone()).map_err(|e| e.to_string())?),
        };
        answer.map_err(|e| e.to_string())
    };
    let mut answer = upstream()?;
    // A sync on its way when the hold began: asked again once it ends.
    if sync && s.gate.load(Ordering::SeqCst) == GATE_HOLDING {
        wait_for_gate(s);
        answer = upstream()?;
    }
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let body = answer
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    let login = req.target.starts_with("/_matrix/client/v3/login");
    if !(sync || login) || status != 200 {
        return Ok((status, content_type, body));
    }
    let mut v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if sync && let Some(hidden) = lock(&s.hiding).as_deref() {
        s.hidden
            .fetch_add(hide_events(&mut v, hidden), Ordering::SeqCst);
    }
    if sync && let Some(rooms) = v.pointer("/rooms/join").and_then(Value::as_object) {
        let mut timelines = lock(&s.timelines);
        for room in rooms.values() {
            let events = room.pointer("/timeline/events").and_then(Value::as_array);
            let types: std::collections::HashSet<String> = events
                .into_iter()
                .flatten()
                .filter_map(|e| e["type"].as_str().map(str::to_owned))
                .collect();
            if !types.is_empty() {
                timelines.push(types);
            }
        }
    }
    match sync {
        true => hold_or_release(s, &mut v, since(&req.target)),
        // matrix-sdk moves to the homeserver a login answer's `well_known` names.
        false => _ = v.as_object_mut().and_then(|o| o.remove("well_known")),
    }
    Ok((status, content_type, v.to_string().into_bytes()))
}

/// Returns once `/sync` requests are not held (see
/// [`HomeserverProxy::hold_syncs_after_invite`]).
fn wait_for_gate(s: &Shared) {
    while s.gate.load(Ordering::SeqCst) == GATE_HOLDING && !s.stopped.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `target` with the value of its query parameter `name` (as sent, still encoded)
/// replaced by `rewrite`'s, where `rewrite` gives one.
fn rewrite_query(target: &str, name: &str, rewrite: impl Fn(&str) -> Option<String>) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((key, value)) if key == name => match rewrite(value) {
                Some(new) => format!("{key}={new}"),
                None => kv.to_owned(),
            },
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// `target` with its `timeout` query parameter at most [`SYNC_POLL_MS`].
fn cut_timeout(target: &str) -> String {
    rewrite_query(target, "timeout", |ms| {
        let ms = ms.parse::<u64>().unwrap_or(SYNC_POLL_MS);
        Some(ms.min(SYNC_POLL_MS).to_string())
    })
}

/// `target` with the room timeline limit of its inline `filter` set to `limit`.
fn limit_timeline(target: &str, limit: usize) -> String {
    rewrite_query(target, "filter", |value| {
        let plus = value.replace('+', " ");
        let json = percent_encoding::percent_decode_str(&plus).decode_utf8_lossy();
        let mut filter = serde_json::from_str::<Value>(&json).ok()?;
        filter["room"]["timeline"]["limit"] = limit.into();
        let json = filter.to_string();
        let encoded =
            percent_encoding::utf8_percent_encode(&json, percent_encoding::NON_ALPHANUMERIC);
        Some(encoded.to_string())
    })
}

/// The `since` token of a `/sync` request target.
fn since(target: &str) -> Option<&str> {
    let (_, query) = target.split_once('?')?;
    query.split('&').find_map(|kv| kv.strip_prefix("since="))
}

/// Takes the `event_type` events out of the `state` and timeline of each joined room
/// of a `/sync` answer; how many.
fn hide_events(sync: &mut Value, event_type: &str) -> usize {
    let Some(rooms) = sync
        .pointer_mut("/rooms/join")
        .and_then(Value::as_object_mut)
    else {
        return 0;
    };
    let mut hidden = 0;
    for room in rooms.values_mut() {
        for list in ["/state/events", "/timeline/events"] {
            if let Some(events) = room.pointer_mut(list).and_then(Value::as_array_mut) {
                let before = events.len();
                events.retain(|e| e["type"] != event_type);
                hidden += before - events.len();
            }
        }
    }
    hidden
}

/// Takes the to-device messages out of a `/sync` answer while holding; after the
/// release, puts the held ones in front of the answer's own, in an answer whose token
/// moved on from `since` (matrix-sdk skips an answer that repeats its token).
fn hold_or_release(s: &Shared, sync: &mut Value, since: Option<&str>) {
    let mut held = lock(&s.held);
    let moved = sync["next_batch"].as_str() != since;
    let events = sync
        .pointer_mut("/to_device/events")
        .and_then(Value::as_array_mut);
    if s.holding.load(Ordering::SeqCst) {
        if let Some(events) = events {
            s.held_total.fetch_add(events.len(), Ordering::SeqCst);
            held.append(events);
        }
        return;
    }
    if held.is_empty() || !moved {
        return;
    }
    let mut out = std::mem::take(&mut *held);
    if let Some(events) = events {
        out.append(events);
    }
    sync["to_device"] = serde_json::json!({ "events": out });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_limit_of_an_inline_filter_is_replaced() {
        let target = limit_timeline(
            "/_matrix/client/v3/sync?filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A500%7D%7D%7D&timeout=0",
            2,
        );
        let (_, query) = target.split_once('?').unwrap();
        let filter = query
            .split('&')
            .next()
            .unwrap()
            .strip_prefix("filter=")
            .unwrap();
        let json = percent_encoding::percent_decode_str(filter)
            .decode_utf8()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap(),
            serde_json::json!({"room": {"timeline": {"limit": 2}}})
        );
        assert!(target.ends_with("&timeout=0"), "{target}");
    }

    #[test]
    fn the_sync_long_poll_is_cut() {
        assert_eq!(
            cut_timeout("/_matrix/client/v3/sync?since=s1&timeout=30000&filter=1"),
            "/_matrix/client/v3/sync?since=s1&timeout=1000&filter=1"
        );
        assert_eq!(
            cut_timeout("/_matrix/client/v3/sync?timeout=0"),
            "/_matrix/client/v3/sync?timeout=0"
        );
        assert_eq!(
            cut_timeout("/_matrix/client/v3/sync"),
            "/_matrix/client/v3/sync"
        );
    }
}
