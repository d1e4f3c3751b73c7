//! [`SrtpContext`]: master keys, per-SSRC state, and protect/unprotect in place.

use crate::id::{KeyIndex, Ssrc};
use crate::wire::rtp::RtpHeader;

use super::SrtpError;
use super::profile::SrtpProfile;
use super::replay::ReplayWindow;
use super::transform::{GCM_TAG_LEN, Transform};

/// Default cap on the number of SSRCs a context tracks, per table (SRTP and SRTCP).
pub const DEFAULT_MAX_STREAMS: usize = 32;

/// Length of the SRTCP header left in the clear (RFC 3711 §3.4): V/P/RC, PT, length,
/// sender SSRC.
const RTCP_HEADER_LEN: usize = 8;
/// The E flag and 31-bit SRTCP index word.
const RTCP_INDEX_LEN: usize = 4;
const E_FLAG: u32 = 0x8000_0000;
/// Largest SRTCP index (31 bits).
const MAX_RTCP_INDEX: u32 = 0x7fff_ffff;

/// The session keys derived from one master key.
struct KeySlot {
    index: KeyIndex,
    rtp: Transform,
    rtcp: Transform,
}

/// Per-SSRC SRTP state: what we sent and what we received, kept apart so one context
/// can serve both directions.
#[derive(Clone, Copy)]
struct RtpStream {
    ssrc: Ssrc,
    tx: ReplayWindow,
    rx: ReplayWindow,
    /// Packets received in a row that failed their index or tag check (up to
    /// [`LOST_AFTER`]; a replay does not count); 0 after one that authenticated.
    rx_failures: u8,
}

/// Packets of a known receive stream failing in a row after which the next ones are
/// also tried under later rollover counters (when [`SrtpContext::with_roc_search`]
/// allows a search): the stream went on without us for more than half the
/// sequence-number space, so the estimate from the last index is wrong. A receiver
/// that gets a sender's layer again after minutes without it is one; the relay
/// forwards sequence numbers as the sender wrote them.
const LOST_AFTER: u8 = 4;

/// Per-SSRC SRTCP state.
#[derive(Clone, Copy)]
struct RtcpStream {
    ssrc: Ssrc,
    next_tx: u32,
    rx: ReplayWindow,
}

/// An SRTP/SRTCP cryptographic context (RFC 3711 §3.2) for one profile: up to 256 master
/// keys addressed by a one-byte MKI (or a single key and no MKI), and the rollover
/// counter, replay window and SRTCP index of every SSRC seen.
///
/// # Packet layout
///
/// With `m` the one-byte MKI (when enabled) and `t` the tag:
///
/// | profile | SRTP | SRTCP |
/// |---|---|---|
/// | AES-CM (RFC 3711 §3.1, §3.4) | header ‖ enc ‖ m ‖ t | header ‖ enc ‖ E·index ‖ m ‖ t |
/// | GCM (RFC 7714 §8, §9) | header ‖ enc ‖ t ‖ m | header ‖ enc ‖ t ‖ E·index ‖ m |
///
/// In GCM the tag is part of the AEAD output, so the MKI follows it, as libsrtp's
/// `srtp_protect_mki` writes it. The MKI is never authenticated; a packet whose MKI
/// names no installed key is rejected before any crypto.
///
/// # Per-SSRC state
///
/// Each SSRC gets an entry on first sight: when we protect for it, or when a packet from
/// it has authenticated (so forged packets cannot fill the table). Each table holds at
/// most `max_streams` entries ([`DEFAULT_MAX_STREAMS`], see
/// [`SrtpContext::with_max_streams`]); a new SSRC beyond that is refused with
/// [`SrtpError::TooManyStreams`] until [`SrtpContext::remove_stream`] frees a slot. A
/// new receive stream starts with rollover counter 0, unless
/// [`SrtpContext::with_roc_search`] lets it find a later one (and a known one that went
/// on without us for more than 32 768 packets find its own again).
///
/// SRTCP indexes we send are never reused under a key, across removals too: a removed
/// SSRC's next index raises a floor that every new send stream starts at, so an SSRC
/// that comes back (or any new one) continues above every index it was sent with.
///
/// # Allocation
///
/// [`SrtpContext::new`], [`SrtpContext::add_key`] and the first packet of a new SSRC may
/// allocate; protect and unprotect of a known SSRC do not, in Rust or inside aws-lc: the
/// AES key schedules, HMAC keys and GCM contexts are all built when a key is added.
///
/// On error the packet bytes may have been changed (for example partly decrypted by a
/// failed GCM open); the per-SSRC state is not.
pub struct SrtpContext {
    profile: SrtpProfile,
    mki: bool,
    keys: Vec<KeySlot>,
    active: usize,
    rtp: Vec<RtpStream>,
    rtcp: Vec<RtcpStream>,
    /// Streams per table (a `u32`, with the two below, keeps the context small: the
    /// engine holds two per connected participant).
    max_streams: u32,
    /// The SRTCP index a new send stream starts at: at least the next index of every
    /// stream removed so far, so no (key, SSRC, index) is protected twice.
    rtcp_floor: u32,
    /// Rollover counters past 0 tried on a new receive stream, and past its own on a
    /// lost one (0: none).
    roc_search: u32,
    /// Whether the last [`SrtpContext::unprotect_rtp`] searched rollover counters.
    searched: bool,
}

/// The longest packet [`SrtpContext::with_roc_search`] retries (its copy lives on the
/// stack); longer first packets of a new stream are tried under ROC 0 only.
pub const ROC_SEARCH_MAX_LEN: usize = 2048;

impl core::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("mki", &self.mki)
            .field("keys", &self.keys.len())
            .field("rtp_streams", &self.rtp.len())
            .field("rtcp_streams", &self.rtcp.len())
            .finish_non_exhaustive()
    }
}

/// Where an SRTP packet's parts are, for [`SrtpContext::open_rtp`].
struct RtpBody {
    /// The key slot named by its MKI.
    key: usize,
    /// Header length (where the encrypted payload starts).
    hlen: usize,
    /// End of the authenticated portion (header + payload; AES-CM only).
    body_end: usize,
    /// 1 with an MKI, else 0.
    mki_len: usize,
    ssrc: Ssrc,
}

fn be32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_be_bytes(w)
}

impl SrtpContext {
    /// Creates a context holding one master key (`master` = master key ‖ master salt).
    ///
    /// With `mki: Some(index)` every packet carries a one-byte MKI and `index` is the
    /// active key; with `None` packets carry no MKI and the context holds exactly this
    /// key (hop-by-hop SRTCP).
    ///
    /// Rejects master material of the wrong length ([`SrtpError::BadMasterLength`]).
    pub fn new(
        profile: SrtpProfile,
        master: &[u8],
        mki: Option<KeyIndex>,
    ) -> Result<Self, SrtpError> {
        let slot = Self::slot(profile, mki.unwrap_or(KeyIndex(0)), master)?;
        Ok(SrtpContext {
            profile,
            mki: mki.is_some(),
            keys: vec![slot],
            active: 0,
            rtp: Vec::new(),
            rtcp: Vec::new(),
            rtcp_floor: 0,
            max_streams: DEFAULT_MAX_STREAMS as u32,
            roc_search: 0,
            searched: false,
        })
    }

    /// Lets a receive stream that is new to this context start at any rollover counter
    /// up to `max_roc`, not only 0: while no packet of the stream has authenticated, a
    /// packet that fails under ROC 0 is tried under ROC 1, 2, … `max_roc` (a copy of it
    /// on the stack, at most [`ROC_SEARCH_MAX_LEN`] bytes; no allocation). The first ROC
    /// that authenticates is the stream's from then on.
    ///
    /// This is for a receiver that installs a sender's key after the sender's sequence
    /// numbers wrapped (a late joiner): RFC 3711 §3.3.1 leaves that ROC to signaling,
    /// and the key events do not carry it. Trying is sound because the ROC is part of
    /// the authenticated index: a wrong guess fails the tag like a forgery does (with
    /// GCM's 128-bit tag, 64 guesses cost 6 bits of forgery resistance on a stream's
    /// first packets only). The price is up to `max_roc + 1` tag checks per packet of a
    /// stream that never authenticates.
    ///
    /// It also finds a known stream again after a gap of more than half the
    /// sequence-number space, where the estimate from the last index is wrong: after
    /// 4 of its packets failed in a row, the next are tried at the indexes
    /// past its highest, under its ROC and the `max_roc` after it (never below the
    /// highest, so a replayed older packet stays refused).
    pub fn with_roc_search(mut self, max_roc: u32) -> Self {
        self.roc_search = max_roc;
        self
    }

    /// Changes how many rollover counters are searched (see
    /// [`with_roc_search`](Self::with_roc_search)); 0 tries only ROC 0.
    pub fn set_roc_search(&mut self, max_roc: u32) {
        self.roc_search = max_roc;
    }

    /// Whether the last [`unprotect_rtp`](Self::unprotect_rtp) tried the packet under
    /// searched rollover counters (a new stream's first packets, or a lost stream's;
    /// see [`with_roc_search`](Self::with_roc_search)) rather than one index: what a
    /// packet that authenticates under none of them costs.
    pub fn searched(&self) -> bool {
        self.searched
    }

    /// Sets the per-table SSRC cap (at least 1). Entries already present are kept.
    pub fn with_max_streams(mut self, max_streams: usize) -> Self {
        self.max_streams = u32::try_from(max_streams.max(1)).unwrap_or(u32::MAX);
        self
    }

    fn slot(profile: SrtpProfile, index: KeyIndex, master: &[u8]) -> Result<KeySlot, SrtpError> {
        if master.len() != profile.master_len() {
            return Err(SrtpError::BadMasterLength);
        }
        let (key, salt) = master.split_at(profile.master_key_len());
        Ok(KeySlot {
            index,
            rtp: Transform::derive(profile, key, salt, false)?,
            rtcp: Transform::derive(profile, key, salt, true)?,
        })
    }

    /// The profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Whether packets carry a one-byte MKI.
    pub fn has_mki(&self) -> bool {
        self.mki
    }

    /// The key [`SrtpContext::protect_rtp`] and [`SrtpContext::protect_rtcp`] use.
    pub fn active_key(&self) -> KeyIndex {
        self.keys[self.active].index
    }

    /// Whether a key with this index is installed.
    pub fn has_key(&self, index: KeyIndex) -> bool {
        self.keys.iter().any(|k| k.index == index)
    }

    /// Bytes [`SrtpContext::protect_rtp`] appends: tag and MKI.
    pub fn rtp_overhead(&self) -> usize {
        self.profile.rtp_tag_len() + usize::from(self.mki)
    }

    /// Bytes [`SrtpContext::protect_rtcp`] appends: index word, tag and MKI.
    pub fn rtcp_overhead(&self) -> usize {
        RTCP_INDEX_LEN + self.profile.rtcp_tag_len() + usize::from(self.mki)
    }

    /// Installs (or replaces) the master key with MKI `index`. Does not change the
    /// active key.
    ///
    /// Rejects a context without MKI ([`SrtpError::MkiDisabled`]) and master material
    /// of the wrong length ([`SrtpError::BadMasterLength`]).
    pub fn add_key(&mut self, index: KeyIndex, master: &[u8]) -> Result<(), SrtpError> {
        if !self.mki {
            return Err(SrtpError::MkiDisabled);
        }
        let slot = Self::slot(self.profile, index, master)?;
        match self.keys.iter_mut().find(|k| k.index == index) {
            Some(k) => *k = slot,
            None => self.keys.push(slot),
        }
        Ok(())
    }

    /// Removes the master key with MKI `index`.
    ///
    /// Rejects an index that is not installed ([`SrtpError::UnknownKey`]) and the active
    /// key ([`SrtpError::ActiveKey`]).
    pub fn remove_key(&mut self, index: KeyIndex) -> Result<(), SrtpError> {
        let at = self
            .keys
            .iter()
            .position(|k| k.index == index)
            .ok_or(SrtpError::UnknownKey)?;
        if at == self.active {
            return Err(SrtpError::ActiveKey);
        }
        let active = self.keys[self.active].index;
        self.keys.swap_remove(at);
        self.active = self
            .keys
            .iter()
            .position(|k| k.index == active)
            .unwrap_or(0);
        Ok(())
    }

    /// Makes the key with MKI `index` the one protect uses.
    ///
    /// Rejects an index that is not installed ([`SrtpError::UnknownKey`]).
    pub fn set_active_key(&mut self, index: KeyIndex) -> Result<(), SrtpError> {
        self.active = self
            .keys
            .iter()
            .position(|k| k.index == index)
            .ok_or(SrtpError::UnknownKey)?;
        Ok(())
    }

    /// Forgets all state of `ssrc` (rollover counter, replay windows, SRTCP index), in
    /// both tables, freeing its slots. Its next SRTCP send index stays as a floor: a
    /// later send stream, this SSRC again included, starts at or above it.
    pub fn remove_stream(&mut self, ssrc: Ssrc) {
        self.rtp.retain(|s| s.ssrc != ssrc);
        let floor = &mut self.rtcp_floor;
        self.rtcp.retain(|s| {
            if s.ssrc == ssrc {
                *floor = (*floor).max(s.next_tx);
            }
            s.ssrc != ssrc
        });
    }

    /// Forgets the state of every SSRC (keeping the SRTCP send-index floor, as
    /// [`remove_stream`](Self::remove_stream) does).
    pub fn clear_streams(&mut self) {
        self.rtp.clear();
        for s in &self.rtcp {
            self.rtcp_floor = self.rtcp_floor.max(s.next_tx);
        }
        self.rtcp.clear();
    }

    /// The rollover counter and sequence number of the highest SRTP index received and
    /// authenticated from `ssrc`, as one 48-bit number.
    pub fn rtp_rx_index(&self, ssrc: Ssrc) -> Option<u64> {
        self.rtp
            .iter()
            .find(|s| s.ssrc == ssrc)
            .and_then(|s| s.rx.highest())
    }

    /// Sets the SRTCP index the next [`SrtpContext::protect_rtcp`] for `ssrc` uses
    /// (normally it starts at 0, or the floor [`remove_stream`](Self::remove_stream)
    /// leaves, and counts up), e.g. to resume a stream.
    ///
    /// Rejects an index above 2^31 − 1 ([`SrtpError::IndexExhausted`]) and a new SSRC
    /// beyond the cap ([`SrtpError::TooManyStreams`]).
    pub fn set_next_rtcp_index(&mut self, ssrc: Ssrc, index: u32) -> Result<(), SrtpError> {
        if index > MAX_RTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let at = self.rtcp_stream_or_insert(ssrc)?;
        self.rtcp[at].next_tx = index;
        Ok(())
    }

    fn rtp_stream_or_insert(&mut self, ssrc: Ssrc) -> Result<usize, SrtpError> {
        if let Some(at) = self.rtp.iter().position(|s| s.ssrc == ssrc) {
            return Ok(at);
        }
        if self.rtp.len() >= self.max_streams as usize {
            return Err(SrtpError::TooManyStreams);
        }
        self.rtp.push(RtpStream {
            ssrc,
            tx: ReplayWindow::default(),
            rx: ReplayWindow::default(),
            rx_failures: 0,
        });
        Ok(self.rtp.len() - 1)
    }

    fn rtcp_stream_or_insert(&mut self, ssrc: Ssrc) -> Result<usize, SrtpError> {
        if let Some(at) = self.rtcp.iter().position(|s| s.ssrc == ssrc) {
            return Ok(at);
        }
        if self.rtcp.len() >= self.max_streams as usize {
            return Err(SrtpError::TooManyStreams);
        }
        self.rtcp.push(RtcpStream {
            ssrc,
            next_tx: self.rtcp_floor,
            rx: ReplayWindow::default(),
        });
        Ok(self.rtcp.len() - 1)
    }

    /// Finds the key named by the MKI byte at `at` (or the only key without MKI).
    fn key_for(&self, buf: &[u8], at: usize) -> Result<usize, SrtpError> {
        if !self.mki {
            return Ok(0);
        }
        let mki = KeyIndex(*buf.get(at).ok_or(SrtpError::TooShort)?);
        self.keys
            .iter()
            .position(|k| k.index == mki)
            .ok_or(SrtpError::UnknownMki)
    }

    /// Protects the RTP packet in `buf[..len]` in place and returns the SRTP length,
    /// `len + rtp_overhead()`; `buf` must have that much room.
    ///
    /// Rejects `len > buf.len()` or too little room ([`SrtpError::BufferTooSmall`]), a
    /// malformed RTP header ([`SrtpError::Rtp`]), a sequence number already protected or
    /// more than 64 behind the highest ([`SrtpError::Replayed`], [`SrtpError::TooOld`] —
    /// re-protecting an index would reuse a keystream), rollover counter exhaustion
    /// ([`SrtpError::IndexExhausted`]) and a new SSRC beyond the cap
    /// ([`SrtpError::TooManyStreams`]).
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::BufferTooSmall)?;
        let header = RtpHeader::parse(packet)?;
        let hlen = header.header_len();
        let ssrc = header.ssrc();
        let seq = header.seq().0;
        let tag_len = self.profile.rtp_tag_len();
        let total = len
            .checked_add(self.rtp_overhead())
            .filter(|&t| t <= buf.len())
            .ok_or(SrtpError::BufferTooSmall)?;

        let at = self.rtp_stream_or_insert(ssrc)?;
        let index = self.rtp[at].tx.estimate_rtp_index(seq)?;
        self.rtp[at].tx.check(index)?;

        let mki = self.mki.then(|| self.keys[self.active].index.0);
        match &self.keys[self.active].rtp {
            Transform::AesCm { aes, salt, auth } => {
                Transform::cm_xor(aes, salt, ssrc.0, index, &mut buf[hlen..len]);
                let roc = ((index >> 16) as u32).to_be_bytes();
                let tag = Transform::hmac(auth, &buf[..len], &roc);
                let mut pos = len;
                if let Some(m) = mki {
                    buf[pos] = m;
                    pos += 1;
                }
                buf[pos..pos + tag_len].copy_from_slice(&tag.as_ref()[..tag_len]);
            }
            Transform::Gcm { key, salt } => {
                let nonce = Transform::gcm_nonce(salt, ssrc.0, index);
                let (head, rest) = buf.split_at_mut(hlen);
                let tag = Transform::gcm_seal(key, nonce, head, &mut rest[..len - hlen])?;
                buf[len..len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                if let Some(m) = mki {
                    buf[len + GCM_TAG_LEN] = m;
                }
            }
        }
        self.rtp[at].tx.accept(index);
        Ok(total)
    }

    /// Verifies and decrypts the SRTP packet that is all of `buf`, in place; returns the
    /// length of the RTP packet now in `buf[..n]`.
    ///
    /// Rejects a malformed RTP header ([`SrtpError::Rtp`]), a packet too short to hold
    /// the MKI and tag ([`SrtpError::TooShort`]), an MKI naming no installed key
    /// ([`SrtpError::UnknownMki`]), a replay or a packet 64 or more behind the highest
    /// ([`SrtpError::Replayed`], [`SrtpError::TooOld`]), a failed tag check
    /// ([`SrtpError::AuthFailed`]), an index past the last rollover counter
    /// ([`SrtpError::IndexExhausted`]) and a new SSRC beyond the cap
    /// ([`SrtpError::TooManyStreams`]). The replay window moves only after the tag
    /// verified.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let len = buf.len();
        let header = RtpHeader::parse(buf)?;
        let hlen = header.header_len();
        let ssrc = header.ssrc();
        let seq = header.seq().0;
        let tag_len = self.profile.rtp_tag_len();
        let mki_len = usize::from(self.mki);
        let body_end = len
            .checked_sub(tag_len + mki_len)
            .filter(|&e| e >= hlen)
            .ok_or(SrtpError::TooShort)?;
        let key = if self.profile.is_aead() {
            self.key_for(buf, len - mki_len)?
        } else {
            self.key_for(buf, body_end)?
        };

        let existing = self.rtp.iter().position(|s| s.ssrc == ssrc);
        if existing.is_none() && self.rtp.len() >= self.max_streams as usize {
            return Err(SrtpError::TooManyStreams);
        }
        let body = RtpBody {
            key,
            hlen,
            body_end,
            mki_len,
            ssrc,
        };
        let searching = self.roc_search > 0 && len <= ROC_SEARCH_MAX_LEN;
        self.searched = false;
        let Some(at) = existing else {
            self.searched = searching;
            // A new stream: ROC 0, or the first of 0 ..= `roc_search` that authenticates.
            let (n, index) = match searching {
                true => self.open_rtp_any_roc(buf, &body, seq, None)?,
                false => (self.open_rtp(buf, &body, u64::from(seq))?, u64::from(seq)),
            };
            let at = self.rtp_stream_or_insert(ssrc)?;
            self.rtp[at].rx.accept(index);
            return Ok(n);
        };
        let window = self.rtp[at].rx;
        let opened = if searching && self.rtp[at].rx_failures >= LOST_AFTER {
            // Lost: only an index past the highest, under its rollover counter or a
            // later one (a replay of an older packet authenticates under none of them).
            self.searched = true;
            self.open_rtp_any_roc(buf, &body, seq, window.highest())
        } else {
            window
                .estimate_rtp_index(seq)
                .and_then(|index| window.check(index).map(|()| index))
                .and_then(|index| Ok((self.open_rtp(buf, &body, index)?, index)))
        };
        let stream = &mut self.rtp[at];
        match opened {
            Ok((n, index)) => {
                stream.rx.accept(index);
                stream.rx_failures = 0;
                Ok(n)
            }
            // A duplicate (a resend and a late original both arriving) is no sign of a
            // lost stream.
            Err(e @ SrtpError::Replayed) => Err(e),
            Err(e) => {
                stream.rx_failures = stream.rx_failures.saturating_add(1).min(LOST_AFTER);
                Err(e)
            }
        }
    }

    /// Verifies and decrypts `buf` (an SRTP packet laid out as `body` says) in place as
    /// packet `index`; returns the plaintext RTP length.
    fn open_rtp(&self, buf: &mut [u8], body: &RtpBody, index: u64) -> Result<usize, SrtpError> {
        let len = buf.len();
        let tag_len = self.profile.rtp_tag_len();
        match &self.keys[body.key].rtp {
            Transform::AesCm { aes, salt, auth } => {
                let roc = ((index >> 16) as u32).to_be_bytes();
                let computed = Transform::hmac(auth, &buf[..body.body_end], &roc);
                if !Transform::tag_matches(&computed, &buf[len - tag_len..]) {
                    return Err(SrtpError::AuthFailed);
                }
                Transform::cm_xor(
                    aes,
                    salt,
                    body.ssrc.0,
                    index,
                    &mut buf[body.hlen..body.body_end],
                );
                Ok(body.body_end)
            }
            Transform::Gcm { key, salt } => {
                let nonce = Transform::gcm_nonce(salt, body.ssrc.0, index);
                let (head, rest) = buf.split_at_mut(body.hlen);
                let n = Transform::gcm_open(
                    key,
                    nonce,
                    head,
                    &mut rest[..len - body.mki_len - body.hlen],
                )?;
                Ok(body.hlen + n)
            }
        }
    }

    /// [`open_rtp`](Self::open_rtp) under a searched rollover counter: for the first
    /// packets of a new stream (`after` is `None`), ROC 0, then 1 ..= `roc_search` (see
    /// [`with_roc_search`](Self::with_roc_search)); for a lost one, the indexes past
    /// `after` under its ROC and the `roc_search` after it. Each try is from a stack
    /// copy of the packet (a failed GCM open leaves the bytes unspecified). Returns the
    /// plaintext length and the index that authenticated.
    fn open_rtp_any_roc(
        &self,
        buf: &mut [u8],
        body: &RtpBody,
        seq: u16,
        after: Option<u64>,
    ) -> Result<(usize, u64), SrtpError> {
        let len = buf.len();
        let mut saved = [0u8; ROC_SEARCH_MAX_LEN];
        let copy = saved.get_mut(..len).ok_or(SrtpError::BufferTooSmall)?;
        copy.copy_from_slice(buf);
        let first = after.map_or(0, |a| a >> 16);
        let last_roc = (first + u64::from(self.roc_search)).min(u64::from(u32::MAX));
        let candidates = (first..=last_roc)
            .map(|roc| (roc << 16) | u64::from(seq))
            .filter(|&index| after.is_none_or(|a| index > a));
        let mut last = SrtpError::AuthFailed;
        for (i, index) in candidates.enumerate() {
            if i > 0 {
                buf.copy_from_slice(copy);
            }
            match self.open_rtp(buf, body, index) {
                Ok(n) => return Ok((n, index)),
                Err(SrtpError::AuthFailed) => last = SrtpError::AuthFailed,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Protects the RTCP compound packet in `buf[..len]` in place (always encrypted,
    /// E = 1) with the next SRTCP index of its sender SSRC (bytes 4..8), and returns the
    /// SRTCP length, `len + rtcp_overhead()`.
    ///
    /// Rejects `len > buf.len()` or too little room ([`SrtpError::BufferTooSmall`]), a
    /// packet shorter than 8 bytes ([`SrtpError::TooShort`]) or not version 2
    /// ([`SrtpError::BadRtcpVersion`]), SRTCP index exhaustion
    /// ([`SrtpError::IndexExhausted`]) and a new SSRC beyond the cap
    /// ([`SrtpError::TooManyStreams`]).
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::BufferTooSmall)?;
        let ssrc = Self::rtcp_ssrc(packet)?;
        let tag_len = self.profile.rtcp_tag_len();
        let total = len
            .checked_add(self.rtcp_overhead())
            .filter(|&t| t <= buf.len())
            .ok_or(SrtpError::BufferTooSmall)?;

        let at = self.rtcp_stream_or_insert(ssrc)?;
        let index = self.rtcp[at].next_tx;
        if index > MAX_RTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let word = (E_FLAG | index).to_be_bytes();

        let mki = self.mki.then(|| self.keys[self.active].index.0);
        match &self.keys[self.active].rtcp {
            Transform::AesCm { aes, salt, auth } => {
                Transform::cm_xor(
                    aes,
                    salt,
                    ssrc.0,
                    u64::from(index),
                    &mut buf[RTCP_HEADER_LEN..len],
                );
                buf[len..len + RTCP_INDEX_LEN].copy_from_slice(&word);
                let tag = Transform::hmac(auth, &buf[..len + RTCP_INDEX_LEN], &[]);
                let mut pos = len + RTCP_INDEX_LEN;
                if let Some(m) = mki {
                    buf[pos] = m;
                    pos += 1;
                }
                buf[pos..pos + tag_len].copy_from_slice(&tag.as_ref()[..tag_len]);
            }
            Transform::Gcm { key, salt } => {
                let nonce = Transform::gcm_nonce(salt, ssrc.0, u64::from(index));
                let aad = Self::rtcp_aad(buf, word);
                let tag = Transform::gcm_seal(key, nonce, &aad, &mut buf[RTCP_HEADER_LEN..len])?;
                buf[len..len + GCM_TAG_LEN].copy_from_slice(tag.as_ref());
                let pos = len + GCM_TAG_LEN;
                buf[pos..pos + RTCP_INDEX_LEN].copy_from_slice(&word);
                if let Some(m) = mki {
                    buf[pos + RTCP_INDEX_LEN] = m;
                }
            }
        }
        self.rtcp[at].next_tx = index + 1;
        Ok(total)
    }

    /// Verifies and decrypts the SRTCP packet that is all of `buf`, in place; returns
    /// the length of the RTCP compound packet now in `buf[..n]`.
    ///
    /// Rejects a packet too short for header, index, MKI and tag
    /// ([`SrtpError::TooShort`]), not version 2 ([`SrtpError::BadRtcpVersion`]), with
    /// E = 0 ([`SrtpError::UnencryptedSrtcp`]: we never send unencrypted SRTCP and do
    /// not accept it), an MKI naming no installed key ([`SrtpError::UnknownMki`]), a
    /// replayed or too-old index ([`SrtpError::Replayed`], [`SrtpError::TooOld`]), a
    /// failed tag check ([`SrtpError::AuthFailed`]) and a new SSRC beyond the cap
    /// ([`SrtpError::TooManyStreams`]). The replay window moves only after the tag
    /// verified.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let len = buf.len();
        let tag_len = self.profile.rtcp_tag_len();
        let mki_len = usize::from(self.mki);
        if len < RTCP_HEADER_LEN + RTCP_INDEX_LEN + tag_len + mki_len {
            return Err(SrtpError::TooShort);
        }
        let ssrc = Self::rtcp_ssrc(buf)?;
        // Where the E·index word sits, and where the MKI sits.
        let (word_at, mki_at) = if self.profile.is_aead() {
            (len - mki_len - RTCP_INDEX_LEN, len - mki_len)
        } else {
            let mki_at = len - tag_len - mki_len;
            (mki_at - RTCP_INDEX_LEN, mki_at)
        };
        let word = be32(&buf[word_at..]);
        if word & E_FLAG == 0 {
            return Err(SrtpError::UnencryptedSrtcp);
        }
        let index = word & MAX_RTCP_INDEX;
        let key = self.key_for(buf, mki_at)?;

        let existing = self.rtcp.iter().position(|s| s.ssrc == ssrc);
        if existing.is_none() && self.rtcp.len() >= self.max_streams as usize {
            return Err(SrtpError::TooManyStreams);
        }
        let window = existing.map_or_else(ReplayWindow::default, |at| self.rtcp[at].rx);
        window.check(u64::from(index))?;

        let plain_len = match &self.keys[key].rtcp {
            Transform::AesCm { aes, salt, auth } => {
                let computed = Transform::hmac(auth, &buf[..word_at + RTCP_INDEX_LEN], &[]);
                if !Transform::tag_matches(&computed, &buf[len - tag_len..]) {
                    return Err(SrtpError::AuthFailed);
                }
                Transform::cm_xor(
                    aes,
                    salt,
                    ssrc.0,
                    u64::from(index),
                    &mut buf[RTCP_HEADER_LEN..word_at],
                );
                word_at
            }
            Transform::Gcm { key, salt } => {
                if word_at < RTCP_HEADER_LEN + GCM_TAG_LEN {
                    return Err(SrtpError::TooShort);
                }
                let nonce = Transform::gcm_nonce(salt, ssrc.0, u64::from(index));
                let aad = Self::rtcp_aad(buf, word.to_be_bytes());
                RTCP_HEADER_LEN
                    + Transform::gcm_open(key, nonce, &aad, &mut buf[RTCP_HEADER_LEN..word_at])?
            }
        };

        let at = match existing {
            Some(at) => at,
            None => self.rtcp_stream_or_insert(ssrc)?,
        };
        self.rtcp[at].rx.accept(u64::from(index));
        Ok(plain_len)
    }

    /// The sender SSRC of an RTCP packet, after the length and version checks.
    fn rtcp_ssrc(packet: &[u8]) -> Result<Ssrc, SrtpError> {
        let header = packet.get(..RTCP_HEADER_LEN).ok_or(SrtpError::TooShort)?;
        if header[0] >> 6 != 2 {
            return Err(SrtpError::BadRtcpVersion);
        }
        Ok(Ssrc(be32(&header[4..])))
    }

    /// GCM SRTCP associated data (RFC 7714 §9.2): the 8-byte header, then E·index.
    fn rtcp_aad(buf: &[u8], word: [u8; 4]) -> [u8; 12] {
        let mut aad = [0u8; 12];
        aad[..8].copy_from_slice(&buf[..8]);
        aad[8..].copy_from_slice(&word);
        aad
    }

    /// Test-only: a context whose SRTP and SRTCP transforms use the given GCM session
    /// key and salt directly (the RFC 7714 vectors start after the KDF).
    #[cfg(test)]
    pub(crate) fn from_gcm_session(
        profile: SrtpProfile,
        key: &[u8],
        salt: [u8; 12],
    ) -> Result<Self, SrtpError> {
        let slot = KeySlot {
            index: KeyIndex(0),
            rtp: Transform::gcm(key, salt)?,
            rtcp: Transform::gcm(key, salt)?,
        };
        let mut ctx = Self::new(profile, &vec![0; profile.master_len()], None)?;
        ctx.keys = vec![slot];
        Ok(ctx)
    }
}
