//! A receiver's decoded timeline: which video frames a decoder could show, from the
//! media a participant received, so a test can see what a user would — a freeze, a
//! frame that cannot be decoded — at a simulcast layer switch.
//!
//! The model is a VP8-like decoder per received layer (each delta frame refers to the
//! frame before it in its layer; a keyframe refers to nothing), fed through a small
//! jitter buffer:
//!
//! - Packets are grouped into frames by RTP timestamp; frame marking (RFC 9626) says
//!   which packet starts (S) and ends (E) a frame and whether it is independent (I).
//!   A frame is *complete* when its S and E packets and every sequence number between
//!   them arrived, in any order.
//! - A complete frame is *decoded* when it is a keyframe, or when its first sequence
//!   number follows the last decoded frame's last one (its reference was decoded).
//!   Frames are decoded in sequence order; one that completes before its predecessor
//!   waits for it.
//! - A frame not decoded within [`Timeline::WAIT`] of its first packet is
//!   *undecodable*: it lost a packet for good, or its reference (the layer started
//!   mid-way through a group of pictures, or a frame before it was lost). A keyframe
//!   that decodes gives up on the frames before it.
//!
//! What is *shown* for each sender: its full layer's frames while that decoder is
//! producing them, its thumbnail's otherwise — a full frame counts as current for
//! [`Timeline::FULL_HOLD`] after it was decoded, so a thumbnail frame in between is not
//! shown, and once full frames stop the thumbnail takes over. [`Timeline::longest_gap`]
//! is the longest time a sender's picture stood still.

use std::time::{Duration, Instant};

use blindfold_relay::id::{ExtId, RtpTime, Ssrc};
use blindfold_relay::wire::rtp::{RtpHeader, frame_marking};

use crate::{MediaPacket, SenderId, VideoLayer};

/// One frame a decoder produced and the viewer saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShownFrame {
    /// When its last packet arrived (and it was decoded).
    pub at: Instant,
    /// Whose.
    pub sender: SenderId,
    /// From which layer.
    pub layer: VideoLayer,
    /// Whether it was a keyframe.
    pub keyframe: bool,
}

/// A frame that never decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostFrame {
    /// When its first packet arrived.
    pub first_packet: Instant,
    /// Whose.
    pub sender: SenderId,
    /// Which layer.
    pub layer: VideoLayer,
    /// Whether all its packets arrived (so only its reference was missing).
    pub complete: bool,
}

/// A frame being assembled.
#[derive(Debug, Clone)]
struct Pending {
    ts: RtpTime,
    first_at: Instant,
    /// Lowest and highest sequence numbers seen, and whether those were S and E.
    lo: u64,
    hi: u64,
    start: bool,
    end: bool,
    keyframe: bool,
    packets: u64,
}

impl Pending {
    fn complete(&self) -> bool {
        self.start && self.end && self.packets == self.hi - self.lo + 1
    }
}

/// One layer's decoder.
#[derive(Debug, Clone)]
struct Decoder {
    sender: SenderId,
    ssrc: Ssrc,
    layer: VideoLayer,
    /// The last decoded frame's last sequence number.
    last: Option<u64>,
    /// Frames not yet decoded, by first sequence number.
    frames: Vec<Pending>,
}

/// What a receiver's decoders made of the video it received (see the module docs).
#[derive(Debug, Clone)]
pub struct Timeline {
    frame_marking: ExtId,
    decoders: Vec<Decoder>,
    /// Per sender: when its last full frame was decoded.
    last_full: Vec<(SenderId, Instant)>,
    shown: Vec<ShownFrame>,
    lost: Vec<LostFrame>,
}

impl Timeline {
    /// How long a frame may wait for its missing packets or its reference.
    pub const WAIT: Duration = Duration::from_millis(300);
    /// How long a decoded full frame stays on screen before the thumbnail takes over
    /// (1.5 frame intervals at 30 fps).
    pub const FULL_HOLD: Duration = Duration::from_millis(50);

    /// A timeline that reads frame marking at extension id `frame_marking`.
    pub fn new(frame_marking: ExtId) -> Self {
        Timeline {
            frame_marking,
            decoders: Vec::new(),
            last_full: Vec::new(),
            shown: Vec::new(),
            lost: Vec::new(),
        }
    }

    /// Declares a sender's two video layers.
    pub fn add_sender(&mut self, sender: SenderId, thumbnail: Ssrc, full: Ssrc) {
        for (ssrc, layer) in [(thumbnail, VideoLayer::Thumbnail), (full, VideoLayer::Full)] {
            self.decoders.push(Decoder {
                sender,
                ssrc,
                layer,
                last: None,
                frames: Vec::new(),
            });
        }
    }

    /// A media packet arrived at `at` (others than the declared layers are ignored).
    pub fn handle_media(&mut self, at: Instant, p: &MediaPacket) {
        self.expire(at);
        let Some(k) = self
            .decoders
            .iter()
            .position(|d| d.ssrc == p.ssrc && d.sender == p.sender)
        else {
            return;
        };
        let fm = RtpHeader::parse(&p.packet)
            .ok()
            .and_then(|h| h.extension(self.frame_marking))
            .and_then(|d| frame_marking(d).ok());
        let Some(fm) = fm else {
            return;
        };
        let seq = p.seq.0;
        let d = &mut self.decoders[k];
        if d.last.is_some_and(|l| seq <= l) {
            return; // a duplicate, or a frame given up on
        }
        match d.frames.iter_mut().find(|f| f.ts == p.timestamp) {
            Some(f) => {
                if seq < f.lo {
                    (f.lo, f.start) = (seq, fm.start_of_frame);
                } else if seq == f.lo {
                    f.start |= fm.start_of_frame;
                }
                if seq > f.hi {
                    (f.hi, f.end) = (seq, fm.end_of_frame);
                } else if seq == f.hi {
                    f.end |= fm.end_of_frame;
                }
                f.keyframe |= fm.starts_keyframe();
                f.packets += 1;
            }
            None => {
                d.frames.push(Pending {
                    ts: p.timestamp,
                    first_at: at,
                    lo: seq,
                    hi: seq,
                    start: fm.start_of_frame,
                    end: fm.end_of_frame,
                    keyframe: fm.starts_keyframe(),
                    packets: 1,
                });
                d.frames.sort_by_key(|f| f.lo);
            }
        }
        self.decode(at, k);
    }

    /// Decodes what layer `k` can now.
    fn decode(&mut self, at: Instant, k: usize) {
        loop {
            let d = &mut self.decoders[k];
            // A complete keyframe decodes, and whatever is before it is given up.
            let next = match d.frames.iter().rposition(|f| f.keyframe && f.complete()) {
                Some(i) => Some(i),
                None => d
                    .frames
                    .first()
                    .filter(|f| f.complete() && d.last.is_some_and(|l| f.lo == l + 1))
                    .map(|_| 0),
            };
            let Some(i) = next else {
                return;
            };
            let given_up: Vec<Pending> = d.frames.drain(..i).collect();
            let f = d.frames.remove(0);
            d.last = Some(f.hi);
            let (sender, layer) = (d.sender, d.layer);
            for g in given_up {
                self.lost.push(LostFrame {
                    first_packet: g.first_at,
                    sender,
                    layer,
                    complete: g.complete(),
                });
            }
            self.show(at, sender, layer, f.keyframe);
        }
    }

    fn show(&mut self, at: Instant, sender: SenderId, layer: VideoLayer, keyframe: bool) {
        let full_current = self
            .last_full
            .iter()
            .any(|&(s, t)| s == sender && at.saturating_duration_since(t) < Self::FULL_HOLD);
        match layer {
            VideoLayer::Full => match self.last_full.iter_mut().find(|(s, _)| *s == sender) {
                Some(e) => e.1 = at,
                None => self.last_full.push((sender, at)),
            },
            VideoLayer::Thumbnail if full_current => return,
            VideoLayer::Thumbnail => {}
        }
        self.shown.push(ShownFrame {
            at,
            sender,
            layer,
            keyframe,
        });
    }

    /// Declares the frames that waited longer than [`Self::WAIT`] at `now` lost.
    pub fn expire(&mut self, now: Instant) {
        for d in &mut self.decoders {
            while let Some(f) = d.frames.first() {
                if now.saturating_duration_since(f.first_at) < Self::WAIT {
                    break;
                }
                let f = d.frames.remove(0);
                // Its successors no longer follow a decoded frame.
                d.last = None;
                self.lost.push(LostFrame {
                    first_packet: f.first_at,
                    sender: d.sender,
                    layer: d.layer,
                    complete: f.complete(),
                });
            }
        }
    }

    /// The frames shown, in order.
    pub fn shown(&self) -> &[ShownFrame] {
        &self.shown
    }

    /// The frames that never decoded.
    pub fn lost(&self) -> &[LostFrame] {
        &self.lost
    }

    /// The longest time `sender`'s picture stood still between `from` and `to` (from
    /// the last frame shown before `from`, or `from`, to the first after `to`, or `to`).
    pub fn longest_gap(&self, sender: SenderId, from: Instant, to: Instant) -> Duration {
        let mut prev = from;
        let mut longest = Duration::ZERO;
        for f in self.shown.iter().filter(|f| f.sender == sender) {
            if f.at < from {
                prev = f.at;
                continue;
            }
            longest = longest.max(f.at.saturating_duration_since(prev));
            prev = f.at;
            if f.at > to {
                return longest;
            }
        }
        longest.max(to.saturating_duration_since(prev))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // tests: the clock is the epoch

    use super::*;
    use blindfold_relay::id::{KeyIndex, Pt, SeqNo, WireSeq};
    use blindfold_relay::wire::rtp::{FrameMarking, RtpFields, write_header};

    const FM: ExtId = ExtId(2);
    const THUMB: Ssrc = Ssrc(10);
    const FULL: Ssrc = Ssrc(11);
    const ALICE: SenderId = SenderId(1);

    fn packet(ssrc: Ssrc, seq: u64, ts: u32, s: bool, e: bool, i: bool) -> MediaPacket {
        let fm = FrameMarking {
            start_of_frame: s,
            end_of_frame: e,
            independent: i,
            discardable: false,
            base_layer_sync: false,
            tid: 0,
            lid: None,
            tl0_pic_idx: None,
        };
        let mut d = [0u8; 3];
        let n = fm.write(&mut d).unwrap();
        let mut buf = vec![0u8; 200];
        let fields = RtpFields {
            padding: false,
            marker: e,
            payload_type: Pt(96),
            seq: WireSeq(seq as u16),
            timestamp: RtpTime(ts),
            ssrc,
            csrcs: &[],
        };
        let len = write_header(&mut buf, &fields, &[(FM, &d[..n])]).unwrap() + 20;
        buf.truncate(len);
        MediaPacket {
            sender: ALICE,
            ssrc,
            seq: SeqNo(seq),
            pt: Pt(96),
            marker: e,
            timestamp: RtpTime(ts),
            key: KeyIndex(0),
            skipped: 0,
            payload: len - 20..len,
            packet: buf,
        }
    }

    /// Two-packet frames of one layer: `(first seq, timestamp, keyframe)`.
    fn frames(t: &mut Timeline, t0: Instant, ssrc: Ssrc, list: &[(u64, u32, bool)], gap_ms: u64) {
        for (n, &(seq, ts, key)) in list.iter().enumerate() {
            let at = t0 + Duration::from_millis(gap_ms * n as u64);
            t.handle_media(at, &packet(ssrc, seq, ts, true, false, key));
            t.handle_media(at, &packet(ssrc, seq + 1, ts, false, true, false));
        }
    }

    #[test]
    fn a_stream_from_a_keyframe_decodes_every_frame() {
        let t0 = Instant::now();
        let mut t = Timeline::new(FM);
        t.add_sender(ALICE, THUMB, FULL);
        frames(
            &mut t,
            t0,
            THUMB,
            &[(0, 0, true), (2, 10, false), (4, 20, false)],
            66,
        );
        assert_eq!(t.shown().len(), 3);
        assert!(t.lost().is_empty());
        assert_eq!(
            t.longest_gap(ALICE, t0, t0 + Duration::from_millis(132)),
            Duration::from_millis(66)
        );
    }

    #[test]
    fn a_layer_joined_mid_way_is_undecodable_until_its_keyframe() {
        let t0 = Instant::now();
        let mut t = Timeline::new(FM);
        t.add_sender(ALICE, THUMB, FULL);
        frames(
            &mut t,
            t0,
            FULL,
            &[(100, 0, false), (102, 3, false), (104, 6, true)],
            33,
        );
        t.expire(t0 + Duration::from_secs(1));
        assert_eq!(t.shown().len(), 1, "only the keyframe");
        assert_eq!(t.lost().len(), 2);
        assert!(
            t.lost()
                .iter()
                .all(|f| f.complete && f.layer == VideoLayer::Full)
        );
    }

    #[test]
    fn a_frame_missing_a_packet_breaks_the_chain_and_reordering_does_not() {
        let t0 = Instant::now();
        let mut t = Timeline::new(FM);
        t.add_sender(ALICE, THUMB, FULL);
        // Frame 2's packets arrive in reverse: fine.
        t.handle_media(t0, &packet(THUMB, 0, 0, true, true, true));
        t.handle_media(t0, &packet(THUMB, 2, 1, false, true, false));
        t.handle_media(t0, &packet(THUMB, 1, 1, true, false, false));
        assert_eq!(t.shown().len(), 2);
        // Frame 3 loses its end: it and frame 4 (which refers to it) never decode.
        t.handle_media(t0, &packet(THUMB, 3, 2, true, false, false));
        t.handle_media(t0, &packet(THUMB, 5, 3, true, true, false));
        t.expire(t0 + Duration::from_secs(1));
        assert_eq!(t.shown().len(), 2);
        assert_eq!(t.lost().len(), 2);
    }

    #[test]
    fn full_frames_hide_the_thumbnail_and_the_thumbnail_takes_over_when_they_stop() {
        let t0 = Instant::now();
        let mut t = Timeline::new(FM);
        t.add_sender(ALICE, THUMB, FULL);
        let ms = Duration::from_millis;
        // In time order: thumbnail frames every 66 ms; full frames at 40, 73, 106 ms.
        t.handle_media(t0, &packet(THUMB, 0, 0, true, true, true));
        t.handle_media(t0 + ms(40), &packet(FULL, 0, 0, true, true, true));
        t.handle_media(t0 + ms(66), &packet(THUMB, 1, 1, true, true, false));
        t.handle_media(t0 + ms(73), &packet(FULL, 1, 1, true, true, false));
        t.handle_media(t0 + ms(106), &packet(FULL, 2, 2, true, true, false));
        t.handle_media(t0 + ms(132), &packet(THUMB, 2, 2, true, true, false));
        t.handle_media(t0 + ms(198), &packet(THUMB, 3, 3, true, true, false));
        t.handle_media(t0 + ms(264), &packet(THUMB, 4, 4, true, true, false));
        let layers: Vec<VideoLayer> = t.shown().iter().map(|f| f.layer).collect();
        use VideoLayer::{Full as F, Thumbnail as T};
        // The thumbnail frames at 66 and 132 ms come while a full frame is current.
        assert_eq!(layers, [T, F, F, F, T, T]);
        assert_eq!(t.longest_gap(ALICE, t0, t0 + ms(264)), ms(92));
        assert!(t.lost().is_empty());
    }
}
