"""Typed protocol errors, in the manner of h11: each carries the SIP status to answer with."""

from __future__ import annotations


class SipParseError(ValueError):
    """A message (or one of its parts) that cannot be understood.

    ``status`` is the response a server sends back when the bad message is a request
    (RFC 3261 §8.2 and §16.3); for a bad response the message is dropped instead.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
