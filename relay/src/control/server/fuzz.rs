//! The control server, registry included, fed arbitrary sequences of what reaches it:
//! requests built from the input (conferences, sessions and subscriptions from small
//! pools, so generations, references, snapshots and removals meet each other), raw
//! bytes on the socket, the workers' reports (connections, failures, closes and the
//! relay's own ends, of current and replaced incarnations), workers applying commands
//! or falling behind, clients connecting and hanging up, and time. Nothing may panic,
//! and after every step the registry's session count and every answer must make sense.
#![allow(clippy::disallowed_methods)] // one base instant; the run itself is simulated

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::control::{
    ConfId, ConferenceSpec, ExtmapIds, Fingerprint, FullSet, Generation, IcePwd, IceUfrag, Layer,
    Request, RequestId, SessionId, SessionSpec, Snapshot, StreamKind, StreamSpec, SubscriptionSpec,
};
use crate::engine::SessionName;
use crate::id::Ssrc;

const WORKERS: usize = 2;

/// Reads the input a byte at a time (zeros once it runs out).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn below(&mut self, n: u8) -> u8 {
        self.byte() % n
    }
}

/// Session `i` of the pool, in conference `conf`, its password and SSRCs picked by
/// `variant` (so upserts can repeat, update or replace it, or collide on an SSRC).
fn session(i: u8, conf: u8, variant: u8) -> SessionSpec {
    let ssrc = |k: u32| Ssrc(0x100 * (u32::from(i) + 1) + k + u32::from(variant & 1) * 0x40);
    SessionSpec {
        session_id: SessionId::new(format!("s{i}")).expect("id"),
        conf_id: ConfId::new(format!("c{conf}")).expect("conf"),
        ice_ufrag: IceUfrag::new(format!("rly{i}")).expect("ufrag"),
        ice_pwd: IcePwd::new(if variant & 2 == 0 {
            "abcdefghijklmnopqrstuv+/"
        } else {
            "zyxwvutsrqponmlkjihgfe+/"
        })
        .expect("pwd"),
        remote_ufrag: IceUfrag::new(format!("peer{i}")).expect("ufrag"),
        remote_pwd: None,
        dtls_fingerprint: Fingerprint([0xab; 32]),
        streams: (0..1 + u32::from(variant >> 2 & 1))
            .map(|k| StreamSpec {
                ssrc: if variant & 8 != 0 {
                    Ssrc(0x100)
                } else {
                    ssrc(k)
                },
                kind: if k == 0 {
                    StreamKind::Audio
                } else {
                    StreamKind::Video
                },
                layer: if k == 0 { Layer::None } else { Layer::Full },
            })
            .collect(),
        extmap: ExtmapIds::default(),
        tmmbr: false,
    }
}

/// A request the input picks.
fn request(input: &mut Input<'_>) -> RequestBody {
    let generation = Generation(u64::from(input.below(32)));
    let (i, conf, variant) = (input.below(4), input.below(2), input.byte());
    match input.below(7) {
        0 => RequestBody::UpsertConference {
            generation,
            conference: ConferenceSpec {
                conf_id: ConfId::new(format!("c{conf}")).expect("conf"),
            },
        },
        1 => RequestBody::RemoveConference {
            generation,
            conf_id: ConfId::new(format!("c{conf}")).expect("conf"),
        },
        2 => RequestBody::UpsertSession {
            generation,
            session: session(i, conf, variant),
        },
        3 => RequestBody::RemoveSession {
            generation,
            session_id: SessionId::new(format!("s{i}")).expect("id"),
        },
        4 => RequestBody::SetSubscription {
            generation,
            subscription: SubscriptionSpec {
                session_id: SessionId::new(format!("s{i}")).expect("id"),
                full: match variant % 3 {
                    0 => FullSet::All,
                    1 => FullSet::Speaker,
                    _ => FullSet::Ssrcs(vec![Ssrc(0x100), Ssrc(0x201)]),
                },
            },
        },
        5 => {
            let sessions = (0..4u8)
                .filter(|k| variant >> k & 1 == 1)
                .map(|k| session(k, 0, variant >> 4))
                .collect();
            RequestBody::Snapshot(Snapshot {
                generation,
                conferences: vec![ConferenceSpec {
                    conf_id: ConfId::new("c0").expect("conf"),
                }],
                sessions,
                subscriptions: Vec::new(),
            })
        }
        _ => RequestBody::GetStats,
    }
}

/// A worker's report the input picks, about pool session `i` as `variant` has it.
fn report(input: &mut Input<'_>) -> WorkerReport {
    let (i, variant) = (input.below(4), input.byte());
    let spec = session(i, input.below(2), variant);
    let rule = rules::session_rule(&spec);
    let (session, identity) = (SessionName::new(&format!("s{i}")), rule.identity());
    let reason = match input.below(4) {
        0 => crate::engine::EndReason::ConsentExpired,
        1 => crate::engine::EndReason::Closed,
        2 => crate::engine::EndReason::IceTimeout,
        _ => crate::engine::EndReason::DtlsFailed,
    };
    let addr = SocketAddr::from(([192, 0, 2, 1], 5000 + u16::from(i)));
    match input.below(4) {
        0 => WorkerReport::Session(SessionEvent::Connected {
            session,
            identity,
            addr,
        }),
        1 => WorkerReport::Session(SessionEvent::Failed {
            session,
            identity,
            reason,
            detail: String::new(),
        }),
        2 => WorkerReport::Session(SessionEvent::Closed {
            session,
            identity,
            reason,
        }),
        _ => WorkerReport::Ended(rule, reason),
    }
}

/// Runs the server on `data`; a panic is a finding.
pub fn fuzz_one(data: &[u8]) {
    let t0 = Instant::now();
    let hello = Hello::relay(
        "relay/fuzz",
        Fingerprint([7; 32]),
        vec![SocketAddr::from(([192, 0, 2, 1], 10000))],
    );
    let mut s = ControlServer::new(hello, WORKERS, Limits::default());
    let mut input = Input(data);
    let mut now = t0;
    let mut id = 0u64;
    let mut applied = [0u64; WORKERS];
    let mut out_frames = crate::control::FrameDecoder::new();
    while !input.0.is_empty() {
        match input.below(8) {
            0 => {
                if s.accept(now).is_ok() {
                    let mut out = Vec::new();
                    let hello = Message::Hello(Hello::signaling("signaling/fuzz"));
                    let _ = crate::control::encode(&hello, &mut out);
                    s.handle_data(&out);
                }
            }
            1 | 2 => {
                id += 1;
                let msg = Message::Request(Request {
                    id: RequestId(id),
                    body: request(&mut input),
                });
                let mut out = Vec::new();
                if crate::control::encode(&msg, &mut out).is_ok() {
                    s.handle_data(&out);
                }
            }
            3 => s.handle_report(report(&mut input)),
            4 => {
                // A worker applies some of what is queued for it.
                let w = usize::from(input.below(WORKERS as u8));
                for _ in 0..input.below(8) {
                    if s.poll_command(w).is_some() {
                        applied[w] += 1;
                    }
                }
                s.handle_applied(w, applied[w]);
            }
            5 => {
                let n = usize::from(input.below(64));
                let raw: Vec<u8> = (0..n).map(|_| input.byte()).collect();
                s.handle_data(&raw);
            }
            6 => {
                now += Duration::from_millis(u64::from(input.byte()) * 50);
                s.handle_timeout(now);
            }
            _ => match input.below(3) {
                0 => s.handle_hangup(),
                1 => s.handle_shutdown(),
                _ => {}
            },
        }
        // What it wrote is whole frames of valid messages, and it is taken.
        let written = s.transmit().to_vec();
        s.advance(written.len());
        let mut rest = &written[..];
        loop {
            rest = &rest[out_frames.push(rest)..];
            while let Some(frame) = out_frames.next_frame().expect("the relay writes frames") {
                crate::control::decode(&frame).expect("the relay writes valid messages");
            }
            if rest.is_empty() {
                break;
            }
        }
        if s.wants_close() {
            s.handle_hangup();
            out_frames = crate::control::FrameDecoder::new();
        }
        assert!(
            s.registry().session_count() <= 4,
            "four sessions in the pool"
        );
    }
}
