"""``sip:diag@DOMAIN``: RTP diagnostics. What the caller's SDP announced against what really arrived.

The service answers, listens (up to ``wait`` seconds for a first packet, then ``duration`` more),
and compares, per stream, the RTP source the caller's SDP announced (c= address, m= port; RTCP:
a=rtcp, port + 1, or the RTP address with rtcp-mux) with the source packets really came from.
The verdict, in plain words::

    no media received
    RTP comes from 203.0.113.7:40012 but SDP announced 192.168.1.20:4000: NAT in the path, symmetric RTP needed
    media as announced

goes to the caller in a SIP MESSAGE in the dialog (text/plain), to the log, and to ``on_verdict``
(the live view: :attr:`rtc2sip.web.monitor.Monitor.diagnostics`); then the service hangs up.

A browser's call reaches the service through the RTCWeb Breaker: what is diagnosed is then the
legacy side of the media plane (the gateway's relay), and ``inspect`` may add what the gateway saw
of the browser leg (the ICE pair in use).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .streams import Address, Stream
from .uas import ServiceCall

log = logging.getLogger("rtc2sip.services")

NO_MEDIA = "no media received"
AS_ANNOUNCED = "media as announced"
NAT = "NAT in the path, symmetric RTP needed"


def _fmt(addr: Address | None) -> str:
    if addr is None:
        return "no address (0.0.0.0 or port 0)"
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class StreamVerdict:
    kind: str
    verdict: str  # "none", "nat" or "ok"
    text: str
    announced: str
    seen: list[str] = field(default_factory=list)  # RTP sources, most packets first
    packets: int = 0
    announced_rtcp: str | None = None
    rtcp_seen: list[str] = field(default_factory=list)


def judge(stream: Stream, direction: str = "sendrecv") -> StreamVerdict:
    """The verdict on one stream from what its sockets saw."""
    announced = stream.announced
    out = StreamVerdict(stream.kind, "ok", "", _fmt(announced), packets=stream.packets,
                        announced_rtcp=_fmt(stream.announced_rtcp) if stream.announced_rtcp else None)
    out.seen = [_fmt(a) for a, _ in stream.sources.most_common()]
    out.rtcp_seen = [_fmt(a) for a, _ in stream.rtcp_sources.most_common()]
    if not stream.packets:
        out.verdict = "none"
        out.text = NO_MEDIA
        if direction in ("recvonly", "inactive"):
            out.text += f" (the SDP said the caller would not send: {direction})"
        elif stream.rtcp_packets:
            out.text += f" (RTCP only, from {out.rtcp_seen[0]})"
        return out
    main = stream.sources.most_common(1)[0][0]
    if main != announced:
        out.verdict = "nat"
        out.text = f"RTP comes from {_fmt(main)} but SDP announced {_fmt(announced)}: {NAT}"
    else:
        out.text = f"{AS_ANNOUNCED} (RTP from {_fmt(main)}, {stream.packets} packets)"
    if len(stream.sources) > 1:
        out.text += "; RTP also came from " + ", ".join(out.seen[1:4])
    if stream.rtcp_sources:
        rtcp_main = stream.rtcp_sources.most_common(1)[0][0]
        if rtcp_main != stream.announced_rtcp:
            out.text += f"; RTCP comes from {_fmt(rtcp_main)} but SDP announced {_fmt(stream.announced_rtcp)}"
    return out


class DiagService:
    """See the module docstring. ``inspect(call_id)`` may return one more line for the verdict."""

    name = "diag"
    reflect = False

    def __init__(self, duration: float = 3.0, wait: float = 5.0,
                 on_verdict: Callable[[dict[str, Any]], None] | None = None,
                 inspect: Callable[[str], str | None] | None = None) -> None:
        self.duration = duration
        self.wait = wait
        self.on_verdict = on_verdict
        self.inspect = inspect

    def started(self, call: ServiceCall) -> None:
        first = asyncio.Event()
        for s in call.streams:
            s.on_first = lambda _s: first.set()
            if s.packets:
                first.set()
        call.data["first"] = first
        call.uas.spawn(self._run(call, first))

    def ended(self, call: ServiceCall, reason: str) -> None:
        if not call.data.get("reported"):
            # the caller hung up first: tell the log and the live view what was seen so far
            self._report(call, f"caller hung up after {time.monotonic() - call.started_at:.1f} s")

    async def _run(self, call: ServiceCall, first: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(first.wait(), self.wait)
            await asyncio.sleep(self.duration)
        except TimeoutError:
            pass
        if call.ended:
            return
        text = self._report(call, None)
        status = await call.send("MESSAGE", text.encode(), "text/plain;charset=utf-8")
        log.info("call-id=%s diag: MESSAGE -> %s", call.call_id, status)
        await call.hang_up("diagnosis sent")

    def _report(self, call: ServiceCall, note: str | None) -> str:
        call.data["reported"] = True
        verdicts = [judge(s, s.offer.direction) for s in call.streams]
        text = verdicts[0].text if len(verdicts) == 1 else "; ".join(f"{v.kind}: {v.text}" for v in verdicts)
        extra = None
        if self.inspect is not None:
            try:
                extra = self.inspect(call.call_id)
            except Exception:
                log.exception("call-id=%s diag: inspect failed", call.call_id)
        if extra:
            text += f". {extra}"
        if note:
            text += f" ({note})"
        worst = next((k for k in ("none", "nat", "ok") if any(v.verdict == k for v in verdicts)), "ok")
        log.info("call-id=%s diag: %s: %s", call.call_id, call.caller, text)
        if self.on_verdict is not None:
            record = {
                "call_id": call.call_id,
                "caller": call.caller,
                "at": round(time.time(), 3),
                "verdict": worst,
                "text": text,
                "streams": [v.__dict__ for v in verdicts],
            }
            try:
                self.on_verdict(record)
            except Exception:
                log.exception("call-id=%s diag: on_verdict failed", call.call_id)
        return text
