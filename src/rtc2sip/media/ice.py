"""Full ICE for the gateway's WebRTC leg (RFC 8445, RFC 7675), on aioice's :class:`~aioice.Connection`.

The gateway is a full agent: controlling when it offers to the browser (a legacy phone calls a
browser), controlled when it answers the browser's offer. aioice does the RFC 8445 work: answering
checks, pairing, pacing and retransmitting checks, nominating (aggressive nomination when
controlling), role conflicts, peer-reflexive candidates. This module fits it to the media session:

- **One socket.** The session's WebRTC socket (its own from the port range, or its view of the
  plane's shared socket, which the agent tells its ufrags, validated addresses and transaction IDs
  through :class:`IceRoutes`) carries STUN, DTLS and SRTP (RFC 7983). aioice never gets a socket
  of its own: each local host candidate is an :class:`_Endpoint`, an aioice ``StunProtocol`` whose
  transport is the session's; the session's
  protocol hands only STUN datagrams (first byte 0..3) to :meth:`IceAgent.datagram`, so media never
  goes through aioice's ``recv()`` queue or its per-datagram STUN parse, and it is sent straight on
  the socket to :attr:`IceAgent.selected` (the nominated pair's remote address: there is one local
  socket, so the pair's transport is that socket).
- **Candidates.** Host candidates are the plane's announced addresses (aioice's host discovery
  leaves out loopback, PERFORMANCE.md); with ``enable-icestun`` a Binding request to ``stun-server``
  from the same socket gives the server-reflexive one (RFC 8445 §5.1.1.2). The browser's candidates
  come from its SDP (host, srflx, relay; mDNS names and TCP are skipped: its checks from them make
  peer-reflexive candidates, RFC 8445 §7.3.1.3), and end-of-candidates is signalled since the
  gateway does not take trickled candidates.
- **Where media may come from and go to.** An address that sent an authenticated check, or answered
  one of ours, is validated (RFC 8445 §7.3.1.4 gives no trust before that). Media goes to the
  nominated pair; before nomination, to the address the browser nominated (USE-CANDIDATE) or the
  latest validated one, so that DTLS can start at once.
- **Consent freshness** (RFC 7675): once nominated, a check every ~5 s on the selected pair; no
  answer for :data:`CONSENT_TIMEOUT` seconds and :attr:`IceAgent.consent_lost` is set.
- **ICE restart** (RFC 8445 §9): new local credentials and a new aioice connection on the same
  socket; the old one keeps answering (and media keeps flowing on its pair) until the new one
  nominates.

aioice is used beyond its documented API (its ``StunProtocol`` and a few ``Connection`` internals):
:func:`_check_aioice` verifies them when the module loads, and ``pyproject.toml`` pins the versions
this was written against.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import secrets
import string
import struct
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any, Protocol, cast

from aioice import Candidate as AioCandidate
from aioice import Connection, stun
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import CandidatePair, StunProtocol

from ..sdp import Candidate
from .ports import Address, wire_address

__all__ = ["CONSENT_INTERVAL", "CONSENT_TIMEOUT", "IceAgent", "IceRoutes", "SrflxCache", "generate_password",
           "generate_ufrag"]

log = logging.getLogger("rtc2sip.media")

# RFC 7675 §5.1: a consent check every 5 s (randomised 0.8-1.2), consent expires 30 s after the
# last answered one. Read at use time, so tests may shorten them.
CONSENT_INTERVAL = 5.0
CONSENT_TIMEOUT = 30.0
# Gathering the server-reflexive candidate delays the offer or answer: bounded.
STUN_TIMEOUT = 2.0
# A shared socket's server-reflexive address is learnt once and reused by the calls that follow for
# this long (a NAT keeps an active mapping; a call after a rebinding still has its host candidates).
SRFLX_TTL = 30.0
# Addresses remembered as validated; a bound keeps a peer spraying checks from growing the table.
MAX_VALIDATED = 16
_ICE_CHARS = string.ascii_letters + string.digits + "+/"  # ice-char (RFC 8839 §5.4)


def _check_aioice() -> None:
    """What this module relies on beyond aioice's documented API; fails at import, not mid-call."""
    needed: dict[type, tuple[str, ...]] = {
        Connection: ("request_received", "check_complete", "build_request", "query_consent",
                     "_valid_username", "connect", "close", "add_remote_candidate"),
        StunProtocol: ("request", "send_stun"),
        CandidatePair: ("remote_addr", "local_addr", "State"),
    }
    missing = [f"{cls.__name__}.{name}" for cls, names in needed.items() for name in names if not hasattr(cls, name)]
    if missing:
        raise ImportError(f"aioice lacks what rtc2sip.media.ice needs: {', '.join(missing)}")


_check_aioice()
# Connection attributes set in its __init__ (checked per instance, see _GatewayConnection).
_CONNECTION_ATTRIBUTES = ("_protocols", "_local_candidates", "_local_candidates_start", "_local_candidates_end",
                          "_nominated", "_closing", "ice_controlling", "remote_is_lite", "_queue",
                          "_check_list_state", "_check_list_done")


def generate_ufrag() -> str:
    """RFC 8839 §5.4: at least 24 bits of randomness (4 ice-chars); 8 chars give 48 bits."""
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(8))


def generate_password() -> str:
    """RFC 8839 §5.4: at least 128 bits of randomness (22 ice-chars); 24 chars give 144 bits."""
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(24))


class _Discard:
    """Stands in for an asyncio.Queue of aioice's that the gateway never reads: its receive queue (media
    goes from the session's socket straight to DTLS/SRTP) and, once connect() returned, its check-list
    state. Each Queue costs ~4 KB per call for nothing."""

    def put_nowait(self, item: object) -> None:
        return


_DISCARD = _Discard()


class SrflxCache:
    """Server-reflexive addresses of one socket, per (local address, STUN server), for
    :data:`SRFLX_TTL` seconds: the calls sharing a socket share its NAT mapping."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, Address], tuple[Address, float]] = {}
        self.queries = 0
        self.hits = 0

    def get(self, local: str, server: Address, now: float) -> Address | None:
        entry = self._entries.get((local, server))
        if entry is None or entry[1] <= now:
            return None
        self.hits += 1
        return entry[0]

    def put(self, local: str, server: Address, mapped: Address, now: float) -> None:
        self._entries[(local, server)] = (mapped, now + SRFLX_TTL)


class IceRoutes(Protocol):
    """What a shared socket (:mod:`rtc2sip.media.udpmux`) needs to know to route datagrams to this
    agent's session: its ufrags (checks), the transactions of its requests (answers) and the
    addresses it validated (DTLS and SRTP)."""

    def ufrag_added(self, ufrag: str) -> bool: ...

    def ufrag_removed(self, ufrag: str) -> None: ...

    def address_validated(self, addr: Address) -> None: ...

    def address_dropped(self, addr: Address) -> None: ...

    def request_sent(self, transaction_id: bytes) -> None: ...


class _Endpoint(StunProtocol):
    """aioice's view of one local host candidate on the session's socket (which it must not close)."""

    def __init__(self, connection: _GatewayConnection, transport: asyncio.DatagramTransport,
                 candidate: AioCandidate, agent: IceAgent) -> None:
        super().__init__(connection)
        self.transport = transport
        self.local_candidate = candidate
        self._agent = agent

    def send_stun(self, message: stun.Message, addr: Address) -> None:
        if "USE-CANDIDATE" in message.attributes:
            self._agent.use_candidate_sent += 1
        routes = self._agent.routes
        if routes is not None and message.message_class == stun.Class.REQUEST:
            routes.request_sent(message.transaction_id)
        self.transport.sendto(bytes(message), addr)

    async def close(self) -> None:
        return  # the MediaSession owns and closes the socket


class _GatewayConnection(Connection):
    """An aioice connection that reports to its :class:`IceAgent` and runs its own consent checks."""

    def __init__(self, agent: IceAgent, controlling: bool, ufrag: str, pwd: str) -> None:
        super().__init__(ice_controlling=controlling, components=1, local_username=ufrag, local_password=pwd)
        missing = [a for a in _CONNECTION_ATTRIBUTES if not hasattr(self, a)]
        if missing:
            raise RuntimeError(f"aioice.Connection lacks {', '.join(missing)}")
        self.agent = agent
        self._queue = _DISCARD  # type: ignore[assignment]

    @property
    def closing(self) -> bool:
        return bool(self._closing)

    @property
    def nominated_pair(self) -> CandidatePair | None:
        return self._nominated.get(1)

    def request_received(self, message: stun.Message, addr: tuple[str, int], protocol: StunProtocol) -> None:
        if not self._closing and message.message_method == stun.Method.BINDING:
            username = message.attributes.get("USERNAME")
            if (isinstance(username, str) and "MESSAGE-INTEGRITY" in message.attributes
                    and self._valid_username(username)
                    and message.check_message_integrity(self.local_password.encode())):
                if not isinstance(message.attributes.get("PRIORITY"), int):
                    # RFC 8445 §7.1.1 requires it, and aioice's peer-reflexive learning reads it.
                    self.agent.rejected_checks += 1
                    self.respond_error(message, addr, protocol, (400, "Bad Request"))
                    return
                self.agent.checked(self, addr, "USE-CANDIDATE" in message.attributes)
            else:
                self.agent.rejected_checks += 1
        super().request_received(message, addr, protocol)

    def check_complete(self, pair: CandidatePair) -> None:
        super().check_complete(pair)
        if pair.state == CandidatePair.State.SUCCEEDED:
            self.agent.succeeded(self, pair)

    async def query_consent(self) -> None:
        """RFC 7675 §5.1 on the nominated pair, one try per interval (aioice's own loop uses fixed
        module constants; this one reports to the agent instead of closing)."""
        assert self.remote_password is not None
        last = monotonic()
        while True:
            await asyncio.sleep(CONSENT_INTERVAL * (0.8 + 0.4 * random.random()))
            pair = self.nominated_pair
            if pair is not None:
                request = self.build_request(pair, nominate=False)
                try:
                    await pair.protocol.request(request, pair.remote_addr,
                                                integrity_key=self.remote_password.encode(), retransmissions=0)
                    last = monotonic()
                except stun.TransactionError:
                    pass
            if monotonic() - last > CONSENT_TIMEOUT:
                self.agent.consent_expired_on(self)
                return


class IceAgent:
    """The gateway's ICE agent for one session (one component: rtcp-mux and BUNDLE)."""

    def __init__(self, *, controlling: bool = False, on_selected: Callable[[], None] | None = None,
                 name: str = "") -> None:
        self.controlling = controlling
        self.name = name
        self.on_selected = on_selected
        self.connection = _GatewayConnection(self, controlling, generate_ufrag(), generate_password())
        self._previous: _GatewayConnection | None = None
        self.selected: Address | None = None
        self.nominated = False
        self.nominated_by: str | None = None
        self.checks = 0
        self.rejected_checks = 0
        self.use_candidate_sent = 0
        self.restarts = 0
        self.failure: str | None = None
        self.consent_lost = False
        self.local_candidates: list[Candidate] = []
        self._browser_nominated: Address | None = None
        self._validated: dict[Address, float] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # a shared socket's routing table (None: the session has a socket of its own)
        self.routes: IceRoutes | None = None

    def use_routes(self, routes: IceRoutes) -> None:
        """Declare this agent's routes to a shared socket from now on. Before any SDP went out:
        a ufrag another session already has is replaced by a fresh one (RFC 8839 §5.4)."""
        self.routes = routes
        for _ in range(16):
            if routes.ufrag_added(self.local_ufrag):
                return
            self.connection = _GatewayConnection(self, self.controlling, generate_ufrag(), generate_password())
        raise RuntimeError("no free ICE ufrag on the shared socket")

    def _claim_new_ufrag(self) -> str:
        ufrag = generate_ufrag()
        routes = self.routes
        for _ in range(16):
            if routes is None or routes.ufrag_added(ufrag):
                return ufrag
            ufrag = generate_ufrag()
        raise RuntimeError("no free ICE ufrag on the shared socket")

    def _retire(self, conn: _GatewayConnection) -> None:
        """Close a connection left behind by a restart; its ufrag stops routing here."""
        routes = self.routes
        live = {c.local_username for c in (self.connection, self._previous) if c is not None}
        if routes is not None and conn.local_username not in live:
            routes.ufrag_removed(conn.local_username)
        self._spawn(conn.close())

    # -- credentials --------------------------------------------------------------------------------

    @property
    def local_ufrag(self) -> str:
        return self.connection.local_username

    @property
    def local_pwd(self) -> str:
        return self.connection.local_password

    @property
    def remote_ufrag(self) -> str | None:
        return self.connection.remote_username

    @property
    def remote_pwd(self) -> str | None:
        return self.connection.remote_password

    # -- gathering ----------------------------------------------------------------------------------

    async def gather(self, transport: asyncio.DatagramTransport, addresses: Sequence[str], port: int,
                     stun_server: tuple[str, int] | None = None, srflx_cache: SrflxCache | None = None) -> None:
        """Host candidates on ``addresses`` (all on the one socket bound to ``port``), and with
        ``stun_server`` the server-reflexive one of each IPv4 address (RFC 8445 §5.1.1.2), from
        ``srflx_cache`` when the socket is shared and another call learnt it lately."""
        self._transport = transport
        self.local_candidates = [Candidate.host(ip, port, index=i) for i, ip in enumerate(addresses)]
        self._attach(self.connection)
        if stun_server is None:
            return
        srflx: list[Candidate] = []
        for endpoint in list(self.connection._protocols):
            host = cast(_Endpoint, endpoint).local_candidate
            if ipaddress.ip_address(host.host).version != 4:
                continue
            known = srflx_cache.get(host.host, stun_server, monotonic()) if srflx_cache is not None else None
            if known is None:
                request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
                try:
                    response, _ = await asyncio.wait_for(endpoint.request(request, stun_server), STUN_TIMEOUT)
                except (TimeoutError, stun.TransactionError) as exc:
                    log.info("ice %s: no server-reflexive candidate from %s:%d: %s", self.name, *stun_server,
                             exc or "timeout")
                    continue
                mapped = response.attributes.get("XOR-MAPPED-ADDRESS")
                if not isinstance(mapped, tuple):
                    continue
                known = (str(mapped[0]), int(mapped[1]))
                if srflx_cache is not None:
                    srflx_cache.queries += 1
                    srflx_cache.put(host.host, stun_server, known, monotonic())
            ip, mapped_port = known[0], known[1]
            candidate = Candidate(candidate_foundation("srflx", "udp", host.host), 1, "udp",
                                  candidate_priority(1, "srflx") - len(srflx), ip, mapped_port, "srflx",
                                  host.host, host.port)
            if all((c.ip, c.port, c.type) != (ip, mapped_port, "srflx") for c in srflx):
                srflx.append(candidate)
        self.local_candidates += srflx
        if srflx:
            log.info("ice %s: server-reflexive %s", self.name, ", ".join(f"{c.ip}:{c.port}" for c in srflx))

    def _attach(self, connection: _GatewayConnection) -> None:
        """Give ``connection`` the host candidates as endpoints on the session's socket, in place of
        aioice's gather_candidates (which would bind sockets of its own)."""
        assert self._transport is not None
        endpoints: list[StunProtocol] = []
        for c in self.local_candidates:
            if c.type != "host":
                continue
            aio = AioCandidate(c.foundation, c.component, c.transport, c.priority, c.ip, c.port, c.type)
            endpoints.append(_Endpoint(connection, self._transport, aio, self))
        connection._protocols = endpoints
        connection._local_candidates = [e.local_candidate for e in endpoints]
        connection._local_candidates_start = connection._local_candidates_end = True

    # -- signalling ---------------------------------------------------------------------------------

    def set_remote(self, ufrag: str, pwd: str, candidates: Sequence[Candidate] = (), *, lite: bool = False) -> bool:
        """The browser's credentials and candidates from its SDP; starts the checks. Same
        credentials again (a re-INVITE without restart) change nothing. True when they changed."""
        conn = self.connection
        if conn.remote_username is not None:
            if (ufrag, pwd) == (conn.remote_username, conn.remote_password):
                return False
            # The browser restarted in an answer to our offer: keep our credentials, new checks.
            self._begin_restart(conn.local_username, conn.local_password)
            conn = self.connection
        conn.remote_username, conn.remote_password = ufrag, pwd
        conn.remote_is_lite = lite
        self._spawn(self._run(conn, list(candidates)))
        return True

    def set_role(self, *, controlling: bool) -> None:
        """Controlling when the gateway offers (RFC 8445 §6.1.1); before the checks start."""
        self.controlling = controlling
        self.connection.ice_controlling = controlling

    def restart(self) -> None:
        """New local credentials (RFC 8445 §9); media stays on the old pair until a new nomination."""
        self._begin_restart(self._claim_new_ufrag(), generate_password())

    def _begin_restart(self, ufrag: str, pwd: str) -> None:
        self.restarts += 1
        old = self.connection
        retired = [self._previous] if self._previous is not None else []
        self.connection = _GatewayConnection(self, self.controlling, ufrag, pwd)
        self._previous = old if old.remote_username is not None else None
        if self._previous is None:
            retired.append(old)
        for conn in retired:
            self._retire(conn)
        self.connection.ice_controlling = old.ice_controlling  # keeps a role a conflict repaired
        if self._transport is not None:
            self._attach(self.connection)
        self.nominated = False

    async def _run(self, conn: _GatewayConnection, candidates: list[Candidate]) -> None:
        added = 0
        for c in candidates:
            if c.transport.lower() != "udp" or c.component != 1 or c.ip.lower().endswith(".local"):
                continue
            aio = AioCandidate(c.foundation, c.component, "udp", c.priority, c.ip, c.port, c.type,
                               related_address=c.raddr, related_port=c.rport)
            await conn.add_remote_candidate(aio)
            added += 1
        if added:
            # No trickle: what the SDP had is all (RFC 8838 §8). Without any, the browser's checks
            # still make peer-reflexive candidates, and the session's connect timeout bounds the wait.
            await conn.add_remote_candidate(None)
        try:
            await conn.connect()
            if conn._check_list_done:
                conn._check_list_state = _DISCARD  # type: ignore[assignment]  # read by connect() only
        except Exception as exc:  # ConnectionError when the check list failed; anything else is a bug
            if conn is self.connection and not conn.closing and not self._closed:
                self.failure = f"ICE failed: {exc}"
                if isinstance(exc, ConnectionError):
                    log.info("ice %s: %s", self.name, self.failure)
                else:
                    log.exception("ice %s: %s", self.name, self.failure)

    # -- datagrams ----------------------------------------------------------------------------------

    def datagram(self, data: bytes, addr: Address) -> None:
        """One STUN datagram from the session's socket: a response to one of our transactions, or a
        check for the current (or, during a restart, the previous) connection."""
        try:
            message = stun.parse_message(data)
        except (ValueError, struct.error):  # aioice unpacks a short PRIORITY, ICE-CONTROLLING... with struct
            return  # not STUN, or a bad FINGERPRINT (RFC 8489 §7.3): silently dropped
        addr = (addr[0], addr[1])
        connections = [c for c in (self.connection, self._previous) if c is not None]
        if message.message_class in (stun.Class.RESPONSE, stun.Class.ERROR):
            for conn in connections:
                for endpoint in conn._protocols:
                    transaction = endpoint.transactions.get(message.transaction_id)
                    if transaction is not None:
                        transaction.response_received(message, addr)
                        return
            return
        if message.message_class != stun.Class.REQUEST:
            return
        conn = self.connection
        username = message.attributes.get("USERNAME")
        previous = self._previous
        if (previous is not None and isinstance(username, str)
                and username.partition(":")[0] == previous.local_username != conn.local_username):
            conn = previous
        target = self._endpoint_for(conn, addr)
        if target is not None:
            conn.request_received(message, addr, target)

    @staticmethod
    def _endpoint_for(conn: _GatewayConnection, addr: Address) -> StunProtocol | None:
        """The local candidate a check came to: the socket may be bound to a wildcard, so the one of
        the sender's address family (the first, preferred, one)."""
        endpoints: list[StunProtocol] = conn._protocols
        version = 6 if ":" in addr[0] else 4
        for endpoint in endpoints:
            if (6 if ":" in endpoint.local_candidate.host else 4) == version:
                return endpoint
        return endpoints[0] if endpoints else None

    # -- reports from the connections ---------------------------------------------------------------

    def checked(self, conn: _GatewayConnection, addr: Address, use_candidate: bool) -> None:
        """An authenticated check from ``addr`` (answered by aioice)."""
        self.checks += 1
        self._validate(addr)
        if conn is not self.connection or self.nominated:
            return
        if use_candidate and not conn.ice_controlling:
            self._browser_nominated = addr
        self._select(self._browser_nominated or addr)

    def succeeded(self, conn: _GatewayConnection, pair: CandidatePair) -> None:
        """One of our checks got its answer; ``pair.nominated`` when the pair is now selected."""
        addr = pair.remote_addr
        self._validate(addr)
        if conn is not self.connection:
            return
        if pair.nominated:
            first = not self.nominated
            self.nominated = True
            self.nominated_by = "gateway" if conn.ice_controlling else "browser"
            if first:
                log.info("ice %s: nominated %s:%d by the %s", self.name, *addr, self.nominated_by)
            previous, self._previous = self._previous, None
            if previous is not None:
                log.info("ice %s: restart complete", self.name)
                self._retire(previous)
            self._select(addr)
        elif not self.nominated and self._browser_nominated is None:
            self._select(addr)

    def consent_expired_on(self, conn: _GatewayConnection) -> None:
        if conn is self.connection and not self._closed:
            self.consent_lost = True
            log.info("ice %s: consent expired (RFC 7675)", self.name)

    def _validate(self, addr: Address) -> None:
        # Stored as the socket reports the source (IPv6: a 4-tuple), for is_validated's lookups.
        addr = wire_address(addr[0], addr[1])
        validated = self._validated
        routes = self.routes
        if addr not in validated and len(validated) >= MAX_VALIDATED:
            # the oldest goes, never the selected one (media flows there)
            oldest = min((a for a in validated if a != self.selected), key=validated.__getitem__)
            del validated[oldest]
            if routes is not None:
                routes.address_dropped(oldest)
        validated[addr] = monotonic()
        if routes is not None:
            routes.address_validated(addr)

    def _select(self, addr: Address) -> None:
        addr = wire_address(addr[0], addr[1])  # compared with each datagram's source by the relay
        if addr == self.selected:
            return
        self.selected = addr
        if self.on_selected is not None:
            self.on_selected()

    # -- state --------------------------------------------------------------------------------------

    def is_validated(self, addr: Address) -> bool:
        return addr in self._validated

    @property
    def connected(self) -> bool:
        return self.selected is not None

    def consent_expired(self, now: float) -> bool:
        """RFC 7675 §5.1: our consent checks went unanswered for :data:`CONSENT_TIMEOUT` seconds."""
        return self.consent_lost

    def describe(self) -> dict[str, Any]:
        pair = self.connection.nominated_pair
        return {
            "role": "controlling" if self.connection.ice_controlling else "controlled",
            "nominated_by": self.nominated_by,
            "local": f"{pair.local_addr[0]}:{pair.local_addr[1]}" if pair is not None else None,
            "candidates": [str(c) for c in self.local_candidates],
            "use_candidate_sent": self.use_candidate_sent,
            "restarts": self.restarts,
        }

    # -- life cycle ---------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop every check and consent task; the socket is left to its owner."""
        if self._closed:
            return
        self._closed = True
        for conn in (self._previous, self.connection):
            if conn is not None:
                await conn.close()
        self._previous = None
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
