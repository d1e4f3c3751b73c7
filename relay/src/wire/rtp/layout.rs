//! Finding a few extension elements in every packet of a stream without walking its
//! extension block each time.
//!
//! A sender writes the same elements in the same order on every packet of a stream:
//! only their data changes. [`ExtLayout`] remembers where the elements it looks for
//! sat in the stream's last one-byte-form block, and the bytes a walk over that block
//! reads — each element's header byte and the padding — and checks them on the next
//! block, a 32-bit word at a time. A walk over two blocks that agree on those bytes
//! and on their length takes the same steps (it never reads element data), so if they
//! agree the elements are where they were; if not, it walks the block once and learns
//! it. Either way [`ExtLayout::find`] answers exactly as [`RtpHeader::extension`] does.
//!
//! It remembers the last two layouts: a sender that adds an element to some packets
//! (a keyframe's video orientation, the first packets' stream id) alternates between
//! two, and each is then checked, not walked.

use super::{ExtForm, RtpHeader, Step, next_element};
use crate::id::ExtId;

/// The ids one [`ExtLayout`] looks for.
pub const LAYOUT_IDS: usize = 4;

/// Blocks up to this many 32-bit words are remembered (longer ones are walked).
const WORDS: usize = 8;

/// Where a stream's extension elements sit; see the module docs.
#[derive(Debug, Clone)]
pub struct ExtLayout {
    ids: [Option<ExtId>; LAYOUT_IDS],
    /// Whether any of `ids` is set.
    any: bool,
    /// The last two layouts learnt …
    learnt: [Learnt; 2],
    /// … and which of them matched or was learnt last.
    newest: usize,
}

/// One block's layout.
#[derive(Debug, Clone)]
struct Learnt {
    /// The block's length in words; 0: nothing learnt.
    words: u8,
    /// Per word, ones over the bytes a walk reads (headers, padding) …
    mask: [u32; WORDS],
    /// … and those bytes' values (zero elsewhere).
    pattern: [u32; WORDS],
    /// Per id, its element's data in the block (see [`ExtFound`]).
    at: [u32; LAYOUT_IDS],
}

impl Learnt {
    const NONE: Learnt = Learnt {
        words: 0,
        mask: [0; WORDS],
        pattern: [0; WORDS],
        at: [ABSENT; LAYOUT_IDS],
    };

    /// Whether `block` has this length and these bytes where a walk reads.
    #[inline]
    fn matches(&self, block: &[u8]) -> bool {
        let words = usize::from(self.words);
        if words == 0 || block.len() != words * 4 {
            return false;
        }
        let mut differ = 0;
        for (i, w) in block.chunks_exact(4).enumerate().take(WORDS) {
            let w = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
            differ |= (w & self.mask[i]) ^ self.pattern[i];
        }
        differ == 0
    }
}

/// The elements [`ExtLayout::find`] found in one header.
#[derive(Debug, Clone, Copy)]
pub struct ExtFound<'a> {
    block: &'a [u8],
    /// Per id: where its data starts in `block` (high 16 bits) and how long it is
    /// (low 16 bits); [`ABSENT`]: not there.
    at: [u32; LAYOUT_IDS],
}

/// No such element.
const ABSENT: u32 = u32::MAX;

impl<'a> ExtFound<'a> {
    /// Nothing found.
    pub const NONE: ExtFound<'static> = ExtFound {
        block: &[],
        at: [ABSENT; LAYOUT_IDS],
    };

    /// The data of the first element with the `i`th id given to [`ExtLayout::new`], as
    /// [`RtpHeader::extension`] gives it.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let at = *self.at.get(i)?;
        if at == ABSENT {
            return None;
        }
        let start = (at >> 16) as usize;
        self.block.get(start..start + (at & 0xffff) as usize)
    }
}

impl ExtLayout {
    /// Looks for `ids` (`None`: nothing), nothing learnt yet.
    pub fn new(ids: [Option<ExtId>; LAYOUT_IDS]) -> Self {
        ExtLayout {
            ids,
            any: ids.iter().any(Option::is_some),
            learnt: [Learnt::NONE, Learnt::NONE],
            newest: 0,
        }
    }

    /// The elements with its ids in `header` (nothing, at the cost of one comparison,
    /// if it looks for none).
    #[inline]
    pub fn find<'a>(&mut self, header: &RtpHeader<'a>) -> ExtFound<'a> {
        if !self.any {
            return ExtFound::NONE;
        }
        let Some((form, block)) = header.extension_elements() else {
            return ExtFound::NONE;
        };
        if form == ExtForm::OneByte {
            let newest = &self.learnt[self.newest];
            if newest.matches(block) {
                return ExtFound {
                    block,
                    at: newest.at,
                };
            }
            return self.other_or_learn(block);
        }
        self.learn(form, block)
    }

    /// The layout before the newest, if `block` has it (it becomes the newest), else
    /// `block` learnt.
    #[cold]
    fn other_or_learn<'a>(&mut self, block: &'a [u8]) -> ExtFound<'a> {
        let other = 1 - self.newest;
        if self.learnt[other].matches(block) {
            self.newest = other;
            return ExtFound {
                block,
                at: self.learnt[other].at,
            };
        }
        self.learn(ExtForm::OneByte, block)
    }

    /// Walks `block` (in `form`) for the ids, as [`RtpHeader::extension`] does, and
    /// learns it if it can be remembered.
    #[cold]
    fn learn<'a>(&mut self, form: ExtForm, block: &'a [u8]) -> ExtFound<'a> {
        let remembered = form == ExtForm::OneByte
            && !block.is_empty()
            && block.len() <= WORDS * 4
            && block.len().is_multiple_of(4);
        let mut found = ExtFound {
            block,
            at: [ABSENT; LAYOUT_IDS],
        };
        let mut seen = [false; LAYOUT_IDS];
        // The bytes the walk reads (to remember the block): each element's header byte
        // and the padding, up to where it stops.
        let mut read = [false; WORDS * 4];
        let mut rest = block;
        loop {
            let pos = block.len() - rest.len();
            match next_element(rest, form) {
                Step::Element(id, data, after) => {
                    let start = data.as_ptr() as usize - block.as_ptr() as usize;
                    // The first element of each id. (A block longer than 64 KiB, more
                    // than a UDP datagram holds, finds nothing past 64 KiB.)
                    for ((at, seen), want) in found.at.iter_mut().zip(&mut seen).zip(self.ids) {
                        if !*seen && want.is_some_and(|w| w.0 == id) {
                            *seen = true;
                            *at = match (u16::try_from(start), u16::try_from(data.len())) {
                                (Ok(s), Ok(l)) => u32::from(s) << 16 | u32::from(l),
                                _ => ABSENT,
                            };
                        }
                    }
                    if remembered {
                        // The padding skipped before the element, and its header byte.
                        read[pos..start].fill(true);
                    }
                    rest = after;
                }
                Step::End | Step::Malformed(_) => {
                    if remembered {
                        // Padding up to the stop, the byte that stopped it (if any).
                        let zeros = rest.iter().take_while(|&&b| b == 0).count();
                        read[pos..=(pos + zeros).min(block.len() - 1)].fill(true);
                    }
                    break;
                }
            }
        }
        if !remembered {
            return found;
        }
        // Into the older slot: the newest stays, for a sender alternating between two.
        self.newest = 1 - self.newest;
        let slot = &mut self.learnt[self.newest];
        for (i, w) in block.chunks_exact(4).enumerate() {
            let mut mask = [0u8; 4];
            for (j, m) in mask.iter_mut().enumerate() {
                if read[i * 4 + j] {
                    *m = 0xff;
                }
            }
            let mask = u32::from_ne_bytes(mask);
            slot.mask[i] = mask;
            slot.pattern[i] = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) & mask;
        }
        slot.at = found.at;
        slot.words = (block.len() / 4) as u8;
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet with fixed header 12 bytes and a one-byte-form block of `block`.
    fn packet(block: &[u8]) -> Vec<u8> {
        let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0xbe, 0xde];
        p.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(block);
        p.extend_from_slice(&[0xaa; 20]);
        p
    }

    const LEVEL: ExtId = ExtId(1);
    const AST: ExtId = ExtId(3);
    const TCC: ExtId = ExtId(5);

    fn layout() -> ExtLayout {
        ExtLayout::new([Some(LEVEL), Some(AST), Some(TCC), None])
    }

    /// What the layout finds, checked against the direct lookup.
    fn found(l: &mut ExtLayout, p: &[u8]) -> Vec<Option<Vec<u8>>> {
        let h = RtpHeader::parse(p).unwrap();
        let f = l.find(&h);
        let ids = [Some(LEVEL), Some(AST), Some(TCC), None];
        (0..LAYOUT_IDS)
            .map(|i| {
                assert_eq!(f.get(i), ids[i].and_then(|id| h.extension(id)), "{i}");
                f.get(i).map(<[u8]>::to_vec)
            })
            .collect()
    }

    #[test]
    fn a_stream_s_next_packets_are_found_where_the_last_had_them() {
        let mut l = layout();
        // Level (1 byte) and transport-wide number (2 bytes), 3 bytes of padding.
        let a = packet(&[0x10, 0x85, 0x51, 0x00, 0x07, 0, 0, 0]);
        assert_eq!(
            found(&mut l, &a),
            [Some(vec![0x85]), None, Some(vec![0, 7]), None]
        );
        assert_eq!(l.learnt[l.newest].words, 2, "learnt");
        // The next packet: other data, same layout.
        let b = packet(&[0x10, 0x9f, 0x51, 0x00, 0x08, 0, 0, 0]);
        assert_eq!(
            found(&mut l, &b),
            [Some(vec![0x9f]), None, Some(vec![0, 8]), None]
        );
        // Another layout: abs-send-time first, padding between elements.
        let c = packet(&[0x32, 1, 2, 3, 0, 0x51, 0, 9]);
        assert_eq!(
            found(&mut l, &c),
            [None, Some(vec![1, 2, 3]), Some(vec![0, 9]), None]
        );
        // A padding byte that is not padding any more: an element (id 1, level 0x44)
        // where the walk read padding.
        let d = packet(&[0x10, 0x85, 0x51, 0x00, 0x07, 0x10, 0x44, 0]);
        found(&mut l, &a);
        assert_eq!(
            found(&mut l, &d),
            [Some(vec![0x85]), None, Some(vec![0, 7]), None]
        );
        // A longer block, an ID-15 stop, a malformed element, no block at all.
        found(
            &mut l,
            &packet(&[0x10, 0x85, 0x51, 0, 7, 0, 0, 0, 0x32, 1, 2, 3]),
        );
        found(&mut l, &packet(&[0x10, 0x85, 0xf0, 0x51, 0, 7, 0, 0]));
        found(&mut l, &packet(&[0x10, 0x85, 0x05, 0x51, 0, 7, 0, 0]));
        found(&mut l, &packet(&[0x10, 0x85, 0x5f, 0, 0, 0, 0, 0]));
        found(&mut l, &packet(&[]));
        let mut bare = a.clone();
        bare[0] = 0x80;
        found(&mut l, &bare);
        assert_eq!(
            found(&mut l, &b),
            [Some(vec![0x9f]), None, Some(vec![0, 8]), None]
        );
    }

    #[test]
    fn two_byte_blocks_and_long_ones_are_walked_every_time() {
        let mut l = layout();
        let mut p = packet(&[1, 1, 0x85, 5, 2, 0, 7, 0]);
        p[12..14].copy_from_slice(&[0x10, 0x00]);
        assert_eq!(
            found(&mut l, &p),
            [Some(vec![0x85]), None, Some(vec![0, 7]), None]
        );
        assert!(l.learnt.iter().all(|x| x.words == 0), "not remembered");
        let mut long = vec![0u8; 36];
        long[32..].copy_from_slice(&[0x50, 0x42, 0, 0]);
        let p = packet(&long);
        assert_eq!(found(&mut l, &p)[2], Some(vec![0x42]));
        assert!(l.learnt.iter().all(|x| x.words == 0), "not remembered");
        // Looking for nothing finds nothing and learns nothing.
        let mut none = ExtLayout::new([None; LAYOUT_IDS]);
        let p = packet(&[0x10, 0x85, 0x51, 0, 7, 0, 0, 0]);
        let f = none.find(&RtpHeader::parse(&p).unwrap());
        assert!((0..LAYOUT_IDS).all(|i| f.get(i).is_none()));
        assert!(none.learnt.iter().all(|x| x.words == 0));
    }

    /// A sender that adds an element to some packets alternates between two layouts:
    /// once both are learnt, neither is learnt again.
    #[test]
    fn two_layouts_in_turn_are_both_remembered() {
        let mut l = layout();
        let a = packet(&[0x10, 0x85, 0x51, 0x00, 0x07, 0, 0, 0]);
        // The same with abs-send-time added.
        let b = packet(&[0x10, 0x85, 0x51, 0x00, 0x07, 0x32, 1, 2, 3, 0, 0, 0]);
        found(&mut l, &a);
        found(&mut l, &b);
        let slots = |l: &ExtLayout| l.learnt.clone().map(|x| (x.words, x.mask, x.pattern));
        let learnt = slots(&l);
        for p in [&a, &b, &b, &a, &a, &b] {
            let f = found(&mut l, p);
            assert_eq!(f[0], Some(vec![0x85]));
            assert_eq!(slots(&l), learnt, "nothing learnt again");
        }
        assert_eq!(found(&mut l, &b)[1], Some(vec![1, 2, 3]));
        // A third layout replaces the older of the two.
        let c = packet(&[0x32, 1, 2, 3, 0, 0x51, 0, 9]);
        found(&mut l, &c);
        found(&mut l, &b);
        assert_eq!(slots(&l)[1 - l.newest].0, 2, "c stays, as the older");
    }

    /// Every block of two words with every byte 0..=255 in one position and a fixed
    /// background: the layout learnt from the background, asked about each variant
    /// and back, agrees with the direct lookup.
    #[test]
    fn each_single_byte_change_agrees_with_the_walk() {
        let base = [0x10, 0x85, 0x51, 0x00, 0x07, 0, 0, 0];
        for at in 0..base.len() {
            for v in 0..=255u8 {
                let mut l = layout();
                found(&mut l, &packet(&base));
                let mut b = base;
                b[at] = v;
                found(&mut l, &packet(&b));
                found(&mut l, &packet(&base));
            }
        }
    }
}
