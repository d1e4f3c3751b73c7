//! Packet index estimation (RFC 3711 §3.3.1, Appendix A) and the 64-packet replay
//! window (§3.3.2).

use super::SrtpError;

/// Width of the replay window in packets.
pub(crate) const WINDOW: u64 = 64;

/// The highest index seen on a stream and a bitmap of the 64 indices at and below it.
///
/// Bit `d` of `mask` is set when index `highest - d` has been accepted. Nothing is
/// recorded until a packet has authenticated ([`ReplayWindow::accept`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReplayWindow {
    highest: u64,
    mask: u64,
    started: bool,
}

impl ReplayWindow {
    /// The highest index accepted so far, if any.
    pub(crate) fn highest(&self) -> Option<u64> {
        self.started.then_some(self.highest)
    }

    /// Guesses the 48-bit SRTP packet index of sequence number `seq` (RFC 3711
    /// Appendix A): the rollover counter is the one of the highest index, or one more or
    /// one less, whichever puts `seq` nearest to it.
    ///
    /// A new stream starts with rollover counter 0. Rejects a guess below index 0
    /// ([`SrtpError::TooOld`]) and one past rollover counter 2^32 − 1
    /// ([`SrtpError::IndexExhausted`]).
    pub(crate) fn estimate_rtp_index(&self, seq: u16) -> Result<u64, SrtpError> {
        if !self.started {
            return Ok(u64::from(seq));
        }
        let roc = self.highest >> 16;
        let s_l = self.highest as u16;
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                roc.checked_sub(1).ok_or(SrtpError::TooOld)?
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc + 1
        } else {
            roc
        };
        if v > u64::from(u32::MAX) {
            return Err(SrtpError::IndexExhausted);
        }
        Ok((v << 16) | u64::from(seq))
    }

    /// Rejects an index that was already accepted ([`SrtpError::Replayed`]) or that lies
    /// 64 or more below the highest ([`SrtpError::TooOld`]). Changes nothing.
    pub(crate) fn check(&self, index: u64) -> Result<(), SrtpError> {
        if !self.started || index > self.highest {
            return Ok(());
        }
        let delta = self.highest - index;
        if delta >= WINDOW {
            return Err(SrtpError::TooOld);
        }
        if (self.mask >> delta) & 1 == 1 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Records `index` as received; call only after [`ReplayWindow::check`] passed and
    /// the packet authenticated.
    pub(crate) fn accept(&mut self, index: u64) {
        if !self.started {
            *self = ReplayWindow {
                highest: index,
                mask: 1,
                started: true,
            };
        } else if index > self.highest {
            let shift = index - self.highest;
            self.mask = if shift >= WINDOW {
                0
            } else {
                self.mask << shift
            };
            self.mask |= 1;
            self.highest = index;
        } else {
            let delta = self.highest - index;
            if delta < WINDOW {
                self.mask |= 1 << delta;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(index: u64) -> ReplayWindow {
        let mut w = ReplayWindow::default();
        w.accept(index);
        w
    }

    #[test]
    fn estimation_follows_the_wrap() {
        let w = at(65530);
        assert_eq!(w.estimate_rtp_index(65535), Ok(65535));
        assert_eq!(w.estimate_rtp_index(0), Ok(0x1_0000));
        assert_eq!(w.estimate_rtp_index(5), Ok(0x1_0005));
        // Just past the wrap, late packets from before it keep the old ROC.
        let w = at(0x1_0002);
        assert_eq!(w.estimate_rtp_index(65534), Ok(0xfffe));
        assert_eq!(w.estimate_rtp_index(3), Ok(0x1_0003));
        // A late packet before index 0 cannot exist.
        assert_eq!(at(2).estimate_rtp_index(65000), Err(SrtpError::TooOld));
        // Rollover counter exhaustion.
        let w = at(0xffff_ffff_fff0);
        assert_eq!(w.estimate_rtp_index(2), Err(SrtpError::IndexExhausted));
        assert_eq!(w.estimate_rtp_index(0xfff5), Ok(0xffff_ffff_fff5));
        // A fresh stream assumes ROC 0.
        assert_eq!(ReplayWindow::default().estimate_rtp_index(9), Ok(9));
    }

    #[test]
    fn window_rejects_replays_and_old_packets() {
        let mut w = at(100);
        assert_eq!(w.check(100), Err(SrtpError::Replayed));
        assert_eq!(w.check(99), Ok(()));
        assert_eq!(w.check(37), Ok(()));
        assert_eq!(w.check(36), Err(SrtpError::TooOld));
        w.accept(99);
        assert_eq!(w.check(99), Err(SrtpError::Replayed));
        w.accept(200);
        assert_eq!(w.highest(), Some(200));
        assert_eq!(w.check(100), Err(SrtpError::TooOld));
        assert_eq!(w.check(199), Ok(()));
        assert_eq!(w.check(137), Ok(()));
        w.accept(201);
        assert_eq!(w.check(200), Err(SrtpError::Replayed));
        assert_eq!(w.check(137), Err(SrtpError::TooOld));
    }
}
