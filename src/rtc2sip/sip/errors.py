"""Typed protocol errors, in the manner of h11: each carries the SIP status to answer with.

A bad request is answered with that status (RFC 3261 §8.2, §16.3, §21.4); a bad response is dropped.
:class:`DigestError` is the malformed or unanswerable Digest value (RFC 7616 §3.3, §3.4), 400.
"""

from __future__ import annotations


class SipParseError(ValueError):
    """A message (or one of its parts) that cannot be understood.

    ``status`` is the response a server sends back when the bad message is a request
    (RFC 3261 §8.2 and §16.3); for a bad response the message is dropped instead. ``reason`` is
    fit for a Reason-Phrase (§25.1): it may quote the offending text, but never with CR or LF,
    which would let a peer inject lines into our response.
    """

    def __init__(self, status: int, reason: str) -> None:
        if "\r" in reason or "\n" in reason:
            reason = reason.replace("\r", " ").replace("\n", " ")
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class DigestError(SipParseError):
    """A challenge or credentials value that cannot be understood, or a challenge we cannot answer.

    Servers answer a request whose credentials raise this with ``status`` (400), as for any other
    malformed header (RFC 3261 §8.2, §16.3).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(status, reason)
