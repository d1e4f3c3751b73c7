//! SRTP and SRTCP (RFC 3711, RFC 7714), in place on the caller's buffer.
//!
//! Blindfold uses this module twice: the relay protects and unprotects **SRTCP** per hop
//! with keys from DTLS (no MKI), and clients protect **SRTP** end to end with their own
//! master keys, each packet carrying a one-byte MKI that names the key (see the design's
//! keying model). The relay itself forwards SRTP untouched.
//!
//! # Driving it
//!
//! ```
//! use blindfold_relay::id::KeyIndex;
//! use blindfold_relay::srtp::{SrtpContext, SrtpProfile};
//!
//! let profile = SrtpProfile::AeadAes128Gcm;
//! let master = [7u8; 28]; // master key ‖ master salt
//! let mut sender = SrtpContext::new(profile, &master, Some(KeyIndex(0)))?;
//! let mut receiver = SrtpContext::new(profile, &master, Some(KeyIndex(0)))?;
//!
//! let mut buf = [0u8; 1500];
//! let rtp = [0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 42, b'h', b'i'];
//! buf[..rtp.len()].copy_from_slice(&rtp);
//! let n = sender.protect_rtp(&mut buf, rtp.len())?;
//! assert_eq!(n, rtp.len() + sender.rtp_overhead());
//! let m = receiver.unprotect_rtp(&mut buf[..n])?;
//! assert_eq!(&buf[..m], &rtp);
//! # Ok::<(), blindfold_relay::srtp::SrtpError>(())
//! ```
//!
//! Rekeying with MKI: [`SrtpContext::add_key`] the new master key under the next
//! [`KeyIndex`](crate::id::KeyIndex) on both sides, then [`SrtpContext::set_active_key`]
//! on the sender; receivers pick the key from each packet's MKI and
//! [`SrtpContext::remove_key`] the old one when it is no longer needed.
//!
//! # What is implemented
//!
//! - Profiles AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM and
//!   AEAD_AES_256_GCM ([`SrtpProfile`]); the key derivation function with
//!   key_derivation_rate 0.
//! - Rollover counter estimation (RFC 3711 Appendix A), a 64-packet replay window per
//!   SSRC and direction that moves only after authentication, the 31-bit SRTCP index
//!   with E always set on send.
//! - Constant-time tag comparison (HMAC via `subtle`, GCM inside aws-lc).
//! - Not implemented: key_derivation_rate ≠ 0, unencrypted SRTCP (E = 0, rejected),
//!   NULL ciphers, header-extension encryption (RFC 6904 / cryptex), MKIs longer than
//!   one byte, and signalling of the rollover counter to late joiners (a new receive
//!   stream starts at ROC 0).

mod aes;
mod context;
mod kdf;
mod profile;
mod replay;
mod transform;

#[cfg(test)]
mod tests;

pub use context::{DEFAULT_MAX_STREAMS, ROC_SEARCH_MAX_LEN, SrtpContext};
pub use profile::{MasterKey, SrtpProfile};

use crate::wire::rtp::RtpError;

/// Why SRTP/SRTCP setup or packet processing failed. Each variant is a drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// Master key ‖ salt (or DTLS keying material) has the wrong length for the profile.
    #[error("master key material has the wrong length for the profile")]
    BadMasterLength,
    /// The context was created without MKI, so it holds a single key.
    #[error("context has no MKI and holds a single key")]
    MkiDisabled,
    /// No master key with this index is installed.
    #[error("no master key with this index")]
    UnknownKey,
    /// The active key cannot be removed.
    #[error("cannot remove the active key")]
    ActiveKey,
    /// The buffer is too small for the packet plus tag, index and MKI.
    #[error("buffer too small for the protected packet")]
    BufferTooSmall,
    /// The packet is too short to hold its header, MKI, index and tag.
    #[error("packet too short")]
    TooShort,
    /// The RTP header is malformed.
    #[error("bad RTP header: {0}")]
    Rtp(#[from] RtpError),
    /// The RTCP version is not 2.
    #[error("RTCP version is not 2")]
    BadRtcpVersion,
    /// The packet's MKI names no installed key.
    #[error("MKI names no installed key")]
    UnknownMki,
    /// The authentication tag did not verify.
    #[error("authentication failed")]
    AuthFailed,
    /// The packet index was already received (or, on protect, already sent).
    #[error("replayed packet index")]
    Replayed,
    /// The packet index is 64 or more behind the highest seen.
    #[error("packet index too old for the replay window")]
    TooOld,
    /// The SRTP rollover counter or SRTCP index would wrap: the key must be replaced.
    #[error("packet index space exhausted; rekey")]
    IndexExhausted,
    /// An SRTCP packet with E = 0 (unencrypted), which we do not accept.
    #[error("unencrypted SRTCP is not accepted")]
    UnencryptedSrtcp,
    /// A new SSRC would exceed the context's stream cap.
    #[error("too many SSRCs in this context")]
    TooManyStreams,
    /// The crypto library refused an operation (should not happen).
    #[error("crypto library failure")]
    Crypto,
}

/// Drives protect and unprotect on arbitrary input for every profile, with and without
/// MKI, receivers searching rollover counters: unprotect of the input as SRTP and SRTCP must not panic, and the input taken as
/// plaintext RTP/RTCP must survive a protect → unprotect round trip unchanged.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    use crate::id::KeyIndex;
    use std::cell::RefCell;

    struct Pair {
        tx: SrtpContext,
        rx: SrtpContext,
    }

    fn pairs() -> Vec<Pair> {
        let mut out = Vec::new();
        for profile in SrtpProfile::ALL {
            let master: Vec<u8> = (0..profile.master_len() as u8).collect();
            let other: Vec<u8> = master.iter().map(|b| b ^ 0x5a).collect();
            for mki in [None, Some(KeyIndex(3))] {
                let make = || {
                    let mut c = SrtpContext::new(profile, &master, mki).expect("fixed key");
                    if mki.is_some() {
                        c.add_key(KeyIndex(9), &other).expect("fixed key");
                    }
                    c
                };
                let mut tx = make();
                if mki.is_some() {
                    tx.set_active_key(KeyIndex(9)).expect("installed");
                }
                // The receiver searches rollover counters, as the participants' do.
                out.push(Pair {
                    tx,
                    rx: make().with_roc_search(2),
                });
            }
        }
        out
    }

    thread_local! {
        static PAIRS: RefCell<Vec<Pair>> = RefCell::new(pairs());
    }

    const MAX: usize = 2048;
    let data = &data[..data.len().min(MAX - 64)];
    PAIRS.with(|pairs| {
        for pair in pairs.borrow_mut().iter_mut() {
            pair.tx.clear_streams();
            pair.rx.clear_streams();
            let mut buf = [0u8; MAX];

            buf[..data.len()].copy_from_slice(data);
            let _ = pair.rx.unprotect_rtp(&mut buf[..data.len()]);
            buf[..data.len()].copy_from_slice(data);
            let _ = pair.rx.unprotect_rtcp(&mut buf[..data.len()]);
            pair.rx.clear_streams();

            if crate::wire::rtp::header_len(data).is_ok() {
                buf[..data.len()].copy_from_slice(data);
                let n = pair
                    .tx
                    .protect_rtp(&mut buf, data.len())
                    .expect("protect of a parsed RTP packet");
                assert_eq!(n, data.len() + pair.tx.rtp_overhead());
                let m = pair
                    .rx
                    .unprotect_rtp(&mut buf[..n])
                    .expect("unprotect of our own SRTP");
                assert_eq!(&buf[..m], data);
                // The same packet again is a replay.
                buf[..data.len()].copy_from_slice(data);
                assert_eq!(
                    pair.tx.protect_rtp(&mut buf, data.len()),
                    Err(SrtpError::Replayed)
                );
            }
            if data.len() >= 8 && data[0] >> 6 == 2 {
                buf[..data.len()].copy_from_slice(data);
                let n = pair
                    .tx
                    .protect_rtcp(&mut buf, data.len())
                    .expect("protect of an RTCP packet");
                assert_eq!(n, data.len() + pair.tx.rtcp_overhead());
                let mut copy = [0u8; MAX];
                copy[..n].copy_from_slice(&buf[..n]);
                let m = pair
                    .rx
                    .unprotect_rtcp(&mut buf[..n])
                    .expect("unprotect of our own SRTCP");
                assert_eq!(&buf[..m], data);
                assert_eq!(
                    pair.rx.unprotect_rtcp(&mut copy[..n]),
                    Err(SrtpError::Replayed)
                );
            }
        }
    });
}

#[cfg(test)]
pub(crate) mod test_util {
    /// Decodes hex, ignoring whitespace.
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .map(|b| (b as char).to_digit(16).expect("hex digit") as u8)
            .collect();
        assert!(digits.len().is_multiple_of(2), "odd hex length");
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }
}
