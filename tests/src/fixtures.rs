//! Packets shared by the tests and the benches, so both measure the same thing.

use blindfold_relay::id::{RtpTime, Ssrc, WireSeq};
use blindfold_relay::wire::rtcp::{CompoundWriter, ReportBlock, RtcpError, SenderInfo};
use blindfold_relay::wire::stun::{
    Class, IntegrityKey, Method, StunError, StunWriter, TransactionId,
};

/// Sequence numbers the feedback compound's NACK reports lost.
pub const FEEDBACK_LOST: [WireSeq; 3] = [WireSeq(1000), WireSeq(1003), WireSeq(1020)];

/// Writes a receiver's typical feedback compound into `buf`: SR (one report block) +
/// REMB + PLI + NACK of [`FEEDBACK_LOST`]. Returns its length. Allocation-free.
pub fn write_feedback_compound(buf: &mut [u8]) -> Result<usize, RtcpError> {
    let info = SenderInfo {
        ssrc: Ssrc(10),
        ntp: 0xe500_0000_8000_0000,
        rtp_time: RtpTime(90_000),
        packet_count: 1000,
        octet_count: 1_000_000,
    };
    let block = ReportBlock {
        ssrc: Ssrc(20),
        fraction_lost: 25,
        cumulative_lost: 2,
        highest_seq: 0x1_2345,
        jitter: 16,
        lsr: 0x1234_5678,
        dlsr: 256,
    };
    let mut w = CompoundWriter::new(buf);
    w.sr(&info, &[block])?;
    w.remb(Ssrc(10), 1_500_000, &[Ssrc(20)])?;
    w.pli(Ssrc(10), Ssrc(20))?;
    w.nack(Ssrc(10), Ssrc(20), &FEEDBACK_LOST)?;
    Ok(w.finish())
}

/// Writes the connectivity check a participant sends the relay (USERNAME
/// `relayufrag:clientufrag`, PRIORITY, USE-CANDIDATE, ICE-CONTROLLING, MESSAGE-INTEGRITY
/// with `key`, FINGERPRINT) into `buf`; returns its length. Allocation-free.
pub fn write_binding_check(buf: &mut [u8], key: &IntegrityKey) -> Result<usize, StunError> {
    let mut w = StunWriter::new(buf, Class::Request, Method::Binding, TransactionId([7; 12]))?;
    w.add_username("relayufrag:clientufrag")?;
    w.add_priority(0x6e00_1eff)?;
    w.add_use_candidate()?;
    w.add_ice_controlling(42)?;
    w.add_message_integrity(key)?;
    w.finish_with_fingerprint()
}
