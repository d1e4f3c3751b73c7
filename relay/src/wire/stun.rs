//! STUN (RFC 5389 / RFC 8489) for ICE: parse and build.
