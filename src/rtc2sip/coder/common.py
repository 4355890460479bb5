"""What every transcoder of the Media Coder takes and gives: its error and its output packets."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["CoderError", "OutPacket"]


class CoderError(ValueError):
    """The transcoder was asked for something it cannot do (unknown codec, payload type, ptime)."""


class OutPacket(NamedTuple):
    """One RTP payload for the destination stream; the caller adds sequence number and SSRC."""

    payload: bytes
    timestamp: int
    marker: bool
    payload_type: int
