//! [`Participant`]: ICE + DTLS + SRTCP hop by hop to the relay, SRTP end to end.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use blindfold_relay::dtls::{
    DtlsCert, DtlsConfig, DtlsEvent, DtlsSession, DtlsSrtpProfile, Fingerprint, SrtpKeyMaterial,
};
use blindfold_relay::engine::uplink::{Limit, UplinkEstimate};
use blindfold_relay::id::{ExtId, KeyIndex, Pt, RtpTime, SeqNo, Ssrc, WireSeq};
use blindfold_relay::srtp::{MasterKey, SrtpContext, SrtpProfile};
use blindfold_relay::wire::rtcp::TransportCc;
use blindfold_relay::wire::rtcp::{
    self as rtcp, CompoundWriter, PauseKind, Probe, ProbeMessage, ProbeReport, ReportBlock,
    RtcpCompound, RtcpPacket, SenderInfo,
};
use blindfold_relay::wire::rtp::{
    AbsSendTime, RtpFields, RtpHeader, abs_send_time, frame_marking, transport_cc_seq, write_header,
};
use blindfold_relay::wire::{Datagram, demux};

use crate::bwe::{Bwe, BweConfig};
use crate::ice::{IceAgent, IceCredentials, IceEvent, IceSettings};
use crate::media::{MediaKind, RemoteStream, Remotes, SenderId};
use crate::repair::{Congestion, RepairPace, StreamRepair};
use crate::rng::Rng;
use crate::{DropReason, FailReason, ParticipantError};

/// Largest datagram the participant sends.
pub const MAX_DATAGRAM: usize = 1500;
/// Room for an RTCP compound we build before protection.
const RTCP_BUF: usize = 1200;
/// Report blocks an SR or RR holds (its 5-bit count).
const MAX_REPORT_BLOCKS: usize = 31;
/// Gaps up to this many packets are NACKed; longer ones on video ask for a keyframe.
pub const MAX_NACK_GAP: u64 = 32;
/// SSRCs an inbound SRTCP context tracks (every sender's SRs come through the relay).
const MAX_SRTCP_STREAMS: usize = 1024;
/// How long we may go without any SRTCP from the relay, while it keeps answering our
/// consent checks, before we take it that the relay lost our session (it restarted)
/// and connect again ([`Event::Reconnecting`]). The relay sends every connected
/// session some SRTCP at least once a second (an empty receiver report if nothing
/// else), so this is five of its beats missed.
pub const RELAY_SILENCE: Duration = Duration::from_secs(5);
/// When the relay has been silent for four of its usual gaps between SRTCP packets (a
/// moving average, starting at its once-a-second beat), but at least [`PROBE_MIN`] and
/// at most this long, we send a consent check at once instead of at its time: if our
/// NAT gave us a new address, the answer says so, and we nominate the new one
/// ([`Event::AddressChanged`]), which moves our media there (once we answered the
/// relay's check of it), long before
/// [`RELAY_SILENCE`] would have us connect again. A sender that gets transport-cc
/// feedback every 100 ms asks after 500 ms; a listener that gets only the relay's beat,
/// after 2 s (two beats missed).
pub const RELAY_PROBE: Duration = Duration::from_secs(2);
/// The shortest silence after which we ask ([`RELAY_PROBE`]).
pub const PROBE_MIN: Duration = Duration::from_millis(500);
/// The relay's beat: it sends a connected session SRTCP at least this often.
const RELAY_BEAT: Duration = Duration::from_secs(1);
/// The relay's silence counts only if it answered one of our consent checks at least
/// this long after its last SRTCP, and this long ago: it was reachable, and had time
/// to speak, yet said nothing. (Without this, a network that carries nothing either
/// way would look like a relay that lost us; that is consent's business.)
const PATH_PROOF: Duration = Duration::from_secs(1);
/// RTP clock rates used to advance the RTP time in our SRs (Opus, VP8).
const AUDIO_CLOCK: u64 = 48_000;
const VIDEO_CLOCK: u64 = 90_000;

/// Our three send streams (docs/design.md: audio, thumbnail and full-resolution video). The
/// audio SSRC is also our RTCP sender SSRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnSsrcs {
    /// Audio.
    pub audio: Ssrc,
    /// Low simulcast layer.
    pub thumbnail: Ssrc,
    /// Full-resolution simulcast layer.
    pub full: Ssrc,
}

impl OwnSsrcs {
    /// A simple SSRC plan for many participants in one process (the load generator, the
    /// tests): participant `n` gets `0x1000·(n+1)` + 1, 2, 3, unique up to n = 2^20 − 2.
    pub fn numbered(n: usize) -> OwnSsrcs {
        let base = 0x1000u32.wrapping_mul(n as u32 + 1);
        OwnSsrcs {
            audio: Ssrc(base + 1),
            thumbnail: Ssrc(base + 2),
            full: Ssrc(base + 3),
        }
    }

    fn all(&self) -> [Ssrc; 3] {
        [self.audio, self.thumbnail, self.full]
    }

    /// These streams as a receiver installs them from this sender's key event.
    pub fn as_remote_streams(&self) -> [RemoteStream; 3] {
        [
            RemoteStream {
                ssrc: self.audio,
                kind: MediaKind::Audio,
            },
            RemoteStream {
                ssrc: self.thumbnail,
                kind: MediaKind::Video,
            },
            RemoteStream {
                ssrc: self.full,
                kind: MediaKind::Video,
            },
        ]
    }
}

/// Everything a [`Participant`] needs, from the SDP offer/answer and the key setup.
#[derive(Debug, Clone)]
pub struct ParticipantConfig {
    /// Our ICE credentials (from our offer).
    pub local_ice: IceCredentials,
    /// The relay's ICE credentials (from the answer).
    pub relay_ice: IceCredentials,
    /// The relay's host candidate (from the answer).
    pub relay_addr: SocketAddr,
    /// ICE timers.
    pub ice: IceSettings,
    /// Our DTLS identity (its fingerprint goes in our offer).
    pub cert: DtlsCert,
    /// The relay's certificate fingerprint from the answer.
    pub relay_fingerprint: Fingerprint,
    /// The shared dimpl client configuration.
    pub dtls: DtlsConfig,
    /// Our SSRCs.
    pub ssrcs: OwnSsrcs,
    /// Our end-to-end SRTP master key, installed as MKI key index 0; its profile is the
    /// one all our keys use.
    pub master_key: MasterKey,
    /// Seed of the participant's RNG (transaction ids, tie-breaker, initial sequence
    /// numbers, jitter). The shell seeds it from the OS; tests fix it.
    pub rng_seed: u64,
    /// NTP time (RFC 3550 §4, 32.32) at the `now` given to [`Participant::new`]; SRs
    /// count from it, since the engine reads no clock.
    pub ntp_origin: u64,
    /// Interval of our SR/RR reports (RFC 4585 AVPF allows well under 5 s).
    pub report_interval: Duration,
    /// Send NACKs for gaps and PLIs for new video streams and long gaps by itself (see
    /// [`frame_marking`](Self::frame_marking) for the gaps that need none); on video,
    /// repair what the first NACK did not bring: NACK it again, then give it up and
    /// ask for a keyframe, as for more than 64 packets awaited at once — with neither
    /// the second NACK nor the keyframe request while our link is congested or the
    /// stream has stopped (`repair.rs`: [`crate::NACK_AGAIN_AFTER`],
    /// [`crate::NACK_GIVE_UP_AFTER`], [`crate::CONGESTION_QUIET`],
    /// [`crate::MAX_KEYFRAME_WAIT`]).
    pub auto_feedback: bool,
    /// If set, a REMB with this fixed estimate for every remote video stream rides on
    /// each report (tests use it); it wins over [`bwe`](Self::bwe)'s estimate.
    pub remb_bps: Option<u64>,
    /// If set, the abs-send-time extension id of incoming media: every authenticated
    /// media packet carrying it feeds a receive-side bandwidth estimator ([`Bwe`],
    /// default settings; its arrival is the `now` given to
    /// [`Participant::handle_datagram`], its size the datagram's length, its clock the
    /// sender's), and once it is measured the estimate goes to the relay in REMBs for
    /// every remote video stream: in each periodic report, and at once in its own
    /// compound (an RR without report blocks, then the REMB) when it falls more than 3%
    /// below the value last sent, or when a second has passed without a report (a
    /// [`report_interval`](Self::report_interval) over 1 s; and the very first one).
    /// Independent of [`auto_feedback`](Self::auto_feedback). `None`: no estimator.
    pub bwe: Option<ExtId>,
    /// If set, the transport-wide sequence number extension id of what we send
    /// (draft-holmer-rmcat-transport-wide-cc-extensions-01; the [`Driver`] stamps it):
    /// each packet sent with it is noted (stream, sequence number, send time, size),
    /// and the relay's transport-cc feedback about them feeds an estimate of our
    /// uplink — the relay's own uplink estimate
    /// ([`blindfold_relay::engine::uplink::UplinkEstimate`]: GCC's loss
    /// and delay controllers; it limits only an uplink that lost 2% of a second's
    /// packets), over the arrival times the relay reports and our send times. Its
    /// limits come as [`Event::UplinkLimit`]. `None`: no estimate.
    ///
    /// [`Driver`]: crate::Driver
    pub transport_cc: Option<ExtId>,
    /// If set, the frame-marking extension id (RFC 9626) of incoming video. A gap too
    /// long to NACK that ends at a keyframe's first packet (start of frame and
    /// independent) is then a resume: that is where the relay resumes a full layer it
    /// had stopped sending us. It asks for no keyframe (the relay's own request
    /// brought this one), and its packets, never sent us, are not reported lost in our
    /// receiver reports. `None`: every such gap on video asks for a keyframe and counts
    /// as loss.
    pub frame_marking: Option<ExtId>,
}

impl ParticipantConfig {
    /// A configuration with the default timers, a 1 s report interval, automatic
    /// feedback on, no REMB and no bandwidth estimator.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        local_ice: IceCredentials,
        relay_ice: IceCredentials,
        relay_addr: SocketAddr,
        cert: DtlsCert,
        relay_fingerprint: Fingerprint,
        dtls: DtlsConfig,
        ssrcs: OwnSsrcs,
        master_key: MasterKey,
        rng_seed: u64,
    ) -> Self {
        ParticipantConfig {
            local_ice,
            relay_ice,
            relay_addr,
            ice: IceSettings::default(),
            cert,
            relay_fingerprint,
            dtls,
            ssrcs,
            master_key,
            rng_seed,
            ntp_origin: 0,
            report_interval: Duration::from_secs(1),
            auto_feedback: true,
            remb_bps: None,
            bwe: None,
            transport_cc: None,
            frame_marking: None,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to: the relay's address.
    pub dest: SocketAddr,
    /// The datagram.
    pub bytes: Vec<u8>,
}

/// A decrypted end-to-end media packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket {
    /// Whose key decrypted it.
    pub sender: SenderId,
    /// Its SSRC.
    pub ssrc: Ssrc,
    /// Its sequence number, extended past rollover.
    pub seq: SeqNo,
    /// Payload type.
    pub pt: Pt,
    /// Marker bit.
    pub marker: bool,
    /// RTP timestamp.
    pub timestamp: RtpTime,
    /// The MKI the sender used.
    pub key: KeyIndex,
    /// Packets of this stream before this one that were never sent us: it starts a
    /// keyframe after a gap longer than [`MAX_NACK_GAP`] on video, which is where the
    /// relay resumes a full layer it had stopped sending (with
    /// [`ParticipantConfig::frame_marking`] set). 0 otherwise, the packets of any other
    /// gap being lost, as are those of a gap across a reconnect
    /// ([`Event::Reconnecting`]).
    pub skipped: u64,
    /// The decrypted RTP packet (header, extensions, payload).
    pub packet: Vec<u8>,
    /// Where the payload is in `packet` (after header and extensions, without padding).
    pub payload: Range<usize>,
}

impl MediaPacket {
    /// The decrypted payload.
    pub fn payload(&self) -> &[u8] {
        self.packet.get(self.payload.clone()).unwrap_or_default()
    }

    /// The RTP header view of the decrypted packet (extensions included).
    pub fn header(&self) -> Option<RtpHeader<'_>> {
        RtpHeader::parse(&self.packet).ok()
    }
}

/// What a [`Participant`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// ICE selected the pair; the DTLS handshake starts.
    IceSelected,
    /// DTLS completed with the relay's expected certificate; SRTCP is keyed with this
    /// profile. Media may flow.
    Connected {
        /// The negotiated SRTCP profile.
        srtcp_profile: SrtpProfile,
    },
    /// The participant failed; nothing follows. Reported once.
    Failed(FailReason),
    /// The relay answers our consent checks but has sent us no SRTCP for
    /// [`RELAY_SILENCE`]: it lost our session, most likely in a restart (or the
    /// application called [`Participant::reconnect`]). ICE and DTLS start again with
    /// the same answer; [`Event::IceSelected`] and [`Event::Connected`] follow, or
    /// [`Event::Failed`] (also if the relay then falls silent again before it said
    /// anything).
    Reconnecting,
    /// The relay sees us at a new address (our NAT rebound; we learn it from the answer
    /// to a consent check). We nominate it, answer the relay's check of it, and the
    /// relay moves our media there: no new handshake, nothing else changes.
    AddressChanged(SocketAddr),
    /// A remote sender's media packet, decrypted.
    Media(MediaPacket),
    /// A sender report (forwarded by the relay from another participant, or the
    /// relay's own).
    SenderReport(SenderInfo),
    /// A reception report block about one of our streams.
    ReceiverReport {
        /// Who reported.
        reporter: Ssrc,
        /// The block.
        block: ReportBlock,
    },
    /// A PLI or FIR for one of our streams: send a keyframe.
    KeyframeRequested(Ssrc),
    /// An RFC 7728 PAUSE (`paused`) or RESUME (not `paused`) for one of our streams:
    /// nobody receives it, so stop sending it; or somebody does again.
    PauseRequested {
        /// The stream.
        ssrc: Ssrc,
        /// PAUSE rather than RESUME.
        paused: bool,
    },
    /// What our uplink carries, by our estimate over the relay's transport-cc feedback
    /// ([`ParticipantConfig::transport_cc`]): `Some` limit in bits per second (all our
    /// streams together), once a second while it holds and at once when it falls by
    /// more than 3%; `None` when it is lifted.
    UplinkLimit(Option<u64>),
    /// A REMB: the relay's receive-side estimate for our streams.
    Remb {
        /// Estimated maximum bitrate.
        bitrate_bps: u64,
        /// The streams it applies to.
        ssrcs: Vec<Ssrc>,
    },
    /// A TMMBR entry for one of our streams: cap its bitrate.
    Tmmbr {
        /// Our stream.
        ssrc: Ssrc,
        /// Maximum bitrate.
        bitrate_bps: u64,
    },
    /// A NACK for one of our streams (the relay normally answers from its cache).
    Nack {
        /// Our stream.
        ssrc: Ssrc,
        /// The sequence numbers reported lost: the first [`MAX_NACK_EVENT`].
        lost: Vec<WireSeq>,
    },
    /// A remote sender's previous key was removed after its grace period.
    KeyRetired {
        /// The sender.
        sender: SenderId,
        /// The removed key.
        index: KeyIndex,
    },
}

/// Counters. `drops` holds one entry per [`DropReason`] seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams given to `handle_datagram`.
    pub datagrams_in: u64,
    /// Datagrams handed out by `poll_transmit`.
    pub datagrams_out: u64,
    /// Media packets decrypted.
    pub media_in: u64,
    /// Media packets protected and queued.
    pub media_out: u64,
    /// SRTCP compounds unprotected.
    pub rtcp_in: u64,
    /// SRTCP compounds protected and queued.
    pub rtcp_out: u64,
    /// REMBs sent (in periodic reports or on their own), the fixed
    /// [`ParticipantConfig::remb_bps`] ones included.
    pub remb_out: u64,
    /// The relay's probe clusters reported on.
    pub probes_answered: u64,
    /// Transport-cc feedback ignored: it reported on more packets than we remember
    /// sending.
    pub feedback_ignored: u64,
    /// Dropped datagrams by reason: at most [`MAX_DROP_REASONS`] distinct ones (reasons
    /// carry the bad value, so a peer could otherwise fill the list with every variant
    /// of a malformed field).
    pub drops: Vec<(DropReason, u64)>,
    /// Dropped datagrams whose reason found [`drops`](Self::drops) full.
    pub other_drops: u64,
}

/// The most distinct reasons [`Stats::drops`] lists.
pub const MAX_DROP_REASONS: usize = 64;

/// The most sequence numbers an [`Event::Nack`] lists (one NACK of a few hundred bytes
/// can name thousands).
pub const MAX_NACK_EVENT: usize = 1024;

impl Stats {
    /// How many datagrams were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// All drops.
    pub fn total_dropped(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum::<u64>() + self.other_drops
    }

    fn count_drop(&mut self, reason: DropReason) {
        if let Some((_, n)) = self.drops.iter_mut().find(|(r, _)| *r == reason) {
            *n += 1;
        } else if self.drops.len() < MAX_DROP_REASONS {
            self.drops.push((reason, 1));
        } else {
            self.other_drops += 1;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ice,
    Dtls,
    Connected,
    Failed,
}

/// One of our send streams.
#[derive(Debug, Clone, Copy)]
struct SendStream {
    ssrc: Ssrc,
    clock: u64,
    next_seq: u16,
    /// RTCP SR counters (RFC 3550: 32 bits, wrapping).
    packets: u32,
    octets: u32,
    /// The same without wrapping, for applications' reports ([`Participant::sent_totals`]).
    total_packets: u64,
    total_octets: u64,
    last: Option<(RtpTime, Instant)>,
}

/// Reception state of one remote stream (RFC 3550 Appendix A.3 style).
#[derive(Debug, Clone)]
struct RecvStream {
    ssrc: Ssrc,
    base: u64,
    max: u64,
    received: u64,
    /// Packets of gaps that ended at a keyframe's first packet after more than a NACK
    /// covers: a layer the relay resumed, which it never sent us. Not expected, so not
    /// reported lost.
    skipped: u64,
    /// We connected to the relay again since this stream's last packet: the gap
    /// before its next one is the time the relay had lost us, loss even if it ends at
    /// a keyframe.
    gap_spans_reconnect: bool,
    expected_prior: u64,
    received_prior: u64,
    /// LSR (middle 32 bits of the last SR's NTP) and when it arrived.
    last_sr: Option<(u32, Instant)>,
    /// The repair of what we NACKed (video, automatic feedback).
    repair: StreamRepair,
}

/// The SRTCP contexts keyed from DTLS.
struct Srtcp {
    outbound: SrtpContext,
    inbound: SrtpContext,
}

/// A conference participant's transport: sans-IO, no clock, no sockets.
///
/// # Driving it
///
/// Create it with [`Participant::new`] (the first Binding request is queued at once).
/// Feed it with the `handle_*` methods, then drain in this order: [`poll_transmit`]
/// (send each to its `dest`), [`poll_event`], and finally read [`poll_timeout`] and call
/// [`handle_timeout`] when it is due. Time that goes backwards counts as the latest
/// time seen.
///
/// - Getters: [`is_connected`](Self::is_connected), [`is_failed`](Self::is_failed),
///   [`stats`](Self::stats), [`ssrcs`](Self::ssrcs), [`tie_breaker`](Self::tie_breaker).
/// - Input: [`handle_datagram`](Self::handle_datagram),
///   [`handle_timeout`](Self::handle_timeout).
/// - Commands: [`send_rtp`](Self::send_rtp), [`send_rtcp`](Self::send_rtcp),
///   [`request_keyframe`](Self::request_keyframe), [`send_nack`](Self::send_nack),
///   [`add_local_key`](Self::add_local_key),
///   [`activate_local_key`](Self::activate_local_key),
///   [`remove_local_key`](Self::remove_local_key),
///   [`install_remote_keys`](Self::install_remote_keys),
///   [`remove_remote_sender`](Self::remove_remote_sender), [`close`](Self::close).
/// - Output: [`poll_transmit`], [`poll_event`], [`poll_timeout`].
///
/// [`poll_transmit`]: Self::poll_transmit
/// [`poll_event`]: Self::poll_event
/// [`poll_timeout`]: Self::poll_timeout
/// [`handle_timeout`]: Self::handle_timeout
pub struct Participant {
    pub(crate) config: ParticipantConfig,
    start: Instant,
    last_now: Instant,
    rng: Rng,
    phase: Phase,
    ice: IceAgent,
    dtls: Option<DtlsSession>,
    srtcp: Option<Srtcp>,
    outbound: SrtpContext,
    send: [SendStream; 3],
    remotes: Remotes,
    recv: Vec<RecvStream>,
    /// What resending takes on our downlink, pacing the repair of lost video.
    repair_pace: RepairPace,
    /// Whether our downlink is congested, by our delay-based estimator.
    congestion: Congestion,
    next_report: Option<Instant>,
    /// The receive-side bandwidth estimator, if [`ParticipantConfig::bwe`] is set.
    bwe: Option<Bwe>,
    /// What arrives during the relay's probe clusters.
    probe: ProbeMeter,
    /// What we sent with a transport-wide sequence number, and the estimate of our
    /// uplink the relay's feedback about it feeds.
    sent_log: Option<Box<SentLog>>,
    /// While connected: when the relay last sent us SRTCP we could read, or when we
    /// connected if it has not yet (see [`RELAY_SILENCE`]).
    srtcp_heard: Option<Instant>,
    /// The usual gap between the relay's SRTCP packets: a moving average (weight 1/8).
    srtcp_gap: Duration,
    /// We connected again for the relay's silence and have heard no SRTCP since: the
    /// next silence fails us ([`FailReason::RelaySilent`]).
    silent_since_reconnect: bool,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("phase", &self.phase)
            .field("ssrcs", &self.config.ssrcs)
            .finish_non_exhaustive()
    }
}

impl Participant {
    /// Starts a participant: ICE checking begins (the first Binding request is queued).
    ///
    /// Rejects an empty ICE ufrag or password, one over 256 bytes, or a ufrag with a
    /// colon ([`ParticipantError::BadIceCredentials`]), SSRCs that are not three distinct values
    /// ([`ParticipantError::SsrcCollision`]) and a master key the SRTP module refuses
    /// ([`ParticipantError::Srtp`]).
    pub fn new(config: ParticipantConfig, now: Instant) -> Result<Self, ParticipantError> {
        for c in [&config.local_ice, &config.relay_ice] {
            let ok = |v: &str| !v.is_empty() && v.len() <= crate::ice::MAX_CREDENTIAL_LEN;
            if !ok(&c.ufrag) || !ok(&c.pwd) || c.ufrag.contains(':') {
                return Err(ParticipantError::BadIceCredentials);
            }
        }
        let s = config.ssrcs;
        if s.audio == s.thumbnail || s.audio == s.full {
            return Err(ParticipantError::SsrcCollision(s.audio));
        }
        if s.thumbnail == s.full {
            return Err(ParticipantError::SsrcCollision(s.full));
        }
        let key = &config.master_key;
        let outbound = SrtpContext::new(key.profile(), key.as_bytes(), Some(KeyIndex(0)))
            .map_err(ParticipantError::Srtp)?
            .with_max_streams(3);
        let mut rng = Rng::new(config.rng_seed);
        let mut stream = |ssrc, clock| SendStream {
            ssrc,
            clock,
            // Random start (RFC 3550 §5.1), in the lower half so SRTP's rollover counter
            // does not move within the first packets.
            next_seq: (rng.next_u64() & 0x7fff) as u16,
            packets: 0,
            octets: 0,
            total_packets: 0,
            total_octets: 0,
            last: None,
        };
        let send = [
            stream(s.audio, AUDIO_CLOCK),
            stream(s.thumbnail, VIDEO_CLOCK),
            stream(s.full, VIDEO_CLOCK),
        ];
        let ice = IceAgent::new(
            config.local_ice.clone(),
            config.relay_ice.clone(),
            config.relay_addr,
            config.ice,
            &mut rng,
            now,
        );
        let bwe = config.bwe.map(|_| Bwe::new(BweConfig::default()));
        let sent_log = config.transport_cc.map(|_| Box::new(SentLog::new()));
        let mut p = Participant {
            config,
            start: now,
            last_now: now,
            rng,
            phase: Phase::Ice,
            ice,
            dtls: None,
            srtcp: None,
            outbound,
            send,
            remotes: Remotes::default(),
            recv: Vec::new(),
            repair_pace: RepairPace::default(),
            congestion: Congestion::default(),
            next_report: None,
            bwe,
            probe: ProbeMeter::default(),
            sent_log,
            srtcp_heard: None,
            srtcp_gap: RELAY_BEAT,
            silent_since_reconnect: false,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        };
        p.pump(now);
        Ok(p)
    }

    // --- getters ------------------------------------------------------------------------

    /// Whether the `Connected` event was reported and the participant has not failed.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// Whether the participant failed or was closed.
    pub fn is_failed(&self) -> bool {
        self.phase == Phase::Failed
    }

    /// Counters and drop reasons.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Our SSRCs.
    pub fn ssrcs(&self) -> OwnSsrcs {
        self.config.ssrcs
    }

    /// Turns automatic feedback (NACKs for gaps, PLIs for new video streams and long
    /// gaps) on or off from now on; see [`ParticipantConfig::auto_feedback`]. Off, the
    /// repair under way stops too.
    pub fn set_auto_feedback(&mut self, on: bool) {
        self.config.auto_feedback = on;
        if !on {
            for r in &mut self.recv {
                r.repair.forget();
            }
        }
    }

    /// The receive-side bandwidth estimator, if [`ParticipantConfig::bwe`] is set.
    pub fn bwe(&self) -> Option<&Bwe> {
        self.bwe.as_ref()
    }

    /// Our ICE-CONTROLLING tie-breaker.
    pub fn tie_breaker(&self) -> u64 {
        self.ice.tie_breaker()
    }

    /// Our active end-to-end key index.
    pub fn active_local_key(&self) -> KeyIndex {
        self.outbound.active_key()
    }

    /// The key indexes held for a remote sender, oldest first (`None` if unknown).
    pub fn remote_keys(&self, sender: SenderId) -> Option<Vec<KeyIndex>> {
        self.remotes.get(sender).map(|s| s.keys().to_vec())
    }

    // --- input --------------------------------------------------------------------------

    /// Handles one datagram received from `from` at `now`, when it arrived (the
    /// delay-based estimate and the probe reports measure arrival times; a `now` older
    /// than an earlier input's is taken as that one's). `buf` is decrypted in place.
    ///
    /// Drops, and counts in [`Stats`], with the returned reason: anything not from the
    /// relay's address, anything RFC 7983 cannot classify, STUN that does not parse or
    /// verify or answers no transaction of ours, DTLS before ICE or with bad framing,
    /// media or RTCP before `Connected`, SRTP from an undeclared SSRC or that fails
    /// to unprotect, SRTCP that fails to unprotect or parse. Never panics.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let now = self.advance(now);
        self.stats.datagrams_in += 1;
        let r = self.dispatch(now, from, buf);
        if let Err(reason) = r {
            self.stats.count_drop(reason);
        }
        self.pump(now);
        r
    }

    fn dispatch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        if self.phase == Phase::Failed {
            return Err(DropReason::Failed);
        }
        if from != self.ice.remote_addr() {
            return Err(DropReason::UnknownSource);
        }
        self.probe.on_datagram(buf.len());
        match demux(buf) {
            Datagram::Stun(d) => self.ice.handle_stun(now, from, d),
            Datagram::Dtls(d) => {
                let Some(dtls) = self.dtls.as_mut() else {
                    return Err(DropReason::DtlsNotStarted);
                };
                let r = dtls.handle_datagram(now, d);
                self.drain_dtls_transmits();
                match r {
                    // A fatal error surfaces as the Failed event from pump.
                    Err(e) if !e.is_fatal() => Err(DropReason::Dtls(e)),
                    _ => Ok(()),
                }
            }
            Datagram::Rtp(_) => self.handle_srtp(now, buf),
            Datagram::Rtcp(_) => self.handle_srtcp(now, buf),
            Datagram::Unknown(_) => Err(DropReason::Unclassified),
        }
    }

    fn handle_srtp(&mut self, now: Instant, buf: &mut [u8]) -> Result<(), DropReason> {
        if self.phase != Phase::Connected {
            return Err(DropReason::NotConnected);
        }
        let datagram_len = buf.len();
        let ssrc = RtpHeader::parse(buf)
            .map_err(|e| DropReason::Srtp(e.into()))?
            .ssrc();
        let sender = self.remotes.by_ssrc(ssrc).ok_or(DropReason::UnknownSsrc)?;
        let (n, key) = sender.unprotect(now, buf).map_err(DropReason::Srtp)?;
        let id = sender.id;
        let kind = sender.kind_of(ssrc);
        let packet = buf.get(..n).ok_or(DropReason::Unclassified)?;
        let h = RtpHeader::parse(packet).map_err(|e| DropReason::Srtp(e.into()))?;
        let payload_len = h.payload_without_padding().map_or(0, <[u8]>::len);
        let start = h.header_len();
        let (pt, marker, ts, wire) = (h.payload_type(), h.marker(), h.timestamp(), h.seq());
        let sent_at = self
            .config
            .bwe
            .and_then(|ext| h.extension(ext))
            .and_then(|data| abs_send_time(data).ok());
        if let (Some(t), Some(bwe)) = (sent_at, self.bwe.as_mut()) {
            bwe.on_packet_from(now, id.0, t.0, datagram_len);
            let signals = bwe.stats().overuses + bwe.stats().decreases;
            self.congestion.observe(now, signals);
        }
        let keyframe_start = self
            .config
            .frame_marking
            .and_then(|ext| frame_marking(h.extension(ext)?).ok())
            .is_some_and(|fm| fm.starts_keyframe());
        let (seq, skipped) = self.track_reception(now, ssrc, wire, kind, keyframe_start);
        self.stats.media_in += 1;
        self.events.push_back(Event::Media(MediaPacket {
            sender: id,
            ssrc,
            seq,
            pt,
            marker,
            timestamp: ts,
            key,
            skipped,
            packet: packet.to_vec(),
            payload: start..start + payload_len,
        }));
        if sent_at.is_some() {
            self.send_bwe_remb(now, Bwe::poll_remb_drop);
        }
        Ok(())
    }

    /// Updates reception stats for an authenticated packet; NACKs gaps and asks for
    /// keyframes when automatic feedback is on (not when this packet starts one).
    /// Returns the extended sequence number and the packets skipped before it (see
    /// [`MediaPacket::skipped`]).
    fn track_reception(
        &mut self,
        now: Instant,
        ssrc: Ssrc,
        wire: WireSeq,
        kind: Option<MediaKind>,
        keyframe_start: bool,
    ) -> (SeqNo, u64) {
        let video = kind == Some(MediaKind::Video);
        let auto = self.config.auto_feedback;
        let Some(at) = self.recv.iter().position(|r| r.ssrc == ssrc) else {
            let ext = u64::from(wire.0);
            self.recv.push(RecvStream {
                ssrc,
                base: ext,
                max: ext,
                received: 1,
                skipped: 0,
                gap_spans_reconnect: false,
                expected_prior: 0,
                received_prior: 0,
                last_sr: None,
                repair: StreamRepair::new(now),
            });
            // A stream that starts at a keyframe (frame marking says so) needs none.
            if auto && video && !keyframe_start {
                let _ = self.request_keyframe(now, ssrc);
            }
            return (SeqNo(ext), 0);
        };
        let r = &mut self.recv[at];
        let ext = extend_seq(r.max, wire);
        r.received += 1;
        let across_reconnect = std::mem::take(&mut r.gap_spans_reconnect);
        let gap = ext.saturating_sub(r.max).saturating_sub(1);
        let mut skipped = 0;
        if ext > r.max {
            let from = r.max + 1;
            r.max = ext;
            let resumed = video && keyframe_start && gap > MAX_NACK_GAP && !across_reconnect;
            if resumed {
                skipped = gap;
                r.skipped += gap;
            }
            let nacked = auto && gap > 0 && gap <= MAX_NACK_GAP;
            if video {
                r.repair.newest(
                    now,
                    keyframe_start,
                    if nacked { from..ext } else { ext..ext },
                );
            }
            if nacked {
                let lost: Vec<WireSeq> = (from..ext).map(|s| WireSeq(s as u16)).collect();
                let _ = self.send_nack(now, ssrc, &lost);
            } else if auto && gap > MAX_NACK_GAP && video && !resumed {
                r.repair.forget();
                let _ = self.request_keyframe(now, ssrc);
            }
        } else if video && let Some(took) = r.repair.older(now, ext) {
            self.repair_pace.sample(took);
        }
        (SeqNo(ext), skipped)
    }

    fn handle_srtcp(&mut self, now: Instant, buf: &mut [u8]) -> Result<(), DropReason> {
        let Some(srtcp) = self.srtcp.as_mut() else {
            return Err(DropReason::NotConnected);
        };
        let n = srtcp
            .inbound
            .unprotect_rtcp(buf)
            .map_err(DropReason::Srtcp)?;
        self.stats.rtcp_in += 1;
        if let Some(before) = self.srtcp_heard {
            let gap = now.saturating_duration_since(before);
            self.srtcp_gap = (self.srtcp_gap * 7 + gap) / 8;
        }
        self.srtcp_heard = Some(now);
        self.silent_since_reconnect = false;
        let plain = buf.get(..n).ok_or(DropReason::Unclassified)?;
        let compound = RtcpCompound::parse(plain).map_err(DropReason::Rtcp)?;
        let own = self.config.ssrcs.all();
        let mut first_err = None;
        let mut probe_report = None;
        for packet in compound {
            let packet = match packet {
                Ok(p) => p,
                Err(e) => {
                    // One bad packet does not spoil the rest of the compound.
                    first_err.get_or_insert(e);
                    continue;
                }
            };
            match packet {
                RtcpPacket::SenderReport(sr) => {
                    let info = sr.sender_info();
                    if let Some(r) = self.recv.iter_mut().find(|r| r.ssrc == info.ssrc) {
                        r.last_sr = Some(((info.ntp >> 16) as u32, now));
                    }
                    self.events.push_back(Event::SenderReport(info));
                    for block in sr.reports().filter(|b| own.contains(&b.ssrc)) {
                        self.events.push_back(Event::ReceiverReport {
                            reporter: info.ssrc,
                            block,
                        });
                    }
                }
                RtcpPacket::ReceiverReport(rr) => {
                    for block in rr.reports().filter(|b| own.contains(&b.ssrc)) {
                        self.events.push_back(Event::ReceiverReport {
                            reporter: rr.ssrc(),
                            block,
                        });
                    }
                }
                RtcpPacket::Pli(pli) if own.contains(&pli.media_ssrc()) => {
                    self.events
                        .push_back(Event::KeyframeRequested(pli.media_ssrc()));
                }
                RtcpPacket::Fir(fir) => {
                    for e in fir.entries().filter(|e| own.contains(&e.ssrc)) {
                        self.events.push_back(Event::KeyframeRequested(e.ssrc));
                    }
                }
                RtcpPacket::PauseResume(pr) => {
                    for e in pr.entries().filter(|e| own.contains(&e.target)) {
                        let paused = match e.kind {
                            PauseKind::Pause => true,
                            PauseKind::Resume => false,
                            _ => continue,
                        };
                        self.events.push_back(Event::PauseRequested {
                            ssrc: e.target,
                            paused,
                        });
                    }
                }
                RtcpPacket::Remb(remb) => self.events.push_back(Event::Remb {
                    bitrate_bps: remb.bitrate_bps(),
                    ssrcs: remb.ssrcs().collect(),
                }),
                RtcpPacket::Tmmbr(t) => {
                    for e in t.entries().filter(|e| own.contains(&e.ssrc)) {
                        self.events.push_back(Event::Tmmbr {
                            ssrc: e.ssrc,
                            bitrate_bps: e.bitrate_bps,
                        });
                    }
                }
                RtcpPacket::Nack(nack) if own.contains(&nack.media_ssrc()) => {
                    self.events.push_back(Event::Nack {
                        ssrc: nack.media_ssrc(),
                        lost: nack.lost().take(MAX_NACK_EVENT).collect(),
                    });
                }
                // The relay reports at most 256 packets per feedback (docs/protocol.md);
                // a longer one would only cost a walk over its statuses.
                RtcpPacket::TransportCc(tcc) if usize::from(tcc.status_count()) > SENT_LOG => {
                    self.stats.feedback_ignored += 1;
                }
                RtcpPacket::TransportCc(tcc) => {
                    if let Some(log) = self.sent_log.as_deref_mut()
                        && let Some(limit) = log.on_feedback(self.start, &tcc)
                    {
                        self.events.push_back(Event::UplinkLimit(limit));
                    }
                }
                RtcpPacket::App(app) => match app.probe_message() {
                    Some(Ok(ProbeMessage::Probe(p))) => {
                        probe_report = self.probe.on_probe(now, p).or(probe_report);
                    }
                    Some(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Some(Ok(ProbeMessage::Report(_))) | None => {}
                },
                _ => {}
            }
        }
        if let Some(report) = probe_report {
            let mut out = [0u8; rtcp::PROBE_REPORT_LEN];
            let own = self.config.ssrcs.audio;
            if rtcp::write_probe_report(&mut out, own, &report).is_ok()
                && self.send_rtcp(now, &out).is_ok()
            {
                self.stats.probes_answered += 1;
            }
        }
        match first_err {
            Some(e) => Err(DropReason::Rtcp(e)),
            None => Ok(()),
        }
    }

    /// Advances time: ICE retransmissions and consent (a check at once when the relay
    /// has been silent for longer than usual, [`RELAY_PROBE`]), DTLS flights, key
    /// retirement, periodic reports, and connecting again to a relay that lost our
    /// session.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        if self.phase == Phase::Failed {
            return;
        }
        if self.relay_probe_due().is_some_and(|at| now >= at) {
            self.ice.check_now(now);
        }
        self.ice.handle_timeout(now, &mut self.rng);
        if let Some(dtls) = self.dtls.as_mut() {
            dtls.handle_timeout(now);
            self.drain_dtls_transmits();
        }
        for s in &mut self.remotes.senders {
            if let Some(index) = s.handle_timeout(now) {
                self.events.push_back(Event::KeyRetired {
                    sender: s.id,
                    index,
                });
            }
        }
        if self.phase == Phase::Connected
            && let Some(at) = self.next_report
            && now >= at
        {
            self.next_report = Some(now + self.config.report_interval);
            self.send_report(now);
        }
        self.send_bwe_remb(now, Bwe::poll_remb);
        if self.phase == Phase::Connected {
            self.repair(now);
        }
        if self.relay_silence_deadline().is_some_and(|at| now >= at) {
            if self.silent_since_reconnect {
                self.fail(FailReason::RelaySilent);
                return;
            }
            self.start_again(now);
        }
        self.pump(now);
    }

    /// What repair of lost video asks for now ([`StreamRepair`]).
    fn repair(&mut self, now: Instant) {
        for k in 0..self.recv.len() {
            let ssrc = self.recv[k].ssrc;
            let r = self.recv[k]
                .repair
                .poll(now, &self.repair_pace, &self.congestion);
            if !r.nack.is_empty() {
                let _ = self.send_nack(now, ssrc, &r.nack);
            }
            if r.keyframe {
                let _ = self.request_keyframe(now, ssrc);
            }
        }
    }

    /// When to ask the relay where it sees us: four of its usual gaps after its last
    /// SRTCP, within [`PROBE_MIN`] and [`RELAY_PROBE`], unless a check went out since.
    fn relay_probe_due(&self) -> Option<Instant> {
        if self.phase != Phase::Connected {
            return None;
        }
        let at = self.srtcp_heard? + (self.srtcp_gap * 4).clamp(PROBE_MIN, RELAY_PROBE);
        self.ice
            .last_check()
            .is_none_or(|sent| sent < at)
            .then_some(at)
    }

    /// When the relay's silence means it lost our session: [`RELAY_SILENCE`] after its
    /// last SRTCP, once it answered a consent check more than [`PATH_PROOF`] after
    /// that, and [`PATH_PROOF`] after that answer. A network that carries nothing either
    /// way leaves it to consent (RFC 7675).
    fn relay_silence_deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Connected {
            return None;
        }
        let quiet = self.srtcp_heard?;
        let answered = self.ice.last_consent()?;
        (answered.saturating_duration_since(quiet) >= PATH_PROOF)
            .then(|| (quiet + RELAY_SILENCE).max(answered + PATH_PROOF))
    }

    /// Connects again: ICE (a nominating check) and DTLS with the same answer, then
    /// [`Event::Reconnecting`], and [`Event::IceSelected`] and [`Event::Connected`] or
    /// [`Event::Failed`]. The participant does this by itself when the relay lost its
    /// session ([`RELAY_SILENCE`]; a restarted relay has our credentials back from
    /// signaling); an application may when it knows the path changed. A relay that
    /// still holds the session takes the new handshake too, and swaps the hop's SRTCP
    /// keys when it completes. What is end to end stays: our keys, the senders' keys,
    /// our sequence numbers.
    ///
    /// Fails with [`ParticipantError::NotConnected`] before the first connection (it is
    /// under way) and [`ParticipantError::Failed`] after a failure (call again).
    pub fn reconnect(&mut self, now: Instant) -> Result<(), ParticipantError> {
        self.check_connected()?;
        let now = self.advance(now);
        self.start_again(now);
        self.pump(now);
        Ok(())
    }

    /// [`Participant::reconnect`], connected.
    fn start_again(&mut self, now: Instant) {
        self.ice = IceAgent::new(
            self.config.local_ice.clone(),
            self.config.relay_ice.clone(),
            self.config.relay_addr,
            self.config.ice,
            &mut self.rng,
            now,
        );
        self.phase = Phase::Ice;
        self.dtls = None;
        self.srtcp = None;
        self.next_report = None;
        self.srtcp_heard = None;
        self.silent_since_reconnect = true;
        for r in &mut self.recv {
            r.gap_spans_reconnect = true;
            // What the old path lost is not coming: the relay resumes each layer at a
            // keyframe, or we ask for one at the gap.
            r.repair.forget();
        }
        self.events.push_back(Event::Reconnecting);
    }

    fn advance(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    /// Moves state along after any input: ICE → DTLS → Connected, and failures.
    fn pump(&mut self, now: Instant) {
        while let Some(dg) = self.ice.poll_transmit() {
            self.transmit.push_back(dg);
        }
        while let Some(ev) = self.ice.poll_event() {
            match ev {
                IceEvent::Selected => {
                    self.events.push_back(Event::IceSelected);
                    if self.phase == Phase::Ice {
                        self.phase = Phase::Dtls;
                        self.dtls = Some(DtlsSession::client(
                            &self.config.dtls,
                            &self.config.cert,
                            self.config.relay_fingerprint,
                            now,
                        ));
                        self.drain_dtls_transmits();
                    }
                }
                IceEvent::AddressChanged(addr) => {
                    self.events.push_back(Event::AddressChanged(addr))
                }
                IceEvent::Failed(reason) => self.fail(reason),
            }
        }
        while let Some(ev) = self.dtls.as_mut().and_then(DtlsSession::poll_event) {
            match ev {
                DtlsEvent::Connected(keys) => self.on_dtls_connected(now, &keys),
                DtlsEvent::Failed(e) => self.fail(FailReason::Dtls(e)),
                _ => {}
            }
        }
    }

    /// Queues what the DTLS session wrote (its slices are valid until the next call).
    fn drain_dtls_transmits(&mut self) {
        if let Some(dtls) = self.dtls.as_mut() {
            while let Some(d) = dtls.poll_transmit() {
                self.transmit.push_back(d.to_vec());
            }
        }
    }

    fn on_dtls_connected(&mut self, now: Instant, keys: &SrtpKeyMaterial) {
        let Some(profile) = srtp_profile(keys.profile) else {
            self.fail(FailReason::Dtls(
                blindfold_relay::dtls::DtlsError::NoSrtpProfile,
            ));
            return;
        };
        // We are the DTLS client: we write with client_write, read server_write.
        let outbound = SrtpContext::new(profile, keys.client_master.key_salt(), None);
        let inbound = SrtpContext::new(profile, keys.server_master.key_salt(), None);
        match (outbound, inbound) {
            (Ok(outbound), Ok(inbound)) => {
                self.srtcp = Some(Srtcp {
                    outbound: outbound.with_max_streams(4),
                    inbound: inbound.with_max_streams(MAX_SRTCP_STREAMS),
                });
                self.phase = Phase::Connected;
                self.srtcp_heard = Some(now);
                self.srtcp_gap = RELAY_BEAT;
                self.next_report = Some(now + self.config.report_interval);
                self.events.push_back(Event::Connected {
                    srtcp_profile: profile,
                });
            }
            _ => self.fail(FailReason::Dtls(
                blindfold_relay::dtls::DtlsError::KeyingMaterialLength,
            )),
        }
    }

    fn fail(&mut self, reason: FailReason) {
        if self.phase == Phase::Failed {
            return;
        }
        self.phase = Phase::Failed;
        self.ice.close();
        self.dtls = None;
        self.srtcp = None;
        self.transmit.clear();
        self.events.push_back(Event::Failed(reason));
    }

    // --- output -------------------------------------------------------------------------

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let bytes = self.transmit.pop_front()?;
        self.stats.datagrams_out += 1;
        Some(Transmit {
            dest: self.config.relay_addr,
            bytes,
        })
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next; `None` after failure.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Failed {
            return None;
        }
        [
            self.ice.poll_timeout(),
            self.dtls.as_ref().and_then(DtlsSession::poll_timeout),
            self.next_report,
            self.bwe_remb_timeout(),
            self.relay_probe_due(),
            self.relay_silence_deadline(),
        ]
        .into_iter()
        .chain(self.remotes.senders.iter().map(|s| s.retire_deadline()))
        .chain(
            self.recv
                .iter()
                .filter(|_| self.phase == Phase::Connected)
                .map(|r| r.repair.poll_timeout(&self.repair_pace, &self.congestion)),
        )
        .flatten()
        .min()
    }

    // --- commands -----------------------------------------------------------------------

    fn check_connected(&self) -> Result<(), ParticipantError> {
        match self.phase {
            Phase::Connected => Ok(()),
            Phase::Failed => Err(ParticipantError::Failed),
            _ => Err(ParticipantError::NotConnected),
        }
    }

    /// Packets and payload bytes sent so far on our stream `ssrc` (`None`: not ours).
    pub fn sent_totals(&self, ssrc: Ssrc) -> Option<(u64, u64)> {
        self.send
            .iter()
            .find(|s| s.ssrc == ssrc)
            .map(|s| (s.total_packets, s.total_octets))
    }

    /// Builds an RTP packet for one of our streams (the next sequence number), protects
    /// it end to end with the active key (its MKI in the packet) and queues it. Returns
    /// the sequence number used.
    ///
    /// Rejects: before `Connected` or after failure, an SSRC that is not ours, a header
    /// [`write_header`] refuses (payload type above 127, bad extension ids or lengths), a
    /// packet over [`MAX_DATAGRAM`] once protected, and SRTP errors (index exhausted).
    #[allow(clippy::too_many_arguments)]
    pub fn send_rtp(
        &mut self,
        now: Instant,
        ssrc: Ssrc,
        pt: Pt,
        marker: bool,
        timestamp: RtpTime,
        extensions: &[(ExtId, &[u8])],
        payload: &[u8],
    ) -> Result<WireSeq, ParticipantError> {
        let now = self.advance(now);
        self.check_connected()?;
        let at = self
            .send
            .iter()
            .position(|s| s.ssrc == ssrc)
            .ok_or(ParticipantError::NotOwnSsrc(ssrc))?;
        let seq = WireSeq(self.send[at].next_seq);
        let fields = RtpFields {
            padding: false,
            marker,
            payload_type: pt,
            seq,
            timestamp,
            ssrc,
            csrcs: &[],
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let hlen = write_header(&mut buf, &fields, extensions).map_err(|e| match e {
            blindfold_relay::wire::rtp::RtpError::BufferTooSmall => {
                ParticipantError::PacketTooLarge
            }
            e => ParticipantError::Rtp(e),
        })?;
        let len = hlen
            .checked_add(payload.len())
            .filter(|&l| l + self.outbound.rtp_overhead() <= MAX_DATAGRAM)
            .ok_or(ParticipantError::PacketTooLarge)?;
        buf[hlen..len].copy_from_slice(payload);
        let n = self
            .outbound
            .protect_rtp(&mut buf, len)
            .map_err(ParticipantError::Srtp)?;
        buf.truncate(n);
        if let (Some(id), Some(log)) = (self.config.transport_cc, self.sent_log.as_deref_mut())
            && let Some((_, d)) = extensions.iter().find(|(e, _)| *e == id)
            && let Ok(tcc) = transport_cc_seq(d)
        {
            log.note(Sent {
                tcc,
                stream: at,
                ssrc,
                seq,
                at: now,
                size: n,
            });
        }
        let s = &mut self.send[at];
        s.next_seq = s.next_seq.wrapping_add(1);
        s.packets = s.packets.wrapping_add(1);
        s.octets = s.octets.wrapping_add(payload.len() as u32);
        s.total_packets += 1;
        s.total_octets += payload.len() as u64;
        s.last = Some((timestamp, now));
        self.stats.media_out += 1;
        self.transmit.push_back(buf);
        Ok(seq)
    }

    /// SRTCP-protects a plaintext RTCP compound (built with
    /// `blindfold_relay::wire::rtcp`'s writers) and queues it.
    ///
    /// Rejects: before `Connected` or after failure, a compound that does not parse
    /// ([`ParticipantError::Rtcp`]), one over [`MAX_DATAGRAM`] once protected, and SRTCP
    /// errors.
    pub fn send_rtcp(&mut self, now: Instant, compound: &[u8]) -> Result<(), ParticipantError> {
        let _ = self.advance(now);
        self.check_connected()?;
        RtcpCompound::parse(compound).map_err(ParticipantError::Rtcp)?;
        let Some(srtcp) = self.srtcp.as_mut() else {
            return Err(ParticipantError::NotConnected);
        };
        let total = compound.len() + srtcp.outbound.rtcp_overhead();
        if total > MAX_DATAGRAM {
            return Err(ParticipantError::PacketTooLarge);
        }
        let mut buf = vec![0u8; total];
        buf[..compound.len()].copy_from_slice(compound);
        let n = srtcp
            .outbound
            .protect_rtcp(&mut buf, compound.len())
            .map_err(ParticipantError::Srtp)?;
        buf.truncate(n);
        self.stats.rtcp_out += 1;
        self.transmit.push_back(buf);
        Ok(())
    }

    /// Sends a PLI for a remote stream (sender SSRC: our audio SSRC).
    ///
    /// Rejects as [`send_rtcp`](Self::send_rtcp) does.
    pub fn request_keyframe(&mut self, now: Instant, media: Ssrc) -> Result<(), ParticipantError> {
        let mut buf = [0u8; 16];
        let mut w = CompoundWriter::new(&mut buf);
        w.pli(self.config.ssrcs.audio, media)
            .map_err(ParticipantError::Rtcp)?;
        let n = w.finish();
        self.send_rtcp(now, &buf[..n])
    }

    /// Sends a generic NACK for lost packets of a remote stream.
    ///
    /// Rejects an empty list or one too long for a datagram, and as
    /// [`send_rtcp`](Self::send_rtcp) does.
    pub fn send_nack(
        &mut self,
        now: Instant,
        media: Ssrc,
        lost: &[WireSeq],
    ) -> Result<(), ParticipantError> {
        let mut buf = [0u8; RTCP_BUF];
        let mut w = CompoundWriter::new(&mut buf);
        w.nack(self.config.ssrcs.audio, media, lost)
            .map_err(ParticipantError::Rtcp)?;
        let n = w.finish();
        self.send_rtcp(now, &buf[..n])
    }

    /// Our periodic compound: an SR per stream that has sent (report blocks on the first),
    /// or an RR from the audio SSRC; then a REMB: the fixed one if configured, else the
    /// estimator's if one is due. A packet holds 31 report blocks: the blocks of the
    /// streams beyond the first 31 follow in compounds of their own, an RR of 31 each;
    /// and a REMB that does not fit beside the reports (it names every remote video
    /// stream) follows in one of its own, after an empty RR.
    fn send_report(&mut self, now: Instant) {
        let ntp = self.ntp(now);
        let all: Vec<ReportBlock> = self.recv.iter_mut().map(|r| report_block(r, now)).collect();
        let (blocks, more) = all.split_at(all.len().min(MAX_REPORT_BLOCKS));
        for chunk in more.chunks(MAX_REPORT_BLOCKS) {
            let mut buf = [0u8; RTCP_BUF];
            let mut w = CompoundWriter::new(&mut buf);
            if w.rr(self.config.ssrcs.audio, chunk).is_ok() {
                let n = w.finish();
                let _ = self.send_rtcp(now, &buf[..n]);
            }
        }
        let mut buf = [0u8; RTCP_BUF];
        let mut w = CompoundWriter::new(&mut buf);
        let mut blocks_left: &[ReportBlock] = blocks;
        for s in &self.send {
            let Some((ts, at)) = s.last else { continue };
            let elapsed = now.saturating_duration_since(at);
            let advance = (elapsed.as_micros() as u64).saturating_mul(s.clock) / 1_000_000;
            let info = SenderInfo {
                ssrc: s.ssrc,
                ntp,
                rtp_time: RtpTime(ts.0.wrapping_add(advance as u32)),
                packet_count: s.packets,
                octet_count: s.octets,
            };
            if w.sr(&info, blocks_left).is_ok() {
                blocks_left = &[];
            }
        }
        if w.is_empty() {
            let _ = w.rr(self.config.ssrcs.audio, blocks_left);
        }
        // Taken (it counts as sent) only when there is video for it to name.
        let video = self.remote_video_ssrcs();
        let remb = match self.config.remb_bps {
            _ if video.is_empty() => None,
            Some(bps) => Some(bps),
            None => self.bwe.as_mut().and_then(|b| b.take_remb(now)),
        };
        let audio = self.config.ssrcs.audio;
        let mut with_remb = false;
        let mut alone = None;
        if let Some(bps) = remb {
            with_remb = w.remb(audio, bps, &video).is_ok();
            if !with_remb {
                alone = Some(bps);
            }
        }
        let n = w.finish();
        if n > 0 && self.send_rtcp(now, &buf[..n]).is_ok() && with_remb {
            self.stats.remb_out += 1;
        }
        // Beside many senders' SRs and blocks it does not fit: an RR and the REMB in a
        // compound of their own.
        if let Some(bps) = alone {
            self.send_remb_alone(now, bps, &video);
        }
    }

    /// A REMB of `bps` for `video` in a compound of its own: an RR without report
    /// blocks, then the REMB.
    fn send_remb_alone(&mut self, now: Instant, bps: u64, video: &[Ssrc]) {
        let mut buf = [0u8; RTCP_BUF];
        let mut w = CompoundWriter::new(&mut buf);
        let own = self.config.ssrcs.audio;
        if w.rr(own, &[]).is_err() || w.remb(own, bps, video).is_err() {
            return;
        }
        let n = w.finish();
        if self.send_rtcp(now, &buf[..n]).is_ok() {
            self.stats.remb_out += 1;
        }
    }

    /// The SSRCs a REMB names: every remote video stream (at most 255).
    fn remote_video_ssrcs(&self) -> Vec<Ssrc> {
        self.remotes
            .senders
            .iter()
            .flat_map(|s| s.streams.iter())
            .filter(|st| st.kind == MediaKind::Video)
            .map(|st| st.ssrc)
            .take(255)
            .collect()
    }

    /// When the estimator's next periodic REMB is due (if it sends them: connected and
    /// no fixed [`ParticipantConfig::remb_bps`]).
    fn bwe_remb_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Connected || self.config.remb_bps.is_some() {
            return None;
        }
        self.bwe.as_ref().and_then(Bwe::poll_timeout)
    }

    /// Sends the estimator's REMB in its own compound (an RR without report blocks, then
    /// the REMB) if `poll` ([`Bwe::poll_remb`] on timeouts: a periodic one no report
    /// took; [`Bwe::poll_remb_drop`] on packets: a drop) says one is due. A value due
    /// while no remote video stream is known is dropped (there is nothing to name).
    fn send_bwe_remb(&mut self, now: Instant, poll: fn(&mut Bwe, Instant) -> Option<u64>) {
        if self.phase != Phase::Connected || self.config.remb_bps.is_some() {
            return;
        }
        let Some(bps) = self.bwe.as_mut().and_then(|b| poll(b, now)) else {
            return;
        };
        let video = self.remote_video_ssrcs();
        if !video.is_empty() {
            self.send_remb_alone(now, bps, &video);
        }
    }

    fn ntp(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.start);
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        self.config
            .ntp_origin
            .wrapping_add((d.as_secs() << 32) | frac)
    }

    /// Installs another end-to-end master key of ours under `index` (not yet used).
    /// Publish it, then [`activate_local_key`](Self::activate_local_key) it no sooner
    /// than 2 s later (docs/protocol.md, "Media keys").
    ///
    /// Rejects a key of another profile than our first key's
    /// ([`ParticipantError::ProfileMismatch`]).
    pub fn add_local_key(
        &mut self,
        index: KeyIndex,
        key: &MasterKey,
    ) -> Result<(), ParticipantError> {
        if key.profile() != self.outbound.profile() {
            return Err(ParticipantError::ProfileMismatch);
        }
        self.outbound
            .add_key(index, key.as_bytes())
            .map_err(ParticipantError::Srtp)
    }

    /// Protects from now on with the key `index`.
    ///
    /// Rejects an index not installed ([`ParticipantError::Srtp`] with `UnknownKey`).
    pub fn activate_local_key(&mut self, index: KeyIndex) -> Result<(), ParticipantError> {
        self.outbound
            .set_active_key(index)
            .map_err(ParticipantError::Srtp)
    }

    /// Forgets one of our keys.
    ///
    /// Rejects the active key and an index not installed ([`ParticipantError::Srtp`]).
    pub fn remove_local_key(&mut self, index: KeyIndex) -> Result<(), ParticipantError> {
        self.outbound
            .remove_key(index)
            .map_err(ParticipantError::Srtp)
    }

    /// Installs a remote sender's key event: its streams, its profile and its whole
    /// current key set (one or two `(index, master key ‖ salt)` pairs, oldest first),
    /// which replaces the earlier set. A key no longer listed stays only while packets
    /// arrive under it; the previous key goes 10 s after the first packet under a new
    /// index ([`Event::KeyRetired`]). A changed profile starts a fresh context.
    ///
    /// Rejects no keys, more than two, a repeated index, no streams, an SSRC that is ours
    /// or another sender's or repeated ([`ParticipantError::SsrcCollision`]), a known
    /// sender whose streams changed ([`ParticipantError::StreamsChanged`]) and key
    /// material of the wrong length ([`ParticipantError::Srtp`]). Nothing changes then.
    pub fn install_remote_keys(
        &mut self,
        sender: SenderId,
        streams: &[RemoteStream],
        profile: SrtpProfile,
        keys: &[(KeyIndex, &[u8])],
    ) -> Result<(), ParticipantError> {
        for (_, k) in keys {
            if k.len() != profile.master_len() {
                return Err(ParticipantError::Srtp(
                    blindfold_relay::srtp::SrtpError::BadMasterLength,
                ));
            }
        }
        self.remotes
            .install(&self.config.ssrcs.all(), sender, streams, profile, keys)
    }

    /// Forgets a remote sender (it left): its keys and reception state. Returns whether
    /// it was known.
    pub fn remove_remote_sender(&mut self, sender: SenderId) -> bool {
        if let Some(s) = self.remotes.get(sender) {
            let ssrcs: Vec<Ssrc> = s.streams.iter().map(|st| st.ssrc).collect();
            self.recv.retain(|r| !ssrcs.contains(&r.ssrc));
            // The relay forgets the SRTCP state of a member's SSRCs when it leaves (its
            // sender reports came under them): so do we, so that a later member with one
            // of them is not taken for a replay, and the context does not fill up.
            if let Some(srtcp) = self.srtcp.as_mut() {
                for ssrc in &ssrcs {
                    srtcp.inbound.remove_stream(*ssrc);
                }
            }
        }
        self.remotes.remove(sender)
    }

    /// Ends the session from our side: a close_notify is queued if DTLS is up, then
    /// everything stops. No event.
    pub fn close(&mut self) {
        if self.phase == Phase::Failed {
            return;
        }
        if let Some(dtls) = self.dtls.as_mut() {
            dtls.close();
        }
        self.drain_dtls_transmits();
        self.phase = Phase::Failed;
        self.ice.close();
        self.dtls = None;
        self.srtcp = None;
    }
}

/// The SRTP module's profile for a DTLS-negotiated one.
pub fn srtp_profile(p: DtlsSrtpProfile) -> Option<SrtpProfile> {
    SrtpProfile::from_dtls_id(p.iana_id())
}

/// Extends a 16-bit sequence number to the 48-bit one nearest `highest` (RFC 3711
/// Appendix A).
fn extend_seq(highest: u64, seq: WireSeq) -> u64 {
    let roc = highest >> 16;
    let h16 = highest & 0xffff;
    let s = u64::from(seq.0);
    if s > h16 && s - h16 > 0x8000 && roc > 0 {
        ((roc - 1) << 16) | s
    } else if s < h16 && h16 - s > 0x8000 {
        ((roc + 1) << 16) | s
    } else {
        (roc << 16) | s
    }
}

/// An RFC 3550 §6.4.1 report block for a remote stream (jitter not measured: 0); the
/// packets of a resumed layer's gap are not expected (see [`RecvStream::skipped`]).
fn report_block(r: &mut RecvStream, now: Instant) -> ReportBlock {
    let expected = (r.max - r.base + 1).saturating_sub(r.skipped);
    let lost = expected as i64 - r.received as i64;
    let expected_interval = expected.saturating_sub(r.expected_prior);
    let received_interval = r.received - r.received_prior;
    r.expected_prior = expected;
    r.received_prior = r.received;
    let lost_interval = expected_interval as i64 - received_interval as i64;
    let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
        0
    } else {
        ((lost_interval << 8) / expected_interval as i64).min(255) as u8
    };
    let (lsr, dlsr) = match r.last_sr {
        Some((lsr, at)) => {
            let d = now.saturating_duration_since(at);
            let dlsr = (d.as_secs() << 16) + ((u64::from(d.subsec_nanos()) << 16) / 1_000_000_000);
            (lsr, dlsr.min(u64::from(u32::MAX)) as u32)
        }
        None => (0, 0),
    };
    ReportBlock {
        ssrc: r.ssrc,
        fraction_lost,
        cumulative_lost: lost.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        highest_seq: r.max as u32,
        jitter: 0,
        lsr,
        dlsr,
    }
}

/// What arrives during one of the relay's probe clusters (`docs/protocol.md`,
/// "Probes"): from the arrival of its first packet to its last, every datagram from the
/// relay counts, whatever it carries — the link's delivery rate is what is measured.
#[derive(Debug, Default)]
struct ProbeMeter {
    open: Option<OpenCluster>,
}

#[derive(Debug, Clone, Copy)]
struct OpenCluster {
    cluster: u16,
    first: Instant,
    received: u8,
    /// Bytes of the datagrams after the first probe packet.
    bytes: u64,
}

impl ProbeMeter {
    /// A datagram from the relay, before it is handled.
    fn on_datagram(&mut self, len: usize) {
        if let Some(c) = &mut self.open {
            c.bytes += len as u64;
        }
    }

    /// A probe packet (its datagram already counted): the report when it is its
    /// cluster's last. A packet of another cluster starts measuring that one (a
    /// cluster whose last packet was lost goes unreported; the relay counts that as a
    /// link that did not carry it).
    fn on_probe(&mut self, now: Instant, p: Probe) -> Option<ProbeReport> {
        match &mut self.open {
            Some(c) if c.cluster == p.cluster => c.received = c.received.saturating_add(1),
            _ => {
                self.open = Some(OpenCluster {
                    cluster: p.cluster,
                    first: now,
                    received: 1,
                    bytes: 0,
                });
            }
        }
        if p.index.saturating_add(1) < p.count {
            return None;
        }
        let c = self.open.take()?;
        Some(ProbeReport {
            cluster: c.cluster,
            received: c.received,
            bytes: u32::try_from(c.bytes).unwrap_or(u32::MAX),
            duration_us: u32::try_from(now.saturating_duration_since(c.first).as_micros())
                .unwrap_or(u32::MAX),
        })
    }
}

#[cfg(test)]
mod probe_tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn probe(cluster: u16, index: u8) -> Probe {
        Probe {
            cluster,
            index,
            count: 5,
        }
    }

    /// Every datagram after the first probe counts, up to the last; a cluster whose
    /// last packet was lost goes unreported, and the next is measured afresh.
    #[test]
    fn a_cluster_is_measured_from_its_first_packet_to_its_last() {
        let t0 = Instant::now();
        let mut m = ProbeMeter::default();
        m.on_datagram(1200); // before any cluster: not counted
        m.on_datagram(800);
        assert_eq!(m.on_probe(t0, probe(3, 0)), None);
        for i in 1..4u8 {
            m.on_datagram(800);
            assert_eq!(m.on_probe(t0 + 4 * MS * u32::from(i), probe(3, i)), None);
            m.on_datagram(300); // media between the probes
        }
        // Its last packet is lost; the next cluster starts.
        m.on_datagram(800);
        assert_eq!(m.on_probe(t0 + 100 * MS, probe(4, 0)), None);
        for i in 1..5u8 {
            m.on_datagram(800);
            let r = m.on_probe(t0 + 100 * MS + 4 * MS * u32::from(i), probe(4, i));
            assert_eq!(r.is_some(), i == 4);
            if let Some(r) = r {
                assert_eq!(
                    r,
                    ProbeReport {
                        cluster: 4,
                        received: 5,
                        bytes: 4 * 800,
                        duration_us: 16_000,
                    }
                );
            }
        }
        // Nothing open any more: datagrams are not counted.
        m.on_datagram(1200);
        assert!(m.open.is_none());
    }
}

/// Our packets sent with a transport-wide sequence number, by that number modulo
/// [`SENT_LOG`], and the uplink estimate the relay's feedback about them feeds.
struct SentLog {
    sent: Box<[Option<Sent>]>,
    estimate: UplinkEstimate,
    /// The first reported arrival (µs on the relay's clock) and the send time of its
    /// packet: the relay's clock moved onto ours.
    base: Option<(i64, Instant)>,
}

/// Sequence numbers the log holds: about 3 s of our three streams.
const SENT_LOG: usize = 1024;

/// A reported arrival more than this before its packet was sent is on a clock the log
/// has not mapped onto ours ([`SentLog::on_feedback`]; the mapping counts the first
/// reported packet's delay as none, so later ones may come a little before their send
/// times, never a second) ...
const REBASE_EARLY: Duration = Duration::from_secs(1);

/// ... and so is one more than this after: no queue holds a packet so long, and the
/// log holds only the last 3 s of them.
const REBASE_LATE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
struct Sent {
    tcc: u16,
    stream: usize,
    ssrc: Ssrc,
    seq: WireSeq,
    at: Instant,
    size: usize,
}

impl std::fmt::Debug for SentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentLog").finish_non_exhaustive()
    }
}

impl SentLog {
    fn new() -> Self {
        SentLog {
            sent: vec![None; SENT_LOG].into_boxed_slice(),
            estimate: UplinkEstimate::new(),
            base: None,
        }
    }

    fn note(&mut self, sent: Sent) {
        self.sent[usize::from(sent.tcc) % SENT_LOG] = Some(sent);
    }

    /// The relay's feedback: every packet it reports arrived goes to the estimate, at
    /// its arrival time on the relay's clock (moved onto ours) with its send time as
    /// abs-send-time (`start` is the zero of that clock). What the estimate hands out,
    /// if anything.
    fn on_feedback(&mut self, start: Instant, fb: &TransportCc<'_>) -> Option<Option<u64>> {
        let mut t_us = fb.reference_time_ms() * 1000;
        let mut latest = None;
        for st in fb.statuses() {
            let Some(d) = st.delta else { continue };
            t_us += i64::from(d) * 250;
            let Some(p) = self.sent[usize::from(st.seq) % SENT_LOG].filter(|p| p.tcc == st.seq)
            else {
                continue;
            };
            let (base_us, base_at) = *self.base.get_or_insert((t_us, p.at));
            let offset = t_us - base_us;
            let mapped = match u64::try_from(offset) {
                Ok(after) => base_at.checked_add(Duration::from_micros(after)),
                Err(_) => base_at.checked_sub(Duration::from_micros(offset.unsigned_abs())),
            };
            // An arrival far from its packet's send time is on another clock: the relay
            // restarted, or another of its workers reports now (each counts from its
            // own first packet). The relay's clock is taken afresh from this packet.
            let on_clock = mapped.filter(|&m| {
                p.at.saturating_duration_since(m) <= REBASE_EARLY
                    && m.saturating_duration_since(p.at) <= REBASE_LATE
            });
            let arrival = match on_clock {
                None => {
                    self.base = Some((t_us, p.at));
                    p.at
                }
                // Before the first on this clock: reordered feedback.
                Some(_) if offset < 0 => continue,
                Some(m) => m,
            };
            let sent = AbsSendTime::from_duration(p.at.saturating_duration_since(start));
            self.estimate
                .on_packet(arrival, p.stream, p.ssrc, p.seq, Some(sent.0), p.size);
            latest = Some(arrival);
        }
        match self.estimate.poll(latest?)? {
            Limit::Bps(bps) => Some(Some(bps)),
            Limit::Lifted => Some(None),
        }
    }
}

#[cfg(test)]
mod sent_log_tests {
    // One arbitrary base instant; everything after it is simulated.
    #![allow(clippy::disallowed_methods)]

    use super::*;
    use blindfold_relay::wire::rtcp::{RtcpCompound, write_transport_cc};

    const MS: Duration = Duration::from_millis(1);

    /// 100 packets a second of 1000 bytes from `t0`; the relay reports each 100 ms
    /// on its own clock, which starts at `clock_zero` (ours) and, in the second phase,
    /// again at 0 (a restarted relay), with `lost` of every ten packets missing. Feeds
    /// `log`; returns the limits it handed out in each phase.
    fn run(log: &mut SentLog, t0: Instant, lost: usize) -> [Vec<Option<u64>>; 2] {
        let mut out = [Vec::new(), Vec::new()];
        let mut tcc = 0u16;
        for (phase, restart_at) in [(0, t0), (1, t0 + 3000 * MS)] {
            for batch in 0..30u64 {
                let first = tcc;
                let sent_at = |i: u64| restart_at + 100 * MS * batch as u32 + 10 * MS * i as u32;
                for i in 0..10u64 {
                    log.note(Sent {
                        tcc,
                        stream: 0,
                        ssrc: Ssrc(7),
                        seq: WireSeq(tcc),
                        at: sent_at(i),
                        size: 1000,
                    });
                    tcc = tcc.wrapping_add(1);
                }
                // Arrivals 20 ms after sending, on the relay's clock: 250 µs ticks after
                // its reference time (64 ms units), which counts from `restart_at`.
                let reference = (batch * 100 / 64) as i32;
                let reference_ticks = i64::from(reference) * 64 * 4;
                let arrivals: Vec<Option<i64>> = (0..10u64)
                    .map(|i| {
                        let at = ((batch * 100 + i * 10 + 20) * 4) as i64;
                        (phase == 0 || i as usize >= lost).then_some(at - reference_ticks)
                    })
                    .collect();
                let mut buf = [0u8; 256];
                let n =
                    write_transport_cc(&mut buf, Ssrc(1), Ssrc(7), first, reference, 0, &arrivals)
                        .unwrap();
                let compound = RtcpCompound::parse(&buf[..n]).unwrap();
                for p in compound.packets() {
                    if let Ok(RtcpPacket::TransportCc(fb)) = p
                        && let Some(limit) = log.on_feedback(t0, &fb)
                    {
                        out[phase].push(limit);
                    }
                }
            }
        }
        out
    }

    /// Feedback from a relay that restarted counts its arrivals from a new zero: the
    /// log takes that clock afresh, and the estimate still sees the loss that follows.
    #[test]
    fn feedback_on_a_restarted_relays_clock_still_feeds_the_estimate() {
        let t0 = Instant::now();
        let mut log = SentLog::new();
        let [before, after] = run(&mut log, t0, 3);
        assert!(before.iter().all(Option::is_none), "{before:?}");
        assert!(
            after.iter().any(|l| l.is_some()),
            "30% loss after the restart limited nothing: {after:?}"
        );
    }
}
