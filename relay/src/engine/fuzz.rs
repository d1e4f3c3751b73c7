//! The engine fed arbitrary sequences of datagrams, commands and time steps.
//!
//! Each step reads an action byte. Besides raw datagrams from a handful of addresses,
//! the fuzzer can produce a *valid* ICE check for one of the configured sessions, so it
//! reaches what lies behind ICE (DTLS, media and RTCP from validated addresses), and
//! can remove and re-add sessions and move time. Invariants checked after every step:
//! media is only ever forwarded to addresses of connected sessions, never back to its
//! sender, the incrementally kept fan-out lists equal lists computed from scratch
//! (another shard's connect and disconnect messages make receivers of the sessions this
//! shard validated; its layer states and bandwidth messages move them between a full
//! layer's lists), and nothing panics.
#![allow(clippy::disallowed_methods)] // one base instant; the run itself is simulated

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::*;
use crate::dtls::{DtlsSettings, Fingerprint};
use crate::wire::stun::{Class, IntegrityKey, Method, StunWriter, TransactionId};

const PWD: &str = "fuzzpassword0123456789";
/// The participants' ICE password (keys the relay's own checks).
const PEER_PWD: &str = "fuzzpeerpassword01234567";
const NAMES: [&str; 3] = ["a", "b", "c"];

fn shared() -> &'static (Arc<DtlsCert>, Arc<DtlsConfig>, Instant) {
    static S: OnceLock<(Arc<DtlsCert>, Arc<DtlsConfig>, Instant)> = OnceLock::new();
    S.get_or_init(|| {
        let settings = DtlsSettings {
            insecure_rng_seed: Some(3),
            ..DtlsSettings::default()
        };
        (
            Arc::new(DtlsCert::generate().expect("cert")),
            Arc::new(DtlsConfig::new(settings).expect("dtls config")),
            Instant::now(),
        )
    })
}

fn spec(i: usize) -> SessionRule {
    let name = NAMES[i];
    SessionRule {
        id: SessionName::new(name),
        conf: ConfName::new("conf"),
        ice_ufrag: format!("relay{name}"),
        ice_pwd: PWD.to_owned(),
        remote_ufrag: format!("peer{name}"),
        remote_pwd: Some(PEER_PWD.to_owned()),
        fingerprint: Fingerprint([i as u8; 32]),
        streams: vec![
            StreamRule {
                ssrc: Ssrc(0x100 * (i as u32 + 1)),
                kind: MediaKind::Audio,
                layer: Layer::Single,
            },
            StreamRule {
                ssrc: Ssrc(0x100 * (i as u32 + 1) + 1),
                kind: MediaKind::Video,
                layer: Layer::Full,
            },
        ],
        // Audio levels are read (active speaker), frame marking (receivers switching up
        // wait for a keyframe), abs-send-time (the uplink's queue and estimate) and, for
        // all but the first, transport-wide sequence numbers (transport-cc feedback; the
        // first has the relay estimate its uplink instead): raw datagrams reach every
        // reader.
        tmmbr: i == 1,
        extensions: ExtensionIds {
            audio_level: Some(crate::id::ExtId(1)),
            frame_marking: Some(crate::id::ExtId(2)),
            abs_send_time: Some(crate::id::ExtId(3)),
            transport_cc: (i != 0).then_some(crate::id::ExtId(5)),
        },
    }
}

fn addr(b: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + u16::from(b % 6)))
}

fn valid_check(i: usize, use_candidate: bool, out: &mut [u8]) -> usize {
    let name = NAMES[i];
    let Ok(mut w) = StunWriter::new(out, Class::Request, Method::Binding, TransactionId([1; 12]))
    else {
        return 0;
    };
    let ok = w.add_username(&format!("relay{name}:peer{name}")).is_ok()
        && w.add_ice_controlling(1).is_ok()
        && (!use_candidate || w.add_use_candidate().is_ok())
        && w.add_message_integrity(&IntegrityKey::new(PWD.as_bytes()))
            .is_ok();
    if !ok {
        return 0;
    }
    w.finish_with_fingerprint().unwrap_or(0)
}

/// Runs one fuzz input.
pub(crate) fn run(data: &[u8]) {
    let (cert, dtls, t0) = shared();
    let mut e = Engine::new(EngineConfig::new(ShardId(0), cert.clone(), dtls.clone()));
    let mut now = *t0;
    for i in 0..NAMES.len() {
        e.handle_command(now, Command::UpsertSession(spec(i)));
    }
    let mut rest = data;
    let mut buf = [0u8; 1500];
    while let Some((&action, tail)) = rest.split_first() {
        rest = tail;
        let who = usize::from(action >> 4) % NAMES.len();
        match action & 0x0f {
            0 | 1 => {
                let n = valid_check(who, action & 1 == 1, &mut buf);
                let from = addr(action >> 2);
                let _ = e.handle_datagram(now, from, &mut buf[..n]);
            }
            2 => now += Duration::from_millis(u64::from(action >> 4) * 700),
            3 => e.handle_command(now, Command::RemoveSession(spec(who).id)),
            4 => e.handle_command(now, Command::UpsertSession(spec(who))),
            5 => e.handle_command(
                now,
                Command::SetSubscription {
                    session: spec(who).id,
                    full: FullSet::All,
                },
            ),
            6 => e.handle_command(
                now,
                Command::Peer(PeerMsg::Connected {
                    session: spec(who).id,
                    identity: spec(who).identity(),
                    shard: ShardId(1),
                    key: SessionHandle {
                        slot: u32::from(action >> 6),
                        incarnation: 0,
                    },
                    addr: addr(0x40 | (action >> 4)),
                }),
            ),
            7 if action & 0x80 != 0 => e.handle_command(
                now,
                Command::Peer(PeerMsg::WhereIs {
                    session: spec(who).id,
                    identity: spec(who).identity(),
                    from: ShardId(1),
                }),
            ),
            7 => e.handle_command(
                now,
                Command::Peer(PeerMsg::Disconnected {
                    session: spec(who).id,
                    identity: spec(who).identity(),
                }),
            ),
            9 => e.handle_command(
                now,
                // A speech note naming any handle: found or not, it never panics.
                Command::Peer(PeerMsg::Speech {
                    home: ShardId(u16::from(action >> 7)),
                    session: SessionHandle {
                        slot: u32::from((action >> 4) & 7),
                        incarnation: 0,
                    },
                    level: action,
                }),
            ),
            10 => {
                // Another shard's layer state for any receiver and full layer.
                let state = match action >> 6 {
                    0 => LayerState::Thumbnail,
                    1 => LayerState::AwaitKeyframe,
                    _ => LayerState::Full,
                };
                let msg = PeerMsg::LayerState {
                    home: ShardId(u16::from(action >> 7)),
                    receiver: SessionHandle {
                        slot: u32::from((action >> 4) & 3),
                        incarnation: 0,
                    },
                    ssrc: spec(who).streams[1].ssrc,
                    state,
                };
                e.handle_command(now, Command::Peer(msg));
            }
            11 => {
                // Bandwidth messages naming any handle, with any figures.
                let handle = SessionHandle {
                    slot: u32::from((action >> 4) & 3),
                    incarnation: 0,
                };
                let (ssrc, bps) = (spec(who).streams[1].ssrc, u64::from(action) << 14);
                let msg = match action >> 6 {
                    0 => PeerMsg::KeyframeForwarded {
                        receiver: handle,
                        ssrc,
                    },
                    1 => PeerMsg::ViewerRate {
                        owner: handle,
                        ssrc,
                        home: ShardId(1),
                        viewer: handle,
                        bps,
                    },
                    2 => PeerMsg::Demote {
                        home: ShardId(1),
                        sender: handle,
                        ssrc,
                        below_bps: bps,
                    },
                    _ if action & 1 == 1 => PeerMsg::Uplink {
                        owner: handle,
                        ssrc,
                        bps: (action & 2 == 0).then_some(bps),
                    },
                    _ => PeerMsg::StreamRate {
                        home: ShardId(1),
                        sender: handle,
                        ssrc,
                        bps,
                        resumed: action & 2 == 0,
                    },
                };
                e.handle_command(now, Command::Peer(msg));
            }
            8 => e.handle_command(
                now,
                Command::SetSubscription {
                    session: spec(who).id,
                    // Another member's full-resolution stream (see `spec`).
                    full: FullSet::Ssrcs(vec![Ssrc(0x100 * ((who as u32 + 1) % 3 + 1) + 1)]),
                },
            ),
            _ => {
                // A raw datagram: a length byte, then that many bytes.
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                let len = usize::from(len).min(tail.len());
                let (datagram, tail) = tail.split_at(len);
                rest = tail;
                buf[..len].copy_from_slice(datagram);
                let from = addr(action >> 4);
                let connected: Vec<SocketAddr> = NAMES
                    .iter()
                    .filter_map(|n| e.session_addr(&SessionName::new(n)))
                    .collect();
                if let Handled::Forward(dests) = e.handle_datagram(now, from, &mut buf[..len]) {
                    for d in dests {
                        assert!(connected.contains(d), "forwarded to a stranger");
                        assert_ne!(*d, from, "forwarded back to its sender");
                    }
                }
            }
        }
        e.handle_timeout(now);
        while e.poll_transmit().is_some() {}
        while e.poll_event().is_some() {}
        if let Err(wrong) = e.check_fanout() {
            panic!("{wrong}");
        }
    }
}
