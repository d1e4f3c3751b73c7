use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::{ExtId, Ssrc};

const FP: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

fn session(id: &str, conf: &str, ssrcs: &[u32]) -> SessionSpec {
    SessionSpec {
        session_id: SessionId::new(id).unwrap(),
        conf_id: ConfId::new(conf).unwrap(),
        ice_ufrag: IceUfrag::new("rly1").unwrap(),
        ice_pwd: IcePwd::new("abcdefghijklmnopqrstuv+/").unwrap(),
        remote_ufrag: IceUfrag::new("Cl/+").unwrap(),
        remote_pwd: None,
        dtls_fingerprint: FP.parse().unwrap(),
        streams: ssrcs
            .iter()
            .enumerate()
            .map(|(i, &s)| StreamSpec {
                ssrc: Ssrc(s),
                kind: if i == 0 {
                    StreamKind::Audio
                } else {
                    StreamKind::Video
                },
                layer: match i {
                    0 => Layer::None,
                    1 => Layer::Thumbnail,
                    _ => Layer::Full,
                },
            })
            .collect(),
        extmap: ExtmapIds {
            audio_level: Some(ExtId(1)),
            frame_marking: None,
            abs_send_time: Some(ExtId(3)),
            transport_cc: Some(ExtId(5)),
        },
        tmmbr: false,
    }
}

fn stats() -> StatsReport {
    StatsReport {
        conferences: 2,
        sessions: 5,
        connected_sessions: 4,
        rx_packets: 1000,
        rx_bytes: 1_000_000,
        tx_packets: u64::MAX,
        tx_bytes: 7,
        drops: BTreeMap::from([("rtp_unknown_ssrc".to_owned(), 3)]),
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        generation: Generation(42),
        conferences: vec![
            ConferenceSpec {
                conf_id: ConfId::new("!room:example.org").unwrap(),
            },
            ConferenceSpec {
                conf_id: ConfId::new("!other:example.org").unwrap(),
            },
        ],
        sessions: vec![
            session("@a:example.org|DEV1", "!room:example.org", &[1, 2, 3]),
            session("@b:example.org|DEV2", "!room:example.org", &[4, 5, 6]),
            session("@c:example.org|DEV3", "!other:example.org", &[]),
        ],
        subscriptions: vec![
            SubscriptionSpec {
                session_id: SessionId::new("@a:example.org|DEV1").unwrap(),
                full: FullSet::Ssrcs(vec![Ssrc(6)]),
            },
            SubscriptionSpec {
                session_id: SessionId::new("@b:example.org|DEV2").unwrap(),
                full: FullSet::All,
            },
        ],
    }
}

fn every_message() -> Vec<Message> {
    let sid = SessionId::new("s1").unwrap();
    let cid = ConfId::new("c1").unwrap();
    let g = Generation(7);
    let req = |id, body| {
        Message::Request(Request {
            id: RequestId(id),
            body,
        })
    };
    vec![
        Message::Hello(Hello::signaling("blindfold-signaling/0.1.0")),
        Message::Hello(Hello::relay(
            "blindfold-relay/0.1.0",
            FP.parse().unwrap(),
            vec![
                "203.0.113.7:3478".parse().unwrap(),
                "[2001:db8::7]:3478".parse().unwrap(),
            ],
        )),
        req(
            1,
            RequestBody::UpsertConference {
                generation: g,
                conference: ConferenceSpec {
                    conf_id: cid.clone(),
                },
            },
        ),
        req(
            2,
            RequestBody::RemoveConference {
                generation: g,
                conf_id: cid.clone(),
            },
        ),
        req(
            3,
            RequestBody::UpsertSession {
                generation: g,
                session: session("s1", "c1", &[10, 11, 12]),
            },
        ),
        req(
            4,
            RequestBody::RemoveSession {
                generation: g,
                session_id: sid.clone(),
            },
        ),
        req(
            5,
            RequestBody::SetSubscription {
                generation: g,
                subscription: SubscriptionSpec {
                    session_id: sid.clone(),
                    full: FullSet::Ssrcs(vec![Ssrc(12), Ssrc(u32::MAX)]),
                },
            },
        ),
        req(
            6,
            RequestBody::SetSubscription {
                generation: g,
                subscription: SubscriptionSpec {
                    session_id: sid.clone(),
                    full: FullSet::All,
                },
            },
        ),
        req(7, RequestBody::Snapshot(snapshot())),
        req(u64::MAX, RequestBody::GetStats),
        Message::ok_response(RequestId(1)),
        Message::Response(Response {
            id: RequestId(9),
            result: Ok(ResponseBody::Stats(stats())),
        }),
        Message::error_response(RequestId(3), ErrorCode::StaleGeneration, "generation 7 < 9"),
        Message::Notification(NotificationBody::SessionConnected {
            session_id: sid.clone(),
            addr: "198.51.100.2:50000".parse().unwrap(),
        }),
        Message::Notification(NotificationBody::SessionFailed {
            session_id: sid.clone(),
            reason: EndReason::FingerprintMismatch,
            detail: "certificate digest differs".into(),
        }),
        Message::Notification(NotificationBody::SessionClosed {
            session_id: sid.clone(),
            reason: EndReason::ConsentExpired,
        }),
        Message::Notification(NotificationBody::ActiveSpeaker {
            conf_id: cid,
            session_id: sid,
        }),
        Message::Notification(NotificationBody::Stats(stats())),
        Message::Goodbye(Goodbye::new(ErrorCode::Shutdown, "relay stopping")),
    ]
}

fn frame_of(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, &mut out).unwrap();
    out
}

fn body_of(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn decode_json(v: Value) -> Result<Message, ControlError> {
    decode(&body_of(&v))
}

/// A valid upsert_session request as JSON, for tests to break.
fn upsert_json() -> Value {
    serde_json::from_slice(&frame_of(&every_message()[4])[4..]).unwrap()
}

#[test]
fn every_message_round_trips() {
    for msg in every_message() {
        let frame = frame_of(&msg);
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(
            decode(&frame[4..]).unwrap(),
            msg,
            "{}",
            String::from_utf8_lossy(&frame[4..])
        );
    }
}

#[test]
fn stream_split_at_every_byte_decodes_identically() {
    let msgs = every_message();
    let mut stream = Vec::new();
    for m in &msgs {
        encode(m, &mut stream).unwrap();
    }
    let run = |parts: &[&[u8]]| {
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for part in parts {
            let mut p = *part;
            loop {
                let used = dec.push(p);
                p = &p[used..];
                while let Some(f) = dec.next_frame().unwrap() {
                    got.push(decode(&f).unwrap());
                }
                if p.is_empty() {
                    break;
                }
            }
        }
        dec.finish().unwrap();
        got
    };
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(run(&[a, b]), msgs, "cut at {cut}");
    }
}

#[test]
fn wire_format_is_as_documented() {
    let v: Value = serde_json::from_slice(&frame_of(&every_message()[9])[4..]).unwrap();
    assert_eq!(
        v,
        json!({"type": "request", "id": u64::MAX, "method": "get_stats", "params": {}})
    );
    let v: Value =
        serde_json::from_slice(&frame_of(&Message::ok_response(RequestId(1)))[4..]).unwrap();
    assert_eq!(v, json!({"type": "response", "id": 1, "result": "ok"}));
    let v = upsert_json();
    assert_eq!(v["params"]["session"]["dtls_fingerprint"], FP);
    assert_eq!(
        v["params"]["session"]["streams"][1],
        json!({"ssrc": 11, "kind": "video", "layer": "thumbnail"})
    );
    // Lower-case hex and absent extmap are accepted.
    let mut v = upsert_json();
    v["params"]["session"]["dtls_fingerprint"] = json!(FP.to_lowercase());
    v["params"]["session"]
        .as_object_mut()
        .unwrap()
        .remove("extmap");
    let Message::Request(Request {
        body: RequestBody::UpsertSession { session, .. },
        ..
    }) = decode_json(v).unwrap()
    else {
        panic!()
    };
    assert_eq!(session.dtls_fingerprint.to_string(), FP);
    assert_eq!(session.extmap, ExtmapIds::default());
}

fn expect_bad_request(v: Value, needle: &str) {
    let err = decode_json(v).unwrap_err();
    assert!(
        matches!(&err, ControlError::BadRequest { id: RequestId(3), reason } if reason.contains(needle)),
        "expected bad_request mentioning {needle:?}, got {err:?}"
    );
    let Disposition::Reply(Message::Response(Response { id, result: Err(e) })) = err.disposition()
    else {
        panic!("bad_request must be answered");
    };
    assert_eq!(id, RequestId(3));
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains(needle));
}

#[test]
fn invalid_ufrag_is_bad_request() {
    for bad in ["abc", "abc!", "ab cd", &"a".repeat(257)] {
        let mut v = upsert_json();
        v["params"]["session"]["remote_ufrag"] = json!(bad);
        expect_bad_request(v, "ICE ufrag");
    }
    let mut v = upsert_json();
    v["params"]["session"]["ice_pwd"] = json!("tooshort");
    expect_bad_request(v, "ICE pwd must be 22..=256");
    let mut v = upsert_json();
    v["params"]["session"]["ice_pwd"] = json!("abcdefghijklmnopqrstuv-x");
    expect_bad_request(v, "ICE pwd has byte 0x2d");
}

#[test]
fn invalid_fingerprint_is_bad_request() {
    for bad in [
        &FP[..FP.len() - 3],           // 31 groups
        &format!("{FP}:00"),           // 33 groups
        &format!("sha-256 {FP}"),      // SDP prefix
        &FP.replace(':', ""),          // no colons
        &FP.replacen("AB", "AG", 1),   // not hex
        &FP.replacen("AB:", "A:B", 1), // misplaced colon
        "",
    ] {
        let mut v = upsert_json();
        v["params"]["session"]["dtls_fingerprint"] = json!(bad);
        expect_bad_request(v, "malformed SHA-256 fingerprint");
    }
}

#[test]
fn duplicate_ssrc_is_bad_request() {
    let mut v = upsert_json();
    v["params"]["session"]["streams"][2]["ssrc"] = json!(10);
    expect_bad_request(v, "duplicate ssrc 10");

    let mut v = upsert_json();
    v["params"]["session"]["streams"][0]["layer"] = json!("full");
    expect_bad_request(v, "audio stream ssrc 10 must have layer");

    let mut v = upsert_json();
    v["params"]["session"]["extmap"]["transport_cc"] = json!(1);
    expect_bad_request(v, "audio_level and transport_cc both use id 1");

    let mut v = upsert_json();
    v["params"]["session"]["extmap"]["transport_cc"] = json!(0);
    expect_bad_request(v, "expected an extmap id (1..=255");

    let mut v = upsert_json();
    let s = json!({"ssrc": 1, "kind": "video", "layer": "none"});
    let streams: Vec<Value> = (0..65)
        .map(|i| {
            let mut s = s.clone();
            s["ssrc"] = json!(i);
            s
        })
        .collect();
    v["params"]["session"]["streams"] = json!(streams);
    expect_bad_request(v, "65 streams, at most 64");
}

#[test]
fn bad_fields_are_bad_request() {
    let mut v = upsert_json();
    v["params"]["session"]["surprise"] = json!(1);
    expect_bad_request(v, "unknown field `surprise`");
    let mut v = upsert_json();
    v["params"]["session"]
        .as_object_mut()
        .unwrap()
        .remove("ice_pwd");
    expect_bad_request(v, "missing field `ice_pwd`");
    let mut v = upsert_json();
    v["params"]["generation"] = json!(-1);
    expect_bad_request(v, "integer `-1`, expected a generation");
    let mut v = upsert_json();
    v["params"]["session"]["streams"][1]["ssrc"] = json!(1u64 << 32);
    expect_bad_request(v, "expected an SSRC");
    let mut v = upsert_json();
    v["extra"] = json!(true);
    expect_bad_request(v, "unknown field `extra`");
    let mut v = upsert_json();
    v["params"]["session"]["session_id"] = json!("has space");
    expect_bad_request(v, "session_id has byte 0x20");
    let mut v = upsert_json();
    v["params"]["session"]["streams"][0]["kind"] = json!("data");
    expect_bad_request(v, "unknown variant `data`");
    let mut v = upsert_json();
    v.as_object_mut().unwrap().remove("method");
    expect_bad_request(v, "missing string field `method`");
}

#[test]
fn unknown_method_is_answered_with_its_id() {
    let err = decode_json(json!({"type": "request", "id": 77, "method": "reboot", "params": {}}))
        .unwrap_err();
    assert_eq!(
        err,
        ControlError::UnknownMethod {
            id: RequestId(77),
            method: "reboot".into()
        }
    );
    let Disposition::Reply(reply) = err.disposition() else {
        panic!()
    };
    let Message::Response(Response { id, result: Err(e) }) = &reply else {
        panic!()
    };
    assert_eq!(*id, RequestId(77));
    assert_eq!(e.code, ErrorCode::UnknownMethod);
    assert!(e.message.contains("reboot"));
    // The reply itself is a valid message.
    assert_eq!(decode(&frame_of(&reply)[4..]).unwrap(), reply);
    let v: Value = serde_json::from_slice(&frame_of(&reply)[4..]).unwrap();
    assert_eq!(v["error"]["code"], "unknown_method");
}

#[test]
fn garbage_closes_unless_a_request_id_is_readable() {
    let closes = [
        &b"not json"[..],
        b"[1,2,3]",
        b"\"request\"",
        b"{}",
        b"{\"type\":5}",
        b"{\"type\":\"bogus\"}",
        b"{\"type\":\"request\",\"method\":\"get_stats\",\"params\":{}}",
        b"{\"type\":\"request\",\"id\":\"1\",\"method\":\"get_stats\",\"params\":{}}",
        b"{\"type\":\"request\",\"id\":-1,\"method\":\"get_stats\",\"params\":{}}",
        b"{\"type\":\"request\",\"id\":1,\"method\":\"get_stats\",\"params\":{}",
        b"{\"type\":\"request\",\"type\":\"request\",\"id\":1}",
        b"{\"type\":\"response\",\"id\":1}",
        b"{\"type\":\"response\",\"id\":1,\"result\":\"ok\",\"error\":{\"code\":\"internal\",\"message\":\"\"}}",
        b"{\"type\":\"notification\",\"event\":\"bogus\",\"data\":{}}",
        b"{\"type\":\"hello\",\"version\":1,\"role\":\"relay\"}",
        b"{\"type\":\"hello\",\"role\":\"signaling\"}",
        b"\xff\xfe",
        b"",
    ];
    for body in closes {
        let err = decode(body).unwrap_err();
        assert!(
            matches!(err.disposition(), Disposition::Close(Message::Goodbye(_))),
            "{:?} → {err:?}",
            String::from_utf8_lossy(body)
        );
    }
    // Deep nesting is refused by serde_json's recursion limit, not the stack.
    let deep = format!(
        "{{\"type\":\"request\",\"id\":1,\"x\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(decode(deep.as_bytes()).is_err());
    // A readable id makes it an answered bad request, even with broken params.
    let err =
        decode(b"{\"type\":\"request\",\"id\":5,\"method\":\"upsert_session\",\"params\":[]}")
            .unwrap_err();
    assert_eq!(err.request_id(), Some(RequestId(5)));
    assert!(matches!(err.disposition(), Disposition::Reply(_)));
}

#[test]
fn truncated_body_at_every_length_is_an_error() {
    for msg in every_message() {
        let body = &frame_of(&msg)[4..];
        for cut in 0..body.len() {
            assert!(decode(&body[..cut]).is_err(), "{msg:?} cut at {cut}");
        }
    }
}

#[test]
fn version_mismatch_is_refused() {
    let err = decode_json(
        json!({"type": "hello", "version": 2, "role": "signaling", "brand_new_field": 1}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ControlError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: 2
        }
    );
    let Disposition::Close(Message::Goodbye(g)) = err.disposition() else {
        panic!()
    };
    assert_eq!(g.code, ErrorCode::VersionMismatch);
    assert!(g.message.contains("version 2"));

    // Negotiation: same major, opposite roles; lowest minor wins.
    let ours = Hello::relay(
        "r",
        FP.parse().unwrap(),
        vec!["192.0.2.1:3478".parse().unwrap()],
    );
    let mut theirs = Hello::signaling("s");
    theirs.minor = 5;
    assert_eq!(ours.negotiate(&theirs), Ok(PROTOCOL_MINOR));
    theirs.version = 9;
    assert!(matches!(
        ours.negotiate(&theirs),
        Err(ControlError::VersionMismatch { theirs: 9, .. })
    ));
    assert!(matches!(
        ours.negotiate(&ours.clone()),
        Err(ControlError::ProtocolViolation { .. })
    ));
    // Minor and software default when absent.
    let m = decode_json(json!({"type": "hello", "version": 1, "role": "signaling"})).unwrap();
    assert_eq!(
        m,
        Message::Hello(Hello {
            version: 1,
            minor: 0,
            software: String::new(),
            role: HelloRole::Signaling
        })
    );
    // A field a later minor adds to the hello is ignored, not refused; a field twice
    // is still malformed.
    let later = json!({"type": "hello", "version": 1, "minor": 7, "role": "signaling",
        "resume_token": "abc"});
    assert!(matches!(
        decode_json(later),
        Ok(Message::Hello(Hello { minor: 7, .. }))
    ));
    let twice = br#"{"type":"hello","version":1,"role":"signaling","software":"a","software":"b"}"#;
    assert!(matches!(decode(twice), Err(ControlError::Malformed { .. })));
}

#[test]
fn message_order_is_checked() {
    let msgs = every_message();
    let hello = &msgs[0];
    let request = &msgs[9];
    let response = &msgs[10];
    let note = &msgs[13];
    let bye = msgs.last().unwrap();
    assert!(hello.check_order(Role::Relay, false).is_ok());
    assert!(hello.check_order(Role::Relay, true).is_err());
    assert!(request.check_order(Role::Relay, false).is_err());
    assert!(request.check_order(Role::Relay, true).is_ok());
    assert!(request.check_order(Role::Signaling, true).is_err());
    assert!(response.check_order(Role::Signaling, true).is_ok());
    assert!(note.check_order(Role::Relay, true).is_err());
    assert!(bye.check_order(Role::Signaling, false).is_ok());
}

#[test]
fn snapshot_consistency_is_checked() {
    let req = |s: Snapshot| json!({"type": "request", "id": 3, "method": "snapshot", "params": s});
    let mut s = snapshot();
    s.sessions.push(s.sessions[0].clone());
    expect_bad_request(req(s), "session @a:example.org|DEV1 listed twice");
    let mut s = snapshot();
    s.conferences.pop();
    expect_bad_request(req(s), "conference !other:example.org, which is not listed");
    let mut s = snapshot();
    s.subscriptions[1].session_id = SessionId::new("ghost").unwrap();
    expect_bad_request(
        req(s),
        "subscription for session ghost, which is not listed",
    );
    let mut s = snapshot();
    s.subscriptions[1].session_id = s.subscriptions[0].session_id.clone();
    expect_bad_request(req(s), "two subscriptions");
    let mut s = snapshot();
    s.subscriptions[0].full = FullSet::Ssrcs(vec![Ssrc(1), Ssrc(1)]);
    expect_bad_request(req(s), "duplicate ssrc 1 in full");
    let mut s = snapshot();
    s.sessions[2].streams = vec![
        StreamSpec {
            ssrc: Ssrc(9),
            kind: StreamKind::Video,
            layer: Layer::Full
        };
        2
    ];
    expect_bad_request(req(s), "duplicate ssrc 9");
    // Over-long subscription lists are refused while parsing.
    let mut v = req(snapshot());
    v["params"]["subscriptions"][0]["full"] = json!((0..1025).collect::<Vec<u32>>());
    expect_bad_request(v, "at most 1024 ssrcs");
    // encode refuses an invalid message too.
    let mut s = snapshot();
    s.conferences.push(s.conferences[0].clone());
    let mut out = Vec::new();
    let m = Message::Request(Request {
        id: RequestId(1),
        body: RequestBody::Snapshot(s),
    });
    assert!(matches!(
        encode(&m, &mut out),
        Err(ControlError::Invalid { .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn full_size_snapshot_fits_a_frame() {
    let n = MAX_SNAPSHOT_SESSIONS;
    let mut s = Snapshot {
        generation: Generation(u64::MAX),
        conferences: (0..n / 10)
            .map(|c| ConferenceSpec {
                conf_id: ConfId::new(format!("!conference{c:05}:matrix.example.org")).unwrap(),
            })
            .collect(),
        sessions: Vec::with_capacity(n),
        subscriptions: Vec::with_capacity(n),
    };
    for i in 0..n {
        let base = (i as u32) * 4;
        let mut sp = session(
            &format!("@participant{i:05}:matrix.example.org|DEVICEID{i:05}"),
            &format!("!conference{:05}:matrix.example.org", i / 10),
            &[base, base + 1, base + 2],
        );
        sp.ice_pwd = IcePwd::new("a".repeat(32)).unwrap();
        sp.ice_ufrag = IceUfrag::new(format!("u{i:07}")).unwrap();
        s.subscriptions.push(SubscriptionSpec {
            session_id: sp.session_id.clone(),
            full: FullSet::Ssrcs((0..9).map(|k| Ssrc(base ^ (k * 4 + 2))).collect()),
        });
        s.sessions.push(sp);
    }
    let m = Message::Request(Request {
        id: RequestId(1),
        body: RequestBody::Snapshot(s),
    });
    let mut out = Vec::new();
    encode(&m, &mut out).unwrap();
    assert!(out.len() < MAX_FRAME_LEN / 2, "{} bytes", out.len());
    eprintln!("full snapshot: {} bytes", out.len());
    assert_eq!(decode(&out[4..]).unwrap(), m);
}

#[test]
fn constructors_validate() {
    assert!(SessionId::new("").is_err());
    assert!(SessionId::new("x".repeat(256)).is_err());
    assert!(SessionId::new("x".repeat(255)).is_ok());
    assert!(ConfId::new("!room\n").is_err());
    assert!(IceUfrag::new("abcd").is_ok());
    assert!(IceUfrag::new("a".repeat(256)).is_ok());
    assert!(IcePwd::new("a".repeat(21)).is_err());
    assert!(IcePwd::new("a".repeat(22)).is_ok());
    assert_eq!(
        format!("{:?}", IcePwd::new("a".repeat(22)).unwrap()),
        "IcePwd(<redacted>)"
    );
    let err = IcePwd::new(format!("{}é", "a".repeat(22))).unwrap_err();
    assert!(!err.to_string().contains("aaaa"), "never echo a password");
    let fp: Fingerprint = FP.parse().unwrap();
    assert_eq!(fp.0[..2], [0xab, 0xcd]);
    assert!("AB:CD".parse::<Fingerprint>().is_err());
    assert!(FP.replacen("AB", "ÄB", 1).parse::<Fingerprint>().is_err());
}

#[test]
fn unknown_codes_and_reasons_from_newer_peers_decode() {
    let m = decode_json(json!({"type": "goodbye", "code": "quantum_flux", "message": ""})).unwrap();
    assert_eq!(m, Message::Goodbye(Goodbye::new(ErrorCode::Unknown, "")));
    let m = decode_json(json!({"type": "notification", "event": "session_closed",
        "data": {"session_id": "s", "reason": "solar_flare"}}))
    .unwrap();
    assert!(matches!(
        m,
        Message::Notification(NotificationBody::SessionClosed {
            reason: EndReason::Other,
            ..
        })
    ));
}

#[test]
fn text_is_clipped_on_a_char_boundary() {
    let long = "é".repeat(MAX_TEXT_LEN);
    let g = Goodbye::new(ErrorCode::Internal, long);
    assert!(g.message.len() <= MAX_TEXT_LEN);
    assert!(g.message.ends_with('…'));
    let m = Message::Goodbye(g);
    assert_eq!(decode(&frame_of(&m)[4..]).unwrap(), m);
    let too_long =
        json!({"type": "goodbye", "code": "internal", "message": "x".repeat(MAX_TEXT_LEN + 1)});
    assert!(decode_json(too_long).is_err());
}

#[cfg(feature = "fuzz")]
#[test]
fn fuzz_one_survives_samples() {
    let mut stream = vec![3u8];
    for m in every_message() {
        encode(&m, &mut stream).unwrap();
    }
    fuzz_one(&stream);
    for cut in 0..stream.len() {
        fuzz_one(&stream[..cut]);
    }
    for m in every_message() {
        fuzz_one(&frame_of(&m)[4..]);
    }
    fuzz_one(b"\x00\x00\x00\x00\x00");
    fuzz_one(b"\x07\xff\xff\xff\xff");
    fuzz_one(b"{\"type\":\"request\",\"id\":1,\"method\":\"nope\",\"params\":{}}");
}

/// A cheap stand-in for the fuzzer in ordinary test runs: deterministic mutations of
/// valid bodies (byte flips, JSON-ish token splices), each through `fuzz_one`.
#[cfg(feature = "fuzz")]
#[test]
fn fuzz_one_survives_mutations() {
    let tokens: [&[u8]; 12] = [
        b"\"", b"{", b"}", b"[", b"]", b",", b":", b"-1", b"null", b"\"all\"", b"1e3", b"\\u0000",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for m in every_message() {
        let body = frame_of(&m)[4..].to_vec();
        for _ in 0..300 {
            let mut b = body.clone();
            for _ in 0..(rnd() % 3 + 1) {
                let at = (rnd() as usize) % (b.len() + 1);
                match rnd() % 3 {
                    0 if at < b.len() => b[at] ^= 1 << (rnd() % 8),
                    1 => {
                        let t = tokens[(rnd() as usize) % tokens.len()];
                        b.splice(at..at, t.iter().copied());
                    }
                    _ if at < b.len() => {
                        let end = (at + (rnd() as usize) % 8).min(b.len());
                        b.drain(at..end);
                    }
                    _ => {}
                }
            }
            fuzz_one(&b);
        }
    }
}

#[test]
fn doc_examples_decode() {
    let doc = include_str!("../../docs/control-protocol.md");
    let mut n = 0;
    for block in doc.split("```json\n").skip(1) {
        let body = block.split("```").next().unwrap();
        let msg = decode(body.as_bytes())
            .unwrap_or_else(|e| panic!("doc example does not decode: {e}\n{body}"));
        assert_eq!(decode(&frame_of(&msg)[4..]).unwrap(), msg);
        n += 1;
    }
    assert!(n >= 20, "only {n} examples found");
}
