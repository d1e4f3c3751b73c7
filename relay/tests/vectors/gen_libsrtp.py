#!/usr/bin/env python3
"""Generate SRTP/SRTCP vectors with libsrtp (as bundled by PyPI pylibsrtp).

    pip install pylibsrtp==1.0.0
    python3 relay/tests/vectors/gen_libsrtp.py > relay/tests/vectors/libsrtp.txt

For each of the four profiles, libsrtp protects RTP packets for several SSRCs with
sequence numbers running across the 65535 wrap (65530 .. 5 past it, so the rollover
counter becomes 1), and RTCP compound packets for the same SSRCs. Keys and payloads
are fixed, so the output is deterministic.

pylibsrtp exposes no MKI API, but its extension module links libsrtp statically and
exports srtp_protect_mki / srtp_protect_rtcp_mki; we call those through ctypes with a
policy that carries two master keys (MKI 0x03 and 0x09), to pin where libsrtp puts a
one-byte MKI in each profile.

Every packet is also unprotected by a second libsrtp session as a sanity check.

Output, one record per line (hex, no spaces):
    master <profile> <mki|-> <master key || master salt>
    rtp    <profile> <mki|-> <plaintext> <protected>
    rtcp   <profile> <mki|-> <plaintext> <protected>
Records of one (profile, mki mode) come in the order libsrtp protected them; a
no-MKI context uses the "-" master, an MKI context installs both MKI masters.
libsrtp starts each SSRC's SRTCP index at 1.
"""

import ctypes
import struct

import pylibsrtp
from pylibsrtp import Policy, Session, ffi, lib

PROFILES = [
    ("SRTP_AES128_CM_SHA1_80", Policy.SRTP_PROFILE_AES128_CM_SHA1_80),
    ("SRTP_AES128_CM_SHA1_32", Policy.SRTP_PROFILE_AES128_CM_SHA1_32),
    ("SRTP_AEAD_AES_128_GCM", Policy.SRTP_PROFILE_AEAD_AES_128_GCM),
    ("SRTP_AEAD_AES_256_GCM", Policy.SRTP_PROFILE_AEAD_AES_256_GCM),
]
SSRCS = [0x11223344, 0xDEADBEEF, 0x00000001]
MKIS = [0x03, 0x09]

so = ctypes.CDLL(pylibsrtp._binding.__file__)
so.srtp_get_version_string.restype = ctypes.c_char_p
for name in ("srtp_protect_mki", "srtp_protect_rtcp_mki"):
    f = getattr(so, name)
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                  ctypes.c_uint, ctypes.c_uint]
    f.restype = ctypes.c_int
for name in ("srtp_unprotect_mki", "srtp_unprotect_rtcp_mki"):
    f = getattr(so, name)
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                  ctypes.c_uint]
    f.restype = ctypes.c_int


def master_for(profile, seed):
    n = lib.srtp_profile_get_master_key_length(profile) + \
        lib.srtp_profile_get_master_salt_length(profile)
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(n))


def rtp_packet(ssrc, seq, i):
    """A plaintext RTP packet; every fourth has a CSRC and a one-byte extension."""
    payload = bytes((ssrc + seq * 3 + j) & 0xFF for j in range(1 + (i * 13) % 61))
    ts = (seq * 960 + ssrc) & 0xFFFFFFFF
    if i % 4 == 3:
        head = struct.pack("!BBHII", 0x91, 0x80 | 111, seq, ts, ssrc)
        head += struct.pack("!I", 0xCAFE0000 | i)
        head += bytes([0xBE, 0xDE, 0x00, 0x01, 0x10, 0x7F, 0x00, 0x00])
    else:
        head = struct.pack("!BBHII", 0x80, 96, seq, ts, ssrc)
    return head + payload


def rtcp_packet(ssrc, i):
    """A receiver report with one report block, then an SDES CNAME chunk."""
    rr = struct.pack("!BBHI", 0x81, 201, 7, ssrc)
    rr += struct.pack("!IIIIII", 0xAABBCC00 | i, 0x01000010, 0x00010000 + i,
                      0x20, 0x1000 * i, 0x30)
    cname = b"blindfold%d" % i
    chunk = struct.pack("!I", ssrc) + bytes([1, len(cname)]) + cname
    chunk += b"\0" * (4 - len(chunk) % 4)
    sdes = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    return rr + sdes


def addr(cdata):
    return int(ffi.cast("uintptr_t", cdata))


class MkiSession:
    """A libsrtp session whose policy holds several master keys, each with an MKI."""

    def __init__(self, profile, masters, ssrc_type):
        self.policy = Policy(srtp_profile=profile, ssrc_type=ssrc_type)
        self.keep = []
        array = ffi.new("uintptr_t[]", len(masters))
        for n, (mki, master) in enumerate(masters):
            key = ffi.new("unsigned char[]", master)
            mki_id = ffi.new("unsigned char[]", bytes([mki]))
            mk = ffi.new("uintptr_t[3]")  # srtp_master_key_t {key*, mki_id*, mki_size}
            mk[0] = addr(key)
            mk[1] = addr(mki_id)
            mk[2] = 1
            array[n] = addr(mk)
            self.keep += [key, mki_id, mk]
        self.keep.append(array)
        raw = ffi.cast("uintptr_t *", self.policy._policy)
        # srtp_policy_t (libsrtp 2.x, LP64): key @56, keys @64, num_master_keys @72.
        assert ffi.offsetof("srtp_policy_t", "key") == 56
        raw[7] = 0
        raw[8] = addr(array)
        raw[9] = len(masters)
        self.srtp = ffi.new("srtp_t *")
        assert lib.srtp_create(self.srtp, self.policy._policy) == 0
        self.ctx = addr(self.srtp[0])

    def run(self, fn, packet, *args):
        buf = ctypes.create_string_buffer(packet, len(packet) + 200)
        n = ctypes.c_int(len(packet))
        rc = fn(self.ctx, buf, ctypes.byref(n), *args)
        assert rc == 0, (fn, rc)
        return buf.raw[: n.value]


def plain_session(profile, master, ssrc_type):
    return Session(Policy(key=master, ssrc_type=ssrc_type, srtp_profile=profile))


def main():
    version = so.srtp_get_version_string().decode()
    print("# SRTP/SRTCP vectors from %s via pylibsrtp %s (gen_libsrtp.py)"
          % (version, pylibsrtp.__version__))
    for name, profile in PROFILES:
        # Without MKI.
        master = master_for(profile, 1)
        print("master %s - %s" % (name, master.hex()))
        tx = plain_session(profile, master, Policy.SSRC_ANY_OUTBOUND)
        rx = plain_session(profile, master, Policy.SSRC_ANY_INBOUND)
        for ssrc in SSRCS:
            for i, seq in enumerate(list(range(65530, 65536)) + list(range(0, 6))):
                p = rtp_packet(ssrc, seq, i)
                s = tx.protect(p)
                assert rx.unprotect(s) == p
                print("rtp %s - %s %s" % (name, p.hex(), s.hex()))
            for i in range(4):
                p = rtcp_packet(ssrc, i)
                s = tx.protect_rtcp(p)
                assert rx.unprotect_rtcp(s) == p
                print("rtcp %s - %s %s" % (name, p.hex(), s.hex()))

        # With a one-byte MKI and two master keys.
        masters = [(mki, master_for(profile, 10 + mki)) for mki in MKIS]
        for mki, m in masters:
            print("master %s %02x %s" % (name, mki, m.hex()))
        tx = MkiSession(profile, masters, Policy.SSRC_ANY_OUTBOUND)
        rx = MkiSession(profile, masters, Policy.SSRC_ANY_INBOUND)
        for ssrc in SSRCS[:2]:
            for i, seq in enumerate(range(65533, 65536 + 3)):
                seq &= 0xFFFF
                key = i % 2
                p = rtp_packet(ssrc, seq, i)
                s = tx.run(so.srtp_protect_mki, p, 1, key)
                assert rx.run(so.srtp_unprotect_mki, s, 1) == p
                print("rtp %s %02x %s %s" % (name, MKIS[key], p.hex(), s.hex()))
            for i in range(3):
                key = (i + 1) % 2
                p = rtcp_packet(ssrc, i)
                s = tx.run(so.srtp_protect_rtcp_mki, p, 1, key)
                assert rx.run(so.srtp_unprotect_rtcp_mki, s, 1) == p
                print("rtcp %s %02x %s %s" % (name, MKIS[key], p.hex(), s.hex()))


if __name__ == "__main__":
    main()
