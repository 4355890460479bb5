"""The B2BUA's calls as :class:`rtc2sip.media.callinfo.CallInfo`: the parties recording and forwarding
rules match, and the sidecar names.

The media plane sees no SIP: this lookup, handed to the Recorder, the Forwarder or the RemotePlane
by the app, is where the signalling's facts (AORs, each leg's Call-ID, which leg called) become plain
data for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..media.callinfo import CallInfo

if TYPE_CHECKING:
    from .b2bua import B2bua

__all__ = ["breaker_call_info"]


def _aor(uri: Any) -> str:
    return f"{uri.scheme}:{uri.user}@{uri.host}" if uri.user else f"{uri.scheme}:{uri.host}"


def breaker_call_info(breaker: B2bua | None) -> Callable[[str], CallInfo]:
    """A lookup of :class:`CallInfo` by the plane's call_id from the B2BUA's live calls."""

    def lookup(call_id: str) -> CallInfo:
        info = CallInfo(call_id)
        call = breaker.calls.get(call_id) if breaker is not None else None
        if call is None:
            return info
        a, b = call.caller, call.callee
        if a is not None:
            info.caller, info.callee = _aor(a.dialog.remote.uri), _aor(a.dialog.local.uri)
            info.caller_call_id = a.call_id
            info.caller_leg = "webrtc" if a.webrtc else "legacy"
        if b is not None:
            info.callee_call_id = b.call_id
        return info

    return lookup
