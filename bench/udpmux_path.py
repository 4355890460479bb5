#!/usr/bin/env python3
"""CPU per datagram of the shared WebRTC socket's own Python glue (rtc2sip.media.udpmux).

Not a test: it prints figures. What the mux adds around the session's packet path, which
bench/relay_path.py times with fake transports:

- receive: ``_SharedSocket._dispatch`` over 64 slots filled once by a real ``recvmmsg`` (the slice,
  the raw-address cache, the route), handed to an owner that only counts;
- send: ``MuxTransport.sendto`` (the copy into the send slot, address, length), with the
  ``sendmmsg`` itself replaced by a no-op.

Thread CPU time per datagram, best of ``--rounds``; pin it (``taskset -c 1``) on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time

from rtc2sip.media import sharedsocket
from rtc2sip.media.sharedsocket import SLOTS
from rtc2sip.media.udpmux import UdpMux

Address = tuple[str, int]


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.n += 1

    def connection_lost(self, exc: Exception | None) -> None:
        return


async def run(rounds: int, batches: int) -> None:
    if sharedsocket._BATCH is None:
        raise SystemExit("no recvmmsg/sendmmsg here")
    loop = asyncio.get_running_loop()
    mux = UdpMux(loop)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    mux.open(["127.0.0.1"], port)
    shared = mux.sockets[0]
    owner = _Counter()
    view = mux.attach(owner)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    addr = peer.getsockname()
    view.address_validated(addr)
    packet = bytes([0x80, 0]) + bytes(170)  # a 172-byte SRTP-sized datagram
    loop.remove_reader(shared.fd)
    for _ in range(SLOTS):
        peer.sendto(packet, ("127.0.0.1", port))
    await asyncio.sleep(0.05)
    filled = sharedsocket._BATCH[0](shared.fd, shared._rhdr_base, SLOTS, 0, None)
    assert filled == SLOTS, filled

    receive = []
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(batches):
            shared._dispatch(SLOTS)
        receive.append((time.thread_time() - started) / (batches * SLOTS))

    real = sharedsocket._BATCH
    sharedsocket._BATCH = (real[0], lambda fd, hdr, count, flags: count)  # "sent": the syscall left out
    shared.scheduled = True  # no flush scheduled: the batch is emptied when full
    send = []
    sendto = view.sendto
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(batches * SLOTS):
            sendto(packet, addr)
        send.append((time.thread_time() - started) / (batches * SLOTS))
    sharedsocket._BATCH = real
    peer.close()
    mux.close()
    print(f"receive dispatch: {min(receive) * 1e6:.3f} µs/datagram (best of {rounds})")
    print(f"send enqueue:     {min(send) * 1e6:.3f} µs/datagram (best of {rounds})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=5000, help="batches of 64 per round")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.batches))


if __name__ == "__main__":
    main()
