"""The seed corpus of each fuzz target, from the tests' real material: the RFC 4475 torture messages
(tests/unit/corpus), the captured browser and phone SDP (tests/unit/sdp_samples), the config.xml and
TOML documents of tests/unit/test_config.py, and packets made by the same helpers the tests use
(aioice's STUN codec, the media package's RTP/RTCP builders, a real DTLS handshake between two
endpoints, websockets' client). Deterministic: the same seeds on every run.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from aioice import stun
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from rtc2sip.media.certificate import Certificate
from rtc2sip.media.dtls import DtlsEndpoint, DtlsRole
from rtc2sip.media.rtcp import (
    Bye,
    FirEntry,
    FullIntraRequest,
    GenericNack,
    PictureLossIndication,
    ReceiverEstimatedMaxBitrate,
    ReceiverReport,
    ReportBlock,
    SenderReport,
    SourceDescription,
    TmmbItem,
    Tmmbn,
    Tmmbr,
    serialize_compound,
)
from rtc2sip.media.rtp import RtpPacket, build_extensions

__all__ = ["seeds"]

UNIT = Path(__file__).resolve().parent.parent / "unit"

_INVITE_SDP = (UNIT / "sdp_samples" / "chrome_audio_offer.sdp").read_bytes()

BUILT_SIP = [
    b"REGISTER sip:gw.example.org SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\nTo: <sip:alice@gw.example.org>\r\nFrom: <sip:alice@gw.example.org>;tag=as8r\r\n"
    b"Call-ID: a84b4c76e66710\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@df7jal23ls0d.invalid;transport=ws>"
    b";+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1;expires=600\r\n"
    b"Supported: path, outbound, gruu\r\nAuthorization: Digest username=\"alice\", realm=\"gw.example.org\", "
    b"nonce=\"abc\", uri=\"sip:gw.example.org\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"INVITE sip:bob@127.0.0.1:5060;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\nTo: Bob <sip:bob@gw.example.org>\r\n"
    b"From: \"Alice\" <sip:alice@gw.example.org>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.org\r\nCSeq: 314159 INVITE\r\n"
    b"Route: <sip:127.0.0.1:5060;lr;ob;flow=abc>\r\nRecord-Route: <sip:p1.example.org;lr>\r\n"
    b"Contact: <sip:alice@192.0.2.7:5062;ob>\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(_INVITE_SDP)).encode() + b"\r\n\r\n" + _INVITE_SDP,
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;received=127.0.0.1\r\n"
    b"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKnashds7;rport=40000;received=192.0.2.7\r\n"
    b"To: <sip:bob@gw.example.org>;tag=x1\r\nFrom: <sip:alice@gw.example.org>;tag=as8r\r\n"
    b"Call-ID: a84b4c76e66710\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@192.0.2.9:5060>\r\n"
    b"Record-Route: <sip:127.0.0.1:5060;lr;r2=on>\r\nContent-Length: 0\r\n\r\n",
]


def sip_messages() -> list[bytes]:
    corpus = sorted((UNIT / "corpus" / "rfc4475").glob("*.dat"))
    return [p.read_bytes() for p in corpus] + BUILT_SIP


def sdp_bodies() -> list[bytes]:
    return [p.read_bytes() for p in sorted((UNIT / "sdp_samples").glob("*.sdp"))]


def _config_documents() -> tuple[list[bytes], list[bytes]]:
    """The config.xml and TOML texts written by tests/unit/test_config.py (its string literals)."""
    tree = ast.parse((UNIT / "test_config.py").read_text())
    xml, toml = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):  # f-strings: their constant parts, joined
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        else:
            continue
        if "<config" in text or "<?xml" in text:
            xml.append(text.encode())
        elif "=" in text and ("[" in text or "\n" in text):
            toml.append(text.encode())
    return sorted(set(xml)), sorted(set(toml))


def stun_messages() -> list[bytes]:
    out = []
    tid = bytes(range(12))
    req = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, tid)
    req.attributes["USERNAME"] = "GwUf:Lm3p"
    req.attributes["PRIORITY"] = 1853824767
    req.attributes["ICE-CONTROLLING"] = 0x1122334455667788
    req.attributes["USE-CANDIDATE"] = None
    req.add_message_integrity(b"GwPwd0123456789abcdefXY")
    req.add_fingerprint()
    out.append(bytes(req))
    out.append(bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, tid)))
    resp = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, tid)
    resp.attributes["XOR-MAPPED-ADDRESS"] = ("192.0.2.7", 5062)
    resp.add_message_integrity(b"ZqnvTnP4mDtqLHyI4sf8Q4EX")
    resp.add_fingerprint()
    out.append(bytes(resp))
    err = stun.Message(stun.Method.BINDING, stun.Class.ERROR, tid)
    err.attributes["ERROR-CODE"] = (487, "Role Conflict")
    out.append(bytes(err))
    ind = stun.Message(stun.Method.BINDING, stun.Class.INDICATION, tid)
    ind.add_fingerprint()
    out.append(bytes(ind))
    v6 = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, tid)
    v6.attributes["XOR-MAPPED-ADDRESS"] = ("2001:db8::7", 5062)
    v6.attributes["MAPPED-ADDRESS"] = ("192.0.2.7", 5062)
    out.append(bytes(v6))
    return out


def rtp_packets() -> list[bytes]:
    out = []
    for ssrc, pt, mid in ((0x1111, 111, "0"), (0x2222, 96, "1"), (0x3333, 0, None)):
        profile, ext = (None, b"")
        if mid is not None:
            profile, ext = build_extensions({1: b"\x00\x01\x02", 4: mid.encode()})
        out.append(RtpPacket(pt, 1000, 160000, ssrc, b"\xab" * 40, extension_profile=profile,
                             extension=ext).serialize())
    profile, ext = build_extensions({4: b"1", 200: b"x" * 20})  # two-byte form
    out.append(RtpPacket(96, 7, 90000, 0x2222, b"\x90\xe0" + b"\x00" * 30, marker=True,
                         extension_profile=profile, extension=ext).serialize())
    padded = bytearray(RtpPacket(0, 9, 1440, 0x3333, b"\xff" * 160).serialize())
    padded[0] |= 0x20
    out.append(bytes(padded) + b"\x00\x00\x00\x04")
    csrc = bytearray(RtpPacket(101, 10, 1600, 0x1111, b"\x05\x0a\x00\xa0").serialize())
    csrc[0] |= 0x02
    out.append(bytes(csrc[:12]) + b"\x00\x00\x00\x01\x00\x00\x00\x02" + bytes(csrc[12:]))
    return out


def rtcp_compounds() -> list[bytes]:
    block = ReportBlock(0x1111, 12, 34, 65535, 50, 0x12345678, 6553)
    sdes = SourceDescription.cname(0xAAAA, "fuzz@example.org")
    return [
        serialize_compound([SenderReport(0xAAAA, 0xE1234567_89ABCDEF, 160000, 100, 16000, [block]), sdes]),
        serialize_compound([ReceiverReport(0xAAAA, [block, ReportBlock(0x2222)]), sdes]),
        serialize_compound([ReceiverReport(0xAAAA), GenericNack(0xAAAA, 0x2222, [1000, 1001, 1017, 2000])]),
        serialize_compound([ReceiverReport(0xAAAA), PictureLossIndication(0xAAAA, 0x2222)]),
        serialize_compound([FullIntraRequest(0xAAAA, [FirEntry(0x2222, 3)])]),
        serialize_compound([ReceiverEstimatedMaxBitrate(0xAAAA, 1_500_000, [0x2222, 0x1111])]),
        serialize_compound([Tmmbr(0xAAAA, [TmmbItem(0x2222, 256000, 40)]), Tmmbn(0xAAAA, [TmmbItem(0x2222, 1, 2)])]),
        serialize_compound([ReceiverReport(0xAAAA), Bye([0xAAAA], b"bye")]),
        b"\x80\xc0\x00\x01\x00\x00\x22\x22",  # RFC 2032 FIR (libre/baresip)
    ]


@functools.cache
def _certificates() -> tuple[Certificate, Certificate]:
    return Certificate.generate(), Certificate.generate()


def dtls_records() -> list[bytes]:
    """Every datagram of a real handshake between a client and a server endpoint."""
    a, b = _certificates()
    client = DtlsEndpoint(a, DtlsRole.CLIENT, [b.sdp_fingerprint])
    server = DtlsEndpoint(b, DtlsRole.SERVER, [a.sdp_fingerprint])
    client.start()
    out: list[bytes] = []
    for _ in range(10):
        to_server = client.datagrams_to_send()
        for d in to_server:
            server.feed(d)
        to_client = server.datagrams_to_send()
        for d in to_client:
            client.feed(d)
        out += to_server + to_client
        if not to_server and not to_client:
            break
    return out


def websocket_streams() -> list[bytes]:
    """A browser's upgrade request followed by masked frames carrying SIP, as websockets' client sends."""
    out = []
    for origin, proto in (("https://gw.example.org", "sip"), (None, "sip"), ("https://gw.example.org", "foo, sip")):
        client = ClientProtocol(parse_uri("ws://gw.example.org:8080/"), origin=origin,  # type: ignore[arg-type]
                                subprotocols=[proto])  # type: ignore[list-item]
        request = client.connect()
        del request.headers["Sec-WebSocket-Protocol"]
        request.headers["Sec-WebSocket-Protocol"] = proto
        head = request.serialize()
        frames = b""
        for msg in (BUILT_SIP[0], BUILT_SIP[2], b"\r\n\r\n"):
            client.state = client.state.__class__.OPEN
            client.send_text(msg)
        client.send_binary(BUILT_SIP[1])
        client.send_frame(Frame(Opcode.PING, b"x"))
        client.send_close(1000)
        for chunk in client.data_to_send():
            frames += chunk
        out.append(head + frames[len(head) :] if frames.startswith(head) else head + frames)
    return out


@functools.cache
def seeds(target: str) -> tuple[bytes, ...]:
    """The seeds of one target (by its name in tests/fuzz/targets.py)."""
    sip = sip_messages()
    xml, toml = _config_documents()
    by_target = {
        "sip_datagram": sip,
        "sip_stream": [b"\x00" + b"".join(m for m in sip if b"Content-Length" in m)]
        + [bytes([n]) + m for n, m in enumerate(sip)],
        "sdp": sdp_bodies(),
        "stun": stun_messages(),
        "rtp": rtp_packets(),
        "rtcp": rtcp_compounds(),
        "dtls": dtls_records(),
        "demux": stun_messages() + dtls_records()[:4] + rtp_packets() + rtcp_compounds(),
        "websocket": websocket_streams(),
        "config_xml": xml,
        "config_toml": toml,
    }
    return tuple(by_target[target])
