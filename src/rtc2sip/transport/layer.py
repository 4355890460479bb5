"""asyncio front end for the SIP transports: UDP, TCP, TLS, WS and WSS (RFC 3261 §18, RFC 7118).

Thin by design: every byte that arrives is handed to one callback with its :class:`Source`; every
byte that leaves goes through :meth:`TransportLayer.send`. Connection-oriented flows are kept in one
table so a request for a browser can go down the WebSocket the browser registered on, and so that
outgoing TCP/TLS connections are reused (RFC 3261 §18.1.1, RFC 5626 §5.3).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import socket
import ssl
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from ..sip import MessageError, StreamFramer
from .base import Source, Target

log = logging.getLogger("rtc2sip.transport")

DataHandler = Callable[[bytes, Source], None]
FlowClosedHandler = Callable[[str], None]
# Answers an HTTP request that is not a WebSocket upgrade on a WS/WSS port (rtc2sip.web.http).
HttpHandler = Callable[[WsRequest], WsResponse | Awaitable[WsResponse]]


@dataclass(frozen=True, slots=True)
class ListenAddress:
    transport: str
    host: str
    port: int


@dataclass(slots=True)
class Limits:
    """Bounds on what one remote source may hold; each costs memory or a file descriptor."""

    max_message_size: int = 65535
    max_connections: int = 10000
    max_connections_per_source: int = 1000
    ws_origins: tuple[str, ...] = ()
    ws_ping_interval: float | None = 20.0
    tcp_idle_timeout: float = 600.0


_ids = itertools.count(1)


class Flow:
    """A connection (TCP, TLS, WS, WSS) able to carry SIP messages both ways."""

    __slots__ = ("id", "last_active", "local", "outgoing", "remote", "transport")

    def __init__(self, transport: str, local: tuple[str, int], remote: tuple[str, int], outgoing: bool) -> None:
        self.id = f"{transport}-{next(_ids)}"
        self.transport = transport
        self.local = local
        self.remote = remote
        self.outgoing = outgoing
        self.last_active = 0.0

    def source(self) -> Source:
        return Source(self.transport, self.remote[0], self.remote[1], self.local[0], self.local[1], self.id)

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# How long a stream whose framing broke stays open for the answers to the messages that came whole
# before the break (bounded by [limits] final_response_timeout, 8 s by default).
BROKEN_STREAM_LINGER = 10.0


class StreamFlow(Flow, asyncio.Protocol):
    """TCP or TLS: framed by Content-Length (§18.3), CRLF keepalives answered (RFC 5626 §3.5.1)."""

    __slots__ = ("framer", "layer", "tr")

    def __init__(self, layer: TransportLayer, transport: str, outgoing: bool) -> None:
        Flow.__init__(self, transport, ("", 0), ("", 0), outgoing)
        self.layer = layer
        self.framer = StreamFramer(layer.limits.max_message_size)
        self.tr: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.remote = (peer[0], peer[1])
        self.local = (sock[0], sock[1])
        if not self.layer.admit(self):
            self.tr.abort()
            return
        self.layer.register_flow(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.layer.loop.time()
        try:
            messages = self.framer.feed(data)
        except MessageError as e:
            self._broken(e)
            return
        src = self.source()
        for m in messages:
            self.layer.on_data(m, src)
        if self.framer.pings:
            self.framer.pings = 0
            if self.tr is not None:
                self.tr.write(b"\r\n")

    def _broken(self, e: MessageError) -> None:
        """A stream that lost its framing cannot be resynchronised (§18.3) and is closed, but not before
        what came whole is handled and the broken request is answered 400 (issue 13: never silence)."""
        log.warning("flow=%s closing %s:%s: %s", self.id, self.remote[0], self.remote[1], e.reason)
        tr = self.tr
        if tr is None:
            return
        src = self.source()
        salvaged, rejected = self.framer.salvaged, self.framer.rejected
        self.framer.salvaged, self.framer.rejected = [], None
        for m in salvaged:
            self.layer.on_data(m, src)
        if rejected is not None:
            self.layer.on_data(rejected, src)  # the parser fails it the same way; the proxy answers 400
        if not salvaged:
            tr.close()  # the answer, if any, is written already; close() flushes it
            return
        # their answers may take a while (a DNS lookup, a next hop): read nothing more, close later
        tr.pause_reading()
        self.layer.loop.call_later(BROKEN_STREAM_LINGER, tr.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tr = None
        self.layer.unregister_flow(self)

    def send(self, data: bytes) -> None:
        if self.tr is None or self.tr.is_closing():
            raise ConnectionError(f"flow {self.id} is closed")
        self.tr.write(data)

    def close(self) -> None:
        if self.tr is not None:
            self.tr.close()


class WsFlow(Flow):
    """One SIP message per WebSocket message (RFC 7118 §5); sends are queued to keep their order."""

    __slots__ = ("queue", "writer", "ws")

    def __init__(self, ws: ServerConnection, transport: str) -> None:
        local = ws.local_address
        remote = ws.remote_address
        super().__init__(transport, (local[0], local[1]), (remote[0], remote[1]), False)
        self.ws = ws
        self.queue: deque[bytes] = deque()
        self.writer: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> None:
        if self.ws.state.name in ("CLOSING", "CLOSED"):
            raise ConnectionError(f"flow {self.id} is closed")
        if len(self.queue) > 1000:
            raise ConnectionError(f"flow {self.id} send queue full")
        self.queue.append(data)
        if self.writer is None or self.writer.done():
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.queue:
            data = self.queue.popleft()
            try:
                # browsers expect text frames; a body that is not UTF-8 must go as binary
                await self.ws.send(data.decode("utf-8"))
            except UnicodeDecodeError:
                await self.ws.send(data)
            except ConnectionClosed:
                self.queue.clear()
                return

    def close(self) -> None:
        asyncio.get_running_loop().create_task(self.ws.close())


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer, host: str, port: int) -> None:
        self.layer = layer
        self.host = host
        self.port = port
        self.tr: asyncio.DatagramTransport | None = None
        self.prefix = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio's classes
        self.tr = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("sockname")
        self.port = sock[1]
        self.prefix = f"udp:{self.host}:{self.port}/"

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) <= 4 and not data.strip(b"\r\n"):
            return  # RFC 5626 CRLF keepalive over UDP carries nothing to answer
        if data[:1] in (b"\x00", b"\x01"):
            self.layer.on_stun(self, data, addr)
            return
        host = addr[0]
        src = Source("udp", host, addr[1], self.host, self.port, f"{self.prefix}{host}:{addr[1]}")
        self.layer.on_data(data, src)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: nothing to do per datagram, the transaction times out
        log.debug("udp %s:%s error: %s", self.host, self.port, exc)


UDP_BUFFER = 4 * 1024 * 1024


def _is_upgrade(request: WsRequest) -> bool:
    """Whether a request asks for a WebSocket (RFC 6455 §4.2.1); anything else is plain HTTP."""
    upgrade = ",".join(request.headers.get_all("Upgrade"))
    return "websocket" in (token.strip().lower() for token in upgrade.split(","))


def _grow_buffers(sock: Any) -> None:
    """A burst of datagrams (or a pause of the event loop) must queue in the kernel, not be dropped:
    the default 208 KiB receive buffer holds under a second of a busy proxy's traffic."""
    if sock is None:
        return
    for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, UDP_BUFFER)  # beyond rmem_max, needs CAP_NET_ADMIN
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER)
            except OSError:
                pass


class TransportLayer:
    """All listening sockets and live flows of the gateway."""

    def __init__(self, on_data: DataHandler, on_flow_closed: FlowClosedHandler, limits: Limits | None = None) -> None:
        self.on_data = on_data
        self.on_flow_closed = on_flow_closed
        self.limits = limits or Limits()
        self.loop = asyncio.get_event_loop()
        self.udp: list[UdpEndpoint] = []
        self.stream_servers: list[tuple[str, asyncio.Server, str, int]] = []
        self.ws_servers: list[tuple[str, Server, str, int]] = []
        self.flows: dict[str, Flow] = {}
        self.by_remote: dict[tuple[str, str, int], Flow] = {}
        self.per_source: defaultdict[str, int] = defaultdict(int)
        self.connecting: dict[tuple[str, str, int], asyncio.Future[Flow]] = {}
        self.client_ssl: ssl.SSLContext | None = None
        self.listening: list[ListenAddress] = []
        self.http_handler: HttpHandler | None = None  # plain HTTP on the WS ports: the web pages

    # ---- listening ---------------------------------------------------------------------------------

    async def listen(self, transport: str, host: str, port: int, ssl_ctx: ssl.SSLContext | None = None) -> int:
        """Open one listener; returns the port really bound (0 asks the kernel for one)."""
        t = transport.lower()
        if t == "udp":
            ep = UdpEndpoint(self, host, port)
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            tr, _ = await self.loop.create_datagram_endpoint(lambda: ep, local_addr=(host, port), family=fam)
            _grow_buffers(tr.get_extra_info("socket"))
            self.udp.append(ep)
            bound = ep.port
        elif t in ("tcp", "tls"):
            if t == "tls" and ssl_ctx is None:
                raise ValueError("TLS listener without certificates")
            server = await self.loop.create_server(
                lambda: StreamFlow(self, t, False), host, port, ssl=ssl_ctx if t == "tls" else None,
                reuse_address=True,
            )
            bound = server.sockets[0].getsockname()[1]
            self.stream_servers.append((t, server, host, bound))
        elif t in ("ws", "wss"):
            if t == "wss" and ssl_ctx is None:
                raise ValueError("WSS listener without certificates")
            ws_server = await serve(
                lambda ws: self._ws_handler(ws, t),
                host,
                port,
                subprotocols=["sip"],  # type: ignore[list-item]
                process_request=self._ws_process_request,
                ssl=ssl_ctx if t == "wss" else None,
                max_size=self.limits.max_message_size,
                ping_interval=self.limits.ws_ping_interval,
                compression=None,
            )
            bound = next(iter(ws_server.sockets)).getsockname()[1]
            self.ws_servers.append((t, ws_server, host, bound))
        else:
            raise ValueError(f"unknown transport {transport!r}")
        self.listening.append(ListenAddress(t, host, bound))
        return bound

    def local_address(self, transport: str, ipv6: bool = False) -> tuple[str, int] | None:
        """The address this gateway announces (Via sent-by, Record-Route, Path) on a transport."""
        for la in self.listening:
            if la.transport == transport and ((":" in la.host) == ipv6):
                return (self._advertised(la.host, ipv6), la.port)
        for la in self.listening:
            if la.transport == transport:
                return (self._advertised(la.host, ipv6), la.port)
        return None

    @staticmethod
    def _advertised(host: str, ipv6: bool) -> str:
        if host in ("0.0.0.0", "::", ""):
            # a wildcard listener is announced by the address of the default route's interface
            try:
                with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.connect(("2001:db8::1" if ipv6 else "192.0.2.1", 9))
                    return str(s.getsockname()[0])
            except OSError:
                return "::1" if ipv6 else "127.0.0.1"
        return host

    def is_local(self, host: str, port: int | None, transport: str | None = None) -> bool:
        """Whether host:port names one of our listeners (so a Route or Request-URI is for us)."""
        h = host.strip("[]").lower()
        for la in self.listening:
            lh = la.host.lower()
            if h == lh or (lh in ("0.0.0.0", "::") and h in self._own_hosts()):
                default = 5061 if la.transport in ("tls", "wss") else 5060
                p = port if port is not None else default
                if p == la.port:
                    return True
        return False

    _own: set[str] | None = None

    def _own_hosts(self) -> set[str]:
        if self._own is None:
            own = {"127.0.0.1", "::1", "localhost"}
            try:
                own.update(str(a[4][0]) for a in socket.getaddrinfo(socket.gethostname(), None))
            except OSError:
                pass
            own.add(self._advertised("0.0.0.0", False))
            self._own = own
        return self._own

    # ---- flows -------------------------------------------------------------------------------------

    def admit(self, flow: Flow) -> bool:
        if len(self.flows) >= self.limits.max_connections:
            log.warning("connection limit reached, refusing %s from %s", flow.transport, flow.remote[0])
            return False
        if self.per_source[flow.remote[0]] >= self.limits.max_connections_per_source:
            log.warning("per-source connection limit reached, refusing %s from %s", flow.transport, flow.remote[0])
            return False
        return True

    def register_flow(self, flow: Flow) -> None:
        self.flows[flow.id] = flow
        self.by_remote[(flow.transport, flow.remote[0], flow.remote[1])] = flow
        self.per_source[flow.remote[0]] += 1
        flow.last_active = self.loop.time()
        log.debug("flow=%s open %s %s:%s", flow.id, flow.transport, flow.remote[0], flow.remote[1])

    def unregister_flow(self, flow: Flow) -> None:
        if self.flows.pop(flow.id, None) is None:
            return
        key = (flow.transport, flow.remote[0], flow.remote[1])
        if self.by_remote.get(key) is flow:
            del self.by_remote[key]
        self.per_source[flow.remote[0]] -= 1
        if self.per_source[flow.remote[0]] <= 0:
            del self.per_source[flow.remote[0]]
        log.debug("flow=%s closed", flow.id)
        self.on_flow_closed(flow.id)

    def flow_alive(self, flow_id: str) -> bool:
        if flow_id.startswith("udp:"):
            return True
        return flow_id in self.flows

    async def _ws_process_request(self, conn: ServerConnection, request: WsRequest) -> WsResponse | None:
        if self.http_handler is not None and not _is_upgrade(request):
            response = self.http_handler(request)
            return await response if inspect.isawaitable(response) else response
        origins = self.limits.ws_origins
        if origins:
            # headers.get() raises on a repeated header, which websockets answers 500
            sent = request.headers.get_all("Origin")
            if len(sent) > 1:
                return conn.respond(400, "More than one Origin header\n")  # RFC 6454 §7.3: at most one
            origin = sent[0] if sent else None
            if origin not in origins:
                log.warning("websocket from %s refused: origin %r not allowed", conn.remote_address[0], origin)
                return conn.respond(403, "Origin not allowed\n")
        # RFC 6455 §11.3.4: several Sec-WebSocket-Protocol headers are one list
        proto = ",".join(request.headers.get_all("Sec-WebSocket-Protocol"))
        if "sip" not in [p.strip().lower() for p in proto.split(",")]:
            return conn.respond(400, "The sip subprotocol (RFC 7118) is required\n")
        return None

    async def _ws_handler(self, ws: ServerConnection, transport: str) -> None:
        flow = WsFlow(ws, transport)
        if not self.admit(flow):
            await ws.close(1008, "too many connections")
            return
        self.register_flow(flow)
        src = flow.source()
        try:
            async for message in ws:
                flow.last_active = self.loop.time()
                data = message.encode("utf-8", "surrogateescape") if isinstance(message, str) else message
                if not data.strip(b"\r\n"):
                    continue
                self.on_data(data, src)
        except ConnectionClosed:
            pass
        finally:
            self.unregister_flow(flow)

    # ---- sending -----------------------------------------------------------------------------------

    def send_on_flow(self, flow_id: str, data: bytes) -> bool:
        """Send on an existing flow; False when the flow no longer exists."""
        if flow_id.startswith("udp:"):
            local, _, remote = flow_id[4:].partition("/")
            lhost, _, lport = local.rpartition(":")
            rhost, _, rport = remote.rpartition(":")
            for ep in self.udp:
                if ep.port == int(lport) and ep.host == lhost and ep.tr is not None:
                    ep.tr.sendto(data, (rhost, int(rport)))
                    return True
            return False
        flow = self.flows.get(flow_id)
        if flow is None:
            return False
        try:
            flow.send(data)
        except ConnectionError:
            return False
        return True

    def udp_endpoint(self, ipv6: bool) -> UdpEndpoint | None:
        for ep in self.udp:
            if (":" in ep.host) == ipv6:
                return ep
        return self.udp[0] if self.udp else None

    def send_udp(self, host: str, port: int, data: bytes) -> Source | None:
        ep = self.udp_endpoint(":" in host)
        if ep is None or ep.tr is None:
            return None
        ep.tr.sendto(data, (host, port))
        return Source("udp", host, port, ep.host, ep.port, f"{ep.prefix}{host}:{port}")

    async def connect(self, transport: str, host: str, port: int) -> Flow:
        """An existing connection to host:port, or a new one (§18.1.1: reuse before opening)."""
        key = (transport, host, port)
        flow = self.by_remote.get(key)
        if flow is not None:
            return flow
        pending = self.connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        if transport not in ("tcp", "tls"):
            raise ConnectionError(f"cannot open an outgoing {transport} connection")
        fut: asyncio.Future[Flow] = self.loop.create_future()
        self.connecting[key] = fut
        try:
            ctx = None
            if transport == "tls":
                ctx = self.client_ssl or ssl.create_default_context()
            _, proto = await asyncio.wait_for(
                self.loop.create_connection(lambda: StreamFlow(self, transport, True), host, port, ssl=ctx),
                timeout=5.0,
            )
            fut.set_result(proto)
            return proto
        except (OSError, TimeoutError) as e:
            err = ConnectionError(f"cannot connect {transport}:{host}:{port}: {e}")
            fut.set_exception(err)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise err from None
        finally:
            del self.connecting[key]

    async def send(self, target: Target, data: bytes) -> Source | None:
        """Send to a target: on its flow when it names a live one, else by its transport and address.

        Returns the flow's source description (for Via fix-ups and logging), None on failure.
        """
        if target.flow_id is not None:
            if self.send_on_flow(target.flow_id, data):
                f = self.flows.get(target.flow_id)
                return f.source() if f else None
            if target.transport in ("ws", "wss"):
                return None  # a browser's flow cannot be re-opened from this side
        if target.transport == "udp":
            return self.send_udp(target.host, target.port, data)
        try:
            flow = await self.connect(target.transport, target.host, target.port)
            flow.send(data)
            return flow.source()
        except ConnectionError as e:
            log.info("send to %s:%s:%s failed: %s", target.transport, target.host, target.port, e)
            return None

    def on_stun(self, ep: UdpEndpoint, data: bytes, addr: tuple[str | Any, int]) -> None:
        """RFC 5626 §4.4.2 STUN keepalive on the SIP port: answer a Binding request with the mapped address."""
        from .stun_keepalive import binding_response

        resp = binding_response(data, addr[0], addr[1])
        if resp is not None and ep.tr is not None:
            ep.tr.sendto(resp, addr)

    async def close(self) -> None:
        for ep in self.udp:
            if ep.tr is not None:
                ep.tr.close()
        for _, s, _, _ in self.stream_servers:
            s.close()
        for _, w, _, _ in self.ws_servers:
            w.close()
        for flow in list(self.flows.values()):
            flow.close()
        for _, s, _, _ in self.stream_servers:
            await s.wait_closed()
        for _, w, _, _ in self.ws_servers:
            await w.wait_closed()
