"""One call as the live view and ``/api/calls`` show it: both legs, each with its dialog, its peer's
address and its media as the media plane counts it (RTP, and RTCP for loss, jitter and round-trip
time, RFC 3550 §6.4; the ICE pair and the DTLS state on the WebRTC leg), the codec in use from the
SDP answer (RFC 3264 §6.1).

Built for calls in progress (:mod:`rtc2sip.web.api`) and for the snapshot the monitor keeps of an
ended call (:mod:`rtc2sip.web.monitor`).
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, cast

from ..sdp import SdpError, SessionDescription

if TYPE_CHECKING:
    from ..breaker.call import Call, Leg
    from ..media.remote import AnyPlane as MediaPlane

# payload types that carry no media of their own: never "the codec" of a stream
_AUXILIARY = frozenset({"telephone-event", "cn", "red", "rtx", "ulpfec", "flexfec-03"})


def session_stats(media: MediaPlane | None, session: str | None) -> dict[str, Any] | None:
    if media is None or session is None:
        return None
    try:
        return cast(dict[str, Any], media.stats(session))
    except KeyError:  # UnknownSession: deleted meanwhile
        return None


def call_view(call: Call, stats: dict[str, Any] | None, media: MediaPlane | None) -> dict[str, Any]:
    """One call, both legs; ``stats`` is ``MediaPlane.stats(call.session)`` (None: no media yet)."""
    caller, callee = call.caller, call.callee
    answered = callee is not None and callee.ack is not None
    if call.ended:
        state = "ended"
    elif answered:
        state = "answered"
    elif any(leg.dialog.state.value == "early" for leg in call.legs):
        state = "ringing"
    else:
        state = "setup"
    now = time.monotonic()
    # The media plane knows each leg's codec (they differ when the call is transcoded); before it has
    # them, the answer we sent the caller names the codec of the call.
    codecs = sdp_codecs(caller.local_sdp) if caller is not None else {}
    legs = [leg_view(leg, role, stats, codecs, media) for leg, role in ((caller, "caller"), (callee, "callee"))
            if leg is not None]
    return {
        "id": call.id,
        "from": str(caller.dialog.remote.uri) if caller is not None else None,
        "to": str(caller.dialog.local.uri) if caller is not None else None,
        "state": state,
        "answered": answered,
        "started_at": round(time.time() - (now - call.started), 3),
        "duration_s": round(now - call.started, 1),
        "session": call.session,
        "media_failed": stats.get("failed") if stats else None,
        "transcoded": bool(stats.get("transcoded")) if stats else False,
        # what the media tap feeds (rtc2sip.media.tap): None when not recorded / not forwarded
        "recording": _tap(stats, "recording"),
        "forwarding": _tap(stats, "forward"),
        "legs": legs,
    }


def _tap(stats: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for sink in (stats or {}).get("taps") or ():
        if isinstance(sink, dict) and sink.get("type") == kind:
            return {k: v for k, v in sink.items() if k != "type"}
    return None


def leg_view(leg: Leg, role: str, stats: dict[str, Any] | None, codecs: dict[str, str],
             media: MediaPlane | None) -> dict[str, Any]:
    peer = leg.flow if leg.flow is not None else leg.target
    side = "webrtc" if leg.webrtc else "legacy"
    negotiated: dict[str, dict[str, str]] = (stats or {}).get("codecs") or {}
    codecs = {kind: (negotiated.get(kind) or {}).get(side, codec) for kind, codec in codecs.items()}
    return {
        "name": leg.name,
        "role": role,
        "webrtc": leg.webrtc,
        "call_id": leg.call_id,
        "dialog": leg.dialog.state.value,
        "peer_uri": str(leg.dialog.remote.uri),
        "transport": peer.transport if peer is not None else None,
        "address": _hostport(peer.host, peer.port) if peer is not None else None,
        "codec": next(iter(codecs.values()), None),
        "codecs": codecs,
        "media": media_view(stats, side, media) if stats is not None else None,
    }


def media_view(stats: dict[str, Any], side: str, media: MediaPlane | None) -> dict[str, Any]:
    """One leg's media: its counters, and the quality of its main stream (audio, else the first)."""
    part: dict[str, Any] = stats.get(side) or {}
    streams: dict[str, Any] = stats.get("streams") or {}
    kind = "audio" if "audio" in streams else next(iter(streams), None)
    rx: dict[str, Any] = (streams.get(kind) or {}).get(side) or {} if kind is not None else {}
    out: dict[str, Any] = {
        "kind": kind,
        "packets_in": part.get("packets_in", 0),
        "packets_out": part.get("packets_out", 0),
        "bytes_in": part.get("bytes_in", 0),
        "bytes_out": part.get("bytes_out", 0),
        "rtcp_in": part.get("rtcp_in", 0),
        "rtcp_out": part.get("rtcp_out", 0),
        "dropped": part.get("dropped", 0),
        "lost": rx.get("lost", 0),
        "jitter_ms": rx.get("jitter_ms", 0.0),
        "rtt_ms": rx.get("rtt_ms"),
        "remote_report": rx.get("remote_report"),
    }
    if side == "webrtc":
        ice: dict[str, Any] = part.get("ice") or {}
        local = _hostport(media.host, part["port"]) if media is not None and part.get("port") else None
        out["ice"] = {"local": local, "remote": ice.get("selected"), "nominated": ice.get("nominated"),
                      "checks": ice.get("checks")}
        out["dtls"] = part.get("dtls")
    else:
        out["remote"] = rx.get("remote")
        out["latched"] = rx.get("latched")
        out["srtp"] = rx.get("srtp")
        out["announced"], out["nat"] = rx.get("announced"), rx.get("nat")  # the SDP's address; True: NAT
        out["ports"] = part.get("ports")
    return out


@functools.lru_cache(maxsize=1024)
def sdp_codecs(body: bytes) -> dict[str, str]:
    """``{"audio": "PCMU/8000", ...}``: the first real codec of each RTP m= line of an SDP body
    (of an answer: the codec in use, RFC 3264 §6.1). Cached: a call's answer rarely changes."""
    if not body:
        return {}
    try:
        sdp = SessionDescription.parse(body)
    except SdpError:
        return {}
    out: dict[str, str] = {}
    for m in sdp.media:
        if m.rejected or not m.is_rtp or m.kind in out:
            continue
        for pt in m.payload_types:
            codec = m.codec(pt)
            if codec is not None and codec.name.lower() not in _AUXILIARY:
                out[m.kind] = f"{codec.name}/{codec.clock_rate}"
                break
    return out


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
