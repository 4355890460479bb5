"""A media session's statistics as the API, the calls page and ``/metrics`` read them (split from
:mod:`rtc2sip.media.session`): per leg and stream the counters (:class:`~rtc2sip.media.path.LegStats`),
loss and jitter (RFC 3550 A.3, A.8), RTT and the peer's reports (§6.4.1), ICE, DTLS, BUNDLE and the
feedback counts. While the fast path relays the call, the session syncs the engine's figures first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

from .dtls import DtlsEndpoint
from .ice import IceAgent
from .path import LegStats
from .ports import Address
from .rtcpstats import ReceiveStatistics
from .stream import Stream

__all__ = ["StatsSource", "session_stats"]


class StatsSource(Protocol):
    """What the statistics read of a :class:`~rtc2sip.media.session.MediaSession`."""

    streams: dict[str, Stream]
    dtls: DtlsEndpoint | None
    failed: str | None
    dropped: int
    srtp_errors: int
    webrtc_port: int
    fast: Any
    mid_extmap: int
    sources_learnt: dict[str, int]
    ice: IceAgent

    @property
    def legacy_ports(self) -> Mapping[str, int]: ...


def session_stats(self: StatsSource) -> dict[str, object]:
    """What :meth:`MediaSession.stats` returns: per leg and stream, counters, loss, jitter, RTT, the
    ICE pair, the DTLS state (the web pages, /metrics and the API read it)."""
    webrtc = LegStats()
    legacy = LegStats()
    streams: dict[str, object] = {}
    for kind, s in self.streams.items():
        for total, part in ((webrtc, s.webrtc), (legacy, s.legacy)):
            total.packets_in += part.packets_in
            total.bytes_in += part.bytes_in
            total.packets_out += part.packets_out
            total.bytes_out += part.bytes_out
            total.rtcp_in += part.rtcp_in
            total.rtcp_out += part.rtcp_out
            total.dropped += part.dropped
            total.srtp_errors += part.srtp_errors
        streams[kind] = {
            "webrtc_ssrc": s.webrtc_ssrc,
            "legacy_ssrc": s.legacy_ssrc,
            "legacy_port": s.legacy_port,
            "webrtc": _receive_summary(s.webrtc, s.webrtc_rx, s.webrtc_rtt, s.webrtc_remote_report),
            "legacy": _receive_summary(s.legacy, s.legacy_rx, s.legacy_rtt, s.legacy_remote_report)
            | {"remote": _fmt(s.legacy_dest), "latched": s.latched is not None,
               "srtp": s.legacy_tx_srtp is not None,
               # RTP diagnostics (issue 5 item 4): the SDP's address against the source latched on
               "announced": _fmt(s.sdp_dest),
               "nat": s.latched is not None and s.sdp_dest is not None and s.latched != s.sdp_dest},
            "transcoding": s.coder_stats(),
        }
        if kind == "video":
            cast(dict[str, object], streams[kind])["feedback"] = dict(s.feedback) | {
                "history_depth": s.history.depth if s.history is not None else 0}
    dtls = self.dtls
    return {
        "failed": self.failed,
        "transcoded": any(s.coder is not None for s in self.streams.values()),
        "webrtc": {
            **_counters(webrtc),
            "dropped": webrtc.dropped + self.dropped,
            "srtp_errors": webrtc.srtp_errors + self.srtp_errors,
            "port": self.webrtc_port,
            "fast_path": self.fast is not None,
            "bundle": {"mid_extmap": self.mid_extmap or None, "sources_learnt": dict(self.sources_learnt)},
            "ice": {
                "selected": _fmt(self.ice.selected),
                "nominated": self.ice.nominated,
                "checks": self.ice.checks,
                "rejected_checks": self.ice.rejected_checks,
                "local_ufrag": self.ice.local_ufrag,
                **self.ice.describe(),
            },
            "dtls": {
                "state": str(dtls.state) if dtls is not None else "new",
                "role": str(dtls.role) if dtls is not None else None,
                "srtp_profile": str(dtls.srtp_profile) if dtls is not None and dtls.srtp_profile else None,
                "retransmissions": dtls.retransmissions if dtls is not None else 0,
            },
        },
        "legacy": {**_counters(legacy), "ports": self.legacy_ports},
        "streams": streams,
    }

def _counters(s: LegStats) -> dict[str, int]:
    return {"packets_in": s.packets_in, "bytes_in": s.bytes_in, "packets_out": s.packets_out,
            "bytes_out": s.bytes_out, "rtcp_in": s.rtcp_in, "rtcp_out": s.rtcp_out, "dropped": s.dropped,
            "srtp_errors": s.srtp_errors}


def _receive_summary(
    stats: LegStats, rx: ReceiveStatistics | None, rtt: float | None, remote: dict[str, int] | None
) -> dict[str, object]:
    """Loss and jitter of what we receive on a leg (RFC 3550 A.3, A.8); RTT and the peer's view of
    what we send from its reports (RFC 3550 §6.4.1)."""
    return {
        **_counters(stats),
        "lost": rx.lost if rx is not None else 0,
        "jitter_ms": round(1000 * rx.jitter / rx.clock_rate, 2) if rx is not None and rx.clock_rate else 0.0,
        "rtt_ms": round(1000 * rtt, 2) if rtt is not None else None,
        "remote_report": remote,
    }


def _fmt(addr: Address | None) -> str | None:
    if addr is None:
        return None
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
