//! Writing an RTP header.

use super::*;

/// The fields of an RTP header to write with [`write_header`]. The version is always 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpFields<'c> {
    /// The P bit. The writer only sets the bit; the caller appends the padding.
    pub padding: bool,
    /// The marker bit.
    pub marker: bool,
    /// Payload type, 0..=127.
    pub payload_type: Pt,
    /// Sequence number.
    pub seq: WireSeq,
    /// Media timestamp.
    pub timestamp: RtpTime,
    /// Synchronization source.
    pub ssrc: Ssrc,
    /// Contributing sources, at most 15.
    pub csrcs: &'c [Ssrc],
}

/// Which form [`write_header`] uses for these elements, and the extension block's total
/// length including its 4-byte header; `None` for no elements.
pub(super) fn plan_extensions(
    extensions: &[(ExtId, &[u8])],
) -> Result<Option<(ExtForm, usize)>, RtpError> {
    if extensions.is_empty() {
        return Ok(None);
    }
    let one_byte = extensions
        .iter()
        .all(|(id, data)| (1..=14).contains(&id.0) && (1..=16).contains(&data.len()));
    let (form, per_element) = if one_byte {
        (ExtForm::OneByte, 1)
    } else {
        (ExtForm::TwoByte, 2)
    };
    let mut body: usize = 0;
    for (id, data) in extensions {
        if id.0 == 0 {
            return Err(RtpError::BadExtensionId);
        }
        if data.len() > 255 {
            return Err(RtpError::ExtensionTooLong);
        }
        body = body
            .checked_add(per_element + data.len())
            .ok_or(RtpError::ExtensionBlockTooLong)?;
    }
    let padded = body
        .checked_next_multiple_of(4)
        .ok_or(RtpError::ExtensionBlockTooLong)?;
    if padded / 4 > usize::from(u16::MAX) {
        return Err(RtpError::ExtensionBlockTooLong);
    }
    Ok(Some((form, 4 + padded)))
}

/// How many bytes [`write_header`] writes for these fields and extension elements.
///
/// Rejects the same inputs as [`write_header`], except that it has no buffer to be too
/// small.
pub fn encoded_header_len(
    fields: &RtpFields<'_>,
    extensions: &[(ExtId, &[u8])],
) -> Result<usize, RtpError> {
    layout(fields, extensions).map(|(total, _)| total)
}

/// The header's total length and the extension plan (see [`plan_extensions`]).
pub(super) fn layout(
    fields: &RtpFields<'_>,
    extensions: &[(ExtId, &[u8])],
) -> Result<(usize, Option<(ExtForm, usize)>), RtpError> {
    if fields.csrcs.len() > 15 {
        return Err(RtpError::TooManyCsrcs);
    }
    if fields.payload_type.0 > 0x7f {
        return Err(RtpError::BadPayloadType);
    }
    let plan = plan_extensions(extensions)?;
    let ext = plan.map_or(0, |(_, len)| len);
    Ok((RtpHeader::FIXED_LEN + 4 * fields.csrcs.len() + ext, plan))
}

/// Writes an RTP header — fixed part, CSRCs and, if `extensions` is not empty, an
/// RFC 8285 extension block — at the start of `buf`, and returns its length.
///
/// The extension block uses the one-byte form (profile `0xBEDE`) when every ID is in
/// 1..=14 and every element is 1..=16 bytes long, and the two-byte form (profile
/// `0x1000`) otherwise. Elements are written in the order given, without padding
/// between them; the block is zero-padded to a multiple of 4 bytes. With no elements
/// the X bit is clear.
///
/// Rejects more than 15 CSRCs ([`RtpError::TooManyCsrcs`]), a payload type above 127
/// ([`RtpError::BadPayloadType`]), extension ID 0 ([`RtpError::BadExtensionId`]), an
/// element longer than 255 bytes ([`RtpError::ExtensionTooLong`]), a block longer than
/// 65535 words ([`RtpError::ExtensionBlockTooLong`]) and a `buf` shorter than the header
/// ([`RtpError::BufferTooSmall`]). Nothing is written when it fails.
pub fn write_header(
    buf: &mut [u8],
    fields: &RtpFields<'_>,
    extensions: &[(ExtId, &[u8])],
) -> Result<usize, RtpError> {
    let (total, plan) = layout(fields, extensions)?;
    let out = buf.get_mut(..total).ok_or(RtpError::BufferTooSmall)?;
    out.fill(0);

    // The CSRC count is at most 15, checked above.
    out[0] = 0x80
        | u8::from(fields.padding) << 5
        | u8::from(plan.is_some()) << 4
        | fields.csrcs.len() as u8;
    out[1] = u8::from(fields.marker) << 7 | fields.payload_type.0;
    out[2..4].copy_from_slice(&fields.seq.0.to_be_bytes());
    out[4..8].copy_from_slice(&fields.timestamp.0.to_be_bytes());
    out[8..12].copy_from_slice(&fields.ssrc.0.to_be_bytes());
    let mut at = RtpHeader::FIXED_LEN;
    for csrc in fields.csrcs {
        out[at..at + 4].copy_from_slice(&csrc.0.to_be_bytes());
        at += 4;
    }

    if let Some((form, block_len)) = plan {
        let profile = match form {
            ExtForm::OneByte => ONE_BYTE_PROFILE,
            ExtForm::TwoByte => TWO_BYTE_PROFILE,
        };
        // plan_extensions checked that the word count fits in 16 bits.
        let words = ((block_len - 4) / 4) as u16;
        out[at..at + 2].copy_from_slice(&profile.to_be_bytes());
        out[at + 2..at + 4].copy_from_slice(&words.to_be_bytes());
        at += 4;
        for (id, data) in extensions {
            // Lengths were checked by plan_extensions for the chosen form.
            match form {
                ExtForm::OneByte => {
                    out[at] = id.0 << 4 | (data.len() - 1) as u8;
                    at += 1;
                }
                ExtForm::TwoByte => {
                    out[at] = id.0;
                    out[at + 1] = data.len() as u8;
                    at += 2;
                }
            }
            out[at..at + data.len()].copy_from_slice(data);
            at += data.len();
        }
        // The padding up to `total` is already zero.
    }
    Ok(total)
}
