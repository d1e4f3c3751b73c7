//! A blocking client of the relay's control protocol (docs/control-protocol.md) over its
//! Unix stream socket, speaking as signaling: for tests, demos and the load generator.
//!
//! It is a thin IO shell around the sans-IO codec `blindfold_relay::control`
//! ([`FrameDecoder`], [`encode`](control::encode), [`decode`](control::decode)): it sends
//! our hello, waits for the relay's ([`RelayInfo`]: DTLS fingerprint and candidates),
//! numbers requests, matches responses by id, and keeps the notifications that arrive
//! while it waits.
//!
//! ```no_run
//! use std::time::Duration;
//! use blindfold_client::control::ControlClient;
//! use blindfold_relay::control::RequestBody;
//! let (mut c, relay) = ControlClient::connect("/run/blindfold/relay.sock", Duration::from_secs(5))?;
//! println!("relay at {:?}", relay.candidates);
//! let stats = c.request(RequestBody::GetStats);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use blindfold_relay::control::{
    self, ControlError, ErrorCode, ErrorReply, FrameDecoder, Goodbye, Hello, HelloRole, Message,
    NotificationBody, RelayInfo, Request, RequestBody, RequestId, Response, ResponseBody,
};

/// The clock, for deadlines on the socket. This module is a blocking IO shell, not a
/// sans-IO engine, so it reads the clock itself.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// Why the control connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlClientError {
    /// Connecting, reading or writing the socket failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The relay's bytes did not frame or decode, or a message we built did not encode.
    #[error("control protocol: {0}")]
    Protocol(#[from] ControlError),
    /// Nothing (or not the awaited message) arrived before the deadline.
    #[error("no answer from the relay within {0:?}")]
    Timeout(Duration),
    /// The relay closed the connection.
    #[error("the relay closed the control connection")]
    Closed,
    /// The relay said goodbye.
    #[error("the relay said goodbye: {0:?}")]
    Goodbye(Goodbye),
    /// The relay sent a message that makes no sense here (e.g. no hello first).
    #[error("unexpected message from the relay: {0}")]
    Unexpected(String),
}

/// A connection to the relay's control socket, as signaling.
#[derive(Debug)]
pub struct ControlClient {
    stream: UnixStream,
    decoder: FrameDecoder,
    next_id: u64,
    timeout: Duration,
    /// Decoded, not yet returned.
    pending: VecDeque<Message>,
    /// Notifications seen while waiting for responses, not yet handed out.
    notes: Vec<NotificationBody>,
    buf: Vec<u8>,
}

impl ControlClient {
    /// Connects to the socket at `path`, exchanges hellos and returns the relay's
    /// announcement. `timeout` bounds the hello and, later, every
    /// [`request`](Self::request).
    ///
    /// Fails if the socket cannot be reached, the relay answers with anything but its
    /// hello (a goodbye, e.g. when another client is connected, is
    /// [`ControlClientError::Goodbye`]), closes, or says nothing within `timeout`.
    pub fn connect(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<(Self, RelayInfo), ControlClientError> {
        let stream = UnixStream::connect(path)?;
        let mut c = ControlClient {
            stream,
            decoder: FrameDecoder::new(),
            next_id: 1,
            timeout,
            pending: VecDeque::new(),
            notes: Vec::new(),
            buf: vec![0; 64 * 1024],
        };
        c.send(&Message::Hello(Hello::signaling(concat!(
            "blindfold-client/",
            env!("CARGO_PKG_VERSION")
        ))))?;
        match c.recv(timeout)? {
            Some(Message::Hello(Hello {
                role: HelloRole::Relay(info),
                ..
            })) => Ok((c, info)),
            Some(Message::Goodbye(g)) => Err(ControlClientError::Goodbye(g)),
            Some(other) => Err(ControlClientError::Unexpected(format!(
                "expected the relay's hello, got {other:?}"
            ))),
            None => Err(ControlClientError::Closed),
        }
    }

    /// Sends one message. Fails if it does not encode or the write fails.
    pub fn send(&mut self, msg: &Message) -> Result<(), ControlClientError> {
        let mut out = Vec::new();
        control::encode(msg, &mut out)?;
        self.send_raw(&out)
    }

    /// Writes bytes as they are (for tests of the relay's robustness). Fails if the
    /// write fails.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ControlClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// The next message from the relay, whatever it is; `Ok(None)` when the relay closed
    /// the connection (end of stream or reset). Fails after `limit` without a message,
    /// on a read error, or on bytes that do not frame or decode.
    pub fn recv(&mut self, limit: Duration) -> Result<Option<Message>, ControlClientError> {
        let deadline = now() + limit;
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Ok(Some(m));
            }
            let left = deadline.saturating_duration_since(now());
            if left.is_zero() {
                return Err(ControlClientError::Timeout(limit));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut self.buf) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    let mut rest = self.buf.get(..n).unwrap_or_default();
                    while !rest.is_empty() {
                        let used = self.decoder.push(rest);
                        rest = rest.get(used..).unwrap_or_default();
                        while let Some(frame) = self.decoder.next_frame()? {
                            self.pending.push_back(control::decode(&frame)?);
                        }
                        if used == 0 {
                            break;
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends a request and waits (up to the connect timeout) for its response,
    /// keeping the notifications that arrive meanwhile for
    /// [`poll_notifications`](Self::poll_notifications).
    ///
    /// The outer error is the connection's (timeout, closed, goodbye, garbage); the
    /// inner one the relay's refusal.
    pub fn call(
        &mut self,
        body: RequestBody,
    ) -> Result<Result<ResponseBody, ErrorReply>, ControlClientError> {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.send(&Message::Request(Request { id, body }))?;
        let deadline = now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(now());
            match self.recv(left)? {
                Some(Message::Response(Response { id: got, result })) if got == id => {
                    return Ok(result);
                }
                // A late answer to an earlier request that timed out.
                Some(Message::Response(_)) => {}
                Some(Message::Notification(n)) => self.notes.push(n),
                Some(Message::Goodbye(g)) => return Err(ControlClientError::Goodbye(g)),
                Some(Message::Hello(h)) => {
                    return Err(ControlClientError::Unexpected(format!(
                        "second hello {h:?}"
                    )));
                }
                Some(Message::Request(r)) => {
                    return Err(ControlClientError::Unexpected(format!(
                        "request from the relay {r:?}"
                    )));
                }
                None => return Err(ControlClientError::Closed),
            }
        }
    }

    /// [`call`](Self::call), with a failed connection reported as the relay's refusal:
    /// code [`ErrorCode::Internal`] and the connection error as the message.
    pub fn request(&mut self, body: RequestBody) -> Result<ResponseBody, ErrorReply> {
        self.call(body)
            .unwrap_or_else(|e| Err(ErrorReply::new(ErrorCode::Internal, e.to_string())))
    }

    /// The notifications collected so far, in order of arrival, and drained. If there
    /// are none, waits up to `timeout` for at least one (then also takes any already
    /// read behind it). A closed or failed connection ends the wait early; responses
    /// arriving meanwhile (to requests that timed out) are dropped.
    pub fn poll_notifications(&mut self, timeout: Duration) -> Vec<NotificationBody> {
        let deadline = now() + timeout;
        while self.notes.is_empty() {
            let left = deadline.saturating_duration_since(now());
            if left.is_zero() {
                break;
            }
            match self.recv(left) {
                Ok(Some(Message::Notification(n))) => self.notes.push(n),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        while let Some(i) = self
            .pending
            .iter()
            .position(|m| matches!(m, Message::Notification(_)))
        {
            if let Some(Message::Notification(n)) = self.pending.remove(i) {
                self.notes.push(n);
            }
        }
        std::mem::take(&mut self.notes)
    }
}
