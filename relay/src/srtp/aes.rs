//! AES in counter mode (RFC 3711 §4.1.1) over aws-lc's raw `AES_KEY`.
//!
//! aws-lc-rs offers AES-CTR only through `EVP_CIPHER_CTX`, which is set up per call; the
//! raw block API expands the key schedule once into a plain struct we own, so a packet
//! costs no allocation and no setup. This file holds the only `unsafe` in `srtp`.

use aws_lc_sys::{AES_KEY, AES_ctr128_encrypt, AES_set_encrypt_key, OPENSSL_cleanse};

use super::SrtpError;

/// An expanded AES-128 or AES-256 encryption key schedule.
pub(crate) struct AesKey {
    schedule: AES_KEY,
}

impl AesKey {
    /// Expands `key` (16 or 32 bytes).
    pub(crate) fn new(key: &[u8]) -> Result<Self, SrtpError> {
        let bits: u32 = match key.len() {
            16 => 128,
            32 => 256,
            _ => return Err(SrtpError::Crypto),
        };
        let mut schedule = AES_KEY {
            rd_key: [0; 60],
            rounds: 0,
        };
        // SAFETY: `key` is valid for `bits / 8` bytes (checked above) and `schedule` is a
        // live, exclusively borrowed AES_KEY; the call only writes into it.
        let rc = unsafe { AES_set_encrypt_key(key.as_ptr(), bits, &mut schedule) };
        if rc != 0 {
            return Err(SrtpError::Crypto);
        }
        Ok(AesKey { schedule })
    }

    /// XORs the counter-mode keystream that starts at block `iv` into `data`.
    ///
    /// SRTP's IV always has its low 16 bits clear, and a packet is far shorter than
    /// 2^16 blocks, so the 128-bit big-endian increment aws-lc performs is exactly the
    /// RFC 3711 block counter.
    pub(crate) fn ctr_xor(&self, iv: &[u8; 16], data: &mut [u8]) {
        let mut counter = *iv;
        let mut ecount = [0u8; 16];
        let mut num: core::ffi::c_uint = 0;
        // SAFETY: `data` is one valid, exclusively borrowed region used as both input and
        // output (CRYPTO_ctr128_encrypt supports in == out); `counter` and `ecount` are
        // 16-byte stack buffers as the function requires; `num` is a valid out pointer;
        // `self.schedule` was initialised by AES_set_encrypt_key.
        unsafe {
            AES_ctr128_encrypt(
                data.as_ptr(),
                data.as_mut_ptr(),
                data.len(),
                &self.schedule,
                counter.as_mut_ptr(),
                ecount.as_mut_ptr(),
                &mut num,
            );
        }
        cleanse(&mut ecount);
    }
}

impl Drop for AesKey {
    fn drop(&mut self) {
        // SAFETY: the pointer and length describe exactly `self.schedule`, which we own.
        unsafe {
            OPENSSL_cleanse(
                (&mut self.schedule as *mut AES_KEY).cast(),
                core::mem::size_of::<AES_KEY>(),
            );
        }
    }
}

/// Overwrites key material in a way the optimiser will not remove.
pub(crate) fn cleanse(bytes: &mut [u8]) {
    // SAFETY: the pointer and length describe `bytes`, which is exclusively borrowed.
    unsafe { OPENSSL_cleanse(bytes.as_mut_ptr().cast(), bytes.len()) }
}
