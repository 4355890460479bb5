"""``/metrics``: the Prometheus text exposition format 0.0.4, written by hand.

No ``prometheus_client``: the gateway already holds every figure (the proxy's counters, the B2BUA's
and the location store's tables, :class:`~rtc2sip.web.monitor.Monitor`), so a registry would only
copy them, and the format is a few lines per family (HELP, TYPE, one sample per label set). Figures
are read when scraped; nothing is computed on the SIP or media paths for them.

Label sets are bounded: SIP methods outside a known list count as "other"
(:func:`rtc2sip.proxy.stateful.method_label`), status codes are three digits, end causes come from
:func:`rtc2sip.web.monitor.cause_label`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .. import __version__

if TYPE_CHECKING:
    from ..proxy.server import Proxy
    from ..transport.layer import TransportLayer
    from .monitor import Monitor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[Mapping[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class Exposition:
    """Metric families in the text format, in the order they are added."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, name: str, kind: str, help_text: str, samples: Iterable[Sample] | float) -> None:
        """One family; ``samples`` is a number (no labels) or (labels, value) pairs."""
        self._lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        self._lines.append(f"# TYPE {name} {kind}")
        if isinstance(samples, int | float):
            samples = [({}, samples)]
        for labels, value in samples:
            if labels:
                inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                self._lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                self._lines.append(f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _by(label: str, counts: Mapping[str, int] | Mapping[int, int]) -> list[Sample]:
    return [({label: str(k)}, v) for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))]


def render(proxy: Proxy, transports: TransportLayer | None, monitor: Monitor) -> str:
    """The whole exposition of one gateway."""
    e = Exposition()
    e.add("rtc2sip_info", "gauge", "rtc2sip build information", [({"version": __version__}, 1)])

    # -- calls (the RTCWeb Breaker's) --
    active = len(monitor.breaker.calls) if monitor.breaker is not None else 0
    e.add("rtc2sip_calls_active", "gauge", "Calls in progress through the RTCWeb Breaker", active)
    e.add("rtc2sip_calls_total", "counter", "Calls taken by the RTCWeb Breaker since start", monitor.calls_total)
    e.add("rtc2sip_calls_answered_total", "counter", "Calls answered (2xx from the callee) and since ended",
          monitor.answered)
    e.add("rtc2sip_calls_ended_total", "counter", "Calls ended, by cause", _by("cause", monitor.ended))
    e.add("rtc2sip_calls_failed_total", "counter", "Calls ended without an answer, by cause",
          _by("cause", monitor.failed))

    # -- registrations and connections --
    e.add("rtc2sip_registrations", "gauge", "Bindings held by the registrar (expired ones until purged)",
          proxy.store.count())
    if transports is not None:
        flows: dict[str, int] = {}
        for flow in transports.flows.values():
            flows[flow.transport] = flows.get(flow.transport, 0) + 1
        e.add("rtc2sip_connections", "gauge", "Open TCP, TLS, WS and WSS connections, by transport",
              _by("transport", flows))

    # -- SIP --
    e.add("rtc2sip_sip_requests_received_total", "counter", "SIP requests received, by method",
          _by("method", proxy.requests_in))
    e.add("rtc2sip_sip_responses_received_total", "counter", "SIP responses received, by status code",
          _by("code", proxy.responses_in))
    e.add("rtc2sip_sip_requests_sent_total", "counter",
          "SIP requests sent by transactions (retransmissions included), by method", _by("method", proxy.requests_out))
    e.add("rtc2sip_sip_responses_sent_total", "counter",
          "SIP responses sent by transactions (retransmissions included), by status code",
          _by("code", proxy.responses_out))
    e.add("rtc2sip_sip_malformed_total", "counter", "SIP messages that could not be parsed or used",
          proxy.stats.get("bad", 0))
    e.add("rtc2sip_sip_dropped_total", "counter", "Malformed SIP messages dropped without an answer",
          proxy.stats.get("dropped", 0))
    th = proxy.throttle
    e.add("rtc2sip_sip_throttled_total", "counter",
          "SIP messages dropped because their source was over [limits] rate_per_source or blocked", th.throttled)
    e.add("rtc2sip_sources_blocks_total", "counter",
          "Source addresses blocked (over the rate, or too many failed authentications)", th.blocks)
    e.add("rtc2sip_sources_blocked", "gauge", "Source addresses blocked now", th.blocked_now(time.monotonic()))

    # -- media --
    sessions = len(monitor.media.sessions) if monitor.media is not None else 0
    e.add("rtc2sip_media_sessions", "gauge", "Media sessions held by the media plane", sessions)
    totals = monitor.media_totals()
    for unit, what in (("packets", "RTP packets"), ("bytes", "RTP bytes")):
        e.add(f"rtc2sip_media_{unit}_total", "counter",
              f"{what} relayed, by leg (webrtc, legacy) and direction (in: received from that leg's peer)",
              [({"leg": leg, "direction": d}, totals.get(f"{leg}.{d}.{unit}", 0))
               for leg in ("webrtc", "legacy") for d in ("in", "out")])
    e.add("rtc2sip_media_packets_lost_total", "counter",
          "RTP packets expected but not received from a leg's peer (RFC 3550 A.3), by leg",
          [({"leg": leg}, totals.get(f"{leg}.lost", 0)) for leg in ("webrtc", "legacy")])
    e.add("rtc2sip_transcoding_sessions", "gauge",
          "Media sessions whose audio goes through the Media Coder now (transcoded between the legs' codecs)",
          monitor.transcoding)
    e.add("rtc2sip_media_failures_total", "counter",
          "Media sessions ended by the media plane, by kind (ice, dtls, timeout, closed: DTLS close_notify, other)",
          [({"kind": k}, monitor.media_failures.get(k, 0)) for k in ("ice", "dtls", "timeout", "closed", "other")])

    # -- the shared WebRTC socket ([media] webrtc_socket = "shared"; per worker, summed) --
    mux = monitor.media.webrtc_socket_stats() if monitor.media is not None else {}
    if "received" in mux:
        e.add("rtc2sip_webrtc_socket_datagrams_total", "counter",
              "Datagrams through the shared WebRTC socket, by direction",
              [({"direction": "received"}, mux.get("received", 0)), ({"direction": "sent"}, mux.get("sent", 0))])
        e.add("rtc2sip_webrtc_socket_send_batches_total", "counter",
              "sendmmsg calls on the shared WebRTC socket (datagrams sent / batches: the batching)",
              mux.get("batches", 0))
        e.add("rtc2sip_webrtc_socket_dropped_total", "counter",
              "Datagrams the shared WebRTC socket dropped, by reason (unrouted: no call owns the ufrag, "
              "transaction or address; garbage: not STUN, DTLS, RTP or RTCP; unsendable: too long, a bad address "
              "or the send buffer full; send_error: refused by the kernel)",
              [({"reason": reason}, mux.get(key, 0)) for reason, key in (
                  ("unrouted", "unrouted"), ("garbage", "garbage"), ("unsendable", "dropped"),
                  ("send_error", "send_errors"))])
        e.add("rtc2sip_webrtc_socket_refused_claims_total", "counter",
              "Browser addresses a call's ICE validated that another call already owned (refused)",
              mux.get("refused", 0))

    # -- the compiled media fast path ([media] fast_path = "auto"; per worker, summed) --
    if mux.get("fastpath_running") is not None:
        e.add("rtc2sip_fastpath_packets_total", "counter",
              "Datagrams the fast path's engine read and sent, by direction",
              [({"dir": "in"}, mux.get("fastpath_datagrams_in", 0)),
               ({"dir": "out"}, mux.get("fastpath_datagrams_out", 0))])
        e.add("rtc2sip_fastpath_handed_up_total", "counter",
              "Datagrams the engine handed up to Python (STUN, DTLS, RTCP, new sources, tap copies)",
              mux.get("fastpath_handed_up", 0))
        e.add("rtc2sip_fastpath_dropped_total", "counter",
              "Datagrams the engine dropped, by reason (queue_full: the hand-up queue; send_error; truncated; "
              "unknown_source: from an address no call owns, handed up)",
              [({"reason": reason}, mux.get(f"fastpath_{reason}", 0))
               for reason in ("queue_full", "send_errors", "truncated", "unknown_source")])
        e.add("rtc2sip_fastpath_calls_total", "counter",
              "Calls handed to the engine (taken), refused by it (relayed by Python), given back to Python",
              [({"event": k}, mux.get(f"fastpath_{k}", 0)) for k in ("taken", "refused", "released")])
        e.add("rtc2sip_fastpath_streams", "gauge", "Streams the engine relays now", mux.get("fastpath_streams", 0))

    # -- process --
    e.add("rtc2sip_event_loop_lag_seconds", "gauge", "How late the event loop ran a timer at the last probe",
          monitor.lag)
    e.add("rtc2sip_event_loop_lag_max_seconds", "gauge", "Largest event-loop lag over the last minute",
          monitor.lag_max)
    return e.text()
