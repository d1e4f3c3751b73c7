//! A small blocking Matrix client-server API caller for tests: [`MatrixUser`] is one
//! logged-in device talking plain HTTP to a test homeserver (the real Synapse of
//! [`crate::synapse`]), one request at a time.
//!
//! Every call returns `Result<_, MatrixError>`: a non-2xx answer is an error value
//! carrying the status, `errcode` and `error` text, so tests can assert on refusals
//! (`assert_eq!(err.errcode(), Some("M_FORBIDDEN"))`). Only the `wait_for*` helpers
//! panic, with the condition they waited for, when their time is up.
//!
//! Sync: the user keeps its own `since` token. [`MatrixUser::wait_for`] long-polls
//! `/sync` from it and offers every response to a predicate until one matches; each
//! response is offered once, so what an earlier wait consumed is not seen again.
//!
//! ```no_run
//! use std::time::Duration;
//! use blindfold_tests::synapse::Synapse;
//! use serde_json::json;
//!
//! let hs = Synapse::shared();
//! let alice = hs.new_user("alice");
//! let mut bob = hs.new_user("bob");
//! let room = alice.create_room(&json!({"preset": "private_chat"})).unwrap();
//! alice.invite(&room, bob.user_id()).unwrap();
//! assert_eq!(bob.wait_for_invite(Duration::from_secs(10)), room);
//! bob.join(&room).unwrap();
//! ```
#![warn(missing_docs)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::agreement::{PrivateKey, X25519};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

/// The client-server API's path prefix.
const CS: &str = "/_matrix/client/v3";
/// How long any request may take, unless it is a long poll.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The long-poll time of one `/sync` inside the `wait_for*` helpers.
const POLL_MS: u64 = 1_000;

/// A refused or failed client-server API request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    /// The homeserver answered with a non-2xx status.
    #[error("{request}: HTTP {status} {errcode}: {error}")]
    Status {
        /// Method and path, e.g. `POST /_matrix/client/v3/login`.
        request: String,
        /// The HTTP status.
        status: u16,
        /// The Matrix `errcode` (empty if the body had none).
        errcode: String,
        /// The Matrix `error` text (or the raw body if it was not a Matrix error).
        error: String,
    },
    /// No usable answer: connection refused, timeout, a body that is not JSON.
    #[error("{request}: {error}")]
    Transport {
        /// Method and path.
        request: String,
        /// What went wrong.
        error: String,
    },
}

impl MatrixError {
    /// The Matrix `errcode` of a refusal (`M_FORBIDDEN`, `M_NOT_FOUND`, …).
    pub fn errcode(&self) -> Option<&str> {
        match self {
            MatrixError::Status { errcode, .. } => Some(errcode),
            MatrixError::Transport { .. } => None,
        }
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            MatrixError::Status { status, .. } => Some(*status),
            MatrixError::Transport { .. } => None,
        }
    }
}

/// Characters left as they are in a URL path segment or query value: RFC 3986's
/// unreserved ones. Everything else (`!`, `:`, `@`, `#`, `/` in ids) is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` escaped for one URL path segment or query value.
pub fn escape(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Unpadded standard base64, as Matrix writes keys and signatures.
pub fn unpadded_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// One request to `base_url` + `path` (which includes any query); `token` goes in the
/// `Authorization` header, `body` is sent as JSON. The answer's JSON body (an empty body
/// is `{}`), or the refusal.
pub fn request(
    base_url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, MatrixError> {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    let agent = AGENT.get_or_init(|| {
        ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(REQUEST_TIMEOUT))
                .build(),
        )
    });
    let what = format!("{method} {path}");
    let transport = |error: String| MatrixError::Transport {
        request: what.clone(),
        error,
    };
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base_url}{path}"));
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let answer = match body {
        Some(body) => {
            let req = req
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .map_err(|e| transport(e.to_string()))?;
            run(agent, req, timeout)
        }
        None => {
            let req = req.body(()).map_err(|e| transport(e.to_string()))?;
            run(agent, req, timeout)
        }
    };
    let mut answer = answer.map_err(|e| transport(e.to_string()))?;
    let status = answer.status().as_u16();
    let text = answer
        .body_mut()
        .read_to_string()
        .map_err(|e| transport(format!("reading the HTTP {status} body: {e}")))?;
    let json: Option<Value> = if text.trim().is_empty() {
        Some(json!({}))
    } else {
        serde_json::from_str(&text).ok()
    };
    if (200..300).contains(&status) {
        return json
            .ok_or_else(|| transport(format!("HTTP {status} with a non-JSON body: {text}")));
    }
    let field = |k: &str| {
        json.as_ref()
            .and_then(|j| j.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Err(MatrixError::Status {
        request: what.clone(),
        status,
        errcode: field("errcode").unwrap_or_default(),
        error: field("error").unwrap_or(text),
    })
}

/// `key` escaped as one JSON-pointer token (RFC 6901).
pub fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Runs `req` on `agent` with its own time limit.
fn run(
    agent: &ureq::Agent,
    req: ureq::http::Request<impl ureq::AsSendBody>,
    timeout: Duration,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    agent.run(
        agent
            .configure_request(req)
            .timeout_global(Some(timeout))
            .build(),
    )
}

/// A missing thing (`M_NOT_FOUND`) as `None`.
fn absent_as_none(answer: Result<Value, MatrixError>) -> Result<Option<Value>, MatrixError> {
    match answer {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `field` of a JSON answer as a string, or a [`MatrixError::Transport`] saying the
/// answer to `request` lacked it.
pub(crate) fn string_field(
    answer: &Value,
    field: &str,
    request: &str,
) -> Result<String, MatrixError> {
    answer
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| MatrixError::Transport {
            request: request.to_owned(),
            error: format!("no string `{field}` in the answer {answer}"),
        })
}

/// `value` as Matrix canonical JSON: object keys sorted, no insignificant whitespace
/// (what Matrix signatures are computed over).
pub fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), canonical_json(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// One logged-in device of a Matrix account, calling the client-server API.
pub struct MatrixUser {
    base_url: String,
    user_id: String,
    device_id: String,
    access_token: String,
    /// The `next_batch` of the last sync response this user saw.
    since: Option<String>,
    txn: AtomicU64,
}

impl std::fmt::Debug for MatrixUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixUser")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

impl MatrixUser {
    /// A user for an access token obtained elsewhere (registration, login).
    pub fn new(base_url: &str, user_id: &str, device_id: &str, access_token: &str) -> Self {
        MatrixUser {
            base_url: base_url.trim_end_matches('/').to_owned(),
            user_id: user_id.to_owned(),
            device_id: device_id.to_owned(),
            access_token: access_token.to_owned(),
            since: None,
            txn: AtomicU64::new(0),
        }
    }

    /// Logs in with `m.login.password` as `user` (a localpart or a full user id): a new
    /// device.
    pub fn login(base_url: &str, user: &str, password: &str) -> Result<Self, MatrixError> {
        let path = format!("{CS}/login");
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            "initial_device_display_name": "blindfold test",
        });
        let answer = request(base_url, "POST", &path, None, Some(&body), REQUEST_TIMEOUT)?;
        let what = format!("POST {path}");
        Ok(MatrixUser::new(
            base_url,
            &string_field(&answer, "user_id", &what)?,
            &string_field(&answer, "device_id", &what)?,
            &string_field(&answer, "access_token", &what)?,
        ))
    }

    /// The full user id, `@localpart:server`.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// This device's id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The access token.
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// The homeserver's base URL, `http://127.0.0.1:port`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// An authenticated request to `path` (below the base URL, query included).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, MatrixError> {
        request(
            &self.base_url,
            method,
            path,
            Some(&self.access_token),
            body,
            REQUEST_TIMEOUT,
        )
    }

    /// `GET /account/whoami`: `{"user_id", "device_id", …}`.
    pub fn whoami(&self) -> Result<Value, MatrixError> {
        self.call("GET", &format!("{CS}/account/whoami"), None)
    }

    /// `POST /createRoom` with `body` (preset, invite, initial_state, …): the room id.
    pub fn create_room(&self, body: &Value) -> Result<String, MatrixError> {
        let path = format!("{CS}/createRoom");
        let answer = self.call("POST", &path, Some(body))?;
        string_field(&answer, "room_id", &format!("POST {path}"))
    }

    /// Invites `user_id` to `room`.
    pub fn invite(&self, room: &str, user_id: &str) -> Result<(), MatrixError> {
        let path = format!("{CS}/rooms/{}/invite", escape(room));
        self.call("POST", &path, Some(&json!({"user_id": user_id})))
            .map(drop)
    }

    /// Joins `room` (an id or an alias): the room id.
    pub fn join(&self, room: &str) -> Result<String, MatrixError> {
        let path = format!("{CS}/join/{}", escape(room));
        let answer = self.call("POST", &path, Some(&json!({})))?;
        string_field(&answer, "room_id", &format!("POST {path}"))
    }

    /// Leaves `room` (or declines its invite).
    pub fn leave(&self, room: &str) -> Result<(), MatrixError> {
        let path = format!("{CS}/rooms/{}/leave", escape(room));
        self.call("POST", &path, Some(&json!({}))).map(drop)
    }

    /// Sends a message event (`PUT /send` with a fresh transaction id): its event id.
    pub fn send_event(
        &self,
        room: &str,
        event_type: &str,
        content: &Value,
    ) -> Result<String, MatrixError> {
        let txn = format!(
            "bf{}-{}",
            std::process::id(),
            self.txn.fetch_add(1, Ordering::Relaxed)
        );
        let path = format!(
            "{CS}/rooms/{}/send/{}/{txn}",
            escape(room),
            escape(event_type)
        );
        let answer = self.call("PUT", &path, Some(content))?;
        string_field(&answer, "event_id", &format!("PUT {path}"))
    }

    fn state_path(room: &str, event_type: &str, state_key: &str) -> String {
        format!(
            "{CS}/rooms/{}/state/{}/{}",
            escape(room),
            escape(event_type),
            escape(state_key)
        )
    }

    /// Sets a state event: its event id.
    pub fn send_state(
        &self,
        room: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> Result<String, MatrixError> {
        let path = Self::state_path(room, event_type, state_key);
        let answer = self.call("PUT", &path, Some(content))?;
        string_field(&answer, "event_id", &format!("PUT {path}"))
    }

    /// The content of a state event, `None` if the room has none (`M_NOT_FOUND`).
    pub fn get_state(
        &self,
        room: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Value>, MatrixError> {
        absent_as_none(self.call("GET", &Self::state_path(room, event_type, state_key), None))
    }

    /// The user ids joined to `room`, sorted.
    pub fn joined_members(&self, room: &str) -> Result<Vec<String>, MatrixError> {
        let path = format!("{CS}/rooms/{}/joined_members", escape(room));
        let answer = self.call("GET", &path, None)?;
        let mut ids: Vec<String> = answer
            .get("joined")
            .and_then(Value::as_object)
            .ok_or_else(|| MatrixError::Transport {
                request: format!("GET {path}"),
                error: format!("no `joined` object in the answer {answer}"),
            })?
            .keys()
            .cloned()
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Who is joined to `room`, from Synapse's admin API (`self` must be an admin;
    /// it need not be in the room).
    pub fn joined_members_as_admin(&self, room: &str) -> Result<Vec<String>, MatrixError> {
        let path = format!("/_synapse/admin/v1/rooms/{}/members", escape(room));
        let answer = self.call("GET", &path, None)?;
        let mut ids: Vec<String> = answer
            .get("members")
            .and_then(Value::as_array)
            .ok_or_else(|| MatrixError::Transport {
                request: format!("GET {path}"),
                error: format!("no `members` list in the answer {answer}"),
            })?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn account_data_path(&self, event_type: &str) -> String {
        format!(
            "{CS}/user/{}/account_data/{}",
            escape(&self.user_id),
            escape(event_type)
        )
    }

    /// Sets global account data of `event_type`.
    pub fn set_account_data(&self, event_type: &str, content: &Value) -> Result<(), MatrixError> {
        self.call("PUT", &self.account_data_path(event_type), Some(content))
            .map(drop)
    }

    /// Global account data of `event_type`, `None` if there is none (`M_NOT_FOUND`).
    pub fn get_account_data(&self, event_type: &str) -> Result<Option<Value>, MatrixError> {
        absent_as_none(self.call("GET", &self.account_data_path(event_type), None))
    }

    /// Gives this device end-to-end encryption identity keys, as a client with an
    /// E2EE device does: fresh Ed25519 and Curve25519 keys in a `device_keys` object
    /// (Olm and Megolm algorithms) signed with the Ed25519 key over its canonical JSON,
    /// uploaded with `POST /keys/upload`. Returns the uploaded `device_keys` object.
    pub fn upload_device_keys(&self) -> Result<Value, MatrixError> {
        let ed25519 = Ed25519KeyPair::generate().expect("generating an Ed25519 key");
        let curve25519 = PrivateKey::generate(&X25519)
            .and_then(|k| k.compute_public_key())
            .expect("generating a Curve25519 key");
        let device = &self.device_id;
        let mut keys = json!({
            "user_id": self.user_id,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device}"): unpadded_base64(curve25519.as_ref()),
                format!("ed25519:{device}"): unpadded_base64(ed25519.public_key().as_ref()),
            },
        });
        let signature = ed25519.sign(canonical_json(&keys).as_bytes());
        keys["signatures"] = json!({
            self.user_id.as_str(): {format!("ed25519:{device}"): unpadded_base64(signature.as_ref())}
        });
        self.call(
            "POST",
            &format!("{CS}/keys/upload"),
            Some(&json!({"device_keys": keys})),
        )?;
        Ok(keys)
    }

    /// `POST /keys/query` for `user_id`: its devices' keys, an object keyed by device id
    /// (empty if it has none).
    pub fn query_keys(&self, user_id: &str) -> Result<Value, MatrixError> {
        let answer = self.call(
            "POST",
            &format!("{CS}/keys/query"),
            Some(&json!({"device_keys": {user_id: []}})),
        )?;
        Ok(answer
            .pointer(&format!("/device_keys/{}", pointer_token(user_id)))
            .cloned()
            .unwrap_or_else(|| json!({})))
    }

    /// One `/sync` from `since` (an initial sync if `None`), long-polling up to
    /// `timeout_ms`; room timelines carry up to 100 events. Does not move the user's own
    /// `since`.
    pub fn sync_once(&self, since: Option<&str>, timeout_ms: u64) -> Result<Value, MatrixError> {
        let filter = escape(r#"{"room":{"timeline":{"limit":100}}}"#);
        let mut path = format!("{CS}/sync?timeout={timeout_ms}&filter={filter}");
        if let Some(since) = since {
            path.push_str("&since=");
            path.push_str(&escape(since));
        }
        request(
            &self.base_url,
            "GET",
            &path,
            Some(&self.access_token),
            None,
            REQUEST_TIMEOUT + Duration::from_millis(timeout_ms),
        )
    }

    /// The `since` token the next [`MatrixUser::wait_for`] syncs from.
    pub fn since(&self) -> Option<&str> {
        self.since.as_deref()
    }

    /// Long-polls `/sync` from this user's own `since` token (moving it on) and offers
    /// each response to `found` until it returns `Some`. Panics, naming `what`, if that
    /// has not happened within `timeout` or a sync is refused.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let poll = u64::try_from(left.as_millis())
                .unwrap_or(u64::MAX)
                .min(POLL_MS);
            let response = self
                .sync_once(self.since.as_deref(), poll)
                .unwrap_or_else(|e| {
                    panic!("{} waiting for {what}: sync failed: {e}", self.user_id)
                });
            if let Some(next) = response.get("next_batch").and_then(Value::as_str) {
                self.since = Some(next.to_owned());
            }
            if let Some(t) = found(&response) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{} waited {timeout:?} for {what} in vain; last sync response: {response}",
                self.user_id
            );
        }
    }

    /// Waits for a timeline event of `event_type` in joined room `room` for which
    /// `matches` holds, and returns it (the whole event: `sender`, `content`, …).
    pub fn wait_for_room_event(
        &mut self,
        room: &str,
        event_type: &str,
        mut matches: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let what = format!("a {event_type} event in {room}");
        let pointer = format!("/rooms/join/{}/timeline/events", pointer_token(room));
        self.wait_for(&what, timeout, |sync| {
            sync.pointer(&pointer)?
                .as_array()?
                .iter()
                .find(|e| e.get("type").and_then(Value::as_str) == Some(event_type) && matches(e))
                .cloned()
        })
    }

    /// Waits for an invite to any room: its room id.
    pub fn wait_for_invite(&mut self, timeout: Duration) -> String {
        self.wait_for("an invite", timeout, |sync| {
            sync.pointer("/rooms/invite")?
                .as_object()?
                .keys()
                .next()
                .cloned()
        })
    }
}
