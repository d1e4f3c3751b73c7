//! Packets shared by the tests and the benches, so both measure the same thing.

use std::time::Instant;

use blindfold_relay::ice::{IceLite, IceLiteConfig};
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

/// The relay's ICE password in [`write_binding_check`]'s session.
pub const CHECK_PWD: &str = "relaypasswordrelaypassword";

/// The relay's ICE-lite agent for [`write_binding_check`]'s session (ufrags `relayufrag`
/// and `clientufrag`, password [`CHECK_PWD`]), created at `now`, and the key its checks
/// are signed with.
pub fn binding_check_agent(now: Instant) -> (IceLite, IntegrityKey) {
    let config = IceLiteConfig::new("relayufrag", CHECK_PWD, "clientufrag");
    let agent = IceLite::new(now, config).expect("fixed credentials are ice-chars");
    (agent, IntegrityKey::new(CHECK_PWD.as_bytes()))
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
