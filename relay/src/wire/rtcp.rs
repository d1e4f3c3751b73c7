//! RTCP compound packets (RFC 3550, RFC 4585, RFC 5104, REMB, transport-cc).
