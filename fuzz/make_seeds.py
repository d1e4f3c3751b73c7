#!/usr/bin/env python3
"""Writes the committed seed corpora in fuzz/corpus/<target>/seed-*.

Seeds are real inputs taken from what the repository already has: the RFC 5769 STUN
messages in relay/src/wire/stun/tests.rs, libsrtp's RTP/RTCP/SRTP/SRTCP packets in
relay/tests/vectors/libsrtp.txt, the examples in docs/control-protocol.md, and the
example SDP offer and answer, the key event and the /sync events in docs/protocol.md
(with a few variants), the client's test Ogg Opus file, Chromium's ClientHello in
relay/testdata, and Chromium's and Firefox's SDP offers in signaling/testdata. The
fuzzer starts from well-formed input and mutates inward. Run: python3 fuzz/make_seeds.py
(paths are taken from the script's own location, so any working directory does). It only
adds or overwrites seed-* files: a seed whose source changed stays until removed by hand.
"""
import hashlib
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
corpus = root / "fuzz" / "corpus"


def put(target, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


stun_src = (root / "relay/src/wire/stun/tests.rs").read_text()
stun = [
    bytes.fromhex(re.sub(r'[\\\s"]', "", m.group(1)))
    for m in re.finditer(r'const RFC5769_\w+: &str = "(.*?)";', stun_src, re.S)
]
assert len(stun) == 4, "expected the four RFC 5769 vectors"

rtp, rtcp, srtp, srtcp = [], [], [], []
for line in (root / "relay/tests/vectors/libsrtp.txt").read_text().splitlines():
    f = line.split()
    if f and f[0] in ("rtp", "rtcp"):
        plain, protected = bytes.fromhex(f[3]), bytes.fromhex(f[4])
        (rtp if f[0] == "rtp" else rtcp).append(plain)
        (srtp if f[0] == "rtp" else srtcp).append(protected)

# A DTLS 1.2 record header (handshake, epoch 0) with a truncated ClientHello body.
dtls = [bytes.fromhex("16fefd000000000000000000" + "0010" + "01" + "00" * 15)]

for p in stun:
    put("stun", p)
    put("ice", p)
for p in rtp[:24]:
    put("rtp", p)
for p in rtcp[:12]:
    put("rtcp", p)
for p in srtp[:24] + srtcp[:12]:
    put("srtp_unprotect", p)
for p in stun + rtp[:6] + srtp[:6] + srtcp[:6] + dtls:
    put("demux", p)
for p in dtls:
    put("dtls", bytes([len(p)]) + p)
# Chromium's real ClientHello (relay/testdata), in fragments of at most 200 bytes, one
# record and datagram each (the target's chunks are at most 255 bytes), last first:
# the relay puts them together before dimpl sees them.
hello_lines = (root / "relay/testdata/chromium-client-hello.txt").read_text().splitlines()
hello_parts = [bytes.fromhex(l) for l in hello_lines if l and not l.startswith("#")]
record, handshake = hello_parts[0][:13], hello_parts[0][13:25]
message = b"".join(p[25:] for p in hello_parts)
assert len(message) == int.from_bytes(handshake[1:4], "big")
frags = []
for off in range(0, len(message), 200):
    chunk = message[off:off + 200]
    frags.append(record[:11] + (12 + len(chunk)).to_bytes(2, "big") + handshake[:6]
                 + off.to_bytes(3, "big") + len(chunk).to_bytes(3, "big") + chunk)
frags = frags[-1:] + frags[:-1]
put("dtls", b"".join(bytes([len(f)]) + f for f in frags))
# Control socket: the JSON examples of docs/control-protocol.md, each framed (4-byte
# big-endian length) behind the chunk-size byte the target reads first.
doc = (root / "docs/control-protocol.md").read_text()
for body in re.findall(r"```json\n(.*?)```", doc, re.S):
    b = body.strip().encode()
    put("control", bytes([7]) + len(b).to_bytes(4, "big") + b)
# The relay's shell: a config file with keys of every type, and /metrics requests.
put("shell", b'''listen = "0.0.0.0:10000"
public = ["203.0.113.7:10000"]
workers = 2
control_socket = "/run/blindfold/relay.sock"
consent_timeout = 30
layer_choice = true
clamp_demote_below_percent = 50
''')
put("shell", b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9464\r\n\r\n")
put("shell", b"HEAD /metrics HTTP/1.0\r\n\r\n")
# Engine: action bytes (see relay/src/engine/fuzz.rs): valid nominating checks for two
# sessions, then a raw RTP-looking datagram from one of their addresses.
put("engine", bytes([0x01, 0x11, 0x06, 12]) + bytes.fromhex("806000010000000100000100"))
put("engine", bytes([0x01, 0x11, 0x21, 0x05, 0x02]))
# SDP offers: the example offer of docs/protocol.md in CRLF (as sent) and LF, and
# variants that reach the other branches: single-layer video, receive-only, session-level
# transport attributes with extmap-allow-mixed, and a refused one (a=crypto).
sdp_blocks = re.findall(r"```sdp\n(.*?)```", (root / "docs/protocol.md").read_text(), re.S)
offer = sdp_blocks[0]
single = "".join(
    l for l in offer.splitlines(True) if not l.startswith(("a=ssrc-group", "a=ssrc:2002"))
)
recv_only = "".join(l for l in offer.splitlines(True) if not l.startswith("a=ssrc"))
fp = next(l for l in offer.splitlines(True) if l.startswith("a=fingerprint"))
session_level = offer.replace(fp, "").replace(
    "a=group:BUNDLE", fp + "a=extmap-allow-mixed\na=group:BUNDLE"
).replace("a=extmap:5 ", "a=extmap:200/sendonly ")
crypto = offer.replace("a=mid:0\n", "a=mid:0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\n")
for text in (offer, single, recv_only, session_level, crypto):
    put("sdp_offer", text.replace("\n", "\r\n").encode())
put("sdp_offer", offer.encode())
# What Chromium and Firefox offered (signaling/testdata), as they made them.
for name in ("chromium-offer.sdp", "firefox-offer.sdp"):
    put("sdp_offer", (root / "signaling/testdata" / name).read_bytes())

# sync_batch: /sync responses around a conference (the JSON examples of docs/protocol.md
# placed in rooms), so the fuzzer starts from batches the SFU acts on.
import json

doc_events = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", (root / "docs/protocol.md").read_text(), re.S)]
sfu, alice, room, dm = "@sfu:example.org", "@alice:example.org", "!conf:example.org", "!dm:example.org"


def member(user, membership="join"):
    return {"type": "m.room.member", "sender": user, "state_key": user, "content": {"membership": membership}}


def event(e, ts=1800000000000):
    return dict(e, sender=alice, origin_server_ts=ts)


conference_state = [dict(e, sender=alice) for e in doc_events if e["type"] == "org.matrix.msc2359.conference"]
calls = [event(e) for e in doc_events if e["type"].startswith("m.call.") or e["type"].endswith("subscribe")]
for e in calls:
    if e["type"] == "m.call.invite":
        e["content"]["offer"]["sdp"] = offer.replace("\n", "\r\n")
batches = [
    {"next_batch": "s1", "rooms": {
        "join": {room: {"state": {"events": [member(alice), member(sfu), conference_state[0]]}},
                 dm: {"state": {"events": [member(alice), member(sfu)]}, "timeline": {"events": calls}}},
        "invite": {"!new:example.org": {"invite_state": {"events": [
            {"type": "m.room.member", "sender": alice, "state_key": sfu, "content": {"membership": "invite"}}]}}}}},
    {"next_batch": "s2", "rooms": {"join": {room: {"timeline": {"events": [member(alice, "leave")] + conference_state[1:]}}},
                                   "leave": {dm: {}}}},
    # A restart's first batch as signaling completes it: the room's state read from the
    # homeserver ("current_state", which the sync's lacks the conference of) and the
    # DM's timeline gap read back ("gap", oldest first; see signaling/src/core/fuzz.rs).
    {"next_batch": "s3", "rooms": {"join": {
        room: {"state": {"events": [member(alice), member(sfu)]},
               "current_state": [member(alice), member(sfu), conference_state[0]]},
        dm: {"state": {"events": [member(alice), member(sfu)]},
             "timeline": {"events": calls[1:], "limited": True, "prev_batch": "t2"},
             "gap": calls[:1], "gap_whole": True}}}},
]
for b in batches:
    put("sync_batch", json.dumps(b).encode())

# key_events: the key event of docs/protocol.md, one per line behind the byte that
# picks its sender: as sent, its hangup, the same SSRCs from another member (refused),
# and the same device in a new call.
keys = next(e for e in doc_events if e["type"] == "org.matrix.msc2359.call.keys")["content"]
hangup = dict(keys, streams=[], keys=[])
new_call = dict(keys, call_id=keys["call_id"] + "-2")


def lines(*events):
    return b"".join(bytes([who]) + json.dumps(c).encode() + b"\n" for who, c in events)


put("key_events", lines((0, keys)))
put("key_events", lines((0, keys), (1, keys), (0, hangup)))
put("key_events", lines((0, keys), (0, new_call), (2, hangup)))
# The member_ended example of docs/protocol.md, from the SFU, about the call of a
# member (u1) that sent a key event (the target's DM events have the high bit set).
ended = next(e for e in doc_events if e["type"] == "org.matrix.msc2359.call.member_ended")
ended = dict(ended, sender="@sfu:fuzz")
ended["content"]["member"]["user_id"] = "@u1:fuzz"
bob_keys = dict(keys, device_id=ended["content"]["member"]["party_id"],
                call_id=ended["content"]["member"]["call_id"],
                streams=[dict(s, ssrc=s["ssrc"] + 10) for s in keys["streams"]])
put("key_events", lines((1, bob_keys), (0x80, ended)))
# sdp_answer: the example answer of docs/protocol.md in CRLF (as sent) and LF.
answer = sdp_blocks[1]
put("sdp_answer", answer.replace("\n", "\r\n").encode())
put("sdp_answer", answer.encode())
# participant: records of (operation, length, bytes), see client/src/__fuzz.rs. The
# relay's signed success answer to the participant's check, with its address
# (XOR-MAPPED-ADDRESS of 127.0.0.1:5000), then time for the DTLS handshake to
# retransmit; before it, a datagram from elsewhere and the truncated ClientHello.
xor_port = (5000 ^ 0x2112).to_bytes(2, "big")
xor_ip = bytes(a ^ b for a, b in zip(bytes([127, 0, 0, 1]), bytes.fromhex("2112a442")))
mapped = bytes([0x00, 0x20, 8, 0x00, 0x01]) + xor_port + xor_ip
answer_ok = bytes([2, len(mapped)]) + mapped
put("participant", answer_ok + bytes([3, 120]))
put("participant", bytes([1, len(stun[0])]) + stun[0] + bytes([0, len(dtls[0])]) + dtls[0] + answer_ok + bytes([3, 50, 0, 4]) + b"\x16\xfe\xfd\x00")
# participant_connected: records of (operation, length, bytes), see client/src/__fuzz.rs.
# The other member's audio (libsrtp's RTP packets, on its audio SSRC) and the relay's
# reports (libsrtp's RTCP) in its SRTCP; then we send two audio packets with
# transport-wide numbers 1 and 2, and the relay's feedback on them and a REMB arrive,
# each after an empty RR, a second later; and a REMB and audio after we connected again.
def rec(op, body):
    return bytes([op, len(body)]) + body
rr = bytes([0x80, 201, 0, 1]) + (0x0B11DFD0).to_bytes(4, "big")
feedback = (bytes([0x8F, 205, 0, 5]) + (0x0B11DFD0).to_bytes(4, "big") + (1).to_bytes(4, "big")
            + bytes([0, 1, 0, 2, 0, 0, 0, 0, 0x20, 0x02, 4, 4]))
remb = (bytes([0x8F, 206, 0, 5]) + (0x0B11DFD0).to_bytes(4, "big") + bytes(4) + b"REMB"
        + bytes([1, 0x13, 0xFF, 0xFF]) + (3).to_bytes(4, "big"))
put("participant_connected", b"".join(rec(1, p) for p in rtp) + b"".join(rec(0, p) for p in rtcp))
put("participant_connected", rec(4, b"\x55" * 80) + rec(4, b"\x55" * 80) + rec(3, bytes(100))
    + rec(0, rr + feedback) + rec(0, rr + remb) + rec(1, rtp[0]))
put("participant_connected", rec(4, b"\x55" * 80) + rec(6, b"") + rec(0, rr + remb) + rec(1, rtp[0]))
# A NAT rebinding: 2.5 s of the relay's silence, so we ask where it sees us; it
# answers with a new address (port 6000), we nominate it, and it answers that too.
moved = bytes([0x00, 0x20, 8, 0x00, 0x01]) + (6000 ^ 0x2112).to_bytes(2, "big") + xor_ip
put("participant_connected", rec(3, bytes(250)) + rec(14, moved) + rec(7, bytes(10)) + rec(14, moved)
    + rec(4, b"\x55" * 80))
# ogg: the test suite's one-second sine (client/testdata), whole and cut short.
sine = (root / "client/testdata/sine-1s.opus").read_bytes()
put("ogg", sine)
put("ogg", sine[: len(sine) // 2])
# control_server: one op byte each (see relay/src/control/server/fuzz.rs): 0 a client
# connects and says hello; 1 a request (generation, session, conference, variant,
# kind: 0 upsert conference, 2 upsert session, 5 snapshot); 3 a worker's report
# (session, variant, conference, reason, kind: 0 connected, 3 the relay ended it);
# 4 a worker applies (worker, how many); 7 then 0 hangs up.
call = bytes([0, 1, 1, 0, 0, 0, 0, 1, 2, 0, 0, 0, 2, 1, 3, 1, 0, 0, 2, 4, 0, 7, 4, 1, 7])
put("control_server", call + bytes([3, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 0]))
# The relay ends s0 while signaling is away; a snapshot listing it comes back.
put("control_server", call + bytes([3, 0, 0, 0, 0, 0, 7, 0, 3, 0, 0, 0, 0, 3,
                                    0, 1, 10, 0, 0, 3, 5, 4, 0, 7, 4, 1, 7]))
print("seeds written under", corpus)
