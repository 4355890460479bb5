"""JSON views of the gateway (``/api/...``): plain dicts built from the live tables.

The shapes are described in ``static/openapi.json``; :mod:`rtc2sip.web.http` serialises them. Calls
are the RTCWeb Breaker's (a call the proxy only routes has no media of ours to show), each built by
:func:`rtc2sip.web.callview.call_view`, the ended ones kept by the monitor.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from .. import __version__
from .callview import call_view, session_stats

if TYPE_CHECKING:
    from ..breaker.b2bua import B2bua
    from ..config import Settings
    from ..media.remote import AnyPlane as MediaPlane
    from ..proxy.location import LocationStore
    from .monitor import Monitor


def config_view(settings: Settings, admin_open: bool, admin_url: str | None, *, actions: bool) -> dict[str, Any]:
    """``/api/config``: what the web phone needs to register, and the live view whether it may act on
    calls here (``actions``: served by the admin listener) or where it could (public: nothing secret)."""
    return {
        "version": __version__,
        "domain": settings.gateway.domains[0],
        "domains": list(settings.gateway.domains),
        "auth_required": settings.auth_required(),
        "admin_open": admin_open,
        "admin": {"actions": actions, "url": f"{admin_url}/calls" if admin_url else None},
    }


def registrations_view(store: LocationStore, now: float | None = None) -> dict[str, Any]:
    """``/api/registrations``: every live binding, by AOR then best first."""
    now = time.time() if now is None else now
    return {
        "registrations": [
            {
                "aor": b.aor,
                "contact": b.contact,
                "transport": b.transport,
                "source": b.source,
                "flow": b.flow_id,
                "instance": b.instance,
                "expires_in": b.expires_in(now),
                "registered_at": b.registered_at or None,
                "user_agent": b.user_agent,
                "path": list(b.path),
            }
            for b in store.all(now)
        ]
    }


def calls_view(breaker: B2bua | None, media: MediaPlane | None, monitor: Monitor | None) -> dict[str, Any]:
    """``/api/calls``: calls in progress (newest first), then the ended ones the monitor remembers."""
    active = []
    if breaker is not None:
        for call in sorted(breaker.calls.values(), key=lambda c: c.started, reverse=True):
            active.append(call_view(call, session_stats(media, call.session), media))
    return {"active": active, "ended": list(monitor.history) if monitor is not None else [],
            "diagnostics": list(monitor.diagnostics) if monitor is not None else []}


def find_call(view: dict[str, Any], call_id: str) -> dict[str, Any] | None:
    for c in (*view["active"], *view["ended"]):
        if c["id"] == call_id:
            return cast(dict[str, Any], c)
    return None

