//! The SFU account's Matrix client-server API calls, over HTTP.
//!
//! Why not a full Matrix SDK client here: an SDK built with end-to-end encryption (and
//! Cargo turns that feature on for every crate of a workspace once one crate, such as
//! the participant library, needs it) creates an Olm identity at login and uploads
//! device keys on its first sync. The SFU account must never have device keys — that is
//! what keeps the media keys away from it — so this module speaks the few endpoints it
//! needs directly and has no code path that could upload a key. [`Matrix::own_device_keys`]
//! checks the account on the server at start-up and after every login all the same.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::sync::SyncResponse;

/// A failed Matrix request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MatrixError {
    /// The request did not complete (connection, timeout, body).
    #[error("homeserver unreachable: {0}")]
    Http(#[from] reqwest::Error),
    /// The homeserver answered with an error.
    #[error("homeserver said {status}: {errcode}: {error}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Matrix `errcode`.
        errcode: String,
        /// Matrix `error`.
        error: String,
        /// `retry_after_ms` for `M_LIMIT_EXCEEDED`.
        retry_after_ms: Option<u64>,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer from the homeserver: {0}")]
    Decode(String),
}

impl MatrixError {
    /// True for errors worth retrying: transport failures, rate limits, 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            MatrixError::Http(_) => true,
            MatrixError::Api { status, .. } => *status == 429 || *status >= 500,
            MatrixError::Decode(_) => false,
        }
    }

    /// The `errcode`, if the homeserver gave one.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            MatrixError::Api { errcode, .. } => Some(errcode),
            _ => None,
        }
    }
}

/// What a login returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The account.
    pub user_id: String,
    /// The new device.
    pub device_id: String,
    /// Its token.
    pub access_token: String,
}

/// A client-server API client for one account.
#[derive(Debug, Clone)]
pub struct Matrix {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Matrix {
    /// A client for the homeserver at `base` (e.g. `https://matrix.example.org`).
    pub fn new(base: &str) -> Result<Self, MatrixError> {
        let base = Url::parse(base)
            .map_err(|e| MatrixError::Decode(format!("homeserver URL {base:?}: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("blindfold-signaling/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Matrix {
            http,
            base,
            token: None,
        })
    }

    /// Uses `token` for every later request.
    pub fn set_token(&mut self, token: &str) {
        self.token = Some(token.to_owned());
    }

    /// The homeserver's base URL.
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("http(s) URLs have paths");
            path.pop_if_empty();
            path.extend(["_matrix", "client", "v3"]);
            // Each segment is percent-encoded, so a room id's `!` and `:` are safe.
            path.extend(segments);
        }
        url
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, MatrixError> {
        let mut req = self
            .http
            .request(method, self.url(segments))
            .query(query)
            .timeout(timeout);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let field = |k: &str| {
            value
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Err(MatrixError::Api {
            status: status.as_u16(),
            errcode: if value.is_object() {
                field("errcode")
            } else {
                String::new()
            },
            error: if value.is_object() {
                field("error")
            } else {
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
            },
            retry_after_ms: value.get("retry_after_ms").and_then(Value::as_u64),
        })
    }

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// Logs in with a password; `device_id` reuses a device (never pass one that has keys).
    pub async fn login_password(
        &self,
        user: &str,
        password: &str,
        device_id: Option<&str>,
    ) -> Result<Login, MatrixError> {
        let mut body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            "initial_device_display_name": "Blindfold SFU (no encryption keys)",
        });
        if let Some(d) = device_id {
            body["device_id"] = json!(d);
        }
        let v = self
            .call(Method::POST, &["login"], &[], Some(&body), Self::TIMEOUT)
            .await?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| MatrixError::Decode(format!("login answer has no `{k}`")))
        };
        Ok(Login {
            user_id: s("user_id")?,
            device_id: s("device_id")?,
            access_token: s("access_token")?,
        })
    }

    /// `(user_id, device_id)` of the token in use.
    pub async fn whoami(&self) -> Result<(String, Option<String>), MatrixError> {
        let v = self
            .call(
                Method::GET,
                &["account", "whoami"],
                &[],
                None,
                Self::TIMEOUT,
            )
            .await?;
        let user = v
            .get("user_id")
            .and_then(Value::as_str)
            .ok_or_else(|| MatrixError::Decode("whoami has no user_id".into()))?;
        Ok((
            user.to_owned(),
            v.get("device_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ))
    }

    /// The ids of the account's devices that have published end-to-end encryption keys
    /// (`/keys/query` for itself). Must be empty for the SFU.
    pub async fn own_device_keys(&self, user_id: &str) -> Result<Vec<String>, MatrixError> {
        let body = json!({"device_keys": {user_id: []}});
        let v = self
            .call(
                Method::POST,
                &["keys", "query"],
                &[],
                Some(&body),
                Self::TIMEOUT,
            )
            .await?;
        let mut devices: Vec<String> = v
            .get("device_keys")
            .and_then(|d| d.get(user_id))
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        devices.sort();
        Ok(devices)
    }

    /// One `/sync` long poll.
    pub async fn sync(
        &self,
        since: Option<&str>,
        filter: &str,
        full_state: bool,
        timeout: Duration,
    ) -> Result<SyncResponse, MatrixError> {
        let timeout_ms = timeout.as_millis().to_string();
        let mut query = vec![("filter", filter), ("timeout", timeout_ms.as_str())];
        if let Some(s) = since {
            query.push(("since", s));
        }
        if full_state {
            query.push(("full_state", "true"));
        }
        let v = self
            .call(
                Method::GET,
                &["sync"],
                &query,
                None,
                timeout + Duration::from_secs(30),
            )
            .await?;
        serde_json::from_value(v).map_err(|e| MatrixError::Decode(format!("sync: {e}")))
    }

    /// A joined room's current state (`GET /rooms/{roomId}/state`): every state event,
    /// as the homeserver resolves the room's state now.
    pub async fn room_state(&self, room_id: &str) -> Result<Vec<Value>, MatrixError> {
        let v = self
            .call(
                Method::GET,
                &["rooms", room_id, "state"],
                &[],
                None,
                Self::TIMEOUT,
            )
            .await?;
        match v {
            Value::Array(events) => Ok(events),
            _ => Err(MatrixError::Decode(format!(
                "state of {room_id}: not a list of events"
            ))),
        }
    }

    /// One page of a room's events before `from`, newest first, stopping at `to`
    /// (`GET /rooms/{roomId}/messages?dir=b`), and the token to page on from; `None`
    /// when there is nothing more.
    pub async fn messages_before(
        &self,
        room_id: &str,
        from: &str,
        to: &str,
        limit: u32,
        filter: &str,
    ) -> Result<(Vec<Value>, Option<String>), MatrixError> {
        let limit = limit.to_string();
        let query = [
            ("dir", "b"),
            ("from", from),
            ("to", to),
            ("limit", limit.as_str()),
            ("filter", filter),
        ];
        let v = self
            .call(
                Method::GET,
                &["rooms", room_id, "messages"],
                &query,
                None,
                Self::TIMEOUT,
            )
            .await?;
        let end = v.get("end").and_then(Value::as_str).map(str::to_owned);
        match v {
            Value::Object(mut o) => match o.remove("chunk") {
                Some(Value::Array(chunk)) => Ok((chunk, end)),
                _ => Err(MatrixError::Decode(format!(
                    "messages of {room_id}: no chunk"
                ))),
            },
            _ => Err(MatrixError::Decode(format!(
                "messages of {room_id}: not an object"
            ))),
        }
    }

    /// Joins a room the account was invited to.
    pub async fn join(&self, room_id: &str) -> Result<(), MatrixError> {
        self.call(
            Method::POST,
            &["rooms", room_id, "join"],
            &[],
            Some(&json!({})),
            Self::TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Leaves (or declines an invite to) a room.
    pub async fn leave(&self, room_id: &str) -> Result<(), MatrixError> {
        self.call(
            Method::POST,
            &["rooms", room_id, "leave"],
            &[],
            Some(&json!({})),
            Self::TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// Sends a timeline event with transaction id `txn` (a retry with the same id is
    /// de-duplicated by the homeserver). Returns the event id.
    pub async fn send(
        &self,
        room_id: &str,
        event_type: &str,
        txn: &str,
        content: &Value,
    ) -> Result<String, MatrixError> {
        let v = self
            .call(
                Method::PUT,
                &["rooms", room_id, "send", event_type, txn],
                &[],
                Some(content),
                Self::TIMEOUT,
            )
            .await?;
        Ok(v.get("event_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }
}

/// The longest wait between retries of a send, a join or a leave.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// The longest wait between retries of the sync: short, so that calls placed when the
/// homeserver comes back are answered within seconds. A failed sync costs the
/// homeserver one refused connection or one error answer.
pub const SYNC_RETRY_MAX: Duration = Duration::from_secs(4);

/// How long to wait before retry `attempt` (0-based) of a transient failure: the
/// homeserver's `retry_after_ms` if it gave one (at most 60 s), else 250 ms doubling
/// to `max`.
pub fn backoff(err: &MatrixError, attempt: u32, max: Duration) -> Duration {
    if let MatrixError::Api {
        retry_after_ms: Some(ms),
        ..
    } = err
    {
        return Duration::from_millis((*ms).min(60_000));
    }
    Duration::from_millis(250u64 << attempt.min(16)).min(max)
}

/// True if `status` means the access token is no longer valid.
pub fn is_unknown_token(err: &MatrixError) -> bool {
    matches!(err, MatrixError::Api { status, errcode, .. }
        if *status == StatusCode::UNAUTHORIZED.as_u16() || errcode == "M_UNKNOWN_TOKEN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_250_ms_to_their_cap_unless_the_homeserver_says_when() {
        // What a reverse proxy answers while the homeserver behind it is down.
        let down = MatrixError::Api {
            status: 502,
            errcode: String::new(),
            error: "Bad Gateway".into(),
            retry_after_ms: None,
        };
        let waits: Vec<u64> = (0..8)
            .map(|n| backoff(&down, n, SYNC_RETRY_MAX).as_millis() as u64)
            .collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 4000, 4000, 4000]);
        assert_eq!(backoff(&down, 7, RETRY_MAX), Duration::from_secs(30));
        assert_eq!(backoff(&down, 1000, RETRY_MAX), Duration::from_secs(30));
        let limited = |ms| MatrixError::Api {
            status: 429,
            errcode: "M_LIMIT_EXCEEDED".into(),
            error: String::new(),
            retry_after_ms: Some(ms),
        };
        assert_eq!(
            backoff(&limited(9_000), 0, SYNC_RETRY_MAX),
            Duration::from_secs(9)
        );
        assert_eq!(
            backoff(&limited(600_000), 0, RETRY_MAX),
            Duration::from_secs(60)
        );
    }
}
