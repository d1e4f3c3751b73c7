//! The control protocol translated into the engine's own rules and back: the one place
//! that knows both vocabularies (the engine imports nothing of the codec).

use super::{
    ConfId, EndReason, FullSet, Layer, NotificationBody, SessionId, SessionSpec, StreamKind,
    SubscriptionSpec,
};
use crate::engine::{
    self, Command, ConfName, MediaKind, SessionEvent, SessionName, SessionRule, StreamRule,
};

/// The engine's rule for a session.
pub fn session_rule(spec: &SessionSpec) -> SessionRule {
    SessionRule {
        id: session_name(&spec.session_id),
        conf: conf_name(&spec.conf_id),
        ice_ufrag: spec.ice_ufrag.as_str().to_owned(),
        ice_pwd: spec.ice_pwd.as_str().to_owned(),
        remote_ufrag: spec.remote_ufrag.as_str().to_owned(),
        remote_pwd: spec.remote_pwd.as_ref().map(|p| p.as_str().to_owned()),
        fingerprint: spec.dtls_fingerprint.into(),
        streams: spec
            .streams
            .iter()
            .map(|st| StreamRule {
                ssrc: st.ssrc,
                kind: match st.kind {
                    StreamKind::Audio => MediaKind::Audio,
                    StreamKind::Video => MediaKind::Video,
                },
                layer: match st.layer {
                    Layer::Thumbnail => engine::Layer::Thumbnail,
                    Layer::Full => engine::Layer::Full,
                    Layer::None => engine::Layer::Single,
                },
            })
            .collect(),
        extensions: engine::ExtensionIds {
            audio_level: spec.extmap.audio_level,
            frame_marking: spec.extmap.frame_marking,
            abs_send_time: spec.extmap.abs_send_time,
            transport_cc: spec.extmap.transport_cc,
        },
        tmmbr: spec.tmmbr,
    }
}

/// The engine's name of a session.
pub fn session_name(id: &SessionId) -> SessionName {
    SessionName::new(id.as_str())
}

/// The engine's name of a conference.
pub fn conf_name(id: &ConfId) -> ConfName {
    ConfName::new(id.as_str())
}

/// The engine's full-resolution set.
pub fn full_set(full: &FullSet) -> engine::FullSet {
    match full {
        FullSet::All => engine::FullSet::All,
        FullSet::Speaker => engine::FullSet::Speaker,
        FullSet::Ssrcs(s) => engine::FullSet::Ssrcs(s.clone()),
    }
}

/// Whether an upsert from `old` to `new` keeps the engine's session (streams or extmap
/// changed) or replaces it (conference, credentials or fingerprint changed).
pub fn same_identity(old: &SessionSpec, new: &SessionSpec) -> bool {
    session_rule(old).same_identity(&session_rule(new))
}

/// `upsert_session` for every worker.
pub fn upsert_session(spec: &SessionSpec) -> Command {
    Command::UpsertSession(session_rule(spec))
}

/// `remove_session` for every worker.
pub fn remove_session(id: &SessionId) -> Command {
    Command::RemoveSession(session_name(id))
}

/// `upsert_conference` for every worker.
pub fn upsert_conference(id: &ConfId) -> Command {
    Command::UpsertConference(conf_name(id))
}

/// `remove_conference` for every worker.
pub fn remove_conference(id: &ConfId) -> Command {
    Command::RemoveConference(conf_name(id))
}

/// `set_subscription` for every worker.
pub fn set_subscription(sub: &SubscriptionSpec) -> Command {
    Command::SetSubscription {
        session: session_name(&sub.session_id),
        full: full_set(&sub.full),
    }
}

/// The protocol's name for why a session ended.
pub fn end_reason(r: engine::EndReason) -> EndReason {
    match r {
        engine::EndReason::IceTimeout => EndReason::IceTimeout,
        engine::EndReason::ConsentExpired => EndReason::ConsentExpired,
        engine::EndReason::DtlsFailed => EndReason::DtlsFailed,
        engine::EndReason::FingerprintMismatch => EndReason::FingerprintMismatch,
        engine::EndReason::NoSrtpProfile => EndReason::NoSrtpProfile,
        engine::EndReason::Removed => EndReason::Removed,
        engine::EndReason::Replaced => EndReason::Replaced,
        engine::EndReason::Closed => EndReason::Closed,
        engine::EndReason::Other => EndReason::Other,
    }
}

/// The notification for signaling, or `None` if the engine's name is not a valid
/// protocol id (it always is: every name came from the codec).
pub fn notification(ev: SessionEvent) -> Option<NotificationBody> {
    let id = |s: &SessionName| SessionId::new(s.as_str()).ok();
    Some(match ev {
        SessionEvent::Connected { session, addr, .. } => NotificationBody::SessionConnected {
            session_id: id(&session)?,
            addr,
        },
        SessionEvent::Failed {
            session,
            reason,
            detail,
            ..
        } => NotificationBody::SessionFailed {
            session_id: id(&session)?,
            reason: end_reason(reason),
            detail,
        },
        SessionEvent::Closed {
            session, reason, ..
        } => NotificationBody::SessionClosed {
            session_id: id(&session)?,
            reason: end_reason(reason),
        },
        SessionEvent::ActiveSpeaker { conf, session } => NotificationBody::ActiveSpeaker {
            conf_id: ConfId::new(conf.as_str()).ok()?,
            session_id: id(&session)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ExtmapIds, Fingerprint, IcePwd, IceUfrag, StreamKind, StreamSpec};
    use crate::id::Ssrc;

    #[test]
    fn a_spec_becomes_the_rule_the_engine_runs() {
        let spec = SessionSpec {
            session_id: SessionId::new("@a:x|D").unwrap(),
            conf_id: ConfId::new("!c:x").unwrap(),
            ice_ufrag: IceUfrag::new("rly1").unwrap(),
            ice_pwd: IcePwd::new("abcdefghijklmnopqrstuv+/").unwrap(),
            remote_ufrag: IceUfrag::new("peer").unwrap(),
            remote_pwd: None,
            dtls_fingerprint: Fingerprint([3; 32]),
            streams: vec![StreamSpec {
                ssrc: Ssrc(7),
                kind: StreamKind::Video,
                layer: Layer::None,
            }],
            extmap: ExtmapIds::default(),
            tmmbr: false,
        };
        let rule = session_rule(&spec);
        assert_eq!(rule.id.as_str(), "@a:x|D");
        assert_eq!(rule.conf.as_str(), "!c:x");
        assert_eq!(rule.fingerprint.0, [3; 32]);
        assert_eq!(rule.streams[0].layer, engine::Layer::Single);
        assert_eq!(rule.extensions, engine::ExtensionIds::default());
        let mut other = spec.clone();
        other.extmap.audio_level = Some(crate::id::ExtId(1));
        other.extmap.frame_marking = Some(crate::id::ExtId(2));
        let ext = session_rule(&other).extensions;
        assert_eq!(ext.audio_level, Some(crate::id::ExtId(1)));
        assert_eq!(ext.frame_marking, Some(crate::id::ExtId(2)));
        assert!(same_identity(&spec, &other), "extmap only");
        other.ice_pwd = IcePwd::new("zyxwvutsrqponmlkjihgfe+/").unwrap();
        assert!(!same_identity(&spec, &other));
    }

    #[test]
    fn a_speaker_change_becomes_the_documented_notification() {
        let note = notification(SessionEvent::ActiveSpeaker {
            conf: ConfName::new("!room:example.org"),
            session: SessionName::new("@alice:example.org|ALICEDEV"),
        })
        .unwrap();
        // docs/control-protocol.md, "Notifications".
        let doc = r#"{"type":"notification","event":"active_speaker",
 "data":{"conf_id":"!room:example.org","session_id":"@alice:example.org|ALICEDEV"}}"#;
        let doc = crate::control::decode(doc.as_bytes()).unwrap();
        assert_eq!(doc, crate::control::Message::Notification(note));
    }
}
