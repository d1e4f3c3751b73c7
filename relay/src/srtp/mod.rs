//! SRTP and SRTCP (RFC 3711, RFC 7714), in place on the caller's buffer.
