//! Prometheus metrics (`GET /metrics`, text format 0.0.4).
//!
//! The service updates one [`Metrics`] behind a mutex after each step (a sync batch, a
//! relay event); the HTTP task renders it on request. Nothing here is on a hot path.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::core::{Code, Stats};

/// Upper bounds of the invite-to-answer histogram, seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Everything exported.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// The core's counters.
    pub core: Stats,
    /// Live calls whose relay session is connected.
    pub calls_connected: u64,
    /// Live calls not (yet, or no longer) connected.
    pub calls_connecting: u64,
    /// Rooms the SFU is joined to.
    pub rooms: u64,
    /// 1 while the relay link is up (hello and snapshot done).
    pub relay_up: bool,
    /// Relay link (re)connections.
    pub relay_connects: u64,
    /// Seconds between the newest event's `origin_server_ts` and its handling, last batch.
    pub sync_lag_seconds: f64,
    /// Sync requests that failed.
    pub sync_errors: u64,
    /// Events read with `/messages` to fill the gaps of timelines the homeserver cut short.
    pub gap_events_read: u64,
    /// Matrix sends that failed for good.
    pub send_failures: u64,
    /// Active-speaker events not sent: a newer one for the same call was waiting.
    pub speaker_events_superseded: u64,
    /// Invite-to-answer latency histogram: counts per bucket of [`LATENCY_BUCKETS`], plus +Inf.
    pub answer_latency: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observed latencies, seconds.
    pub answer_latency_sum: f64,
}

impl Metrics {
    /// Records one invite-to-answer latency.
    pub fn observe_answer(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.answer_latency[i] += 1;
        self.answer_latency_sum += seconds;
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let push = |o: &mut String, name: &str, kind: &str, help: &str, lines: Vec<String>| {
            let _ = writeln!(
                o,
                "# HELP blindfold_signaling_{name} {help}\n# TYPE blindfold_signaling_{name} {kind}"
            );
            for l in lines {
                let _ = writeln!(o, "blindfold_signaling_{name}{l}");
            }
        };
        push(
            &mut o,
            "calls",
            "gauge",
            "Live calls by relay session state.",
            vec![
                format!("{{state=\"connected\"}} {}", self.calls_connected),
                format!("{{state=\"connecting\"}} {}", self.calls_connecting),
            ],
        );
        push(
            &mut o,
            "calls_admitted_total",
            "counter",
            "Invites answered.",
            vec![format!(" {}", self.core.admitted)],
        );
        push(
            &mut o,
            "refusals_total",
            "counter",
            "Invites refused with m.call.hangup, by org.matrix.msc2359.reason.",
            Code::ALL
                .iter()
                .map(|c| {
                    format!(
                        "{{reason=\"{}\"}} {}",
                        c.as_str(),
                        self.core.refusals.get(c.as_str()).unwrap_or(&0)
                    )
                })
                .collect(),
        );
        push(
            &mut o,
            "calls_ended_total",
            "counter",
            "Calls ended, by reason (hangup: the caller hung up).",
            std::iter::once("hangup")
                .chain(Code::ALL.iter().map(|c| c.as_str()))
                .map(|r| {
                    format!(
                        "{{reason=\"{r}\"}} {}",
                        self.core.ended.get(r).unwrap_or(&0)
                    )
                })
                .collect(),
        );
        push(
            &mut o,
            "events_dropped_total",
            "counter",
            "Matrix events ignored as unreadable or not for the SFU, by what was wrong.",
            self.core
                .dropped
                .iter()
                .map(|(k, v)| format!("{{reason=\"{k}\"}} {v}"))
                .collect(),
        );
        push(
            &mut o,
            "room_invites_total",
            "counter",
            "Room invites, by outcome (joined: the inviter passed the allow-list).",
            vec![
                format!("{{outcome=\"joined\"}} {}", self.core.rooms_joined),
                format!("{{outcome=\"declined\"}} {}", self.core.rooms_declined),
            ],
        );
        push(
            &mut o,
            "rooms",
            "gauge",
            "Rooms the SFU account is joined to, as its sync shows them.",
            vec![format!(" {}", self.rooms)],
        );
        push(
            &mut o,
            "rooms_left_total",
            "counter",
            "Rooms left because every other member had left them.",
            vec![format!(" {}", self.core.rooms_left)],
        );
        let mut cumulative = 0;
        let mut lines = Vec::new();
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.answer_latency[i];
            lines.push(format!("_bucket{{le=\"{b}\"}} {cumulative}"));
        }
        cumulative += self.answer_latency[LATENCY_BUCKETS.len()];
        lines.push(format!("_bucket{{le=\"+Inf\"}} {cumulative}"));
        lines.push(format!("_sum {}", self.answer_latency_sum));
        lines.push(format!("_count {cumulative}"));
        push(
            &mut o,
            "invite_to_answer_seconds",
            "histogram",
            "From the invite's arrival in sync to the homeserver accepting the answer.",
            lines,
        );
        push(
            &mut o,
            "sync_lag_seconds",
            "gauge",
            "Age of the newest event of the last sync batch when handled.",
            vec![format!(" {}", self.sync_lag_seconds)],
        );
        push(
            &mut o,
            "sync_errors_total",
            "counter",
            "Failed /sync requests.",
            vec![format!(" {}", self.sync_errors)],
        );
        push(
            &mut o,
            "gap_events_total",
            "counter",
            "Events read with /messages to fill the gaps of sync timelines the homeserver cut short.",
            vec![format!(" {}", self.gap_events_read)],
        );
        push(
            &mut o,
            "limited_timelines_total",
            "counter",
            "Sync timelines cut short whose gap could not be filled (its older events were missed).",
            vec![format!(" {}", self.core.limited_timelines)],
        );
        push(
            &mut o,
            "active_speaker_events_total",
            "counter",
            "Active-speaker events sent to calls (one per call of the conference per change).",
            vec![format!(" {}", self.core.speaker_events)],
        );
        push(
            &mut o,
            "member_ended_events_total",
            "counter",
            "Member-ended events sent to calls (one per other call of the conference per call ended).",
            vec![format!(" {}", self.core.member_ended_events)],
        );
        push(
            &mut o,
            "active_speaker_events_superseded_total",
            "counter",
            "Active-speaker events not sent: a newer one for the same call was waiting \
             behind it (the homeserver held the room's sends back).",
            vec![format!(" {}", self.speaker_events_superseded)],
        );
        push(
            &mut o,
            "send_failures_total",
            "counter",
            "Matrix events the homeserver refused, or speaker changes that failed after retries.",
            vec![format!(" {}", self.send_failures)],
        );
        push(
            &mut o,
            "relay_up",
            "gauge",
            "1 while the relay control link is connected and reconciled.",
            vec![format!(" {}", u8::from(self.relay_up))],
        );
        push(
            &mut o,
            "relay_connects_total",
            "counter",
            "Relay control link (re)connections.",
            vec![format!(" {}", self.relay_connects)],
        );
        o
    }
}

/// Serves `GET /metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Mutex<Metrics>>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    // The address bound (port 0 in the config: the one the system chose).
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "metrics listening");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf),
                )
                .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let ok = buf[..n].starts_with(b"GET /metrics ")
                    || buf[..n].starts_with(b"GET /metrics?");
                let (status, body) = if ok {
                    (
                        "200 OK",
                        metrics.lock().unwrap_or_else(|e| e.into_inner()).render(),
                    )
                } else {
                    ("404 Not Found", "only GET /metrics\n".to_owned())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's list of signaling metrics (its "Metrics (`blindfold_signaling_…`)"
    /// paragraph) names every one exported, and nothing exported goes unnamed.
    #[test]
    fn every_metric_is_listed_in_the_readme() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("Metrics (`blindfold_signaling_…`)")
            .expect("the README's signaling metrics paragraph");
        let para = &readme[start..start + readme[start..].find("\n\n").unwrap()];
        let text = Metrics::default().render();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE blindfold_signaling_"))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert!(names.len() >= 15, "{names:?}");
        for name in names {
            assert!(
                para.contains(&format!("`{name}`")) || para.contains(&format!("`{name}{{")),
                "{name} is not in the README's list:\n{para}"
            );
        }
    }
}
