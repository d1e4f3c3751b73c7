//! Application-defined packets (RFC 3550 §6.7).

use super::*;

// --- APP -------------------------------------------------------------------------------

/// An application-defined packet (RFC 3550 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App<'a> {
    raw: RawPacket<'a>,
}

single_packet_parse!(App, "APP packet", |raw| raw.pt() == PT_APP);

impl<'a> App<'a> {
    pub(super) fn from_raw(raw: RawPacket<'a>) -> Result<Self, RtcpError> {
        if raw.body.len() < 8 {
            return Err(RtcpError::AppTooShort);
        }
        Ok(App { raw })
    }

    /// The 5-bit subtype.
    pub fn subtype(&self) -> u8 {
        self.raw.count()
    }

    /// SSRC / CSRC of the sender.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(be32(self.raw.body, 0))
    }

    /// The four-character name.
    pub fn name(&self) -> [u8; 4] {
        let b = self.raw.body;
        [b[4], b[5], b[6], b[7]]
    }

    /// Application-dependent data.
    pub fn data(&self) -> &'a [u8] {
        &self.raw.body[8..]
    }
}

/// Writes an APP packet.
///
/// Fails with [`RtcpError::FieldOutOfRange`] for a subtype over 31,
/// [`RtcpError::Unaligned`] if `data` is not a multiple of 4 bytes,
/// [`RtcpError::TooManyItems`] past the length field, and [`RtcpError::BufferTooSmall`].
pub fn write_app(
    out: &mut [u8],
    subtype: u8,
    ssrc: Ssrc,
    name: [u8; 4],
    data: &[u8],
) -> Result<usize, RtcpError> {
    if subtype > 31 {
        return Err(RtcpError::FieldOutOfRange);
    }
    if !data.len().is_multiple_of(4) {
        return Err(RtcpError::Unaligned);
    }
    let total = HEADER_LEN + 8 + data.len();
    let mut c = begin(out, total, subtype, PT_APP)?;
    c.u32(ssrc.0);
    c.put(&name);
    c.put(data);
    Ok(total)
}

// --- Blindfold's bandwidth probes (APP "BFPR") ------------------------------------------

/// The name of Blindfold's APP packets: a downlink bandwidth probe from the relay
/// (subtype [`PROBE_SUBTYPE`]) and a participant's report on a probe cluster (subtype
/// [`PROBE_REPORT_SUBTYPE`]). `docs/protocol.md`, "Probes", is their contract.
pub const PROBE_NAME: [u8; 4] = *b"BFPR";
/// APP subtype of a probe.
pub const PROBE_SUBTYPE: u8 = 0;
/// APP subtype of a probe report.
pub const PROBE_REPORT_SUBTYPE: u8 = 1;

/// The smallest probe: header, SSRC, name and the probe's fields.
pub const PROBE_MIN_LEN: usize = HEADER_LEN + 8 + 4;
/// A probe report's length.
pub const PROBE_REPORT_LEN: usize = HEADER_LEN + 8 + 12;

/// One packet of a probe cluster: `count` packets, `index` 0 to `count − 1`, sent at a
/// steady rate. The rest of the packet is zero padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The cluster (the relay numbers them per participant, wrapping).
    pub cluster: u16,
    /// This packet's place in the cluster.
    pub index: u8,
    /// The cluster's packets (1 or more).
    pub count: u8,
}

/// What a participant received of one probe cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReport {
    /// The cluster reported on.
    pub cluster: u16,
    /// How many of its packets arrived.
    pub received: u8,
    /// Bytes of every datagram the participant received from the relay after the
    /// cluster's first packet, up to and including its last (UDP payload bytes: media,
    /// RTCP and the probes alike).
    pub bytes: u32,
    /// Microseconds from the arrival of the cluster's first packet to its last.
    pub duration_us: u32,
}

impl ProbeReport {
    /// The rate the link delivered during the cluster, in bits per second (the bytes
    /// over at least a millisecond).
    pub fn delivered_bps(&self) -> u64 {
        let us = u64::from(self.duration_us.max(1000));
        u64::from(self.bytes) * 8 * 1_000_000 / us
    }
}

/// A Blindfold probe packet's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMessage {
    /// A probe, from the relay.
    Probe(Probe),
    /// A report on a cluster, from a participant.
    Report(ProbeReport),
}

impl App<'_> {
    /// Blindfold's probe message, if this is one (name `BFPR`): `None` for another
    /// application's packet or an unknown subtype, an error for a `BFPR` packet whose
    /// fields do not fit.
    pub fn probe_message(&self) -> Option<Result<ProbeMessage, RtcpError>> {
        if self.name() != PROBE_NAME {
            return None;
        }
        let d = self.data();
        let m = match self.subtype() {
            PROBE_SUBTYPE => {
                if d.len() < 4 || d[3] == 0 || d[2] >= d[3] {
                    return Some(Err(RtcpError::ProbeMalformed));
                }
                ProbeMessage::Probe(Probe {
                    cluster: be16(d, 0),
                    index: d[2],
                    count: d[3],
                })
            }
            PROBE_REPORT_SUBTYPE => {
                if d.len() < 12 {
                    return Some(Err(RtcpError::ProbeMalformed));
                }
                ProbeMessage::Report(ProbeReport {
                    cluster: be16(d, 0),
                    received: d[2],
                    bytes: be32(d, 4),
                    duration_us: be32(d, 8),
                })
            }
            _ => return None,
        };
        Some(Ok(m))
    }
}

/// Writes a probe of `len` bytes (rounded up to a multiple of 4, at least
/// [`PROBE_MIN_LEN`]); the padding is zeros.
///
/// Fails with [`RtcpError::ProbeMalformed`] for an index not below the count,
/// [`RtcpError::TooManyItems`] past the length field and [`RtcpError::BufferTooSmall`].
pub fn write_probe(
    out: &mut [u8],
    ssrc: Ssrc,
    probe: Probe,
    len: usize,
) -> Result<usize, RtcpError> {
    if probe.index >= probe.count {
        return Err(RtcpError::ProbeMalformed);
    }
    let total = len.max(PROBE_MIN_LEN).next_multiple_of(4);
    let mut c = begin(out, total, PROBE_SUBTYPE, PT_APP)?;
    c.u32(ssrc.0);
    c.put(&PROBE_NAME);
    c.u16(probe.cluster);
    c.u8(probe.index);
    c.u8(probe.count);
    c.buf[c.pos..].fill(0);
    Ok(total)
}

/// Writes a probe report ([`PROBE_REPORT_LEN`] bytes) from `ssrc`, one of the
/// participant's own.
///
/// Fails with [`RtcpError::BufferTooSmall`].
pub fn write_probe_report(
    out: &mut [u8],
    ssrc: Ssrc,
    report: &ProbeReport,
) -> Result<usize, RtcpError> {
    let mut c = begin(out, PROBE_REPORT_LEN, PROBE_REPORT_SUBTYPE, PT_APP)?;
    c.u32(ssrc.0);
    c.put(&PROBE_NAME);
    c.u16(report.cluster);
    c.u8(report.received);
    c.u8(0);
    c.u32(report.bytes);
    c.u32(report.duration_us);
    Ok(PROBE_REPORT_LEN)
}
