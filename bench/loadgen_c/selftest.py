#!/usr/bin/env python3
"""Checks the built C media loop against the libraries the relays use, before a bench trusts it.

bench/relay.py runs :func:`selftest` after building bench/loadgen_c and falls back to the Python
generator if it fails. Two loopback sockets stand in for the relay's browser and phone ports (a stand-in
on purpose: what is checked is the loop's wire format, not a relay), and the checks use other code
than the loop's: rtc2sip's SrtpSession (pylibsrtp) for SRTP, aioice for STUN (MESSAGE-INTEGRITY,
FINGERPRINT, XOR-MAPPED-ADDRESS). One call: its two packets each way with their marks, its consent check,
an answer to the relay's own check, the counting of both directions and the hand-back of a DTLS datagram.

    python bench/loadgen_c/selftest.py
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aioice import stun

BENCH = Path(__file__).resolve().parent.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402

from rtc2sip.media.srtp import AES128_CM_SHA1_80, SrtpSession  # noqa: E402

TIMEOUT = 2.0


def _recv(sock: socket.socket, want: Any) -> tuple[bytes, tuple[str, int]]:
    """The next datagram that ``want`` accepts (the loop keeps sending media meanwhile)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data, addr = sock.recvfrom(4096)
        if want(data):
            return data, addr
        if time.monotonic() > deadline:
            raise AssertionError("no expected datagram")


def selftest(lib: ctypes.CDLL | None = None) -> None:
    """Raises AssertionError (or OSError) when the C loop gets anything wrong."""
    lib = lib or loadgen.load_c_library()
    browser, phone = loadgen.Generator._socket(), loadgen.Generator._socket()
    relay_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay_p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay_b.bind(("127.0.0.1", 0))
    relay_p.bind(("127.0.0.1", 0))
    forward_c, forward_py = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    handle = lib.lg_create(browser.fileno(), phone.fileno(), forward_c.fileno())
    assert handle, "lg_create failed"
    thread = threading.Thread(target=lib.lg_run, args=(handle,), daemon=True)
    try:
        tx_key, rx_key = os.urandom(30), os.urandom(30)  # the browser's write key, the relay's
        ufrag, pwd, gw_ufrag, gw_pwd = "selfB", "browserpassword0123456789", "selfG", "gatewaypassword0123456789"
        b_ssrc, p_ssrc = 0x11111111, 0x22222222
        rb_port, rp_port = relay_b.getsockname()[1], relay_p.getsockname()[1]
        assert lib.lg_add_call(handle, 7, b"127.0.0.1", rb_port, b"127.0.0.1", rp_port, b_ssrc, p_ssrc, 65530,
                               100, tx_key, rx_key, ufrag.encode(), pwd.encode(), gw_ufrag.encode(),
                               gw_pwd.encode(), b"") == 0, "lg_add_call failed"
        start = time.monotonic_ns()
        lib.lg_window(handle, start, start + 60_000_000_000)
        thread.start()

        # browser → relay: SRTP the relay's session opens, marked with call, sequence and send time;
        # over the sequence wrap (65530 + 10), which libsrtp's rollover counter must follow.
        rx = SrtpSession(AES128_CM_SHA1_80, tx_key, outbound=False)
        seqs: list[int] = []
        checks: list[bytes] = []
        while len(seqs) < 10:
            data, _ = _recv(relay_b, lambda d: 127 < d[0] < 192 or d[0] < 4)
            if data[0] < 4:
                checks.append(data)  # the consent check, sent with the first slot
                continue
            plain = rx.unprotect(data)
            assert len(plain) == 172 and plain[1] == 0, "not a 172-byte PCMU packet"
            seq, ts, ssrc = struct.unpack_from("!HII", plain, 2)
            index, mark_seq, sent = struct.unpack_from("!IIq", plain, 12)
            assert ssrc == b_ssrc and index == 7 and mark_seq == seq and ts == (seq * 160) & 0xFFFFFFFF
            assert start - 1_000_000_000 < sent <= time.monotonic_ns()
            seqs.append(seq)
        assert seqs[0] == 65531 and seqs[5] == 0, f"sequence {seqs}"

        # phone → relay: plain RTP, same marks
        data, _ = _recv(relay_p, lambda d: len(d) == 172)
        assert struct.unpack_from("!I", data, 8)[0] == p_ssrc and struct.unpack_from("!I", data, 12)[0] == 7

        # the consent check (RFC 7675), signed with the relay's password
        check_data = checks[0] if checks else _recv(relay_b, lambda d: d[0] < 4)[0]
        check = stun.parse_message(check_data)  # verifies FINGERPRINT
        check_copy = stun.parse_message(check_data)
        check_copy.check_message_integrity(gw_pwd.encode())  # raises ValueError on a bad HMAC
        assert check.message_class == stun.Class.REQUEST and check.attributes["USERNAME"] == f"{gw_ufrag}:{ufrag}"
        assert "ICE-CONTROLLING" in check.attributes and "PRIORITY" in check.attributes
        assert "FINGERPRINT" in check.attributes and "MESSAGE-INTEGRITY" in check.attributes
        ok = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=check.transaction_id,
                          attributes={"XOR-MAPPED-ADDRESS": ("127.0.0.1", browser.getsockname()[1])})
        ok.add_message_integrity(gw_pwd.encode())
        relay_b.sendto(bytes(ok), browser.getsockname())

        # the relay's own check: answered with the browser's password and the relay's address
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST,
                               attributes={"USERNAME": f"{ufrag}:{gw_ufrag}", "PRIORITY": 1, "ICE-CONTROLLED": 1})
        request.add_message_integrity(pwd.encode())
        relay_b.sendto(bytes(request), browser.getsockname())
        data, _ = _recv(relay_b, lambda d: d[0] < 4 and d[8:20] == request.transaction_id)
        response = stun.parse_message(data)
        response.check_message_integrity(pwd.encode())
        assert response.message_class == stun.Class.RESPONSE and "FINGERPRINT" in response.attributes
        assert response.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.1", rb_port)

        # relay → browser (SRTP) and relay → phone (plain), marked as the generator marks them
        tx = SrtpSession(AES128_CM_SHA1_80, rx_key, outbound=True)
        now = time.monotonic_ns()
        rtp = struct.pack("!BBHII", 0x80, 0, 5, 800, 0x33333333) + struct.pack("!IIq", 7, 5, now) + b"\xff" * 148
        relay_b.sendto(tx.protect(rtp), browser.getsockname())
        relay_p.sendto(rtp, phone.getsockname())
        # not media, not STUN: goes back to Python with its source address
        relay_b.sendto(b"\x16\xfe\xfd" + b"\x00" * 10, browser.getsockname())
        forward_py.settimeout(TIMEOUT)
        forwarded = forward_py.recv(4096)
        assert forwarded[:6] == socket.inet_aton("127.0.0.1") + rb_port.to_bytes(2, "big")
        assert forwarded[8:11] == b"\x16\xfe\xfd"

        report = loadgen._CReport()
        hist = (ctypes.c_uint32 * loadgen.BINS)()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # the loop drains its sockets once per 1 ms slot
            lib.lg_report(handle, ctypes.byref(report), hist, hist)
            if report.received_p2b and report.received_b2p and report.consent_ok and report.checks_answered:
                break
            time.sleep(0.01)
        assert report.received_p2b == 1 and report.received_b2p == 1, "relayed packets not counted"
        assert report.sent_b2p >= 10 and report.sent_b2p == report.sent_p2b
        assert report.consent_sent >= 1 and report.consent_ok == 1 and report.consent_error == 0
        assert report.checks_answered == 1 and report.srtp_errors == 0 and report.forwarded == 1
        assert report.calls == 1
    finally:
        lib.lg_stop(handle)
        if thread.is_alive():
            thread.join(5)
        if not thread.is_alive():
            lib.lg_destroy(handle)
        for sock in (browser, phone, relay_b, relay_p, forward_c, forward_py):
            sock.close()


if __name__ == "__main__":
    selftest()
    print("bench/loadgen_c: selftest passed")
