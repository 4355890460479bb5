"""The location service: bindings from an address-of-record to contacts (RFC 3261 §10, §16.5).

Bindings live in memory, indexed by AOR, by flow id and by temporary GRUU, so every lookup is a
dictionary access. Every change is written through to SQLite (one table, WAL, ``synchronous=NORMAL``:
a commit appends to the log and does not wait for an fsync) so that bindings survive a restart.

Bindings tied to a WebSocket flow are the exception: they are never written, and they disappear when
their connection closes (:meth:`LocationStore.flow_closed`). A browser registers a contact such as
``sip:x@y.invalid;transport=ws`` that nobody can reach; the only way to it is the connection it
registered on, and that connection does not outlive this process.

Bounds (each an explicit parameter of :class:`LocationStore`):

- ``max_per_aor`` bindings per address-of-record (default 16);
- ``max_total`` bindings in all (default 100,000; about 2 KB each in memory with JsSIP's contacts,
  indexes included, so ~200 MB at the bound; under 1 KB each on disk);
- ``max_temp_gruus`` temporary GRUUs remembered per binding (default 16; the oldest are forgotten).

The store does no I/O besides SQLite and reads no clock: callers pass ``now`` (seconds since the
epoch, as ``time.time()``).
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote

from ..sip import Param, SipParseError, SipUri, Uri, parse_uri
from ..transport.base import RELIABLE, WEBSOCKET

SCHEMA_VERSION = 1

DEFAULT_MAX_PER_AOR = 16
DEFAULT_MAX_TOTAL = 100_000
DEFAULT_MAX_TEMP_GRUUS = 16

# Prefix of the user part of the temporary GRUUs we issue; the rest is 128 random bits.
TEMP_GRUU_PREFIX = "tgr."


class LocationError(Exception):
    """The store refused or failed a change; nothing was changed in memory."""


class LocationStorageError(LocationError):
    """SQLite failed (disk full, I/O error, locked database)."""


class LocationFull(LocationError):
    """A change would exceed a bound of the store (``scope`` is ``"aor"`` or ``"total"``)."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"location store full ({scope} limit {limit})")
        self.scope = scope
        self.limit = limit


def contact_key(contact: str | Uri, instance: str | None = None, reg_id: int | None = None) -> str:
    """The identity of a binding within its AOR.

    With outbound (RFC 5626 §6) a binding is the pair (instance-id, reg-id), whatever its Contact URI;
    otherwise it is the Contact URI compared by the rules of RFC 3261 §19.1.4 (§10.3 step 7).
    """
    if instance is not None and reg_id is not None:
        return f"ob|{instance.lower()}|{reg_id}"
    uri = parse_uri(contact) if isinstance(contact, str) else contact
    return "uri|" + repr(uri.key())


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact bound to an address-of-record (RFC 3261 §10.3, RFC 3327 §5.3, RFC 5626 §6).

    ``contact`` is the Contact URI as registered and ``params`` its header parameters (``q``,
    ``+sip.instance``, ``reg-id``, feature tags; never ``expires`` or GRUUs), kept to be echoed in
    the 200 and for caller preferences. ``flow_id`` and ``transport`` name the connection the REGISTER
    arrived on when it came straight from the UA (``None`` otherwise, or once that flow is gone);
    ``source`` is where it really came from (``sip:host:port;transport=x``). ``path`` is the Path
    vector (RFC 3327), in header order. ``pub_gruu`` and ``temp_gruus`` (oldest first) are the GRUUs
    of RFC 5627 issued for this binding's instance.
    """

    aor: str
    contact: str
    expires_at: float
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    instance: str | None = None
    reg_id: int | None = None
    flow_id: str | None = None
    transport: str = "udp"
    source: str = ""
    path: tuple[str, ...] = ()
    user_agent: str | None = None
    pub_gruu: str | None = None
    temp_gruus: tuple[str, ...] = ()
    registered_at: float = 0.0
    updated_at: float = 0.0
    params: tuple[Param, ...] = ()
    key: str = field(default="")

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", contact_key(self.contact, self.instance, self.reg_id))

    @property
    def outbound(self) -> bool:
        """Registered with RFC 5626 outbound rules: keyed by (instance, reg-id)."""
        return self.instance is not None and self.reg_id is not None

    @property
    def websocket_flow(self) -> bool:
        """Tied to a WebSocket connection: reachable only down that connection, never persisted."""
        return self.flow_id is not None and self.transport in WEBSOCKET

    @property
    def persistent(self) -> bool:
        return not self.websocket_flow

    @property
    def source_host(self) -> str:
        return _host_of(self.source)

    @property
    def temp_gruu(self) -> str | None:
        """The most recently issued temporary GRUU (the one a 200 returns, RFC 5627 §5.1)."""
        return self.temp_gruus[-1] if self.temp_gruus else None

    def expires_in(self, now: float) -> int:
        """Whole seconds left, at least 1 while the binding is alive (0 means "removed" on the wire)."""
        left = self.expires_at - now
        return max(1, round(left)) if left > 0 else 0


def _host_of(source: str) -> str:
    """``host`` from ``sip:host:port;transport=x`` (IPv6 without brackets, as in ``Source.host``)."""
    rest = source.partition(":")[2]
    if rest.startswith("["):
        return rest[1 : rest.find("]")]
    return rest.split(":", 1)[0].split(";", 1)[0]


def temp_gruu_token(uri: SipUri) -> str | None:
    """The token of a temporary GRUU we issued (``sip:tgr.TOKEN@domain;gr``), else None."""
    if uri.param("gr") != "" or not uri.user:
        return None
    user = unquote(uri.user)
    return user[len(TEMP_GRUU_PREFIX) :] if user.startswith(TEMP_GRUU_PREFIX) else None


def targets_for(
    binding: Binding, flow_alive: Callable[[str], bool] | None = None
) -> tuple[str, str | None, list[str]]:
    """Where a proxy sends a request for ``binding`` (RFC 3261 §16.5, RFC 3327 §5.4, RFC 5626 §7).

    Returns the Request-URI (the registered contact), the flow to send on (``None`` when the binding
    has no flow or ``flow_alive`` says it is gone: then resolve the Request-URI, or the first Route,
    per RFC 3263), and the Route set to preload (the Path vector, in order).

    The store already forgets flows it is told are closed, so ``flow_alive`` is only needed when the
    transport can lose a flow without saying so. A binding whose contact host is ``.invalid`` (every
    browser's) with neither a live flow nor a Path is unreachable: see :func:`reachable`.
    """
    flow = binding.flow_id
    if flow is not None and flow_alive is not None and not flow_alive(flow):
        flow = None
    return binding.contact, flow, list(binding.path)


def reachable(binding: Binding, flow_alive: Callable[[str], bool] | None = None) -> bool:
    """False for a binding nobody can reach: a ``.invalid`` contact with no live flow and no Path
    (RFC 7118 browsers invent such contacts; only their WebSocket leads to them)."""
    _, flow, route = targets_for(binding, flow_alive)
    if flow is not None or route:
        return True
    try:
        uri = parse_uri(binding.contact)
    except SipParseError:
        return False
    return not (isinstance(uri, SipUri) and uri.host_lower.rstrip(".").endswith(".invalid"))


def _order(bindings: Iterable[Binding]) -> list[Binding]:
    """Highest q first, then the most recently refreshed (RFC 3261 §16.6 leaves order to policy)."""
    return sorted(bindings, key=lambda b: (-b.q, -b.updated_at))


_COLUMNS = (
    "aor", "bkey", "contact", "params", "expires_at", "q", "call_id", "cseq", "instance", "reg_id",
    "flow_id", "transport", "source", "path", "user_agent", "pub_gruu", "temp_gruus", "registered_at",
    "updated_at",
)
_CREATE = """
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    bkey TEXT NOT NULL,
    contact TEXT NOT NULL,
    params TEXT NOT NULL,
    expires_at REAL NOT NULL,
    q REAL NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    instance TEXT,
    reg_id INTEGER,
    flow_id TEXT,
    transport TEXT NOT NULL,
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    user_agent TEXT,
    pub_gruu TEXT,
    temp_gruus TEXT NOT NULL,
    registered_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (aor, bkey)
) WITHOUT ROWID
"""
_INSERT = f"INSERT OR REPLACE INTO bindings ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_DELETE = "DELETE FROM bindings WHERE aor = ? AND bkey = ?"

Row = tuple[object, ...]


def _to_row(b: Binding) -> Row:
    return (
        b.aor, b.key, b.contact, json.dumps(b.params), b.expires_at, b.q, b.call_id, b.cseq, b.instance,
        b.reg_id, b.flow_id, b.transport, b.source, json.dumps(b.path), b.user_agent, b.pub_gruu,
        json.dumps(b.temp_gruus), b.registered_at, b.updated_at,
    )


def _from_row(r: sqlite3.Row) -> Binding:
    return Binding(
        aor=r["aor"], contact=r["contact"], expires_at=r["expires_at"], q=r["q"], call_id=r["call_id"],
        cseq=r["cseq"], instance=r["instance"], reg_id=r["reg_id"], flow_id=r["flow_id"],
        transport=r["transport"], source=r["source"], path=tuple(json.loads(r["path"])),
        user_agent=r["user_agent"], pub_gruu=r["pub_gruu"], temp_gruus=tuple(json.loads(r["temp_gruus"])),
        registered_at=r["registered_at"], updated_at=r["updated_at"],
        params=tuple((n, v) for n, v in json.loads(r["params"])), key=r["bkey"],
    )


class LocationStore:
    """Bindings by AOR, in memory, written through to SQLite at ``path`` (``None``: memory only).

    All methods are synchronous and meant for one thread (the event loop's). A write is one short
    transaction per registration; reads never touch the database.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        max_per_aor: int = DEFAULT_MAX_PER_AOR,
        max_total: int = DEFAULT_MAX_TOTAL,
        max_temp_gruus: int = DEFAULT_MAX_TEMP_GRUUS,
        now: float | None = None,
    ) -> None:
        self.max_per_aor = max_per_aor
        self.max_total = max_total
        self.max_temp_gruus = max_temp_gruus
        self._by_aor: dict[str, dict[str, Binding]] = {}
        self._by_flow: dict[str, set[tuple[str, str]]] = {}
        self._by_temp: dict[str, tuple[str, str]] = {}
        self._per_source: dict[str, int] = {}
        self._count = 0
        # (expires_at, aor, key); refreshes leave stale entries behind, skipped when popped and
        # dropped wholesale when they outnumber the live ones (see _compact).
        self._expiry: list[tuple[float, str, str]] = []
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._db = self._open(Path(path))
            self._load(now)

    # ---- persistence -------------------------------------------------------------------------------

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path))
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            with db:
                db.execute(_CREATE)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            db.close()
            raise RuntimeError(f"{path}: location schema version {version}, this code knows {SCHEMA_VERSION}")
        return db

    def _load(self, now: float | None) -> None:
        """Bring back what the last run stored, less what cannot be valid any more."""
        assert self._db is not None
        stale: list[tuple[str, str]] = []
        rows = self._db.execute("SELECT * FROM bindings ORDER BY updated_at DESC").fetchall()
        for row in rows:
            b = _from_row(row)
            if (now is not None and b.expires_at <= now) or b.websocket_flow:
                stale.append((b.aor, b.key))
                continue
            if b.flow_id is not None and b.transport in RELIABLE:
                # The connection died with the previous process. An outbound binding is its flow
                # (RFC 5626 §7: invalidate it); any other can still be reached at its contact.
                if b.outbound:
                    stale.append((b.aor, b.key))
                    continue
                b = replace(b, flow_id=None)
            # UDP flows keep their id: a UDP "flow" is the local socket and the remote address,
            # which exist again once we listen on the same address.
            if self._count >= self.max_total or len(self._by_aor.get(b.aor, ())) >= self.max_per_aor:
                stale.append((b.aor, b.key))
                continue
            self._insert(b)
        if stale:
            with self._db:
                self._db.executemany(_DELETE, stale)

    def _write(self, put: Iterable[Binding], delete: Iterable[tuple[str, str]]) -> None:
        """One transaction: write ``put`` (persistent bindings only), delete the ``delete`` keys.

        Every persistent binding in memory is on disk (write-through), so callers know what to
        delete without asking the database; WebSocket registrations never touch it at all.
        """
        if self._db is None:
            return
        rows = [_to_row(b) for b in put if b.persistent]
        gone = list(delete)
        if not rows and not gone:
            return
        try:
            with self._db:
                if gone:
                    self._db.executemany(_DELETE, gone)
                if rows:
                    self._db.executemany(_INSERT, rows)
        except sqlite3.Error as e:
            raise LocationStorageError(str(e)) from e

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ---- in-memory indexes -------------------------------------------------------------------------

    def _insert(self, b: Binding) -> None:
        """Add or replace ``b`` in every index (no bound check, no write)."""
        self._unindex(b.aor, b.key)
        self._by_aor.setdefault(b.aor, {})[b.key] = b
        self._count += 1
        if b.flow_id is not None:
            self._by_flow.setdefault(b.flow_id, set()).add((b.aor, b.key))
        for uri in b.temp_gruus:
            token = _token_of(uri)
            if token is not None:
                self._by_temp[token] = (b.aor, b.key)
        host = b.source_host
        self._per_source[host] = self._per_source.get(host, 0) + 1
        heapq.heappush(self._expiry, (b.expires_at, b.aor, b.key))
        self._compact()

    def _unindex(self, aor: str, key: str) -> Binding | None:
        bucket = self._by_aor.get(aor)
        b = bucket.pop(key, None) if bucket is not None else None
        if b is None:
            return None
        if not bucket:
            del self._by_aor[aor]
        self._count -= 1
        if b.flow_id is not None:
            flows = self._by_flow.get(b.flow_id)
            if flows is not None:
                flows.discard((aor, key))
                if not flows:
                    del self._by_flow[b.flow_id]
        for uri in b.temp_gruus:
            token = _token_of(uri)
            if token is not None and self._by_temp.get(token) == (aor, key):
                del self._by_temp[token]
        host = b.source_host
        n = self._per_source.get(host, 0) - 1
        if n > 0:
            self._per_source[host] = n
        else:
            self._per_source.pop(host, None)
        return b

    def _compact(self) -> None:
        if len(self._expiry) > 2 * self._count + 64:
            live = (b for bucket in self._by_aor.values() for b in bucket.values())
            self._expiry = [(b.expires_at, b.aor, b.key) for b in live]
            heapq.heapify(self._expiry)

    # ---- changes -----------------------------------------------------------------------------------

    def apply(self, aor: str, put: Iterable[Binding] = (), remove: Iterable[str] = ()) -> None:
        """Change the bindings of one AOR at once (RFC 3261 §10.3 step 7: all or nothing).

        ``put`` adds or replaces bindings (by ``key``), ``remove`` deletes keys. Raises
        :class:`LocationFull` before changing anything if a bound would be exceeded by a change that
        adds bindings, or :class:`LocationStorageError` if SQLite fails; either way nothing changed.
        """
        puts = list(put)
        for b in puts:
            if b.aor != aor:
                raise ValueError(f"binding for {b.aor} applied to {aor}")
        put_keys = {b.key for b in puts}
        bucket = self._by_aor.get(aor, {})
        removes = [k for k in remove if k in bucket and k not in put_keys]
        after = (set(bucket) - set(removes)) | put_keys
        if len(after) > len(bucket):
            if len(after) > self.max_per_aor:
                raise LocationFull("aor", self.max_per_aor)
            if self._count + len(after) - len(bucket) > self.max_total:
                raise LocationFull("total", self.max_total)
        # on disk: removed keys, and keys whose binding moves onto a WebSocket (not persisted)
        gone = [k for k in removes if bucket[k].persistent]
        gone += [b.key for b in puts if not b.persistent and (old := bucket.get(b.key)) and old.persistent]
        # disk first: if SQLite fails, memory is untouched and the REGISTER fails whole
        self._write(puts, [(aor, k) for k in gone])
        for k in removes:
            self._unindex(aor, k)
        for b in puts:
            self._insert(b)

    def remove(self, aor: str, key: str) -> Binding | None:
        """Forget one binding (for instance after a 430 Flow Failed, RFC 5626 §7)."""
        b = self._unindex(aor, key)
        if b is not None:
            self._write((), [(aor, key)])
        return b

    def flow_closed(self, flow_id: str) -> list[Binding]:
        """The transport lost ``flow_id``: remove the bindings that were that flow (RFC 5626 §7).

        Outbound and WebSocket bindings are removed and returned. Any other binding registered over
        the flow only forgets it: its contact may still be reachable by a new connection.
        """
        keys = self._by_flow.pop(flow_id, set())
        removed: list[Binding] = []
        kept: list[Binding] = []
        # memory first: the flow is gone whatever the disk says (a storage error still propagates)
        for aor, key in keys:
            b = self._by_aor.get(aor, {}).get(key)
            if b is None:
                continue
            if b.outbound or b.websocket_flow:
                self._unindex(aor, key)
                removed.append(b)
            else:
                nb = replace(b, flow_id=None)
                self._insert(nb)
                kept.append(nb)
        self._write(kept, [(b.aor, b.key) for b in removed if b.persistent])
        return removed

    def purge_expired(self, now: float) -> list[Binding]:
        """Remove and return every binding whose expiry has passed (cheap when none has)."""
        removed: list[Binding] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, aor, key = heapq.heappop(heap)
            b = self._by_aor.get(aor, {}).get(key)
            if b is not None and b.expires_at <= now:
                self._unindex(aor, key)
                removed.append(b)
        if removed:
            self._write((), [(b.aor, b.key) for b in removed if b.persistent])
        return removed

    # ---- queries -----------------------------------------------------------------------------------

    def lookup(self, aor: str | SipUri, now: float) -> list[Binding]:
        """Live bindings of ``aor`` (a ``SipUri.aor()`` string or a URI), best first."""
        key = aor.aor() if isinstance(aor, SipUri) else aor
        bucket = self._by_aor.get(key)
        if not bucket:
            return []
        return _order(b for b in bucket.values() if b.expires_at > now)

    def get(self, aor: str, key: str) -> Binding | None:
        """The stored binding ``key`` of ``aor``, expired or not."""
        return self._by_aor.get(aor, {}).get(key)

    def lookup_gruu(self, uri: str | SipUri, now: float) -> list[Binding]:
        """Live bindings a GRUU leads to: those of its AOR and instance only (RFC 5627 §5.3).

        Several bindings for one instance mean several outbound flows: RFC 5626 §7 wants them tried
        one at a time, best first. An empty list for a GRUU :meth:`knows_gruu` means 480, else 404.
        """
        target = self._gruu_target(uri)
        if target is None:
            return []
        aor, instance = target
        bucket = self._by_aor.get(aor, {})
        return _order(
            b for b in bucket.values()
            if b.expires_at > now and b.instance is not None and b.instance.lower() == instance
        )

    def knows_gruu(self, uri: str | SipUri) -> bool:
        """Whether ``uri`` is a GRUU that is still valid: any well-formed public GRUU (it lives as long
        as its AOR) or a temporary GRUU whose binding still exists (RFC 5627 §3.2)."""
        return self._gruu_target(uri) is not None

    def gruu_aor(self, uri: str | SipUri) -> str | None:
        """The AOR a GRUU we issued belongs to (to refuse a GRUU as a Contact: RFC 5627 §5.1)."""
        target = self._gruu_target(uri)
        return target[0] if target is not None else None

    def _gruu_target(self, uri: str | SipUri) -> tuple[str, str] | None:
        if isinstance(uri, str):
            try:
                parsed = parse_uri(uri)
            except SipParseError:
                return None
            if not isinstance(parsed, SipUri):
                return None
            uri = parsed
        gr = uri.param("gr")
        if gr is None:
            return None
        if gr:
            return uri.aor(), unquote(gr).lower()
        token = temp_gruu_token(uri)
        where = self._by_temp.get(token) if token is not None else None
        if where is None:
            return None
        b = self._by_aor.get(where[0], {}).get(where[1])
        if b is None or b.instance is None:
            return None
        return b.aor, b.instance.lower()

    def count(self) -> int:
        """Bindings held, including expired ones not purged yet."""
        return self._count

    def count_for_aor(self, aor: str) -> int:
        return len(self._by_aor.get(aor, ()))

    def count_for_source(self, host: str) -> int:
        """Bindings registered from ``host`` (as ``Source.host``), to bound what one client may hold."""
        return self._per_source.get(host, 0)

    def all(self, now: float) -> list[Binding]:
        """Every live binding, by AOR then best first (an operator's view)."""
        out: list[Binding] = []
        for aor in sorted(self._by_aor):
            out.extend(self.lookup(aor, now))
        return out

    def flows(self) -> list[str]:
        """Flow ids some binding depends on."""
        return list(self._by_flow)


_OWN_TEMP = "sip:" + TEMP_GRUU_PREFIX


def _token_of(gruu: str) -> str | None:
    """Token of a temporary GRUU held by a binding: always one we built, ``sip:tgr.TOKEN@host;gr``,
    so plain string slicing does (this runs for each of up to 16 GRUUs on every refresh)."""
    at = gruu.find("@")
    return gruu[len(_OWN_TEMP) : at] if gruu.startswith(_OWN_TEMP) and at > 0 else None
