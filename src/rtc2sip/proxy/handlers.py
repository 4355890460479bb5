"""What the proxy calls on the elements above it, as the proxy sees them (no RFC of its own).

The proxy knows two kinds of element set beside it by the application: an :class:`Interceptor`, a
user agent that may take a request before it is proxied (RFC 3261 §16 does not apply to what it
takes: it answers, or acts as a UAC on its own, as a B2BUA does), and :class:`LocalServices`, user
agents of the gateway's own that a local-domain Request-URI may name (reached like a registered
Contact). Both are satisfied structurally: the proxy imports nothing from the layers above it.
"""

from __future__ import annotations

from typing import Protocol

from ..sip.message import Request, Response
from ..sip.transaction import ServerTransaction, Transaction
from ..transport.base import Source


class Verdict(Protocol):
    """Whether an :class:`Interceptor` takes a dialog-creating INVITE."""

    @property
    def breaks(self) -> bool: ...


class Interceptor(Protocol):
    """A user agent that may take requests instead of the proxy, with their transactions."""

    def on_request(self, req: Request, source: Source, st: ServerTransaction | None) -> bool:
        """Take ``req`` (in one of its dialogs, or the CANCEL of one of its INVITEs): True when taken.
        ``st`` is None for an ACK that matched no transaction (the ACK of a 2xx, §17.2.3)."""
        ...

    def should_break(self, req: Request, source: Source) -> Verdict:
        """Whether it would take this dialog-creating INVITE (asked before the proxy's §16.3 checks)."""
        ...

    def handle_invite(self, req: Request, source: Source, st: ServerTransaction) -> None:
        """Take the INVITE :meth:`should_break` said yes to, once the proxy's checks passed."""
        ...

    def on_response(self, txn: Transaction | None, resp: Response) -> bool:
        """A response to one of its client transactions, or (``txn`` None) one that matched none:
        True when taken."""
        ...

    def on_transaction_failed(self, txn: Transaction, response: Response | None) -> bool:
        """Timeout or transport error of a client transaction that is not the proxy's."""
        ...

    def on_flow_closed(self, flow_id: str) -> None:
        """A connection ended (its dialogs over it end too)."""
        ...


class LocalServices(Protocol):
    """The gateway's own user agents, reached at a local domain by their user name (sip:echo@...)."""

    def contact(self, user: str | None) -> str | None:
        """The URI a request for ``user`` at a local domain goes to, or None (not one of them)."""
        ...

    def is_source(self, host: str, port: int) -> bool:
        """Whether (host, port) is their own SIP socket (their in-dialog requests may be relayed)."""
        ...
