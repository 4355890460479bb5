"""What the signalling tells recording and forwarding of a call, as plain data, and their rules.

The media plane sees no SIP: :class:`CallInfo` (the parties' AORs, each leg's Call-ID, which leg
called) comes down from the B2BUA (:mod:`rtc2sip.breaker.call_info`). :func:`matches_rule` applies a
``[recording]`` or ``[forward]`` rule to the parties, :func:`file_base` names a session's files.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass

__all__ = ["CallInfo", "file_base", "matches_rule"]


@dataclass(slots=True)
class CallInfo:
    """What the signalling knows of a call (the media plane sees no SIP): for the rule and sidecar."""

    call_id: str  # the B2BUA's call id (MediaPlane's call_id)
    caller: str | None = None  # AOR, "sip:alice@example.org"
    callee: str | None = None
    caller_call_id: str | None = None  # SIP Call-ID of each leg
    callee_call_id: str | None = None
    caller_leg: str | None = None  # "webrtc" or "legacy": which leg the caller is on
    end_reason: str | None = None

    def parties(self) -> list[str]:
        return [p for p in (self.caller, self.callee) if p]


def matches_rule(rule: tuple[str, ...], parties: list[str]) -> bool:
    """Whether an AOR glob of ``rule`` matches a party ("*" matches every call, even one without
    known parties). A glob is tried against ``sip:user@host`` and ``user@host``, case-insensitive."""
    if "*" in rule:
        return True
    for party in parties:
        low = party.lower()
        bare = low.split(":", 1)[1] if low.startswith(("sip:", "sips:")) else low
        if any(fnmatch.fnmatchcase(low, g.lower()) or fnmatch.fnmatchcase(bare, g.lower()) for g in rule):
            return True
    return False


def file_base(session: str) -> str:
    """The name recordings and forwarding ``.sdp`` files of a session start with: local time, session."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime())}-{session}"
