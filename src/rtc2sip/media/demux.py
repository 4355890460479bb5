"""Which session owns a datagram of the shared WebRTC socket (:mod:`rtc2sip.media.udpmux`), sans I/O.

Every browser leg's datagrams arrive on one socket; :class:`DemuxTable` routes each to the session
that owns it, first by RFC 7983 §7 (the first byte tells STUN, DTLS and RTP/RTCP apart), then:

- a STUN request (first byte 0..3) by the local ufrag of its USERNAME ("ours:theirs",
  RFC 8445 §7.2.2); a session owns the ufrags of its credentials (a restart adds one);
- a STUN response by the transaction ID of the request the session sent (recorded on sending,
  forgotten after :data:`TRANSACTION_LIFETIME`): answers to its checks and to ``stun-server``;
- DTLS, SRTP and SRTCP (and STUN indications) by source address: an address becomes a session's
  when its ICE agent validated it (an authenticated check from it, or an answer to a check sent to
  it, RFC 8445 §7.3.1.4). The first owner keeps it; a second claimant is refused and counted.

A route only says which session looks at a datagram: the session keeps its own checks (STUN
MESSAGE-INTEGRITY, ``IceAgent.is_validated``, DTLS fingerprints, SRTP authentication), so a wrong
route can never inject media. Removing a session removes every key it had.
"""

from __future__ import annotations

import struct
from typing import Protocol

from .ports import Address

__all__ = ["MAX_TRANSACTIONS", "TRANSACTION_LIFETIME", "DemuxTable", "MuxOwner", "stun_local_ufrag"]

# aioice retransmits a check for up to ~40 s (RFC 8489 §6.2.1 with its RTO and Rc); later answers
# are of no use to anyone.
TRANSACTION_LIFETIME = 45.0
# Transactions remembered per session: aioice paces its checks, a session has a few in flight.
MAX_TRANSACTIONS = 256

_MAGIC_COOKIE = b"\x21\x12\xa4\x42"
_USERNAME = 0x0006
_STUN_ATTRIBUTE = struct.Struct("!HH")


class MuxOwner(Protocol):
    """What the mux hands datagrams to: the session's RFC 7983 demultiplexer."""

    def datagram_received(self, data: bytes, addr: Address) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...


def stun_local_ufrag(data: bytes | bytearray) -> str | None:
    """The recipient's ufrag of a STUN request's USERNAME (RFC 8445 §7.2.2: "theirs:ours" from the
    sender's side, so the part before the colon is the receiver's); None when there is none."""
    if len(data) < 20 or data[4:8] != _MAGIC_COOKIE:
        return None
    end = min(len(data), 20 + int.from_bytes(data[2:4], "big"))
    pos = 20
    while pos + 4 <= end:
        kind, length = _STUN_ATTRIBUTE.unpack_from(data, pos)
        if kind == _USERNAME:
            if pos + 4 + length > end:
                return None
            try:
                username = bytes(data[pos + 4 : pos + 4 + length]).decode("utf-8")
            except UnicodeDecodeError:
                return None
            ours, colon, _ = username.partition(":")
            return ours if colon and ours else None
        pos += 4 + length + (-length & 3)  # RFC 8489 §14: values padded to 4 bytes
    return None


class _Keys:
    __slots__ = ("addresses", "transactions", "ufrags")

    def __init__(self) -> None:
        self.ufrags: set[str] = set()
        self.addresses: set[Address] = set()
        self.transactions: dict[bytes, float] = {}  # insertion order: oldest first


class DemuxTable:
    """Which session owns a datagram of the shared socket (sans-I/O; see the module docstring).

    Counters: ``unrouted`` (STUN or media nobody owns), ``garbage`` (neither STUN, DTLS nor RTP
    by RFC 7983 §7, or STUN too short to route), ``refused`` (an address claimed by a second session).
    """

    def __init__(self) -> None:
        self.ufrags: dict[str, MuxOwner] = {}
        # read by the socket glue on every media datagram: a plain dict lookup
        self.addresses: dict[Address, MuxOwner] = {}
        self.transactions: dict[bytes, tuple[MuxOwner, float]] = {}
        self._keys: dict[MuxOwner, _Keys] = {}
        self._next_purge = 0.0
        self.unrouted = 0
        self.garbage = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, owner: MuxOwner) -> None:
        self._keys.setdefault(owner, _Keys())

    def remove(self, owner: MuxOwner) -> None:
        """Forget every key of ``owner``."""
        keys = self._keys.pop(owner, None)
        if keys is None:
            return
        for ufrag in keys.ufrags:
            if self.ufrags.get(ufrag) is owner:
                del self.ufrags[ufrag]
        for addr in keys.addresses:
            if self.addresses.get(addr) is owner:
                del self.addresses[addr]
        for txid in keys.transactions:
            entry = self.transactions.get(txid)
            if entry is not None and entry[0] is owner:
                del self.transactions[txid]

    # -- keys -----------------------------------------------------------------------------------

    def add_ufrag(self, owner: MuxOwner, ufrag: str) -> bool:
        """False when another session has that ufrag (the caller picks another)."""
        holder = self.ufrags.get(ufrag)
        if holder is not None and holder is not owner:
            return False
        self.ufrags[ufrag] = owner
        self._keys.setdefault(owner, _Keys()).ufrags.add(ufrag)
        return True

    def remove_ufrag(self, owner: MuxOwner, ufrag: str) -> None:
        if self.ufrags.get(ufrag) is owner:
            del self.ufrags[ufrag]
        keys = self._keys.get(owner)
        if keys is not None:
            keys.ufrags.discard(ufrag)

    def claim_address(self, owner: MuxOwner, addr: Address) -> bool:
        """``addr``'s media goes to ``owner`` from now on, unless another session has it (refused)."""
        holder = self.addresses.get(addr)
        if holder is owner:
            return True
        if holder is not None:
            self.refused += 1
            return False
        keys = self._keys.get(owner)
        if keys is None:
            return False  # removed already: a late callback must not leave a key behind
        self.addresses[addr] = owner
        keys.addresses.add(addr)
        return True

    def release_address(self, owner: MuxOwner, addr: Address) -> None:
        if self.addresses.get(addr) is owner:
            del self.addresses[addr]
        keys = self._keys.get(owner)
        if keys is not None:
            keys.addresses.discard(addr)

    def expect_response(self, owner: MuxOwner, transaction_id: bytes, now: float) -> None:
        """``owner`` sent a STUN request: the response with that transaction ID is its."""
        keys = self._keys.get(owner)
        if keys is None:
            return
        if now >= self._next_purge:
            self._purge(now)
        expires = now + TRANSACTION_LIFETIME
        keys.transactions.pop(transaction_id, None)  # a retransmission: to the end of the order
        keys.transactions[transaction_id] = expires
        self.transactions[transaction_id] = (owner, expires)
        while len(keys.transactions) > MAX_TRANSACTIONS:
            oldest = next(iter(keys.transactions))
            del keys.transactions[oldest]
            entry = self.transactions.get(oldest)
            if entry is not None and entry[0] is owner:
                del self.transactions[oldest]

    def _purge(self, now: float) -> None:
        self._next_purge = now + TRANSACTION_LIFETIME / 4
        expired = [txid for txid, (_, expires) in self.transactions.items() if expires <= now]
        for txid in expired:
            owner, _ = self.transactions.pop(txid)
            keys = self._keys.get(owner)
            if keys is not None:
                keys.transactions.pop(txid, None)

    @property
    def routes(self) -> int:
        """Every key held (sessions, ufrags, addresses, transactions): 0 once no call is up."""
        return len(self._keys) + len(self.ufrags) + len(self.addresses) + len(self.transactions)

    def keys_of(self, owner: MuxOwner) -> tuple[set[str], set[Address], set[bytes]]:
        keys = self._keys.get(owner) or _Keys()
        return set(keys.ufrags), set(keys.addresses), set(keys.transactions)

    # -- routing --------------------------------------------------------------------------------

    def route_stun(self, data: bytes | bytearray, addr: Address, now: float) -> MuxOwner | None:
        """The owner of a STUN datagram (first byte 0..3), None if nobody (counted)."""
        if len(data) < 20:
            self.garbage += 1
            return None
        # RFC 8489 §5: class bits C1 (0x0100) and C0 (0x0010) of the message type
        c1, c0 = data[0] & 0x01, data[1] & 0x10
        owner: MuxOwner | None
        if not c1 and not c0:  # request
            ufrag = stun_local_ufrag(data)
            owner = self.ufrags.get(ufrag) if ufrag is not None else None
        elif c1:  # success or error response
            entry = self.transactions.get(bytes(data[8:20]))
            owner = entry[0] if entry is not None and entry[1] > now else None
        else:  # indication: only from an address already validated
            owner = self.addresses.get(addr)
        if owner is None:
            self.unrouted += 1
        return owner

    def route(self, data: bytes | bytearray, addr: Address, now: float) -> MuxOwner | None:
        """The owner of any datagram (RFC 7983 §7 first byte); the socket glue inlines the media case."""
        b = data[0] if data else 255
        if 19 < b < 64 or 127 < b < 192:  # DTLS, RTP/RTCP
            owner = self.addresses.get(addr)
            if owner is None:
                self.unrouted += 1
            return owner
        if b < 4:
            return self.route_stun(data, addr, now)
        self.garbage += 1
        return None
