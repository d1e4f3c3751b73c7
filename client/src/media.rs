//! End-to-end SRTP: our own outbound context (MKI, rekeying) and one inbound context
//! per remote sender, with the key-retention rule of docs/design.md ("The keying model") and docs/protocol.md.
//!
//! A remote sender's key event carries its whole current key set (at most two keys: the
//! current and the one it is moving to) and replaces the earlier set. A key that is no
//! longer listed is kept only while it is the one packets are arriving under. When the
//! first packet under a new index authenticates, the previous key is kept for 10 s more
//! (late and reordered packets), then removed.

use std::time::{Duration, Instant};

use blindfold_relay::id::{KeyIndex, Ssrc};
use blindfold_relay::srtp::{SrtpContext, SrtpError, SrtpProfile};

use crate::ParticipantError;

/// How long the previous key of a remote sender stays after the first packet under its
/// new index (docs/protocol.md, "Media keys").
pub(crate) const PREVIOUS_KEY_GRACE: Duration = Duration::from_secs(10);

/// Rollover counters a receiver tries on a remote stream's first packets: a member who
/// joins after a sender's sequence numbers wrapped (every 65 536 packets: about 22
/// minutes of audio, 5–8 of full-resolution video) still decrypts it, for about 64
/// wraps (hours of video); and on a stream it knows but stopped getting for more than
/// 32 768 packets (a layer it was switched away from while others kept getting it),
/// rollover counters past the last it saw, up to this many. See
/// `SrtpContext::with_roc_search`.
pub(crate) const REMOTE_ROC_SEARCH: u32 = 64;

/// After a sender's packet fails to authenticate under every rollover counter tried,
/// that sender's streams are searched no more for this long (new ones are tried under
/// ROC 0 alone, known ones under the estimated index): packets that never authenticate
/// (garbage on a declared SSRC) cost one tag check each, not `REMOTE_ROC_SEARCH + 1`,
/// while a genuine wrapped stream, or one the receiver gets again after minutes
/// without it, is found at most this much later.
pub(crate) const ROC_SEARCH_BACKOFF: Duration = Duration::from_millis(500);

/// Keys a receiver holds per sender: current and previous.
const MAX_REMOTE_KEYS: usize = 2;

/// Identifies a remote sender (one member's device in the call). The caller maps Matrix
/// identities (user, device, call) to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SenderId(pub u64);

/// The kind of a remote stream, from the sender's key event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Audio (Opus).
    Audio,
    /// Video (one simulcast layer).
    Video,
}

/// One stream a remote sender declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteStream {
    /// Its SSRC.
    pub ssrc: Ssrc,
    /// Audio or video.
    pub kind: MediaKind,
}

/// The MKI byte's offset from the end of an SRTP packet for this profile: last byte for
/// GCM (after the tag), before the tag for AES-CM (RFC 3711 §3.1, RFC 7714 §8).
pub(crate) fn mki_from_end(profile: SrtpProfile) -> usize {
    if profile.is_aead() {
        1
    } else {
        profile.rtp_tag_len() + 1
    }
}

pub(crate) struct RemoteSender {
    pub(crate) id: SenderId,
    pub(crate) streams: Vec<RemoteStream>,
    ctx: SrtpContext,
    /// Installed key indexes, oldest first.
    installed: Vec<KeyIndex>,
    /// The newest key a packet authenticated under: the sender's current key. A late
    /// packet under an older one (reordered, or resent from the relay's cache) does not
    /// make that one current again.
    in_use: Option<KeyIndex>,
    /// The installed keys packets have used, in the order of their first use (a sender
    /// only ever moves on to a new key).
    used: Vec<KeyIndex>,
    /// A previous key and when it goes.
    retire: Option<(KeyIndex, Instant)>,
    /// Until when no rollover counters are searched ([`ROC_SEARCH_BACKOFF`]).
    search_paused_until: Option<Instant>,
}

impl RemoteSender {
    fn new(
        id: SenderId,
        streams: &[RemoteStream],
        profile: SrtpProfile,
        keys: &[(KeyIndex, &[u8])],
    ) -> Result<Self, ParticipantError> {
        let (first, rest) = keys.split_first().ok_or(ParticipantError::NoKeys)?;
        let mut ctx = SrtpContext::new(profile, first.1, Some(first.0))
            .map_err(ParticipantError::Srtp)?
            .with_max_streams(streams.len().max(1))
            .with_roc_search(REMOTE_ROC_SEARCH);
        for (i, k) in rest {
            ctx.add_key(*i, k).map_err(ParticipantError::Srtp)?;
        }
        Ok(RemoteSender {
            id,
            streams: streams.to_vec(),
            ctx,
            installed: keys.iter().map(|k| k.0).collect(),
            in_use: None,
            used: Vec::with_capacity(MAX_REMOTE_KEYS + 1),
            retire: None,
            search_paused_until: None,
        })
    }

    pub(crate) fn profile(&self) -> SrtpProfile {
        self.ctx.profile()
    }

    pub(crate) fn kind_of(&self, ssrc: Ssrc) -> Option<MediaKind> {
        self.streams.iter().find(|s| s.ssrc == ssrc).map(|s| s.kind)
    }

    /// The installed key indexes, oldest first.
    pub(crate) fn keys(&self) -> &[KeyIndex] {
        &self.installed
    }

    /// Replaces the key set (same profile): adds the listed keys, keeps the one in use
    /// if it is not listed — or else the previous one while its grace period runs — when
    /// the set lists fewer than two, removes the rest.
    fn replace_keys(&mut self, keys: &[(KeyIndex, &[u8])]) -> Result<(), ParticipantError> {
        // Validate every key before changing anything.
        for (_, k) in keys {
            if k.len() != self.ctx.profile().master_len() {
                return Err(ParticipantError::Srtp(SrtpError::BadMasterLength));
            }
        }
        for (i, k) in keys {
            self.ctx.add_key(*i, k).map_err(ParticipantError::Srtp)?;
        }
        let mut keep: Vec<KeyIndex> = Vec::with_capacity(MAX_REMOTE_KEYS + 1);
        let unlisted = |k: &KeyIndex| !keys.iter().any(|l| l.0 == *k);
        // A re-sent key event (a newcomer arrived) lists only the current key: the
        // previous one still serves late packets until its grace period ends.
        let held = [self.in_use, self.retire.map(|r| r.0)]
            .into_iter()
            .flatten()
            .find(unlisted);
        if let Some(k) = held
            && keys.len() < MAX_REMOTE_KEYS
        {
            keep.push(k);
        }
        keep.extend(keys.iter().map(|k| k.0));
        self.set_installed(keep);
        Ok(())
    }

    fn set_installed(&mut self, keep: Vec<KeyIndex>) {
        if let Some(&newest) = keep.last() {
            // Removing the "active" (protect) key is refused; receivers never protect.
            let _ = self.ctx.set_active_key(newest);
        }
        for old in &self.installed {
            if !keep.contains(old) {
                let _ = self.ctx.remove_key(*old);
            }
        }
        if let Some((r, _)) = self.retire
            && !keep.contains(&r)
        {
            self.retire = None;
        }
        self.used.retain(|k| keep.contains(k));
        self.installed = keep;
    }

    /// Unprotects in place; returns the plaintext length and the key index used.
    pub(crate) fn unprotect(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<(usize, KeyIndex), SrtpError> {
        let at = buf
            .len()
            .checked_sub(mki_from_end(self.ctx.profile()))
            .ok_or(SrtpError::TooShort)?;
        let index = KeyIndex(*buf.get(at).ok_or(SrtpError::TooShort)?);
        let searching = self.search_paused_until.is_none_or(|t| now >= t);
        self.ctx
            .set_roc_search(if searching { REMOTE_ROC_SEARCH } else { 0 });
        let n = match self.ctx.unprotect_rtp(buf) {
            Ok(n) => n,
            Err(e) => {
                // A failed search pauses the search; a stream the context knows costs
                // one check a packet until it takes it for lost.
                if self.ctx.searched() && e == SrtpError::AuthFailed {
                    self.search_paused_until = Some(now + ROC_SEARCH_BACKOFF);
                }
                return Err(e);
            }
        };
        if self.in_use != Some(index) && !self.used.contains(&index) {
            // A key never used before: the sender moved on to it.
            self.used.push(index);
            if let Some(prev) = self.in_use {
                self.retire = Some((prev, now + PREVIOUS_KEY_GRACE));
            }
            self.in_use = Some(index);
        }
        Ok((n, index))
    }

    pub(crate) fn retire_deadline(&self) -> Option<Instant> {
        self.retire.map(|r| r.1)
    }

    /// Removes the previous key if its grace period is over.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<KeyIndex> {
        let (idx, at) = self.retire?;
        if now < at {
            return None;
        }
        self.retire = None;
        if self.in_use == Some(idx) {
            return None;
        }
        let keep: Vec<KeyIndex> = self
            .installed
            .iter()
            .copied()
            .filter(|k| *k != idx)
            .collect();
        self.set_installed(keep);
        Some(idx)
    }
}

/// Every remote sender, looked up by id or SSRC (linear: a conference's senders).
#[derive(Default)]
pub(crate) struct Remotes {
    pub(crate) senders: Vec<RemoteSender>,
}

impl Remotes {
    pub(crate) fn by_ssrc(&mut self, ssrc: Ssrc) -> Option<&mut RemoteSender> {
        self.senders
            .iter_mut()
            .find(|s| s.streams.iter().any(|st| st.ssrc == ssrc))
    }

    pub(crate) fn get(&self, id: SenderId) -> Option<&RemoteSender> {
        self.senders.iter().find(|s| s.id == id)
    }

    /// Installs a key event. See [`crate::Participant::install_remote_keys`].
    pub(crate) fn install(
        &mut self,
        own: &[Ssrc],
        id: SenderId,
        streams: &[RemoteStream],
        profile: SrtpProfile,
        keys: &[(KeyIndex, &[u8])],
    ) -> Result<(), ParticipantError> {
        if keys.is_empty() {
            return Err(ParticipantError::NoKeys);
        }
        if keys.len() > MAX_REMOTE_KEYS {
            return Err(ParticipantError::TooManyKeys);
        }
        if keys.len() == 2 && keys[0].0 == keys[1].0 {
            return Err(ParticipantError::DuplicateKeyIndex(keys[0].0));
        }
        if streams.is_empty() {
            return Err(ParticipantError::NoStreams);
        }
        for (i, s) in streams.iter().enumerate() {
            if own.contains(&s.ssrc) || streams[..i].iter().any(|o| o.ssrc == s.ssrc) {
                return Err(ParticipantError::SsrcCollision(s.ssrc));
            }
            if let Some(other) = self
                .senders
                .iter()
                .find(|o| o.id != id && o.streams.iter().any(|st| st.ssrc == s.ssrc))
            {
                let _ = other;
                return Err(ParticipantError::SsrcCollision(s.ssrc));
            }
        }
        match self.senders.iter_mut().position(|s| s.id == id) {
            Some(at) => {
                let sender = &mut self.senders[at];
                let same_set = sender.streams.len() == streams.len()
                    && streams.iter().all(|s| sender.streams.contains(s));
                if !same_set {
                    return Err(ParticipantError::StreamsChanged);
                }
                if sender.profile() != profile {
                    // One sender uses one profile; a new one means a fresh context.
                    self.senders[at] = RemoteSender::new(id, streams, profile, keys)?;
                } else {
                    sender.replace_keys(keys)?;
                }
            }
            None => self
                .senders
                .push(RemoteSender::new(id, streams, profile, keys)?),
        }
        Ok(())
    }

    pub(crate) fn remove(&mut self, id: SenderId) -> bool {
        let before = self.senders.len();
        self.senders.retain(|s| s.id != id);
        self.senders.len() != before
    }
}
