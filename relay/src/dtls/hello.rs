//! The ClientHello before dimpl sees it: which records may reach the server before its
//! ServerHello, and a ClientHello that comes in fragments put back together.
//!
//! A ClientHello with a post-quantum key share does not fit one datagram (Chromium's
//! X25519MLKEM768 share alone is 1216 bytes), so browsers send it in fragments
//! (RFC 6347 §4.2.3). dimpl would reassemble them, but in the receive queue whose
//! overflow is fatal, which is why nothing but ClientHellos reaches it before the
//! ServerHello (see the module docs). So the wrapper reassembles the ClientHello
//! itself, in one buffer per message_seq, and hands dimpl the whole message in a single
//! record. The handshake hash covers every message as if it had not been fragmented
//! (RFC 6347 §4.2.6), so the handshake is the same either way.

use super::RECORD_HEADER_LEN;

/// The longest ClientHello reassembled. Chromium's is about 1.4 KB.
pub(super) const MAX_CLIENT_HELLO: usize = 1 << 14;
/// The most disjoint pieces of one ClientHello held (real clients send two or three).
const MAX_PIECES: usize = 16;
/// RFC 6347 §4.2.2: msg_type, length, message_seq, fragment_offset, fragment_length.
const HANDSHAKE_HEADER_LEN: usize = 12;
/// Handshake message type client_hello.
const CLIENT_HELLO: u8 = 1;
/// Handshake message type server_hello.
const SERVER_HELLO: u8 = 2;

/// One record that holds a ClientHello, or a fragment of one.
#[derive(Debug, Clone, Copy)]
pub(super) struct HelloRecord<'a> {
    /// The record's header.
    header: &'a [u8; RECORD_HEADER_LEN],
    /// The whole record, header included.
    pub(super) record: &'a [u8],
    message_seq: u16,
    /// The whole message's length.
    length: usize,
    offset: usize,
    fragment: &'a [u8],
}

impl HelloRecord<'_> {
    /// The whole ClientHello, not a fragment of it.
    pub(super) fn is_whole(&self) -> bool {
        self.offset == 0 && self.fragment.len() == self.length
    }
}

/// The records of a well-framed datagram (see `check_framing`).
pub(super) fn records(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let hdr = rest.get(..RECORD_HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([hdr[11], hdr[12]]));
        let end = (RECORD_HEADER_LEN + len).min(rest.len());
        let (record, tail) = rest.split_at(end);
        rest = tail;
        Some(record)
    })
}

/// The header and body of `record` if it is an epoch-0 handshake record (plaintext).
fn epoch0_handshake(record: &[u8]) -> Option<(&[u8; RECORD_HEADER_LEN], &[u8])> {
    let (header, body) = record.split_first_chunk::<RECORD_HEADER_LEN>()?;
    let epoch0 = header[3] == 0 && header[4] == 0;
    (header[0] == 22 && epoch0).then_some((header, body))
}

/// Whether a datagram we send carries our ServerHello.
pub(super) fn has_server_hello(datagram: &[u8]) -> bool {
    records(datagram)
        .filter_map(epoch0_handshake)
        .any(|(_, body)| body.first() == Some(&SERVER_HELLO))
}

/// `record` as an epoch-0 handshake record holding exactly one ClientHello or one
/// fragment of it, with message_seq 0 (or 1, answering a HelloVerifyRequest) and a
/// length of at most [`MAX_CLIENT_HELLO`]; `None` for any other record.
pub(super) fn hello_record(record: &[u8]) -> Option<HelloRecord<'_>> {
    let (header, body) = epoch0_handshake(record)?;
    let (h, fragment) = body.split_first_chunk::<HANDSHAKE_HEADER_LEN>()?;
    let u24 = |b: &[u8]| b.iter().fold(0usize, |n, &x| (n << 8) | usize::from(x));
    let (length, offset) = (u24(&h[1..4]), u24(&h[6..9]));
    let message_seq = u16::from_be_bytes([h[4], h[5]]);
    let ok = h[0] == CLIENT_HELLO
        && message_seq <= 1
        && length <= MAX_CLIENT_HELLO
        && u24(&h[9..12]) == fragment.len()
        && offset + fragment.len() <= length;
    ok.then_some(HelloRecord {
        header,
        record,
        message_seq,
        length,
        offset,
        fragment,
    })
}

/// ClientHellos being put together from their fragments: one per message_seq (0, and 1
/// for the one that answers the HelloVerifyRequest), so that a stray fragment of one
/// cannot hold up the other.
#[derive(Debug, Default)]
pub(super) struct HelloAssembly {
    messages: [Message; 2],
}

/// One ClientHello being put together.
#[derive(Debug, Default)]
struct Message {
    /// As long as its header says; `pieces` tell which bytes came.
    bytes: Vec<u8>,
    /// The byte ranges received, sorted, disjoint and not touching.
    pieces: Vec<(usize, usize)>,
}

impl HelloAssembly {
    /// Adds a fragment. Once every byte of its message came, returns the message in one
    /// record (the header of `fragment`'s record, its length set; the handshake header
    /// of an unfragmented message) and starts that message over. A fragment whose
    /// length differs from the message being put together under its message_seq
    /// replaces that message. Bytes that came before are overwritten by a fragment that
    /// covers them again.
    pub(super) fn add(&mut self, fragment: &HelloRecord<'_>) -> Option<Vec<u8>> {
        let m = self.messages.get_mut(usize::from(fragment.message_seq))?;
        if m.pieces.is_empty() || m.bytes.len() != fragment.length {
            m.bytes.clear();
            m.bytes.resize(fragment.length, 0);
            m.pieces.clear();
        }
        let (start, end) = (fragment.offset, fragment.offset + fragment.fragment.len());
        if !m.insert(start, end) {
            return None;
        }
        m.bytes[start..end].copy_from_slice(fragment.fragment);
        if m.pieces != [(0, m.bytes.len())] {
            return None;
        }
        let length = m.bytes.len();
        let mut out = Vec::with_capacity(RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + length);
        out.extend_from_slice(&fragment.header[..11]);
        out.extend_from_slice(&((HANDSHAKE_HEADER_LEN + length) as u16).to_be_bytes());
        let u24 = |n: usize| [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.push(CLIENT_HELLO);
        out.extend_from_slice(&u24(length));
        out.extend_from_slice(&fragment.message_seq.to_be_bytes());
        out.extend_from_slice(&u24(0));
        out.extend_from_slice(&u24(length));
        out.extend_from_slice(&m.bytes);
        m.pieces.clear();
        Some(out)
    }
}

impl Message {
    /// Records bytes `start..end` as received, merging the ranges they touch; false
    /// (nothing recorded) if that would hold more than [`MAX_PIECES`] ranges.
    fn insert(&mut self, start: usize, end: usize) -> bool {
        let (mut start, mut end) = (start, end);
        // The ranges that overlap or touch start..end are merged into it.
        let first = self.pieces.partition_point(|&(_, e)| e < start);
        let last = self.pieces.partition_point(|&(s, _)| s <= end);
        if first == last && self.pieces.len() == MAX_PIECES {
            return false;
        }
        if first < last {
            start = start.min(self.pieces[first].0);
            end = end.max(self.pieces[last - 1].1);
        }
        self.pieces.splice(first..last, [(start, end)]);
        true
    }
}
