//! The relay's authoritative rule state, kept by the control thread (sans-IO).
//!
//! The control codec checks each message on its own; the [`Registry`] checks what
//! needs the relay's state, as `docs/control-protocol.md` says:
//!
//! - **Generations.** Per conference, per session and per subscription it keeps the
//!   generation of the state it holds, removals included (a tombstone). A request is
//!   applied if its generation is newer, answered `ok` with no effect if the generation
//!   is equal and the content the same (a retransmission), and refused with
//!   `stale_generation` otherwise.
//! - **References.** A session's conference must exist, and a subscription's session
//!   (`not_found`). An SSRC is unique across the sessions of one conference
//!   (`bad_request`): the engine routes by SSRC within a conference. No session may
//!   declare the relay's own SSRC ([`Ssrc::RELAY`], `bad_request`).
//! - **Snapshots.** After a reconnect, signaling sends the whole desired state; the
//!   registry reconciles to it and emits commands only for what changed, so a session
//!   whose spec is unchanged is not disturbed (its ICE, DTLS and SRTCP state live on).
//!
//! [`Registry::apply`] returns the answer and the [`Command`]s that carry the change to
//! the engines; the caller sends every command to **every** worker, in order. The
//! registry never does IO, so it is driven the same way in unit tests.
//!
//! ```
//! use blindfold_relay::control::registry::Registry;
//! use blindfold_relay::control::{ConfId, ConferenceSpec, Generation, RequestBody, ResponseBody};
//!
//! let mut reg = Registry::new();
//! let upsert = RequestBody::UpsertConference {
//!     generation: Generation(1),
//!     conference: ConferenceSpec { conf_id: ConfId::new("!room:example.org").unwrap() },
//! };
//! let (answer, commands) = reg.apply(upsert.clone());
//! assert_eq!(answer, Ok(ResponseBody::Ok));
//! assert_eq!(commands.len(), 1); // broadcast to every worker
//! let (answer, commands) = reg.apply(upsert); // a retransmission
//! assert_eq!(answer, Ok(ResponseBody::Ok));
//! assert!(commands.is_empty());
//! ```
//!
//! - **Sessions the relay closed.** A connected session whose consent expired (or whose
//!   DTLS failed) is gone, as `session_closed` says: [`Registry::observe_ended`] turns
//!   it into a tombstone at its generation and returns the removal for the workers.
//!   `get_stats` no longer counts it and `set_subscription` answers `not_found`; the
//!   same upsert again (a retransmission, same generation) creates it anew, with the
//!   subscription it had. A snapshot that lists it (a signaling that was away when the
//!   close was reported, and so still holds the call) leaves it closed, and the
//!   catch-up after the snapshot reports the close again ([`Registry::closed`]).
//!
//! Tombstones of removed objects are kept until the next snapshot, which replaces them
//! all with one floor generation (every object not held is taken to be removed at the
//! snapshot's generation), or until more than [`MAX_TOMBSTONES`] of one kind are held:
//! the older half then goes, and the floor rises to the newest of them, so a relay that
//! never sees a snapshot does not grow with every call it ever had.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::rules::{self, same_identity};
use super::{
    ConfId, ConferenceSpec, ErrorCode, ErrorReply, FullSet, Generation, NotificationBody,
    RequestBody, ResponseBody, SessionId, SessionSpec, Snapshot, StatsReport, SubscriptionSpec,
};
use crate::engine::{Command, EndReason, SessionEvent, SessionRule};
use crate::id::Ssrc;

/// The state held for one object and the generation it carries. `state: None` is a
/// tombstone: the object was removed at `generation`.
#[derive(Debug, Clone)]
struct Held<T> {
    generation: Generation,
    state: Option<T>,
}

/// The answer to a request and the commands to send to every worker.
pub type Outcome = (Result<ResponseBody, ErrorReply>, Vec<Command>);

/// What a generation check decided.
enum Verdict {
    /// Newer: apply.
    Apply,
    /// Equal generation, same content: answer `ok`, change nothing.
    Repeat,
}

/// The relay's rule state: conferences, sessions and subscriptions with their
/// generations, and which sessions the workers reported connected. See the module docs.
#[derive(Debug, Default)]
pub struct Registry {
    conferences: BTreeMap<ConfId, Held<()>>,
    sessions: BTreeMap<SessionId, Held<SessionSpec>>,
    subscriptions: BTreeMap<SessionId, Held<FullSet>>,
    /// The generation of every object the maps do not hold: the last snapshot's (which
    /// removed everything it did not list); `None` before the first snapshot.
    floor: Option<Generation>,
    /// Sessions reported connected (from the workers' notifications), and where.
    connected: BTreeMap<SessionId, SocketAddr>,
    /// Sessions reported failed (`session_failed`, kept whole), until removed or
    /// restarted: a snapshot does not revive them, so the catch-up after one tells a
    /// signaling that was away.
    failed: BTreeMap<SessionId, NotificationBody>,
    /// Sessions the relay closed on its own, with the spec they had and the close
    /// (their entry in `sessions` is a tombstone at the generation they were created
    /// with, or at the snapshot's that listed them since).
    ended: BTreeMap<SessionId, Ended>,
}

/// A session the relay closed on its own.
#[derive(Debug, Clone)]
struct Ended {
    /// The spec it had: the same upsert again creates it anew.
    spec: SessionSpec,
    /// The `session_closed` that reported it, for a snapshot's catch-up.
    note: NotificationBody,
}

/// Tombstones of one kind (conferences, sessions, subscriptions) held before the older
/// half are folded into the floor.
pub const MAX_TOMBSTONES: usize = 4096;

/// Past [`MAX_TOMBSTONES`] tombstones in `map`, removes the older half and raises
/// `floor` to the newest of them (objects not held count as removed at the floor, so
/// every request they answered stale is still stale); returns their keys.
fn fold_tombstones<K: Ord + Clone, T>(
    map: &mut BTreeMap<K, Held<T>>,
    floor: &mut Option<Generation>,
    keep: impl Fn(&K) -> bool,
) -> Vec<K> {
    let mut dead: Vec<(Generation, K)> = map
        .iter()
        .filter(|(k, h)| h.state.is_none() && !keep(k))
        .map(|(k, h)| (h.generation, k.clone()))
        .collect();
    if dead.len() <= MAX_TOMBSTONES {
        return Vec::new();
    }
    dead.sort();
    dead.truncate(dead.len() / 2);
    if let Some(&(g, _)) = dead.last() {
        *floor = Some(floor.map_or(g, |f| f.max(g)));
    }
    dead.into_iter()
        .map(|(_, k)| {
            map.remove(&k);
            k
        })
        .collect()
}

/// What a session receives at full resolution when no subscription was set.
fn default_full() -> FullSet {
    FullSet::Ssrcs(Vec::new())
}

fn relay_ssrc_declared(session: &SessionId) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::BadRequest,
        format!("session {session}: ssrc {} is the relay's own", Ssrc::RELAY),
    )
}

fn stale(what: std::fmt::Arguments<'_>, got: Generation, held: Generation) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::StaleGeneration,
        format!("{what}: generation {got} is not newer than the held generation {held}"),
    )
}

impl Registry {
    /// An empty registry (a relay that just started).
    pub fn new() -> Self {
        Self::default()
    }

    // ----- getters -------------------------------------------------------------------

    /// Conferences that exist.
    pub fn conference_count(&self) -> usize {
        self.conferences
            .values()
            .filter(|h| h.state.is_some())
            .count()
    }

    /// Sessions that exist.
    pub fn session_count(&self) -> usize {
        self.sessions.values().filter(|h| h.state.is_some()).count()
    }

    /// The spec of a session that exists.
    pub fn session(&self, id: &SessionId) -> Option<&SessionSpec> {
        self.sessions.get(id).and_then(|h| h.state.as_ref())
    }

    /// Sessions the workers reported connected, with their addresses, by id.
    pub fn connected(&self) -> impl Iterator<Item = (&SessionId, SocketAddr)> + '_ {
        self.connected.iter().map(|(id, addr)| (id, *addr))
    }

    /// The `session_failed` of every configured session that failed and was neither
    /// removed nor restarted since.
    pub fn failed(&self) -> impl Iterator<Item = &NotificationBody> + '_ {
        self.failed.values()
    }

    /// The `session_closed` of every session the relay closed on its own that is still
    /// held as closed: right after a snapshot, those it listed (a signaling that was
    /// away when the close was reported still holds their calls).
    pub fn closed(&self) -> impl Iterator<Item = &NotificationBody> + '_ {
        self.ended.values().map(|e| &e.note)
    }

    // ----- input ---------------------------------------------------------------------

    /// Follows what the workers report, to know which sessions are connected (after a
    /// snapshot the relay re-announces them, see the protocol doc).
    pub fn observe(&mut self, note: &NotificationBody) {
        match note {
            NotificationBody::SessionConnected { session_id, addr } => {
                if self.session(session_id).is_some() {
                    self.connected.insert(session_id.clone(), *addr);
                    self.failed.remove(session_id);
                }
            }
            NotificationBody::SessionFailed { session_id, .. } => {
                self.connected.remove(session_id);
                if self.session(session_id).is_some() {
                    self.failed.insert(session_id.clone(), note.clone());
                }
            }
            NotificationBody::SessionClosed { session_id, .. } => {
                self.connected.remove(session_id);
                self.failed.remove(session_id);
            }
            NotificationBody::ActiveSpeaker { .. } | NotificationBody::Stats(_) => {}
        }
    }

    /// Whether `ev` is about an incarnation of its session that is no longer held: one
    /// that an upsert has replaced since (its checks, handshake or consent ran out just
    /// before the worker applied the upsert), a report signaling would take for the new
    /// incarnation's; or one that signaling removed, or that the relay closed, since. The
    /// close that the replacement or a removal itself causes is not stale: it is the one
    /// report about the old incarnation the protocol sends. An active-speaker change is
    /// stale when its session is no longer held.
    pub fn is_stale(&self, ev: &SessionEvent) -> bool {
        let (session, identity) = match ev {
            SessionEvent::Connected {
                session, identity, ..
            }
            | SessionEvent::Failed {
                session, identity, ..
            } => (session, Some(*identity)),
            SessionEvent::Closed {
                session,
                identity,
                reason,
            } if !matches!(reason, EndReason::Replaced | EndReason::Removed) => {
                (session, Some(*identity))
            }
            SessionEvent::ActiveSpeaker { session, .. } => (session, None),
            SessionEvent::Closed { .. } => return false,
        };
        let Ok(id) = SessionId::new(session.as_str()) else {
            return true;
        };
        match self.sessions.get(&id).and_then(|h| h.state.as_ref()) {
            Some(live) => identity.is_some_and(|i| rules::session_rule(live).identity() != i),
            None => true,
        }
    }

    /// The relay closed a connected session on its own, for `reason` (the engine's
    /// `Ended` event): forget it, if `spec` is still the incarnation held (one that a
    /// newer upsert replaced meanwhile is not touched). Returns the commands to send to
    /// every worker.
    pub fn observe_ended(&mut self, ended: &SessionRule, reason: EndReason) -> Vec<Command> {
        let Ok(id) = SessionId::new(ended.id.as_str()) else {
            return Vec::new();
        };
        let id = &id;
        let Some(held) = self.sessions.get(id) else {
            return Vec::new();
        };
        match &held.state {
            Some(live) if rules::session_rule(live).same_identity(ended) => {}
            _ => return Vec::new(),
        }
        let generation = held.generation;
        let live = self.sessions.insert(
            id.clone(),
            Held {
                generation,
                state: None,
            },
        );
        if let Some(Held {
            state: Some(live), ..
        }) = live
        {
            let note = NotificationBody::SessionClosed {
                session_id: id.clone(),
                reason: rules::end_reason(reason),
            };
            self.ended.insert(id.clone(), Ended { spec: live, note });
        }
        self.connected.remove(id);
        self.failed.remove(id);
        self.forget_oldest_ended();
        vec![rules::remove_session(id)]
    }

    /// Past [`MAX_TOMBSTONES`] sessions the relay closed on its own (a client that never
    /// removes them), the older half become plain tombstones, folded like the others:
    /// the same upsert again is then answered `stale_generation`, not a new session.
    fn forget_oldest_ended(&mut self) {
        if self.ended.len() <= MAX_TOMBSTONES {
            return;
        }
        let mut by_age: Vec<(Generation, SessionId)> = self
            .ended
            .keys()
            .map(|id| {
                let g = self
                    .sessions
                    .get(id)
                    .map_or(Generation(0), |h| h.generation);
                (g, id.clone())
            })
            .collect();
        by_age.sort();
        by_age.truncate(by_age.len() / 2);
        for (_, id) in by_age {
            self.ended.remove(&id);
        }
        self.fold();
    }

    /// Checks and applies one request. Returns the answer for signaling and the
    /// commands to send to every worker, in order (empty when nothing changed, or on an
    /// error: a refused request changes nothing).
    ///
    /// Refuses, with the codes of `docs/control-protocol.md`: `stale_generation` for a
    /// generation older than the held state's (or equal with other content);
    /// `not_found` for a session whose conference does not exist or a subscription
    /// whose session does not; `bad_request` for an SSRC another session of the same
    /// conference already declared. `get_stats` is answered with the rule counts only
    /// (`conferences`, `sessions`, `connected_sessions`): the caller adds the traffic
    /// counters it keeps.
    pub fn apply(&mut self, request: RequestBody) -> Outcome {
        let result = match request {
            RequestBody::UpsertConference {
                generation,
                conference,
            } => self.upsert_conference(generation, conference),
            RequestBody::RemoveConference {
                generation,
                conf_id,
            } => self
                .remove_conference(generation, conf_id)
                .inspect(|_| self.fold()),
            RequestBody::UpsertSession {
                generation,
                session,
            } => self.upsert_session(generation, session),
            RequestBody::RemoveSession {
                generation,
                session_id,
            } => self
                .remove_session(generation, session_id)
                .inspect(|_| self.fold()),
            RequestBody::SetSubscription {
                generation,
                subscription,
            } => self.set_subscription(generation, subscription),
            RequestBody::Snapshot(snapshot) => self.snapshot(snapshot),
            RequestBody::GetStats => {
                return (
                    Ok(ResponseBody::Stats(StatsReport {
                        conferences: self.conference_count() as u64,
                        sessions: self.session_count() as u64,
                        connected_sessions: self.connected.len() as u64,
                        ..StatsReport::default()
                    })),
                    Vec::new(),
                );
            }
        };
        match result {
            Ok(commands) => (Ok(ResponseBody::Ok), commands),
            Err(e) => (Err(e), Vec::new()),
        }
    }

    // ----- requests --------------------------------------------------------------------

    /// The generation rule for one object (see the module docs).
    fn judge<T: PartialEq>(
        held: Option<&Held<T>>,
        floor: Option<Generation>,
        generation: Generation,
        desired: Option<&T>,
        what: std::fmt::Arguments<'_>,
    ) -> Result<Verdict, ErrorReply> {
        let (held_generation, held_state) = match held {
            Some(h) => (Some(h.generation), h.state.as_ref()),
            None => (floor, None),
        };
        match held_generation {
            None => Ok(Verdict::Apply),
            Some(h) if generation > h => Ok(Verdict::Apply),
            Some(h) if generation == h && held_state == desired => Ok(Verdict::Repeat),
            Some(h) => Err(stale(what, generation, h)),
        }
    }

    fn conference_exists(&self, id: &ConfId) -> bool {
        self.conferences.get(id).is_some_and(|h| h.state.is_some())
    }

    fn effective_full(&self, id: &SessionId) -> FullSet {
        self.subscriptions
            .get(id)
            .and_then(|h| h.state.clone())
            .unwrap_or_else(default_full)
    }

    fn upsert_conference(
        &mut self,
        generation: Generation,
        conference: ConferenceSpec,
    ) -> Result<Vec<Command>, ErrorReply> {
        let id = conference.conf_id;
        let verdict = Self::judge(
            self.conferences.get(&id),
            self.floor,
            generation,
            Some(&()),
            format_args!("conference {id}"),
        )?;
        if let Verdict::Repeat = verdict {
            return Ok(Vec::new());
        }
        let existed = self.conference_exists(&id);
        self.conferences.insert(
            id.clone(),
            Held {
                generation,
                state: Some(()),
            },
        );
        Ok(if existed {
            Vec::new()
        } else {
            vec![rules::upsert_conference(&id)]
        })
    }

    fn remove_conference(
        &mut self,
        generation: Generation,
        id: ConfId,
    ) -> Result<Vec<Command>, ErrorReply> {
        let verdict = Self::judge(
            self.conferences.get(&id),
            self.floor,
            generation,
            None,
            format_args!("conference {id}"),
        )?;
        if let Verdict::Repeat = verdict {
            return Ok(Vec::new());
        }
        // Removing the conference removes its sessions: it must not undo a newer upsert
        // of one of them either.
        // Sessions the relay closed on its own count too: their specs and subscriptions
        // go with the conference.
        let members: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, h)| h.state.as_ref().is_some_and(|s| s.conf_id == id))
            .map(|(sid, _)| sid.clone())
            .chain(
                self.ended
                    .iter()
                    .filter(|(_, e)| e.spec.conf_id == id)
                    .map(|(sid, _)| sid.clone()),
            )
            .collect();
        for sid in &members {
            let newest = [
                self.sessions.get(sid).map(|h| h.generation),
                self.subscriptions.get(sid).map(|h| h.generation),
            ];
            if let Some(held) = newest.into_iter().flatten().find(|&g| g > generation) {
                return Err(stale(
                    format_args!("conference {id} (its session {sid})"),
                    generation,
                    held,
                ));
            }
        }
        let existed = self.conference_exists(&id);
        for sid in members {
            self.tombstone_session(&sid, generation);
        }
        self.conferences.insert(
            id.clone(),
            Held {
                generation,
                state: None,
            },
        );
        Ok(if existed {
            vec![rules::remove_conference(&id)]
        } else {
            Vec::new()
        })
    }

    /// Folds the oldest tombstones into the floor when there are too many
    /// ([`fold_tombstones`]).
    /// A session the relay closed keeps its tombstone (at the generation it was created
    /// with), so that the same upsert again creates it anew.
    fn fold(&mut self) {
        fold_tombstones(&mut self.conferences, &mut self.floor, |_| false);
        let ended = &self.ended;
        fold_tombstones(&mut self.sessions, &mut self.floor, |id| {
            ended.contains_key(id)
        });
        fold_tombstones(&mut self.subscriptions, &mut self.floor, |_| false);
    }

    /// Marks a session and its subscription removed at `generation`.
    fn tombstone_session(&mut self, id: &SessionId, generation: Generation) {
        let gone = Held {
            generation,
            state: None,
        };
        self.sessions.insert(id.clone(), gone);
        if self.subscriptions.contains_key(id) {
            self.subscriptions.insert(
                id.clone(),
                Held {
                    generation,
                    state: None,
                },
            );
        }
        self.connected.remove(id);
        self.failed.remove(id);
        self.ended.remove(id);
    }

    /// The first SSRC of `spec` that another existing session of its conference
    /// declared, and that session.
    fn ssrc_collision(&self, spec: &SessionSpec) -> Option<(Ssrc, &SessionId)> {
        self.sessions
            .iter()
            .filter(|(id, _)| **id != spec.session_id)
            .filter_map(|(id, h)| Some((id, h.state.as_ref()?)))
            .filter(|(_, other)| other.conf_id == spec.conf_id)
            .find_map(|(id, other)| {
                spec.streams
                    .iter()
                    .find(|s| other.streams.iter().any(|o| o.ssrc == s.ssrc))
                    .map(|s| (s.ssrc, id))
            })
    }

    /// Another session that holds `spec`'s relay ufrag: the relay finds the session a
    /// check is for by it, so it is unique.
    fn ufrag_owner(&self, spec: &SessionSpec) -> Option<&SessionId> {
        self.sessions
            .iter()
            .filter(|(id, _)| **id != spec.session_id)
            .find(|(_, h)| {
                h.state
                    .as_ref()
                    .is_some_and(|o| o.ice_ufrag == spec.ice_ufrag)
            })
            .map(|(id, _)| id)
    }

    fn upsert_session(
        &mut self,
        generation: Generation,
        spec: SessionSpec,
    ) -> Result<Vec<Command>, ErrorReply> {
        let id = spec.session_id.clone();
        let verdict = Self::judge(
            self.sessions.get(&id),
            self.floor,
            generation,
            Some(&spec),
            format_args!("session {id}"),
        );
        // The upsert that created a session the relay since closed, again: create it anew.
        let recreate = self.ended.get(&id).map(|e| &e.spec) == Some(&spec)
            && self.sessions.get(&id).map(|h| h.generation) == Some(generation);
        let verdict = if recreate { Verdict::Apply } else { verdict? };
        if let Verdict::Repeat = verdict {
            return Ok(Vec::new());
        }
        if !self.conference_exists(&spec.conf_id) {
            return Err(ErrorReply::new(
                ErrorCode::NotFound,
                format!("session {id}: conference {} does not exist", spec.conf_id),
            ));
        }
        if spec.streams.iter().any(|s| s.ssrc == Ssrc::RELAY) {
            return Err(relay_ssrc_declared(&id));
        }
        if let Some((ssrc, other)) = self.ssrc_collision(&spec) {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!(
                    "session {id}: ssrc {ssrc} is already declared by session {other} in conference {}",
                    spec.conf_id
                ),
            ));
        }
        if let Some(other) = self.ufrag_owner(&spec) {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!(
                    "session {id}: ice_ufrag {} is already used by session {other}",
                    spec.ice_ufrag.as_str()
                ),
            ));
        }
        let old = self.sessions.get(&id).and_then(|h| h.state.clone());
        let mut commands = Vec::new();
        match &old {
            Some(old) if *old == spec => {}
            Some(old) if same_identity(old, &spec) => {
                commands.push(rules::upsert_session(&spec));
            }
            // A new engine session starts with no subscription: restore the one held
            // (after a replacement, or for a session the relay closed, coming back).
            Some(_) | None => {
                commands.push(rules::upsert_session(&spec));
                let full = self.effective_full(&id);
                if full != default_full() {
                    commands.push(rules::set_subscription(&SubscriptionSpec {
                        session_id: id.clone(),
                        full,
                    }));
                }
                self.connected.remove(&id);
                self.failed.remove(&id);
            }
        }
        self.ended.remove(&id);
        self.sessions.insert(
            id,
            Held {
                generation,
                state: Some(spec),
            },
        );
        Ok(commands)
    }

    fn remove_session(
        &mut self,
        generation: Generation,
        id: SessionId,
    ) -> Result<Vec<Command>, ErrorReply> {
        let verdict = Self::judge(
            self.sessions.get(&id),
            self.floor,
            generation,
            None,
            format_args!("session {id}"),
        )?;
        if let Verdict::Repeat = verdict {
            return Ok(Vec::new());
        }
        if let Some(held) = self.subscriptions.get(&id).map(|h| h.generation)
            && held > generation
        {
            return Err(stale(
                format_args!("session {id} (its subscription)"),
                generation,
                held,
            ));
        }
        let existed = self.session(&id).is_some();
        self.tombstone_session(&id, generation);
        Ok(if existed {
            vec![rules::remove_session(&id)]
        } else {
            Vec::new()
        })
    }

    fn set_subscription(
        &mut self,
        generation: Generation,
        sub: SubscriptionSpec,
    ) -> Result<Vec<Command>, ErrorReply> {
        let id = sub.session_id.clone();
        let verdict = Self::judge(
            self.subscriptions.get(&id),
            self.floor,
            generation,
            Some(&sub.full),
            format_args!("subscription of {id}"),
        )?;
        if let Verdict::Repeat = verdict {
            return Ok(Vec::new());
        }
        if self.session(&id).is_none() {
            return Err(ErrorReply::new(
                ErrorCode::NotFound,
                format!("subscription of {id}: the session does not exist"),
            ));
        }
        let changed = self.effective_full(&id) != sub.full;
        self.subscriptions.insert(
            id,
            Held {
                generation,
                state: Some(sub.full.clone()),
            },
        );
        Ok(if changed {
            vec![rules::set_subscription(&sub)]
        } else {
            Vec::new()
        })
    }

    /// Reconciles to a snapshot (see the module docs and the protocol doc's "Reconnect
    /// and snapshot"). The snapshot's own consistency (unique ids, references) was
    /// checked by the codec.
    fn snapshot(&mut self, snap: Snapshot) -> Result<Vec<Command>, ErrorReply> {
        let g = snap.generation;
        let want_confs: BTreeMap<&ConfId, ()> =
            snap.conferences.iter().map(|c| (&c.conf_id, ())).collect();
        let want_sessions: BTreeMap<&SessionId, &SessionSpec> =
            snap.sessions.iter().map(|s| (&s.session_id, s)).collect();
        let want_subs: BTreeMap<&SessionId, &FullSet> = snap
            .subscriptions
            .iter()
            .map(|s| (&s.session_id, &s.full))
            .collect();

        // SSRCs unique per conference across the snapshot's sessions.
        let mut owners: BTreeMap<(&ConfId, Ssrc), &SessionId> = BTreeMap::new();
        for s in &snap.sessions {
            for st in &s.streams {
                if st.ssrc == Ssrc::RELAY {
                    return Err(relay_ssrc_declared(&s.session_id));
                }
                if let Some(other) = owners.insert((&s.conf_id, st.ssrc), &s.session_id) {
                    return Err(ErrorReply::new(
                        ErrorCode::BadRequest,
                        format!(
                            "snapshot: ssrc {} is declared by sessions {other} and {} in conference {}",
                            st.ssrc, s.session_id, s.conf_id
                        ),
                    ));
                }
            }
        }

        // Relay ufrags unique across the snapshot's sessions.
        let mut ufrags: BTreeMap<&str, &SessionId> = BTreeMap::new();
        for s in &snap.sessions {
            if let Some(other) = ufrags.insert(s.ice_ufrag.as_str(), &s.session_id) {
                return Err(ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!(
                        "snapshot: ice_ufrag {} is used by sessions {other} and {}",
                        s.ice_ufrag.as_str(),
                        s.session_id
                    ),
                ));
            }
        }

        // Stale: any object the snapshot would change whose held generation is not
        // older than the snapshot's (the per-object rule, applied to every object).
        self.check_snapshot_generations(g, &want_confs, &want_sessions, &want_subs)?;

        let mut commands = Vec::new();
        // 1. Sessions that are not listed go, then conferences that are not listed.
        for (id, h) in &self.sessions {
            if h.state.is_some() && !want_sessions.contains_key(id) {
                commands.push(rules::remove_session(id));
            }
        }
        for (id, h) in &self.conferences {
            if h.state.is_some() && !want_confs.contains_key(id) {
                commands.push(rules::remove_conference(id));
            }
        }
        // 2. Conferences that are missing are created.
        for c in &snap.conferences {
            if !self.conference_exists(&c.conf_id) {
                commands.push(rules::upsert_conference(&c.conf_id));
            }
        }
        // 3. Sessions that are missing or differ are upserted; identical ones are left
        //    alone, so their ICE, DTLS and SRTCP state survive. One the relay closed on
        //    its own stays closed (its participant is gone; signaling, which lists it,
        //    missed the close and hears it in the catch-up).
        // A set: after a relay restart every listed session is fresh.
        let mut fresh = std::collections::BTreeSet::new();
        let closed: BTreeMap<&SessionId, &Ended> = snap
            .sessions
            .iter()
            .filter_map(|s| {
                let e = self.ended.get(&s.session_id)?;
                same_identity(&e.spec, s).then_some((&s.session_id, e))
            })
            .collect();
        for s in snap
            .sessions
            .iter()
            .filter(|s| !closed.contains_key(&s.session_id))
        {
            match self.session(&s.session_id) {
                Some(old) if old == s => {}
                Some(old) if same_identity(old, s) => {
                    commands.push(rules::upsert_session(s));
                }
                _ => {
                    commands.push(rules::upsert_session(s));
                    fresh.insert(&s.session_id);
                }
            }
        }
        // 4. Subscriptions: a (re)created session starts with none.
        for s in snap
            .sessions
            .iter()
            .filter(|s| !closed.contains_key(&s.session_id))
        {
            let id = &s.session_id;
            let now = if fresh.contains(id) {
                default_full()
            } else {
                self.effective_full(id)
            };
            let want = want_subs
                .get(id)
                .map_or_else(default_full, |f| (*f).clone());
            if now != want {
                commands.push(rules::set_subscription(&SubscriptionSpec {
                    session_id: id.clone(),
                    full: want,
                }));
            }
        }

        // Everything now carries the snapshot's generation; tombstones fold into the
        // floor.
        self.connected
            .retain(|id, _| want_sessions.contains_key(id) && !fresh.contains(id));
        self.failed
            .retain(|id, _| want_sessions.contains_key(id) && !fresh.contains(id));
        self.conferences = snap
            .conferences
            .iter()
            .map(|c| {
                (
                    c.conf_id.clone(),
                    Held {
                        generation: g,
                        state: Some(()),
                    },
                )
            })
            .collect();
        self.sessions = snap
            .sessions
            .iter()
            .map(|s| {
                let state = (!closed.contains_key(&s.session_id)).then(|| s.clone());
                (
                    s.session_id.clone(),
                    Held {
                        generation: g,
                        state,
                    },
                )
            })
            .collect();
        // The closed ones keep the spec listed (its upsert at the snapshot's generation
        // creates it anew) and their close.
        self.ended = closed
            .into_iter()
            .map(|(id, e)| {
                let spec = want_sessions[id].clone();
                (
                    id.clone(),
                    Ended {
                        spec,
                        note: e.note.clone(),
                    },
                )
            })
            .collect();
        self.subscriptions = snap
            .subscriptions
            .into_iter()
            .map(|s| {
                (
                    s.session_id,
                    Held {
                        generation: g,
                        state: Some(s.full),
                    },
                )
            })
            .collect();
        self.floor = Some(g);
        Ok(commands)
    }

    fn check_snapshot_generations(
        &self,
        g: Generation,
        want_confs: &BTreeMap<&ConfId, ()>,
        want_sessions: &BTreeMap<&SessionId, &SessionSpec>,
        want_subs: &BTreeMap<&SessionId, &FullSet>,
    ) -> Result<(), ErrorReply> {
        fn check<K: Ord + std::fmt::Display, T: PartialEq>(
            kind: &str,
            held: &BTreeMap<K, Held<T>>,
            want: &BTreeMap<&K, &T>,
            floor: Option<Generation>,
            g: Generation,
        ) -> Result<(), ErrorReply> {
            for (id, h) in held {
                if h.generation >= g && h.state.as_ref() != want.get(id).copied() {
                    return Err(stale(
                        format_args!("snapshot: {kind} {id}"),
                        g,
                        h.generation,
                    ));
                }
            }
            if let Some(floor) = floor.filter(|&f| f >= g) {
                // Objects not held count as removed at the floor: listing one changes it.
                if let Some(id) = want.keys().find(|id| !held.contains_key(**id)) {
                    return Err(stale(format_args!("snapshot: {kind} {id}"), g, floor));
                }
            }
            Ok(())
        }
        let unit = ();
        let confs: BTreeMap<&ConfId, &()> = want_confs.keys().map(|k| (*k, &unit)).collect();
        check("conference", &self.conferences, &confs, self.floor, g)?;
        // A session the relay closed, listed as it was closed, stays closed (see
        // `snapshot`): to this check it is held removed and wanted removed, so the same
        // snapshot again is a retransmission.
        let want_sessions: BTreeMap<&SessionId, &SessionSpec> = want_sessions
            .iter()
            .filter(|&(id, spec)| self.ended.get(*id).is_none_or(|e| e.spec != **spec))
            .map(|(&id, &spec)| (id, spec))
            .collect();
        check("session", &self.sessions, &want_sessions, self.floor, g)?;
        check(
            "subscription of",
            &self.subscriptions,
            want_subs,
            self.floor,
            g,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ExtmapIds, Fingerprint, IcePwd, IceUfrag, Layer, StreamKind, StreamSpec};

    /// Why the relay closed a session, in the tests that need one.
    const CONSENT: EndReason = EndReason::ConsentExpired;

    fn conf(id: &str) -> ConfId {
        ConfId::new(id).unwrap()
    }

    fn sid(id: &str) -> SessionId {
        SessionId::new(id).unwrap()
    }

    fn spec(id: &str, c: &str, ssrcs: &[u32]) -> SessionSpec {
        SessionSpec {
            session_id: sid(id),
            conf_id: conf(c),
            ice_ufrag: IceUfrag::new(format!("rly{}", id.replace('-', ""))).unwrap(),
            ice_pwd: IcePwd::new("abcdefghijklmnopqrstuv+/").unwrap(),
            remote_ufrag: IceUfrag::new(format!("peer{}", id.replace('-', ""))).unwrap(),
            remote_pwd: None,
            dtls_fingerprint: Fingerprint([0xab; 32]),
            streams: ssrcs
                .iter()
                .map(|&s| StreamSpec {
                    ssrc: Ssrc(s),
                    kind: StreamKind::Audio,
                    layer: Layer::None,
                })
                .collect(),
            extmap: ExtmapIds::default(),
            tmmbr: false,
        }
    }

    fn upsert_conf(g: u64, c: &str) -> RequestBody {
        RequestBody::UpsertConference {
            generation: Generation(g),
            conference: ConferenceSpec { conf_id: conf(c) },
        }
    }

    fn upsert(g: u64, s: SessionSpec) -> RequestBody {
        RequestBody::UpsertSession {
            generation: Generation(g),
            session: s,
        }
    }

    fn subscribe(g: u64, id: &str, full: FullSet) -> RequestBody {
        RequestBody::SetSubscription {
            generation: Generation(g),
            subscription: SubscriptionSpec {
                session_id: sid(id),
                full,
            },
        }
    }

    /// Commands as short strings, to compare exactly.
    fn names(commands: &[Command]) -> Vec<String> {
        commands
            .iter()
            .map(|c| match c {
                Command::UpsertConference(id) => format!("upsert_conference {id}"),
                Command::RemoveConference(id) => format!("remove_conference {id}"),
                Command::UpsertSession(s) => format!("upsert_session {}", s.id),
                Command::RemoveSession(id) => format!("remove_session {id}"),
                Command::SetSubscription { session, .. } => format!("set_subscription {session}"),
                Command::Peer(m) => format!("peer {m:?}"),
            })
            .collect()
    }

    fn ok(reg: &mut Registry, req: RequestBody) -> Vec<String> {
        let (answer, commands) = reg.apply(req);
        assert_eq!(answer, Ok(ResponseBody::Ok));
        names(&commands)
    }

    fn err(reg: &mut Registry, req: RequestBody) -> ErrorCode {
        let (answer, commands) = reg.apply(req);
        assert!(commands.is_empty(), "a refused request changes nothing");
        answer.unwrap_err().code
    }

    #[test]
    fn idempotent_upsert_emits_no_command_the_second_time() {
        let mut reg = Registry::new();
        assert_eq!(ok(&mut reg, upsert_conf(1, "c")), ["upsert_conference c"]);
        assert!(ok(&mut reg, upsert_conf(1, "c")).is_empty());
        assert!(
            ok(&mut reg, upsert_conf(2, "c")).is_empty(),
            "exists already"
        );
        let a = spec("a", "c", &[1, 2]);
        assert_eq!(ok(&mut reg, upsert(3, a.clone())), ["upsert_session a"]);
        assert!(
            ok(&mut reg, upsert(3, a.clone())).is_empty(),
            "retransmission"
        );
        assert!(ok(&mut reg, upsert(4, a)).is_empty(), "newer, same content");
        let sub = subscribe(5, "a", FullSet::All);
        assert_eq!(ok(&mut reg, sub.clone()), ["set_subscription a"]);
        assert!(ok(&mut reg, sub).is_empty());
        assert_eq!(reg.session_count(), 1);
    }

    #[test]
    fn stale_generation_is_refused_and_changes_nothing() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(5, "c"));
        ok(&mut reg, upsert(10, spec("a", "c", &[1])));
        // Older, or equal with other content.
        assert_eq!(
            err(&mut reg, upsert(9, spec("a", "c", &[2]))),
            ErrorCode::StaleGeneration
        );
        assert_eq!(
            err(&mut reg, upsert(10, spec("a", "c", &[2]))),
            ErrorCode::StaleGeneration
        );
        // A removal leaves a tombstone: a delayed upsert cannot resurrect the session.
        let remove = RequestBody::RemoveSession {
            generation: Generation(11),
            session_id: sid("a"),
        };
        assert_eq!(ok(&mut reg, remove.clone()), ["remove_session a"]);
        assert!(ok(&mut reg, remove).is_empty(), "retransmitted removal");
        assert_eq!(
            err(&mut reg, upsert(10, spec("a", "c", &[1]))),
            ErrorCode::StaleGeneration
        );
        // A conference removal older than one of its sessions is refused too.
        ok(&mut reg, upsert(12, spec("b", "c", &[3])));
        let remove_conf = |g| RequestBody::RemoveConference {
            generation: Generation(g),
            conf_id: conf("c"),
        };
        assert_eq!(err(&mut reg, remove_conf(11)), ErrorCode::StaleGeneration);
        assert_eq!(ok(&mut reg, remove_conf(13)), ["remove_conference c"]);
        assert_eq!(reg.session_count(), 0, "its sessions went with it");
        assert_eq!(
            err(&mut reg, upsert(12, spec("b", "c", &[3]))),
            ErrorCode::StaleGeneration
        );
    }

    #[test]
    fn references_must_exist() {
        let mut reg = Registry::new();
        assert_eq!(
            err(&mut reg, upsert(1, spec("a", "c", &[1]))),
            ErrorCode::NotFound
        );
        assert_eq!(
            err(&mut reg, subscribe(2, "a", FullSet::All)),
            ErrorCode::NotFound
        );
        // Removing what does not exist succeeds, and emits nothing.
        let (answer, commands) = reg.apply(RequestBody::RemoveSession {
            generation: Generation(3),
            session_id: sid("zz"),
        });
        assert_eq!((answer, commands.len()), (Ok(ResponseBody::Ok), 0));
    }

    #[test]
    fn ssrc_collision_within_a_conference_is_refused() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        ok(&mut reg, upsert_conf(1, "d"));
        ok(&mut reg, upsert(2, spec("a", "c", &[1, 2])));
        assert_eq!(
            err(&mut reg, upsert(3, spec("b", "c", &[3, 2]))),
            ErrorCode::BadRequest
        );
        // Another conference may reuse it; the session itself may keep it.
        assert_eq!(
            ok(&mut reg, upsert(4, spec("b", "d", &[2]))),
            ["upsert_session b"]
        );
        assert_eq!(
            ok(&mut reg, upsert(5, spec("a", "c", &[2]))),
            ["upsert_session a"]
        );
        // And in a snapshot.
        let snap = Snapshot {
            generation: Generation(6),
            conferences: vec![ConferenceSpec { conf_id: conf("c") }],
            sessions: vec![spec("a", "c", &[7]), spec("b", "c", &[7])],
            subscriptions: Vec::new(),
        };
        assert_eq!(
            err(&mut reg, RequestBody::Snapshot(snap)),
            ErrorCode::BadRequest
        );
    }

    /// The relay's own RTCP comes from `Ssrc::RELAY`: a member declaring it would share
    /// its SRTCP streams with the relay's at every receiver.
    #[test]
    fn a_session_may_not_declare_the_relays_ssrc() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        assert_eq!(
            err(&mut reg, upsert(2, spec("a", "c", &[1, Ssrc::RELAY.0]))),
            ErrorCode::BadRequest
        );
        let snap = Snapshot {
            generation: Generation(3),
            conferences: vec![ConferenceSpec { conf_id: conf("c") }],
            sessions: vec![spec("a", "c", &[Ssrc::RELAY.0])],
            subscriptions: Vec::new(),
        };
        assert_eq!(
            err(&mut reg, RequestBody::Snapshot(snap)),
            ErrorCode::BadRequest
        );
        assert_eq!(
            ok(&mut reg, upsert(4, spec("a", "c", &[1]))),
            ["upsert_session a"]
        );
    }

    #[test]
    fn the_oldest_tombstones_fold_into_the_floor() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        let n = MAX_TOMBSTONES as u64 + 1;
        for i in 0..n {
            let id = format!("s{i}");
            ok(&mut reg, upsert(2 + 2 * i, spec(&id, "c", &[])));
            ok(
                &mut reg,
                RequestBody::RemoveSession {
                    generation: Generation(3 + 2 * i),
                    session_id: sid(&id),
                },
            );
        }
        // One past the bound: the older half went, the floor is the newest of them.
        let half = n / 2;
        assert_eq!(reg.sessions.len() as u64, n - half);
        assert_eq!(reg.floor, Some(Generation(3 + 2 * (half - 1))));
        // A delayed upsert of a folded session is still stale, a kept one's too, and
        // a new session is taken.
        assert_eq!(
            err(&mut reg, upsert(2, spec("s0", "c", &[]))),
            ErrorCode::StaleGeneration
        );
        assert_eq!(
            err(
                &mut reg,
                upsert(2 * n, spec(&format!("s{}", n - 1), "c", &[]))
            ),
            ErrorCode::StaleGeneration
        );
        assert_eq!(
            ok(&mut reg, upsert(3 * n, spec("new", "c", &[]))),
            ["upsert_session new"]
        );
    }

    #[test]
    fn a_relay_ufrag_another_session_holds_is_refused() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        ok(&mut reg, upsert_conf(1, "d"));
        ok(&mut reg, upsert(2, spec("a", "c", &[1])));
        let mut b = spec("b", "d", &[2]);
        b.ice_ufrag = spec("a", "c", &[]).ice_ufrag;
        assert_eq!(err(&mut reg, upsert(3, b.clone())), ErrorCode::BadRequest);
        // Once a is gone, b may have it; a session may keep its own.
        ok(
            &mut reg,
            RequestBody::RemoveSession {
                generation: Generation(4),
                session_id: sid("a"),
            },
        );
        assert_eq!(ok(&mut reg, upsert(5, b.clone())), ["upsert_session b"]);
        assert_eq!(ok(&mut reg, upsert(6, b.clone())), Vec::<String>::new());
        // And in a snapshot.
        let mut a = spec("a", "c", &[1]);
        a.ice_ufrag = b.ice_ufrag.clone();
        let snap = Snapshot {
            generation: Generation(7),
            conferences: vec![
                ConferenceSpec { conf_id: conf("c") },
                ConferenceSpec { conf_id: conf("d") },
            ],
            sessions: vec![a, b],
            subscriptions: Vec::new(),
        };
        assert_eq!(
            err(&mut reg, RequestBody::Snapshot(snap)),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn replacing_a_session_restores_its_subscription() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        ok(&mut reg, upsert(2, spec("a", "c", &[1])));
        ok(&mut reg, subscribe(3, "a", FullSet::All));
        // Streams only: updated in place, the subscription stays.
        assert_eq!(
            ok(&mut reg, upsert(4, spec("a", "c", &[1, 2]))),
            ["upsert_session a"]
        );
        // New credentials: the engine replaces the session, which starts unsubscribed.
        let mut moved = spec("a", "c", &[1, 2]);
        moved.remote_ufrag = IceUfrag::new("other").unwrap();
        assert_eq!(
            ok(&mut reg, upsert(5, moved)),
            ["upsert_session a", "set_subscription a"]
        );
    }

    #[test]
    fn snapshot_touches_only_what_changed() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        ok(&mut reg, upsert_conf(1, "gone"));
        ok(&mut reg, upsert(2, spec("same", "c", &[1])));
        ok(&mut reg, upsert(3, spec("changed", "c", &[2])));
        ok(&mut reg, upsert(4, spec("removed", "c", &[3])));
        ok(&mut reg, upsert(5, spec("in-gone", "gone", &[1])));
        ok(&mut reg, subscribe(6, "same", FullSet::All));
        reg.observe(&NotificationBody::SessionConnected {
            session_id: sid("same"),
            addr: "192.0.2.1:5000".parse().unwrap(),
        });
        let snapshot = |g| Snapshot {
            generation: Generation(g),
            conferences: vec![
                ConferenceSpec { conf_id: conf("c") },
                ConferenceSpec {
                    conf_id: conf("new"),
                },
            ],
            sessions: vec![
                spec("same", "c", &[1]),
                spec("changed", "c", &[2, 4]),
                spec("fresh", "new", &[9]),
            ],
            subscriptions: vec![SubscriptionSpec {
                session_id: sid("same"),
                full: FullSet::All,
            }],
        };
        // Older than held state: refused.
        assert_eq!(
            err(&mut reg, RequestBody::Snapshot(snapshot(5))),
            ErrorCode::StaleGeneration
        );
        assert_eq!(
            ok(&mut reg, RequestBody::Snapshot(snapshot(20))),
            [
                "remove_session in-gone",
                "remove_session removed",
                "remove_conference gone",
                "upsert_conference new",
                "upsert_session changed",
                "upsert_session fresh",
            ]
        );
        assert_eq!(reg.session_count(), 3);
        assert_eq!(reg.conference_count(), 2);
        // The untouched session is still known connected, to re-announce it.
        assert_eq!(
            reg.connected()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>(),
            ["same"]
        );
        // The same snapshot again is a no-op; an equal generation with other content,
        // or a delayed request from before it, is stale.
        assert!(ok(&mut reg, RequestBody::Snapshot(snapshot(20))).is_empty());
        assert!(ok(&mut reg, RequestBody::Snapshot(snapshot(21))).is_empty());
        let mut other = snapshot(21);
        other.sessions.pop();
        assert_eq!(
            err(&mut reg, RequestBody::Snapshot(other)),
            ErrorCode::StaleGeneration
        );
        assert_eq!(
            err(&mut reg, upsert(15, spec("removed", "c", &[3]))),
            ErrorCode::StaleGeneration,
            "the snapshot's removal holds"
        );
        // A later snapshot that drops a subscription resets it to thumbnails.
        let mut unsub = snapshot(22);
        unsub.subscriptions.clear();
        assert_eq!(
            ok(&mut reg, RequestBody::Snapshot(unsub)),
            ["set_subscription same"]
        );
    }

    #[test]
    fn connected_follows_notifications_and_removals() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        ok(&mut reg, upsert(2, spec("a", "c", &[1])));
        let addr: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        reg.observe(&NotificationBody::SessionConnected {
            session_id: sid("a"),
            addr,
        });
        reg.observe(&NotificationBody::SessionConnected {
            session_id: sid("unknown"),
            addr,
        });
        assert_eq!(reg.connected().count(), 1);
        let (answer, _) = reg.apply(RequestBody::GetStats);
        match answer {
            Ok(ResponseBody::Stats(s)) => {
                assert_eq!((s.conferences, s.sessions, s.connected_sessions), (1, 1, 1))
            }
            other => panic!("{other:?}"),
        }
        ok(
            &mut reg,
            RequestBody::RemoveSession {
                generation: Generation(3),
                session_id: sid("a"),
            },
        );
        assert_eq!(reg.connected().count(), 0);
    }

    #[test]
    fn a_session_the_relay_closed_is_gone_until_upserted_again() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        let a = spec("a", "c", &[1]);
        ok(&mut reg, upsert(2, a.clone()));
        ok(&mut reg, subscribe(3, "a", FullSet::All));
        assert_eq!(
            names(&reg.observe_ended(&rules::session_rule(&a), CONSENT)),
            ["remove_session a"]
        );
        assert!(
            reg.observe_ended(&rules::session_rule(&a), CONSENT)
                .is_empty(),
            "once"
        );
        assert_eq!(reg.session_count(), 0);
        assert_eq!(
            err(&mut reg, subscribe(4, "a", FullSet::All)),
            ErrorCode::NotFound
        );
        // Another spec at the same generation is still stale; the same upsert again
        // brings the session back with its subscription.
        let other = spec("a", "c", &[9]);
        assert_eq!(err(&mut reg, upsert(2, other)), ErrorCode::StaleGeneration);
        assert_eq!(
            ok(&mut reg, upsert(2, a.clone())),
            ["upsert_session a", "set_subscription a"]
        );
        assert_eq!(reg.session_count(), 1);
        assert!(
            ok(&mut reg, upsert(2, a)).is_empty(),
            "a retransmission now"
        );
    }

    #[test]
    fn removing_a_conference_takes_the_sessions_the_relay_closed_with_it() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        let a = spec("a", "c", &[1]);
        ok(&mut reg, upsert(2, a.clone()));
        ok(&mut reg, subscribe(3, "a", FullSet::All));
        reg.observe_ended(&rules::session_rule(&a), CONSENT);
        ok(
            &mut reg,
            RequestBody::RemoveConference {
                generation: Generation(4),
                conf_id: conf("c"),
            },
        );
        assert!(reg.ended.is_empty());
        assert!(
            reg.subscriptions
                .get(&sid("a"))
                .is_some_and(|h| h.state.is_none())
        );
        // Its upsert no longer brings it back.
        assert_eq!(err(&mut reg, upsert(2, a)), ErrorCode::StaleGeneration);
    }

    #[test]
    fn sessions_the_relay_closed_that_nobody_removes_stay_bounded() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        let n = MAX_TOMBSTONES as u64 * 2 + 10;
        for i in 0..n {
            let a = spec(&format!("s{i}"), "c", &[]);
            ok(&mut reg, upsert(2 + i, a.clone()));
            reg.observe_ended(&rules::session_rule(&a), CONSENT);
        }
        assert!(reg.ended.len() <= MAX_TOMBSTONES, "{}", reg.ended.len());
        assert!(
            reg.sessions.len() <= 2 * MAX_TOMBSTONES + 1,
            "{}",
            reg.sessions.len()
        );
        // The newest still comes back with its upsert; the oldest is stale.
        let newest = spec(&format!("s{}", n - 1), "c", &[]);
        let want = format!("upsert_session s{}", n - 1);
        assert_eq!(ok(&mut reg, upsert(2 + n - 1, newest)), [want.as_str()]);
        assert_eq!(
            err(&mut reg, upsert(2, spec("s0", "c", &[]))),
            ErrorCode::StaleGeneration
        );
    }

    /// Signaling was away when the relay closed `a`, so its snapshot still lists it:
    /// `a` stays closed (its participant is gone; recreating it would only time out
    /// 30 s later as `ice_timeout`), and [`Registry::closed`] has the close for the
    /// catch-up. Its upsert at the snapshot's generation still brings it back.
    #[test]
    fn a_snapshot_that_lists_a_session_the_relay_closed_leaves_it_closed() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        let (a, b) = (spec("a", "c", &[1]), spec("b", "c", &[2]));
        ok(&mut reg, upsert(2, a.clone()));
        ok(&mut reg, upsert(3, b.clone()));
        ok(&mut reg, subscribe(4, "a", FullSet::All));
        reg.observe_ended(&rules::session_rule(&a), CONSENT);
        let snap = RequestBody::Snapshot(Snapshot {
            generation: Generation(10),
            conferences: vec![ConferenceSpec { conf_id: conf("c") }],
            sessions: vec![a.clone(), b.clone()],
            subscriptions: vec![SubscriptionSpec {
                session_id: sid("a"),
                full: FullSet::All,
            }],
        });
        assert!(
            ok(&mut reg, snap.clone()).is_empty(),
            "nothing created, nothing removed"
        );
        assert_eq!(reg.session_count(), 1);
        assert!(
            ok(&mut reg, snap).is_empty(),
            "the same snapshot again: a retransmission"
        );
        assert_eq!(reg.session_count(), 1);
        assert_eq!(
            reg.closed().collect::<Vec<_>>(),
            [&NotificationBody::SessionClosed {
                session_id: sid("a"),
                reason: crate::control::EndReason::ConsentExpired,
            }]
        );
        // Its upsert at the snapshot's generation brings it back.
        assert_eq!(
            ok(&mut reg, upsert(10, a.clone())),
            ["upsert_session a", "set_subscription a"],
            "its upsert at the snapshot's generation creates it anew"
        );
        assert_eq!(reg.closed().count(), 0);
        assert_eq!(reg.session_count(), 2);
    }

    #[test]
    fn an_ended_incarnation_that_was_replaced_leaves_the_new_one_alone() {
        let mut reg = Registry::new();
        ok(&mut reg, upsert_conf(1, "c"));
        let old = spec("a", "c", &[1]);
        ok(&mut reg, upsert(2, old.clone()));
        let mut new = old.clone();
        new.ice_pwd = IcePwd::new("zyxwvutsrqponmlkjihgfe+/").unwrap();
        ok(&mut reg, upsert(3, new));
        assert!(
            reg.observe_ended(&rules::session_rule(&old), CONSENT)
                .is_empty()
        );
        assert_eq!(reg.session_count(), 1);
    }
}
