#!/usr/bin/env python3
"""CPU per packet of the relay's per-packet Python path alone: no sockets, no event loop.

Not a test: it prints figures. One :class:`MediaSession` with one audio stream, configured as in a
bridged call (browser leg DTLS-SRTP AES_CM_128_HMAC_SHA1_80, legacy leg plain RTP, PCMU), whose
transports are replaced by counters. Pre-built 172-byte packets go through
``WebRtcProtocol.datagram_received`` (SRTP unprotect, statistics, rewrite, toward the phone) and
``StreamPath.from_legacy`` (latching, statistics, rewrite, SRTP protect, toward the browser);
the figure is thread CPU time per packet, the best of ``--rounds`` rounds, so it is steady on a
busy machine where bench/relay.py's end-to-end figure is not. Use it to compare two versions of
the path (``PYTHONPATH=/some/checkout/src`` runs another one); bench/relay.py gives the total
with the kernel and uvloop.

    taskset -c 1 python bench/relay_path.py --packets 20000 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from rtc2sip.media.certificate import Certificate
from rtc2sip.media.path import StreamConfig, WebRtcProtocol
from rtc2sip.media.ports import PortAllocator
from rtc2sip.media.rtp import build_rtp
from rtc2sip.media.session import MediaSession
from rtc2sip.media.srtp import AES128_CM_SHA1_80, SrtpSession
from rtc2sip.media.stream import Stream
from rtc2sip.sdp import LegacyPeer

BROWSER = ("127.0.0.1", 6000)
PHONE = ("127.0.0.1", 5000)


class CountingTransport:
    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=20000, help="packets per direction per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    n = args.packets

    to_gateway, to_browser = os.urandom(30), os.urandom(30)
    session = MediaSession("bench", host="127.0.0.1", ports=PortAllocator(40000, 40100),
                           certificate=Certificate.generate(), symmetric=True, on_failure=lambda reason: None,
                           media_timeout=30, connect_timeout=10)
    stream = Stream(session, "audio", 40000, True)
    session.streams["audio"] = stream
    session.configure_streams([StreamConfig("audio", {0: 0}, {0: 0}, 8000, LegacyPeer(*PHONE, PHONE[0], PHONE[1] + 1))])
    webrtc, legacy = CountingTransport(), CountingTransport()
    session.transport = webrtc  # type: ignore[assignment]
    stream.legacy_rtp = legacy  # type: ignore[assignment]
    session.ice.selected = BROWSER
    session.srtp_rx = SrtpSession(AES128_CM_SHA1_80, to_gateway, outbound=False)
    session.srtp_tx = SrtpSession(AES128_CM_SHA1_80, to_browser, outbound=True)
    browser = SrtpSession(AES128_CM_SHA1_80, to_gateway, outbound=True)
    from_browser = WebRtcProtocol(session).datagram_received
    from_phone = stream.datagram_received
    payload = bytes(160)

    best_b2p = best_p2b = float("inf")
    for r in range(args.rounds):
        first = r * n  # sequence numbers go on from round to round: SRTP's replay check stays happy
        srtp = [browser.protect(build_rtp(0, i & 0xFFFF, (160 * i) & 0xFFFFFFFF, 1234, payload))
                for i in range(first, first + n)]
        rtp = [build_rtp(0, i & 0xFFFF, (160 * i) & 0xFFFFFFFF, 5678, payload) for i in range(first, first + n)]
        t0 = time.thread_time()
        for datagram in srtp:
            from_browser(datagram, BROWSER)
        t1 = time.thread_time()
        for datagram in rtp:
            from_phone(datagram, PHONE)
        t2 = time.thread_time()
        best_b2p = min(best_b2p, (t1 - t0) / n * 1e6)
        best_p2b = min(best_p2b, (t2 - t1) / n * 1e6)
    if legacy.sent != webrtc.sent or legacy.sent != n * args.rounds:
        raise SystemExit(f"packets lost in the path: {legacy.sent} to the phone, {webrtc.sent} to the browser")
    print(f"browser->phone {best_b2p:.2f} µs/packet, phone->browser {best_p2b:.2f} µs/packet, "
          f"mean {(best_b2p + best_p2b) / 2:.2f} µs/packet (best of {args.rounds} rounds of {n})")


if __name__ == "__main__":
    main()
