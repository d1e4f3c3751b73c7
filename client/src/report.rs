//! What a participant writes at exit (`blindfold-client --report FILE`): who it is,
//! what it sent, what it decrypted from whom (the rows of its live table,
//! [`crate::table`]) and where it recorded each received audio stream. JSON, read back
//! by the demo (`blindfold-demo`) and by tests, which judge a whole conference with
//! [`check_reports`] and the recordings on disk with [`check_recordings`].
//!
//! ```no_run
//! use blindfold_client::report::{Report, check_reports};
//!
//! let reports: Vec<Report> = ["alice.json", "bob.json", "carol.json"]
//!     .iter()
//!     .map(|f| Report::read(f.as_ref()))
//!     .collect::<Result<_, _>>()?;
//! let problems = check_reports(&reports);
//! assert!(problems.is_empty(), "{problems:#?}");
//! # Ok::<(), blindfold_client::report::ReportError>(())
//! ```

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ogg::OggOpusReader;
use crate::table::{SenderRow, StreamKind};

/// One participant's account of its call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Its Matrix user id.
    pub user: String,
    /// Its Matrix device id.
    pub device: String,
    /// The conference room.
    pub room: String,
    /// The conference id (the `org.matrix.msc2359.conference` state key).
    pub conference: String,
    /// Seconds from the call's answer to the report.
    pub duration_s: f64,
    /// The full-resolution streams it subscribed to.
    pub subscribed_full: FullSubscription,
    /// The streams it sent (as declared in its key event), those of each call it
    /// placed.
    pub sent: Vec<SentStream>,
    /// What it decrypted, per sender: the final rows of its live table.
    pub senders: Vec<SenderRow>,
    /// One Ogg Opus file per received audio stream.
    pub recordings: Vec<Recording>,
    /// Whom the SFU named the conference's active speaker, and how often, in the
    /// order first named (absent from reports of older versions: none).
    #[serde(default)]
    pub speakers: Vec<SpeakerTurns>,
    /// The user id of the last active speaker the SFU named, if any.
    #[serde(default)]
    pub last_speaker: Option<String>,
    /// Times the relay lost our session (it restarted) and we connected again
    /// (absent from reports of older versions: none).
    #[serde(default)]
    pub reconnects: u64,
    /// Times the SFU hung up asking us to call again (`relay_unavailable`: the relay
    /// came back unable to serve our answer) and we did (absent from reports of older
    /// versions: none).
    #[serde(default)]
    pub calls_again: u64,
}

/// How often the SFU named one member's device the active speaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerTurns {
    /// Its user id.
    pub user: String,
    /// Its device id.
    pub device: String,
    /// Times named.
    pub turns: u64,
}

/// A stream a participant sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentStream {
    /// Its SSRC.
    pub ssrc: u32,
    /// Audio, thumbnail or full.
    pub kind: StreamKind,
    /// Packets sent.
    pub packets: u64,
    /// Payload bytes sent.
    pub bytes: u64,
}

/// Where a received audio stream was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// The sender's user id.
    pub user: String,
    /// The sender's device id.
    pub device: String,
    /// The audio stream's SSRC.
    pub ssrc: u32,
    /// The Ogg Opus file.
    pub path: PathBuf,
    /// Opus packets written to it.
    pub packets: u64,
}

/// Which full-resolution streams a participant asked for (docs/protocol.md,
/// "Subscriptions"): in JSON `"all"`, `"speaker"` or a list of SSRCs, as in the
/// subscribe event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "FullRepr", try_from = "FullRepr")]
pub enum FullSubscription {
    /// Every current and future full-resolution stream.
    All,
    /// The active speaker's, whoever it is.
    Speaker,
    /// These streams (empty: thumbnails only).
    Ssrcs(Vec<u32>),
}

impl FullSubscription {
    /// Whether the stream `ssrc` is subscribed for the whole call (with `Speaker`, no
    /// stream is: each only while its sender speaks, so none is owed in full).
    pub fn includes(&self, ssrc: u32) -> bool {
        match self {
            FullSubscription::All => true,
            FullSubscription::Speaker => false,
            FullSubscription::Ssrcs(list) => list.contains(&ssrc),
        }
    }
}

/// [`FullSubscription`]'s JSON: the word `all` or a list.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum FullRepr {
    Word(String),
    List(Vec<u32>),
}

impl From<FullSubscription> for FullRepr {
    fn from(s: FullSubscription) -> FullRepr {
        match s {
            FullSubscription::All => FullRepr::Word("all".into()),
            FullSubscription::Speaker => FullRepr::Word("speaker".into()),
            FullSubscription::Ssrcs(list) => FullRepr::List(list),
        }
    }
}

impl TryFrom<FullRepr> for FullSubscription {
    type Error = String;

    fn try_from(r: FullRepr) -> Result<FullSubscription, String> {
        match r {
            FullRepr::Word(w) if w == "all" => Ok(FullSubscription::All),
            FullRepr::Word(w) if w == "speaker" => Ok(FullSubscription::Speaker),
            FullRepr::Word(w) => Err(format!(
                "subscribed_full is \"{w}\"; expected \"all\", \"speaker\" or a list of SSRCs"
            )),
            FullRepr::List(list) => Ok(FullSubscription::Ssrcs(list)),
        }
    }
}

/// Why a report could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The file could not be written or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The text is not a report.
    #[error("{what}: not a participant report: {source}")]
    Json {
        /// Where the text came from.
        what: String,
        /// The parser's complaint (with line and column).
        #[source]
        source: serde_json::Error,
    },
}

impl Report {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and lists always serializes.
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    /// Reads a report from JSON; `what` names the source in errors.
    pub fn from_json(text: &str, what: &str) -> Result<Report, ReportError> {
        serde_json::from_str(text).map_err(|source| ReportError::Json {
            what: what.to_owned(),
            source,
        })
    }

    /// Writes the report to `path`, whole or not at all: to a temporary file beside
    /// it, renamed over it (a reader never sees half a report).
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let io = |what: String| move |source| ReportError::Io { what, source };
        std::fs::write(&tmp, self.to_json() + "\n")
            .map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )))
    }

    /// Reads the report at `path`.
    pub fn read(path: &Path) -> Result<Report, ReportError> {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
            what: format!("reading {what}"),
            source,
        })?;
        Report::from_json(&text, &what)
    }

    /// What it sent, for people: `audio 1000 packets (ssrc 1), …`, or `nothing`.
    pub fn sent_line(&self) -> String {
        if self.sent.is_empty() {
            return "nothing".to_owned();
        }
        let streams: Vec<String> = self
            .sent
            .iter()
            .map(|s| {
                format!(
                    "{} {} packets (ssrc {})",
                    s.kind.as_str(),
                    s.packets,
                    s.ssrc
                )
            })
            .collect();
        streams.join(", ")
    }

    /// Whom the SFU named the active speaker, for people: `7 times (@carol:hs 4,
    /// @bob:hs 3), last @carol:hs`, or `never`.
    pub fn speakers_line(&self) -> String {
        let total: u64 = self.speakers.iter().map(|s| s.turns).sum();
        if total == 0 {
            return "never".to_owned();
        }
        let each: Vec<String> = self
            .speakers
            .iter()
            .map(|s| format!("{} {}", s.user, s.turns))
            .collect();
        let last = self.last_speaker.as_deref().unwrap_or("?");
        format!("{total} times ({}), last {last}", each.join(", "))
    }

    /// The stream it sent of `kind`, if it declared one.
    pub fn sent_stream(&self, kind: StreamKind) -> Option<&SentStream> {
        self.sent.iter().find(|s| s.kind == kind)
    }
}

/// Judges a conference from its participants' reports: every problem, in words; none
/// means the conference worked. Each participant must have
///
/// - decrypted packets of every other participant's audio and thumbnail stream, and of
///   its full-resolution stream if subscribed, on the SSRCs that participant says it
///   sent, from the device it reports;
/// - no decrypt failure on any stream, from anyone;
/// - recorded every audio stream it decrypted.
///
/// Participants are told apart by user id; two reports of one user are a problem.
pub fn check_reports(reports: &[Report]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        if reports[..i].iter().any(|o| o.user == r.user) {
            problems.push(format!("{}: two reports from this user", r.user));
        }
    }
    for r in reports {
        for sender in &r.senders {
            for s in sender.streams.iter().filter(|s| s.decrypt_failures > 0) {
                problems.push(format!(
                    "{} failed to decrypt {} packets of {}'s {} stream (ssrc {})",
                    r.user,
                    s.decrypt_failures,
                    sender.user,
                    s.kind.as_str(),
                    s.ssrc
                ));
            }
            for s in sender.streams.iter() {
                let recorded = r.recordings.iter().any(|rec| rec.ssrc == s.ssrc);
                if s.kind == StreamKind::Audio && s.packets > 0 && !recorded {
                    problems.push(format!(
                        "{} decrypted {}'s audio (ssrc {}) but recorded no file of it",
                        r.user, sender.user, s.ssrc
                    ));
                }
            }
        }
        for other in reports.iter().filter(|o| o.user != r.user) {
            for kind in [StreamKind::Audio, StreamKind::Thumbnail, StreamKind::Full] {
                // A stream `other` does not report sending is one problem, said once
                // below, not once per receiver.
                let Some(sent) = other.sent_stream(kind) else {
                    continue;
                };
                if kind == StreamKind::Full && !r.subscribed_full.includes(sent.ssrc) {
                    continue;
                }
                let got = r
                    .senders
                    .iter()
                    .filter(|s| s.user == other.user && s.device == other.device)
                    .flat_map(|s| &s.streams)
                    .find(|s| s.ssrc == sent.ssrc && s.kind == kind);
                match got {
                    Some(s) if s.packets > 0 => {}
                    Some(_) => problems.push(format!(
                        "{} decrypted no packet of {}'s {} stream (ssrc {})",
                        r.user,
                        other.user,
                        kind.as_str(),
                        sent.ssrc
                    )),
                    None => problems.push(format!(
                        "{} has no {} stream (ssrc {}) from {} (device {})",
                        r.user,
                        kind.as_str(),
                        sent.ssrc,
                        other.user,
                        other.device
                    )),
                }
            }
        }
    }
    for r in reports {
        for kind in [StreamKind::Audio, StreamKind::Thumbnail, StreamKind::Full] {
            if r.sent_stream(kind).is_none() {
                problems.push(format!(
                    "{} reports no {} stream sent",
                    r.user,
                    kind.as_str()
                ));
            }
        }
    }
    problems
}

/// Checks `report`'s recordings on disk: each file exists and is an Ogg Opus stream
/// holding as many packets as the report says. Problems in words, as
/// [`check_reports`].
pub fn check_recordings(report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
    for rec in &report.recordings {
        let what = format!(
            "{}'s recording of {} (ssrc {}) at {}",
            report.user,
            rec.user,
            rec.ssrc,
            rec.path.display()
        );
        // Page structure only: the packets of synthetic audio are not real Opus, so
        // their TOC bytes may give no duration; that is not the recording's fault.
        let packets = match OggOpusReader::open(&rec.path).and_then(OggOpusReader::summarize) {
            Ok(summary) => summary.packets,
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                continue;
            }
        };
        if packets != rec.packets {
            problems.push(format!(
                "{what}: {packets} packets in the file, the report says {}",
                rec.packets
            ));
        }
    }
    problems
}

// ---- the load tools' report ---------------------------------------------------------
//
// The JSON reports of the load tools, through serde: [`BlastReport`] is the one line
// that `udp-blast` and `blindfold-load --report-format udp-blast` print and
// `relay-vs-bare` reads back.

/// The JSON report of a fixed-rate run (one line on stdout), read back by `relay-vs-bare`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlastReport {
    /// Where the load went.
    pub target: String,
    /// Datagram size, bytes.
    pub size: usize,
    /// Source sockets.
    pub senders: usize,
    /// Sinks counted (the fan-out expected of the forwarder).
    pub sinks: Vec<String>,
    /// Length of the sending phase asked for, seconds.
    pub duration_s: f64,
    /// The rate asked for, packets/s.
    pub rate_pps: f64,
    /// Packets scheduled per second of the actual sending phase.
    pub offered_pps: f64,
    /// Packets the kernel accepted per second.
    pub sent_pps: f64,
    /// Packets the generator could not send on time (it was the limit), per second.
    pub shortfall_pps: f64,
    /// Datagrams received per second on each sink (over the sending phase).
    pub received_pps_per_sink: Vec<f64>,
    /// Their sum: the delivered egress rate.
    pub received_pps_total: f64,
    /// `1 - received / (offered × sinks)`: everything lost between the schedule and the
    /// sinks. 0 without sinks.
    pub loss: f64,
    /// `1 - received / (sent × sinks)`: only what the path after the generator lost.
    pub loss_after_send: f64,
    /// This process's user CPU during sending and draining, seconds (all threads).
    pub cpu_user_s: f64,
    /// Its system CPU, seconds.
    pub cpu_sys_s: f64,
    /// `(user + sys) / wall` over the same window: near 1.0 means the generator and the
    /// sinks saturate their core and the numbers are the generator's limit.
    pub cpu_util: f64,
    /// The spawned forwarder's final JSON line, if one was spawned.
    pub forwarder: Option<serde_json::Value>,
    /// Datagrams whose one-way latency was measured (stamped ones that reached a sink).
    #[serde(default)]
    pub latency_samples: u64,
    /// Median one-way latency, generator to sink, microseconds (None: nothing timed).
    #[serde(default)]
    pub latency_p50_us: Option<f64>,
    /// Its 99th percentile.
    #[serde(default)]
    pub latency_p99_us: Option<f64>,
    /// Its maximum.
    #[serde(default)]
    pub latency_max_us: Option<f64>,
    /// Datagrams the kernel dropped at the target's socket(s) during the run, full
    /// receive queue: the forwarder was the limit (`/proc/net/udp`; None: unreadable).
    #[serde(default)]
    pub drops_forwarder: Option<u64>,
    /// Datagrams dropped at the sinks' sockets: the generator's side was the limit.
    #[serde(default)]
    pub drops_sinks: Option<u64>,
    /// Which generator wrote it (`blindfold-load`; absent from `udp-blast`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<String>,
    /// RTP packets the generator failed to build or protect (`blindfold-load` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_rtp_errors: Option<u64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ogg::{OggOpusWriter, OpusHead};
    use crate::table::StreamRow;

    const KINDS: [StreamKind; 3] = [StreamKind::Audio, StreamKind::Thumbnail, StreamKind::Full];

    /// Participant `n` of `users` in a conference where everyone got everything.
    fn healthy(users: &[&str], n: usize) -> Report {
        let ssrc = |who: usize, kind: usize| (who * 10 + kind) as u32 + 1;
        let others = (0..users.len()).filter(|&o| o != n);
        Report {
            user: users[n].into(),
            device: format!("DEV{n}"),
            room: "!room:localhost".into(),
            conference: "demo".into(),
            duration_s: 20.0,
            subscribed_full: FullSubscription::All,
            sent: KINDS
                .iter()
                .enumerate()
                .map(|(k, &kind)| SentStream {
                    ssrc: ssrc(n, k),
                    kind,
                    packets: 1000,
                    bytes: 100_000,
                })
                .collect(),
            senders: others
                .clone()
                .map(|o| SenderRow {
                    user: users[o].into(),
                    device: format!("DEV{o}"),
                    streams: KINDS
                        .iter()
                        .enumerate()
                        .map(|(k, &kind)| StreamRow {
                            ssrc: ssrc(o, k),
                            kind,
                            packets: 990,
                            bytes: 99_000,
                            lost: 0,
                            resumes: 0,
                            skipped: 0,
                            decrypt_failures: 0,
                            key_index: Some(0),
                            kbps: 40.0,
                            latency_ms: None,
                        })
                        .collect(),
                })
                .collect(),
            recordings: others
                .map(|o| Recording {
                    user: users[o].into(),
                    device: format!("DEV{o}"),
                    ssrc: ssrc(o, 0),
                    path: format!("/tmp/{o}.opus").into(),
                    packets: 990,
                })
                .collect(),
            speakers: Vec::new(),
            last_speaker: None,
            reconnects: 0,
            calls_again: 0,
        }
    }

    fn conference() -> Vec<Report> {
        let users = ["@a:l", "@b:l", "@c:l"];
        (0..3).map(|n| healthy(&users, n)).collect()
    }

    #[test]
    fn a_conference_where_everyone_got_everything_passes() {
        assert_eq!(check_reports(&conference()), Vec::<String>::new());
    }

    #[test]
    fn each_kind_of_shortfall_is_named() {
        let mut r = conference();
        r[0].senders[0].streams[1].packets = 0; // a has nothing of b's thumbnail
        r[1].senders[1]
            .streams
            .retain(|s| s.kind != StreamKind::Full); // b: c's full
        r[2].senders[0].streams[0].decrypt_failures = 4; // c: failures on a's audio
        r[2].recordings.remove(1); // c recorded b's audio nowhere
        assert_eq!(
            check_reports(&r),
            [
                "@a:l decrypted no packet of @b:l's thumbnail stream (ssrc 12)",
                "@b:l has no full stream (ssrc 23) from @c:l (device DEV2)",
                "@c:l failed to decrypt 4 packets of @a:l's audio stream (ssrc 1)",
                "@c:l decrypted @b:l's audio (ssrc 11) but recorded no file of it",
            ]
        );
    }

    #[test]
    fn full_streams_count_only_when_subscribed() {
        let mut r = conference();
        for s in &mut r[0].senders {
            s.streams.retain(|s| s.kind != StreamKind::Full);
        }
        assert_eq!(check_reports(&r).len(), 2);
        r[0].subscribed_full = FullSubscription::Ssrcs(vec![23]); // c's full only
        assert_eq!(
            check_reports(&r),
            ["@a:l has no full stream (ssrc 23) from @c:l (device DEV2)"]
        );
        r[0].subscribed_full = FullSubscription::Ssrcs(vec![]);
        assert!(check_reports(&r).is_empty());
    }

    #[test]
    fn a_stream_from_the_wrong_device_or_ssrc_does_not_count() {
        let mut r = conference();
        r[0].senders[0].device = "OTHER".into();
        r[1].senders[0].streams[0].ssrc = 99;
        let problems = check_reports(&r);
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("@a:l has no audio stream (ssrc 11) from @b:l"));
        // b decrypted a stream it takes for a's audio, but not on a's SSRC.
        assert!(problems[3].starts_with("@b:l decrypted @a:l's audio (ssrc 99) but recorded"));
        assert!(problems[4].starts_with("@b:l has no audio stream (ssrc 1) from @a:l"));
    }

    #[test]
    fn missing_senders_and_duplicate_users_are_problems() {
        let mut r = conference();
        r[2].sent.retain(|s| s.kind != StreamKind::Thumbnail);
        r[1].user = "@a:l".into();
        let problems = check_reports(&r);
        assert!(problems.contains(&"@a:l: two reports from this user".to_owned()));
        assert!(problems.contains(&"@c:l reports no thumbnail stream sent".to_owned()));
    }

    #[test]
    fn the_json_has_this_shape() {
        let mut r = healthy(&["@a:l", "@b:l"], 0);
        r.senders[0].streams.truncate(1);
        r.senders[0].streams[0].latency_ms = Some(1.5);
        r.sent.truncate(1);
        r.speakers = vec![SpeakerTurns {
            user: "@b:l".into(),
            device: "DEV1".into(),
            turns: 2,
        }];
        r.last_speaker = Some("@b:l".into());
        let value: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            value,
            json!({
                "user": "@a:l", "device": "DEV0", "room": "!room:localhost",
                "conference": "demo", "duration_s": 20.0, "subscribed_full": "all",
                "sent": [{"ssrc": 1, "kind": "audio", "packets": 1000, "bytes": 100000}],
                "senders": [{"user": "@b:l", "device": "DEV1", "streams": [{
                    "ssrc": 11, "kind": "audio", "packets": 990, "bytes": 99000,
                    "lost": 0, "resumes": 0, "skipped": 0, "decrypt_failures": 0,
                    "key_index": 0, "kbps": 40.0, "latency_ms": 1.5}]}],
                "recordings": [{"user": "@b:l", "device": "DEV1", "ssrc": 11,
                                "path": "/tmp/1.opus", "packets": 990}],
                "speakers": [{"user": "@b:l", "device": "DEV1", "turns": 2}],
                "last_speaker": "@b:l", "reconnects": 0, "calls_again": 0
            })
        );
        assert_eq!(r.speakers_line(), "2 times (@b:l 2), last @b:l");
        // A report from before the speakers were kept reads as one that heard none...
        let mut old = value.clone();
        old.as_object_mut().unwrap().remove("speakers");
        old.as_object_mut().unwrap().remove("last_speaker");
        // ... and one from before reconnects and calls again were counted, as one with
        // none.
        old.as_object_mut().unwrap().remove("reconnects");
        old.as_object_mut().unwrap().remove("calls_again");
        // And one from before layer resumes were told from loss, as one without any.
        let stream = old["senders"][0]["streams"][0].as_object_mut().unwrap();
        stream.remove("resumes");
        stream.remove("skipped");
        let old = Report::from_json(&old.to_string(), "old.json").unwrap();
        assert_eq!(
            (old.speakers_line(), old.last_speaker),
            ("never".into(), None)
        );
        assert_eq!(old.senders[0].streams[0], r.senders[0].streams[0]);
        r.subscribed_full = FullSubscription::Ssrcs(vec![5, 6]);
        r.senders[0].streams[0].key_index = None;
        let back = Report::from_json(&r.to_json(), "test").unwrap();
        assert_eq!(back, r);
        assert!(
            r.to_json()
                .contains("\"subscribed_full\": [\n    5,\n    6\n  ]")
        );
        assert!(r.to_json().contains("\"key_index\": null"));
    }

    #[test]
    fn bad_reports_say_where() {
        let e = Report::from_json("{\"user\": 3}", "x.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x.json: not a participant report: invalid type"),
            "{e}"
        );
        let mut v: serde_json::Value = serde_json::from_str(&conference()[0].to_json()).unwrap();
        v["subscribed_full"] = json!("some");
        let e = Report::from_json(&v.to_string(), "y.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected \"all\", \"speaker\" or a list of SSRCs"),
            "{e}"
        );
        let e = Report::read(Path::new("/nonexistent/r.json"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("reading /nonexistent/r.json: "), "{e}");
    }

    #[test]
    fn reports_and_recordings_on_disk() {
        let dir = std::env::temp_dir().join(format!("bf-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = healthy(&["@a:l", "@b:l", "@c:l"], 0);
        // b's audio: 3 packets, one of them synthetic (no valid TOC); c's: missing.
        let b_path = dir.join("b.opus");
        let mut w = OggOpusWriter::create(&b_path, &OpusHead::new(1, 312, 48_000)).unwrap();
        w.write_packet(&[0xf8, 1]).unwrap();
        w.write_packet_with_samples(&[0xfb, 0], 960).unwrap();
        w.write_packet(&[0xf8, 2]).unwrap();
        w.finish().unwrap();
        r.recordings[0].path = b_path;
        r.recordings[0].packets = 3;
        r.recordings[1].path = dir.join("c.opus");
        let problems = check_recordings(&r);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("recording of @c:l (ssrc 21)"),
            "{problems:?}"
        );
        assert!(problems[0].contains("No such file"), "{problems:?}");
        r.recordings[0].packets = 4;
        assert!(check_recordings(&r)[0].ends_with("3 packets in the file, the report says 4"));

        let path = dir.join("a.json");
        r.write(&path).unwrap();
        assert_eq!(Report::read(&path).unwrap(), r);
        assert!(!dir.join("a.json.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
