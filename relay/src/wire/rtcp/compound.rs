//! Building a compound packet: several packets one after another in one buffer.

use super::*;

/// Appends RTCP packets one after another into one buffer, making a compound packet.
///
/// Each method writes one packet after the previous ones and returns its length; on
/// error nothing is appended. The methods fail as the matching `write_*` function does.
#[derive(Debug)]
pub struct CompoundWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> CompoundWriter<'b> {
    /// Starts an empty compound at the beginning of `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        CompoundWriter { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The compound written so far.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Ends the compound and returns its length.
    pub fn finish(self) -> usize {
        self.len
    }

    fn push(
        &mut self,
        f: impl FnOnce(&mut [u8]) -> Result<usize, RtcpError>,
    ) -> Result<usize, RtcpError> {
        let rest = self
            .buf
            .get_mut(self.len..)
            .ok_or(RtcpError::BufferTooSmall)?;
        let n = f(rest)?;
        self.len += n;
        Ok(n)
    }

    /// Appends a sender report ([`write_sr`]).
    pub fn sr(&mut self, info: &SenderInfo, reports: &[ReportBlock]) -> Result<usize, RtcpError> {
        self.push(|b| write_sr(b, info, reports))
    }

    /// Appends a receiver report ([`write_rr`]).
    pub fn rr(&mut self, ssrc: Ssrc, reports: &[ReportBlock]) -> Result<usize, RtcpError> {
        self.push(|b| write_rr(b, ssrc, reports))
    }

    /// Appends an SDES packet ([`write_sdes`]).
    pub fn sdes(&mut self, chunks: &[SdesChunkSpec<'_>]) -> Result<usize, RtcpError> {
        self.push(|b| write_sdes(b, chunks))
    }

    /// Appends an SDES packet with one CNAME ([`write_sdes_cname`]).
    pub fn sdes_cname(&mut self, ssrc: Ssrc, cname: &[u8]) -> Result<usize, RtcpError> {
        self.push(|b| write_sdes_cname(b, ssrc, cname))
    }

    /// Appends a BYE ([`write_bye`]).
    pub fn bye(&mut self, ssrcs: &[Ssrc], reason: Option<&[u8]>) -> Result<usize, RtcpError> {
        self.push(|b| write_bye(b, ssrcs, reason))
    }

    /// Appends an APP packet ([`write_app`]).
    pub fn app(
        &mut self,
        subtype: u8,
        ssrc: Ssrc,
        name: [u8; 4],
        data: &[u8],
    ) -> Result<usize, RtcpError> {
        self.push(|b| write_app(b, subtype, ssrc, name, data))
    }

    /// Appends a generic NACK for lost sequence numbers ([`write_nack`]).
    pub fn nack(
        &mut self,
        sender: Ssrc,
        media: Ssrc,
        lost: &[WireSeq],
    ) -> Result<usize, RtcpError> {
        self.push(|b| write_nack(b, sender, media, lost))
    }

    /// Appends a generic NACK from FCI entries ([`write_nack_pairs`]).
    pub fn nack_pairs(
        &mut self,
        sender: Ssrc,
        media: Ssrc,
        pairs: &[NackPair],
    ) -> Result<usize, RtcpError> {
        self.push(|b| write_nack_pairs(b, sender, media, pairs))
    }

    /// Appends a TMMBR ([`write_tmmbr`]).
    pub fn tmmbr(&mut self, sender: Ssrc, entries: &[TmmbEntry]) -> Result<usize, RtcpError> {
        self.push(|b| write_tmmbr(b, sender, entries))
    }

    /// Appends a TMMBN ([`write_tmmbn`]).
    pub fn tmmbn(&mut self, sender: Ssrc, entries: &[TmmbEntry]) -> Result<usize, RtcpError> {
        self.push(|b| write_tmmbn(b, sender, entries))
    }

    /// Appends a PLI ([`write_pli`]).
    pub fn pli(&mut self, sender: Ssrc, media: Ssrc) -> Result<usize, RtcpError> {
        self.push(|b| write_pli(b, sender, media))
    }

    /// Appends a FIR ([`write_fir`]).
    pub fn fir(&mut self, sender: Ssrc, entries: &[FirEntry]) -> Result<usize, RtcpError> {
        self.push(|b| write_fir(b, sender, entries))
    }

    /// Appends a PAUSE-RESUME message ([`write_pause_resume`]).
    pub fn pause_resume(
        &mut self,
        sender: Ssrc,
        entries: &[PauseEntry<'_>],
    ) -> Result<usize, RtcpError> {
        self.push(|b| write_pause_resume(b, sender, entries))
    }

    /// Appends a REMB ([`write_remb`]).
    pub fn remb(
        &mut self,
        sender: Ssrc,
        bitrate_bps: u64,
        ssrcs: &[Ssrc],
    ) -> Result<usize, RtcpError> {
        self.push(|b| write_remb(b, sender, bitrate_bps, ssrcs))
    }
}
