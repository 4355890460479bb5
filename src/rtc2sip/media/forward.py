"""Forwarding to players (issue 5 item 7): a call's media forked as plain RTP, with an ``.sdp`` to open.

A :class:`RtpForward` is a tap sink (:mod:`rtc2sip.media.tap`): each leg's audio and video, as the
gateway received them (original codec, plain RTP/AVP), go to the destination: **the legacy leg's audio
(what the phone sent) to ``port``, the browser leg's audio (what the browser sent) to ``port + 2``**,
and when the call has video, the legacy leg's video to ``port + 4`` and the browser's to ``port + 6``;
each under one SSRC of its own with continuous sequence numbers and timestamps (:class:`RtpRewriter`),
only the leg's main codec (telephone-event, CN, RTX and FEC are left out: players expect one payload
type per m= line).

The ``.sdp`` written next to the recordings (or to ``[forward] dir``) describes every stream with
``c=``, ``m=audio PORT RTP/AVP PT`` (``m=video``) and ``a=rtpmap``, so that::

    ffplay -protocol_whitelist file,udp,rtp -i call.sdp
    ffmpeg -protocol_whitelist file,udp,rtp -i call.sdp -t 10 out.wav
    vlc call.sdp
    gst-launch-1.0 filesrc location=call.sdp ! sdpdemux ! decodebin ! autoaudiosink

play it on the destination host. ffmpeg and ffplay refuse an SDP file that opens network streams
unless ``-protocol_whitelist file,udp,rtp`` is given ("Protocol 'rtp' not on whitelist"). The player
must be listening before packets arrive (RTP has no retransmission); it also binds ``port + 1`` and
``port + 3`` for RTCP, which the gateway does not send. The ``.sdp`` is rewritten when a re-INVITE
changes a codec.

Sending is a non-blocking ``sendto`` on the event loop, once per packet: a full socket buffer or an
unreachable destination drops the packet (counted), never the call.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .callinfo import CallInfo, file_base, matches_rule
from .rtp import RtpRewriter
from .tap import LEGS, CodecInfo, LegCodecs, TapPlane, ask_keyframes

if TYPE_CHECKING:
    from .settings import ForwardRule

__all__ = ["Forwarder", "RtpForward", "build_sdp"]

log = logging.getLogger("rtc2sip.media")

_AUXILIARY = frozenset({"telephone-event", "cn", "red", "rtx", "ulpfec", "flexfec-03"})
LEG_OFFSET = {"legacy": 0, "webrtc": 2}  # port offsets of each leg's stream
KIND_OFFSET = {"audio": 0, "video": 4}  # and of each kind


def main_codec(codecs: dict[int, CodecInfo]) -> tuple[int, CodecInfo] | None:
    return next(((pt, c) for pt, c in codecs.items() if c.name.lower() not in _AUXILIARY), None)


def build_sdp(host: str, port: int, codecs: LegCodecs, *, name: str = "rtc2sip call",
              session_id: int | None = None, version: int = 1) -> str:
    """An SDP (RFC 4566) for players: one ``m=audio`` (and ``m=video``) per leg with its main codec;
    legs without a known codec are left out."""
    ip6 = ":" in host
    family = "IP6" if ip6 else "IP4"
    sid = session_id if session_id is not None else int(time.time())
    lines = ["v=0", f"o=rtc2sip {sid} {version} IN {family} {host}", f"s={name}", f"c=IN {family} {host}", "t=0 0"]
    for kind, offset in KIND_OFFSET.items():
        for leg in ("legacy", "webrtc"):
            main = main_codec(codecs.get(kind, {}).get(leg, {}))
            if main is None:
                continue
            pt, codec = main
            lines += [f"m={kind} {port + offset + LEG_OFFSET[leg]} RTP/AVP {pt}", f"i={leg} leg: what the "
                      f"{'phone' if leg == 'legacy' else 'browser'} sent", codec.rtpmap(pt)]
            if codec.fmtp:
                lines.append(f"a=fmtp:{pt} {codec.fmtp}")
            lines += ["a=recvonly"]
    return "\r\n".join(lines) + "\r\n"


class RtpForward:
    """One call's audio and video to one destination; see the module docstring."""

    def __init__(self, dest: tuple[str, int], sdp_path: Path, info: CallInfo, session: str,
                 on_close: Callable[[RtpForward], None] | None = None) -> None:
        self.dest = dest
        self._on_close = on_close
        self.sdp_path = sdp_path
        self.info = info
        self.session = session
        family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
        self._sock: socket.socket | None = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._rewriters: dict[tuple[str, str], RtpRewriter | None] = {}  # (kind, leg)
        self._dests = {(kind, leg): (dest[0], dest[1] + k_off + l_off)
                       for kind, k_off in KIND_OFFSET.items() for leg, l_off in LEG_OFFSET.items()}
        self._sdp: str | None = None
        self._sdp_id = secrets.randbits(31)
        self._sdp_version = 0
        self.sent = dict.fromkeys(LEGS, 0)
        self.dropped = 0
        self.errors = 0
        self.error: str | None = None

    def packet(self, kind: str, leg: str, data: bytes, now: float) -> None:
        sock = self._sock
        if sock is None:
            return
        rewriter = self._rewriters.get((kind, leg))
        if rewriter is None:
            self.dropped += 1
            return
        buf = bytearray(data)
        if not rewriter.rewrite(buf, now):  # not the main codec
            self.dropped += 1
            return
        try:
            sock.sendto(buf, self._dests[(kind, leg)])
        except OSError as exc:  # a full buffer, an ICMP error from an earlier packet: this one is lost
            self.errors += 1
            if self.error is None and exc.errno not in (errno.EAGAIN, errno.ECONNREFUSED):
                self.error = str(exc)
                log.info("forwarding call %s to %s:%d: %s", self.info.call_id, *self.dest, exc)
            return
        self.sent[leg] += 1

    def codecs_changed(self, codecs: LegCodecs) -> None:
        for kind in KIND_OFFSET:
            for leg in LEGS:
                self._codec_changed(kind, leg, main_codec(codecs.get(kind, {}).get(leg, {})))
        self._write_sdp(codecs)

    def _codec_changed(self, kind: str, leg: str, main: tuple[int, CodecInfo] | None) -> None:
        old = self._rewriters.get((kind, leg))
        if main is None:
            self._rewriters[(kind, leg)] = None
            return
        pt, codec = main
        if old is None:
            self._rewriters[(kind, leg)] = RtpRewriter(secrets.randbits(32), codec.clock_rate, {pt: pt},
                                                       secrets.randbits(16))
        else:
            old.remap({pt: pt}, codec.clock_rate)

    def _write_sdp(self, codecs: LegCodecs) -> None:
        body = build_sdp(self.dest[0], self.dest[1], codecs, name=f"rtc2sip call {self.info.call_id}",
                         session_id=self._sdp_id, version=self._sdp_version + 1)
        if body == self._sdp or "\r\nm=" not in body:
            return
        self._sdp_version += 1
        self._sdp = body
        try:
            self.sdp_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.sdp_path.with_name(self.sdp_path.name + ".tmp")
            tmp.write_text(body, encoding="ascii")
            os.replace(tmp, self.sdp_path)
        except OSError as exc:
            log.warning("forwarding call %s: cannot write %s: %s", self.info.call_id, self.sdp_path, exc)
            return
        log.info("forwarding call %s as RTP to %s:%d, open %s", self.info.call_id, *self.dest, self.sdp_path)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            log.info("forwarding of call %s ended: sent %s, dropped %d", self.info.call_id, self.sent,
                     self.dropped + self.errors)
            if self._on_close is not None:
                self._on_close(self)

    def describe(self) -> dict[str, object]:
        return {"type": "forward", "to": f"{self.dest[0]}:{self.dest[1]}", "sdp": str(self.sdp_path),
                "sent": dict(self.sent), "dropped": self.dropped + self.errors}


class Forwarder:
    """Forwards the calls the ``[forward]`` rule picks to ``[forward] to`` (when set), or any call on
    demand (:meth:`start`); the ``.sdp`` files go to ``directory``."""

    def __init__(self, options: ForwardRule, directory: Path, plane: TapPlane,
                 call_info: Callable[[str], CallInfo]) -> None:
        self.options = options
        self.directory = directory
        self.plane = plane
        self.call_info = call_info
        self.forwards: dict[str, RtpForward] = {}

    def answered(self, session: str, call_id: str) -> None:
        to = self.options.to
        if to is None or session in self.forwards:
            return
        info = self.call_info(call_id)
        if matches_rule(self.options.rule, info.parties()):
            self.start(session, to, info)

    def start(self, session: str, dest: tuple[str, int], info: CallInfo | None = None, *,
              base: str | None = None) -> RtpForward:
        """Fork ``session`` to ``dest``; ``base`` names the ``.sdp`` (default: recording.file_base)."""
        old = self.forwards.get(session)
        if old is not None:
            if old.dest == dest:
                return old
            self.stop(session)
        call_id = self.plane.call_id(session)
        info = info or self.call_info(call_id)
        fwd = RtpForward(dest, self.directory / f"{base or file_base(session)}.sdp", info, session, self._closed)
        self.forwards[session] = fwd
        try:
            self.plane.attach(session, fwd)
        except BaseException:
            del self.forwards[session]
            fwd.close()
            raise
        ask_keyframes(self.plane, session)
        return fwd

    def stop(self, session: str) -> bool:
        fwd = self.forwards.get(session)
        return fwd is not None and self.plane.detach(session, fwd)

    def _closed(self, fwd: RtpForward) -> None:
        if self.forwards.get(fwd.session) is fwd:
            del self.forwards[fwd.session]
