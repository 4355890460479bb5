"""What the SIP core knows of transports: where a message came from and the flow it can be answered on.

A *flow* (RFC 5626 §3) is the path a message arrived on: a UDP socket plus the remote address, or a
TCP/TLS/WebSocket connection. Requests for a browser must go down the very WebSocket it registered on,
so bindings remember the flow id and the proxy sends on that flow while it exists.
"""

from __future__ import annotations

from dataclasses import dataclass

RELIABLE = frozenset({"tcp", "tls", "ws", "wss"})
SECURE = frozenset({"tls", "wss"})
WEBSOCKET = frozenset({"ws", "wss"})
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from.

    ``transport`` is lower case (udp, tcp, tls, ws, wss); ``local`` is the listening address that
    received it; ``flow_id`` names the connection (for udp: the local socket and remote address),
    unique for the life of the process, so a binding can tell whether its flow still exists.
    """

    transport: str
    host: str
    port: int
    local_host: str
    local_port: int
    flow_id: str

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE

    @property
    def websocket(self) -> bool:
        return self.transport in WEBSOCKET

    def via_transport(self) -> str:
        return self.transport.upper()

    def uri_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def as_uri(self) -> str:
        """``sip:host:port;transport=x``: the address the message really came from."""
        return f"sip:{self.uri_host()}:{self.port};transport={self.transport}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send a message: a transport and an address, optionally a specific existing flow."""

    transport: str
    host: str
    port: int
    flow_id: str | None = None
