//! The control server driven with bytes, as the shell drives it: one behaviour per test.
// The clock is only a starting point here: time moves by the tests' own sums.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;

use super::*;
use crate::control::{
    ConfId, ConferenceSpec, ExtmapIds, Fingerprint, Generation, IcePwd, IceUfrag, Request,
    RequestId, SessionId, SessionSpec,
};
use crate::engine::{EndReason, SessionName};

const WORKERS: usize = 3;

fn relay_hello() -> Hello {
    let addr: SocketAddr = "192.0.2.1:10000".parse().unwrap();
    Hello::relay("relay/test", Fingerprint([7; 32]), vec![addr])
}

fn server(limits: Limits) -> ControlServer {
    ControlServer::new(relay_hello(), WORKERS, limits)
}

fn frame(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    super::super::encode(msg, &mut out).unwrap();
    out
}

fn request(id: u64, body: RequestBody) -> Vec<u8> {
    frame(&Message::Request(Request {
        id: RequestId(id),
        body,
    }))
}

fn signaling_hello() -> Vec<u8> {
    frame(&Message::Hello(Hello::signaling("signaling/test")))
}

/// Everything the server wants written, decoded (and marked written).
fn take(s: &mut ControlServer) -> Vec<Message> {
    let bytes = s.transmit().to_vec();
    s.advance(bytes.len());
    decode_all(&bytes)
}

fn decode_all(bytes: &[u8]) -> Vec<Message> {
    let mut dec = FrameDecoder::new();
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        rest = &rest[dec.push(rest)..];
        while let Some(f) = dec.next_frame().unwrap() {
            out.push(super::super::decode(&f).unwrap());
        }
    }
    out
}

/// A server with a client that said hello; our hello already taken.
fn connected(limits: Limits) -> ControlServer {
    let mut s = server(limits);
    s.accept(Instant::now()).unwrap();
    s.handle_data(&signaling_hello());
    let msgs = take(&mut s);
    assert!(matches!(msgs[..], [Message::Hello(_)]), "{msgs:?}");
    s
}

fn conf_upsert(g: u64) -> RequestBody {
    RequestBody::UpsertConference {
        generation: Generation(g),
        conference: ConferenceSpec {
            conf_id: ConfId::new("c").unwrap(),
        },
    }
}

fn spec(id: &str) -> SessionSpec {
    SessionSpec {
        session_id: SessionId::new(id).unwrap(),
        conf_id: ConfId::new("c").unwrap(),
        ice_ufrag: IceUfrag::new(format!("rly{id}")).unwrap(),
        ice_pwd: IcePwd::new("abcdefghijklmnopqrstuv+/").unwrap(),
        remote_ufrag: IceUfrag::new(format!("peer{id}")).unwrap(),
        remote_pwd: None,
        dtls_fingerprint: Fingerprint([0xab; 32]),
        streams: Vec::new(),
        extmap: ExtmapIds::default(),
        tmmbr: false,
    }
}

/// The incarnation of `spec(id)`, as the workers' reports carry it.
fn identity(id: &str) -> u64 {
    rules::session_rule(&spec(id)).identity()
}

/// A snapshot at generation `g`: conference `c` with `sessions`.
fn snapshot(g: u64, sessions: Vec<SessionSpec>) -> RequestBody {
    RequestBody::Snapshot(crate::control::Snapshot {
        generation: Generation(g),
        conferences: vec![ConferenceSpec {
            conf_id: ConfId::new("c").unwrap(),
        }],
        sessions,
        subscriptions: Vec::new(),
    })
}

fn upsert_a() -> RequestBody {
    RequestBody::UpsertSession {
        generation: Generation(2),
        session: spec("a"),
    }
}

/// Conference `c` and session `a`, applied by every worker.
fn with_session_a(s: &mut ControlServer) {
    s.handle_data(&request(1, conf_upsert(1)));
    s.handle_data(&request(2, upsert_a()));
    apply_all(s);
}

/// Every worker applies everything queued for it.
fn apply_all(s: &mut ControlServer) {
    for w in 0..WORKERS {
        let mut n = 0;
        while s.poll_command(w).is_some() {
            n += 1;
        }
        let before = s.workers[w].applied;
        s.handle_applied(w, before + n);
    }
}

fn goodbye_code(msgs: &[Message]) -> Option<ErrorCode> {
    match msgs.last() {
        Some(Message::Goodbye(g)) => Some(g.code),
        _ => None,
    }
}

#[test]
fn a_request_before_the_hello_is_a_protocol_violation() {
    let mut s = server(Limits::default());
    s.accept(Instant::now()).unwrap();
    s.handle_data(&request(1, RequestBody::GetStats));
    let msgs = take(&mut s);
    assert!(matches!(msgs.first(), Some(Message::Hello(_))));
    assert_eq!(goodbye_code(&msgs), Some(ErrorCode::ProtocolViolation));
    assert!(s.wants_close());
    assert_eq!(s.stats().requests, 0, "not handled");
}

#[test]
fn another_major_version_is_refused_with_a_goodbye() {
    let mut s = server(Limits::default());
    s.accept(Instant::now()).unwrap();
    let hello = String::from_utf8(signaling_hello()[4..].to_vec()).unwrap();
    let theirs = hello.replace("\"version\":1", "\"version\":2");
    assert_ne!(hello, theirs, "the hello names its version");
    let mut bytes = (theirs.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(theirs.as_bytes());
    s.handle_data(&bytes);
    let msgs = take(&mut s);
    assert_eq!(goodbye_code(&msgs), Some(ErrorCode::VersionMismatch));
    assert!(s.wants_close());
}

#[test]
fn a_second_client_is_turned_away_while_one_is_connected() {
    let mut s = connected(Limits::default());
    let bye = s.accept(Instant::now()).unwrap_err();
    assert_eq!(
        goodbye_code(&decode_all(&bye)),
        Some(ErrorCode::ProtocolViolation)
    );
    assert_eq!(s.stats().refused_clients, 1);
    // The first one is untouched; after it leaves, the next is welcome.
    assert!(s.is_connected() && !s.wants_close());
    s.handle_hangup();
    s.accept(Instant::now()).unwrap();
}

#[test]
fn a_client_that_never_says_hello_is_closed_after_the_hello_timeout() {
    let mut s = server(Limits::default());
    let t0 = Instant::now();
    s.accept(t0).unwrap();
    assert_eq!(s.poll_timeout(), Some(t0 + HELLO_TIMEOUT));
    s.handle_timeout(t0 + HELLO_TIMEOUT - Duration::from_millis(1));
    assert!(!s.wants_close());
    s.handle_timeout(t0 + HELLO_TIMEOUT);
    assert!(s.wants_close());
    let out = decode_all(s.transmit());
    assert!(matches!(out[0], Message::Hello(_)), "{out:?}");
    assert_eq!(goodbye_code(&out), Some(ErrorCode::ProtocolViolation));
    // Its slot is free for signaling.
    s.handle_hangup();
    s.accept(t0 + HELLO_TIMEOUT).unwrap();

    // A client that said hello has no deadline.
    let mut s = connected(Limits::default());
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(Instant::now() + HELLO_TIMEOUT * 100);
    assert!(!s.wants_close());
}

#[test]
fn ok_is_held_until_every_worker_applied_the_rule() {
    let mut s = connected(Limits::default());
    s.handle_data(&request(1, conf_upsert(1)));
    assert!(take(&mut s).is_empty(), "not applied anywhere yet");
    for w in 0..WORKERS {
        assert_eq!(s.queued(w), 1, "every worker gets the rule");
    }
    // Two of three workers applied it: still held, and so is what follows it.
    for w in 0..2 {
        s.poll_command(w).unwrap();
        s.handle_applied(w, 1);
    }
    s.handle_data(&request(2, RequestBody::GetStats));
    assert!(take(&mut s).is_empty());
    s.poll_command(2).unwrap();
    s.handle_applied(2, 1);
    let msgs = take(&mut s);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0], Message::ok_response(RequestId(1)));
    assert!(matches!(&msgs[1], Message::Response(r) if r.id == RequestId(2)));
}

/// A client that gave up on a slow request and connected again: the same change,
/// which now changes nothing, is not `ok` before the workers applied the first.
#[test]
fn ok_after_a_reconnect_waits_for_the_last_connections_rules() {
    let mut s = connected(Limits::default());
    s.handle_data(&request(1, conf_upsert(1)));
    assert!(take(&mut s).is_empty());
    s.handle_hangup();
    s.accept(Instant::now()).unwrap();
    s.handle_data(&signaling_hello());
    assert!(matches!(take(&mut s)[..], [Message::Hello(_)]));
    s.handle_data(&request(1, conf_upsert(1)));
    assert_eq!(s.queued(0), 1, "nothing new to apply");
    assert!(
        take(&mut s).is_empty(),
        "held: the workers have not applied it"
    );
    apply_all(&mut s);
    assert_eq!(take(&mut s), [Message::ok_response(RequestId(1))]);
    // Stats change nothing and wait for nothing.
    s.handle_data(&request(2, RequestBody::GetStats));
    assert_eq!(take(&mut s).len(), 1);
}

#[test]
fn a_full_worker_queue_answers_overloaded_and_changes_nothing() {
    let limits = Limits {
        max_queued: 2,
        ..Limits::default()
    };
    let mut s = connected(limits);
    s.handle_data(&request(1, conf_upsert(1)));
    s.handle_data(&request(2, upsert_a()));
    // Nobody drained: two commands wait for each worker.
    s.handle_data(&request(
        3,
        RequestBody::UpsertSession {
            generation: Generation(3),
            session: spec("b"),
        },
    ));
    s.handle_data(&request(4, RequestBody::GetStats));
    assert_eq!(s.stats().overloaded, 1);
    assert_eq!(s.registry().session_count(), 1, "b was not applied");
    apply_all(&mut s);
    let msgs = take(&mut s);
    let results: Vec<_> = msgs
        .iter()
        .map(|m| match m {
            Message::Response(r) => r.result.as_ref().map_err(|e| e.code).map(|_| ()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        results,
        [Ok(()), Ok(()), Err(ErrorCode::Overloaded), Ok(())],
        "in order; get_stats is still served"
    );
}

#[test]
fn a_client_that_stops_reading_is_hung_up_on() {
    let limits = Limits {
        max_backlog: 4096,
        ..Limits::default()
    };
    let mut s = connected(limits);
    with_session_a(&mut s);
    take(&mut s);
    let ev = SessionEvent::Failed {
        session: SessionName::new("a"),
        identity: identity("a"),
        reason: EndReason::IceTimeout,
        detail: "x".repeat(200),
    };
    for _ in 0..100 {
        s.handle_report(WorkerReport::Session(ev.clone()));
    }
    assert!(s.wants_close());
    assert_eq!(s.stats().backlog_hangups, 1);
    assert!(s.transmit().is_empty(), "what piled up is dropped");
    s.handle_hangup();
    assert!(!s.is_connected());

    // Messages held behind a response the workers have not applied count on their
    // own, however small.
    let limits = Limits {
        max_held: 50,
        ..Limits::default()
    };
    let mut s = connected(limits);
    with_session_a(&mut s);
    take(&mut s);
    // A new session: its response waits for the workers.
    s.handle_data(&request(
        3,
        RequestBody::UpsertSession {
            generation: Generation(3),
            session: spec("b"),
        },
    ));
    let small = SessionEvent::Failed {
        session: SessionName::new("a"),
        identity: identity("a"),
        reason: EndReason::IceTimeout,
        detail: String::new(),
    };
    // The response and 49 notifications behind it.
    for _ in 0..49 {
        s.handle_report(WorkerReport::Session(small.clone()));
    }
    assert!(!s.wants_close(), "50 held");
    s.handle_report(WorkerReport::Session(small));
    assert!(s.wants_close(), "51 held");
}

#[test]
fn a_participants_close_is_reported_as_the_peers_minor_version_knows_it() {
    // Minor 1 added the reason `closed`; a minor-0 client hears `dtls_failed`, as
    // before, so its handling of the session does not change.
    for (minor, want) in [
        (0, crate::control::EndReason::DtlsFailed),
        (1, crate::control::EndReason::Closed),
    ] {
        let mut s = server(Limits::default());
        s.accept(Instant::now()).unwrap();
        let mut hello = Hello::signaling("signaling/test");
        hello.minor = minor;
        s.handle_data(&frame(&Message::Hello(hello)));
        with_session_a(&mut s);
        take(&mut s);
        s.handle_report(WorkerReport::Session(SessionEvent::Closed {
            session: SessionName::new("a"),
            identity: identity("a"),
            reason: EndReason::Closed,
        }));
        let got = take(&mut s);
        assert!(
            matches!(&got[..], [Message::Notification(NotificationBody::SessionClosed { reason, .. })] if *reason == want),
            "minor {minor}: {got:?}"
        );
    }
}

#[test]
fn a_snapshot_is_followed_by_the_connected_sessions() {
    let mut s = connected(Limits::default());
    with_session_a(&mut s);
    let addr: SocketAddr = "198.51.100.2:5000".parse().unwrap();
    let up = NotificationBody::SessionConnected {
        session_id: SessionId::new("a").unwrap(),
        addr,
    };
    s.handle_report(WorkerReport::Session(SessionEvent::Connected {
        session: SessionName::new("a"),
        identity: identity("a"),
        addr,
    }));
    take(&mut s);
    // Signaling reconnects and sends its snapshot (unchanged state).
    s.handle_hangup();
    s.accept(Instant::now()).unwrap();
    s.handle_data(&signaling_hello());
    s.handle_data(&request(3, snapshot(3, vec![spec("a")])));
    let msgs = take(&mut s);
    assert_eq!(
        msgs,
        [
            Message::Hello(relay_hello()),
            Message::ok_response(RequestId(3)),
            Message::Notification(up),
        ]
    );
}

/// A report about an incarnation that an upsert has replaced since (its consent or
/// checks ran out just before the workers applied the upsert) is not taken for the new
/// incarnation's: signaling would end the new call. The close the replacement itself
/// causes is reported, and so is anything about the new incarnation.
#[test]
fn a_report_about_a_replaced_incarnation_is_dropped() {
    let mut s = connected(Limits::default());
    with_session_a(&mut s);
    take(&mut s);
    let mut renewed = spec("a");
    renewed.ice_pwd = IcePwd::new("zyxwvutsrqponmlkjihgfedc").unwrap();
    let (old, new) = (identity("a"), rules::session_rule(&renewed).identity());
    assert_ne!(old, new);
    s.handle_data(&request(
        3,
        RequestBody::UpsertSession {
            generation: Generation(3),
            session: renewed.clone(),
        },
    ));
    apply_all(&mut s);
    assert_eq!(take(&mut s), [Message::ok_response(RequestId(3))]);

    let session = || SessionName::new("a");
    let closed = |identity, reason| {
        WorkerReport::Session(SessionEvent::Closed {
            session: session(),
            identity,
            reason,
        })
    };
    s.handle_report(closed(old, EndReason::ConsentExpired));
    s.handle_report(WorkerReport::Session(SessionEvent::Failed {
        session: session(),
        identity: old,
        reason: EndReason::IceTimeout,
        detail: String::new(),
    }));
    s.handle_report(WorkerReport::Session(SessionEvent::Connected {
        session: session(),
        identity: old,
        addr: "198.51.100.2:5000".parse().unwrap(),
    }));
    assert_eq!(take(&mut s), [], "reports about the old incarnation");
    // Nor is the old incarnation's failure replayed after a snapshot.
    s.handle_hangup();
    s.accept(Instant::now()).unwrap();
    s.handle_data(&signaling_hello());
    s.handle_data(&request(4, snapshot(4, vec![renewed])));
    apply_all(&mut s);
    assert_eq!(
        take(&mut s),
        [
            Message::Hello(relay_hello()),
            Message::ok_response(RequestId(4))
        ]
    );

    s.handle_report(closed(old, EndReason::Replaced));
    s.handle_report(closed(new, EndReason::ConsentExpired));
    let reasons: Vec<_> = take(&mut s)
        .into_iter()
        .map(|m| match m {
            Message::Notification(NotificationBody::SessionClosed { reason, .. }) => reason,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            crate::control::EndReason::Replaced,
            crate::control::EndReason::ConsentExpired
        ]
    );
}

/// Once signaling has removed a session, the only report about it is the close the
/// removal causes: a check, handshake or consent that ran out just before the workers
/// applied the removal, or a speaker change of the session, would be news about a call
/// signaling has let go of (and, were the session upserted again, taken for the new
/// one's).
#[test]
fn a_report_about_a_removed_session_is_dropped() {
    let mut s = connected(Limits::default());
    with_session_a(&mut s);
    s.handle_data(&request(
        3,
        RequestBody::RemoveSession {
            generation: Generation(3),
            session_id: SessionId::new("a").unwrap(),
        },
    ));
    apply_all(&mut s);
    take(&mut s);
    let session = || SessionName::new("a");
    let closed = |reason| {
        WorkerReport::Session(SessionEvent::Closed {
            session: session(),
            identity: identity("a"),
            reason,
        })
    };
    s.handle_report(closed(EndReason::ConsentExpired));
    s.handle_report(WorkerReport::Session(SessionEvent::Failed {
        session: session(),
        identity: identity("a"),
        reason: EndReason::IceTimeout,
        detail: String::new(),
    }));
    s.handle_report(WorkerReport::Session(SessionEvent::Connected {
        session: session(),
        identity: identity("a"),
        addr: "198.51.100.2:5000".parse().unwrap(),
    }));
    s.handle_report(WorkerReport::Session(SessionEvent::ActiveSpeaker {
        conf: crate::engine::ConfName::new("c"),
        session: session(),
    }));
    assert_eq!(take(&mut s), [], "reports about the removed session");
    s.handle_report(closed(EndReason::Removed));
    let got = take(&mut s);
    assert!(
        matches!(
            &got[..],
            [Message::Notification(NotificationBody::SessionClosed { reason, .. })]
                if *reason == crate::control::EndReason::Removed
        ),
        "the close the removal caused: {got:?}"
    );
}

/// Signaling connects again and sends a snapshot of session `a` (generation 3), which
/// every worker applies: what the server then writes.
fn back_with_a_snapshot_of_a(s: &mut ControlServer) -> Vec<Message> {
    s.accept(Instant::now()).unwrap();
    s.handle_data(&signaling_hello());
    s.handle_data(&request(3, snapshot(3, vec![spec("a")])));
    apply_all(s);
    take(s)
}

/// A session that failed while signaling was away stays failed through the snapshot
/// that lists it: the catch-up says so, or the call would wait forever.
#[test]
fn a_snapshot_is_followed_by_the_sessions_that_failed_meanwhile() {
    let mut s = connected(Limits::default());
    with_session_a(&mut s);
    take(&mut s);
    s.handle_hangup();
    s.handle_report(WorkerReport::Session(SessionEvent::Failed {
        session: SessionName::new("a"),
        identity: identity("a"),
        reason: crate::engine::EndReason::IceTimeout,
        detail: String::new(),
    }));
    let msgs = back_with_a_snapshot_of_a(&mut s);
    assert!(
        matches!(
            &msgs[..],
            [
                Message::Hello(_),
                Message::Response(_),
                Message::Notification(NotificationBody::SessionFailed { session_id, .. }),
            ] if session_id.as_str() == "a"
        ),
        "{msgs:?}"
    );
    // Removed, it is no longer reported.
    s.handle_data(&request(
        4,
        RequestBody::RemoveSession {
            generation: Generation(4),
            session_id: SessionId::new("a").unwrap(),
        },
    ));
    apply_all(&mut s);
    take(&mut s);
    s.handle_data(&request(5, snapshot(5, Vec::new())));
    apply_all(&mut s);
    let msgs = take(&mut s);
    assert!(
        !msgs.iter().any(|m| matches!(
            m,
            Message::Notification(NotificationBody::SessionFailed { .. })
        )),
        "{msgs:?}"
    );
}

/// A session the relay closed while signaling was away (its `session_closed` went to
/// nobody) is reported closed after the snapshot that still lists it, and not created
/// anew.
#[test]
fn a_snapshot_is_followed_by_the_sessions_closed_meanwhile() {
    let mut s = connected(Limits::default());
    with_session_a(&mut s);
    take(&mut s);
    s.handle_hangup();
    let closed = EndReason::ConsentExpired;
    s.handle_report(WorkerReport::Session(SessionEvent::Closed {
        session: SessionName::new("a"),
        identity: identity("a"),
        reason: closed,
    }));
    s.handle_report(WorkerReport::Ended(rules::session_rule(&spec("a")), closed));
    apply_all(&mut s);
    let msgs = back_with_a_snapshot_of_a(&mut s);
    assert!(
        matches!(
            &msgs[..],
            [
                Message::Hello(_),
                Message::Response(_),
                Message::Notification(NotificationBody::SessionClosed { session_id, reason }),
            ] if session_id.as_str() == "a"
                && *reason == crate::control::EndReason::ConsentExpired
        ),
        "{msgs:?}"
    );
    assert_eq!(s.registry().session_count(), 0, "not created anew");
}

#[test]
fn goodbye_from_the_client_closes_and_shutdown_says_goodbye() {
    let mut s = connected(Limits::default());
    s.handle_data(&frame(&Message::Goodbye(Goodbye::new(
        ErrorCode::Shutdown,
        "signaling stops",
    ))));
    assert!(s.wants_close());
    s.handle_data(&request(1, RequestBody::GetStats));
    assert!(take(&mut s).is_empty(), "nothing is read after a goodbye");
    s.handle_hangup();

    let mut s = connected(Limits::default());
    // A response still waiting for the workers is not sent early: only the goodbye.
    s.handle_data(&request(1, conf_upsert(1)));
    s.handle_shutdown();
    let msgs = take(&mut s);
    assert_eq!(msgs.len(), 1);
    assert_eq!(goodbye_code(&msgs), Some(ErrorCode::Shutdown));
    assert!(s.wants_close());
}

#[test]
fn an_ended_session_is_removed_on_every_worker() {
    let mut s = connected(Limits::default());
    with_session_a(&mut s);
    take(&mut s);
    s.handle_report(WorkerReport::Ended(
        rules::session_rule(&spec("a")),
        crate::engine::EndReason::ConsentExpired,
    ));
    for w in 0..WORKERS {
        assert!(
            matches!(s.poll_command(w), Some(Command::RemoveSession(id)) if id.as_str() == "a")
        );
    }
    assert_eq!(s.registry().session_count(), 0);
}
