"""The registrar: REGISTER in, response out (RFC 3261 §10.3, RFC 3327, RFC 5626 §6, RFC 5627 §5.1).

Sans-I/O: :meth:`Registrar.handle` takes a parsed request, the flow it came on and the time, changes
the :class:`~rtc2sip.proxy.location.LocationStore` and returns the response to send. Steps 1, 3 and 4
of §10.3 (is this our Request-URI, who is the sender, may they touch this AOR) belong to the caller:
it routes only REGISTERs for its domains here, after authenticating them.

Answers besides 200: 400 (malformed Contact, ``*`` misuse, bad ``expires``/``q``/``reg-id``, several
live contacts next to a ``reg-id``), 403 (a contact that loops back: the AOR or one of its GRUUs; too
many bindings from one source), 404 (To not in our domains), 405, 420 (unknown Require; Path without
``Supported: path``), 423 (with Min-Expires), 439 (reg-id through a first hop without outbound, UA
requiring it), 500 (an older CSeq in the same Call-ID, §10.3 step 7; or a storage failure), 503 (a
store bound is reached).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import quote

from ..sip import (
    NameAddr,
    Param,
    Request,
    Response,
    SipParseError,
    SipUri,
    Uri,
    make_response,
    params_text,
    parse_int_header,
    parse_uri,
    unquote_string,
)
from ..transport.base import Source
from .location import (
    TEMP_GRUU_PREFIX,
    Binding,
    LocationError,
    LocationFull,
    LocationStore,
    contact_key,
)

# Option tags this registrar implements (RFC 3327, RFC 5626, RFC 5627).
SUPPORTED = ("path", "outbound", "gruu")
# Contact parameters the registrar sets itself and never stores (RFC 3261 §10.3, RFC 5627 §5.1).
_OWN_PARAMS = frozenset({"expires", "pub-gruu", "temp-gruu", "temp-gruu-cookie"})
# qvalue of RFC 3261 §25.1
_QVALUE = re.compile(r"^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$")
# delta-seconds; values past 2**32-1 are taken as 2**32-1 (§20.19), i.e. clipped to max_expires anyway
_DIGITS = re.compile(r"^\d{1,20}$")
_MAX_REG_ID = 2**31 - 1
# what a URI parameter value may hold unescaped (RFC 3261 §25.1 paramchar), for the "gr" of a pub-gruu
_GR_SAFE = ":-_.!~*'()[]/&+$"


class _Reject(Exception):
    """Abort the whole REGISTER with this response (§10.3: a registration succeeds or fails whole)."""

    def __init__(self, status: int, reason: str | None = None, headers: list[tuple[str, str]] | None = None):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


@dataclass(slots=True)
class _Contact:
    """One Contact value of the request, checked and normalised."""

    na: NameAddr
    expires: int
    q: float
    instance: str | None
    reg_id: int | None
    key: str


class Registrar:
    """A registrar for ``domains`` backed by ``store``.

    ``min_expires``/``default_expires``/``max_expires`` bound the registration interval (§10.3 step 7);
    ``max_per_source`` bounds the bindings one source host may hold (``None``: no bound; leave it off
    behind an edge proxy, where every REGISTER comes from the proxy). ``flow_timer`` is the
    Flow-Timer sent to outbound UAs on a direct reliable flow (RFC 5626 §4.4.1, §5.4).
    """

    def __init__(
        self,
        store: LocationStore,
        domains: set[str],
        min_expires: int = 60,
        default_expires: int = 3600,
        max_expires: int = 86400,
        max_per_source: int | None = None,
        *,
        flow_timer: int = 120,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        self.store = store
        self.domains = {d.lower().rstrip(".") for d in domains}
        self.min_expires = min_expires
        self.default_expires = default_expires
        self.max_expires = max_expires
        self.max_per_source = max_per_source
        self.flow_timer = flow_timer

    # ---- entry point -------------------------------------------------------------------------------

    def handle(self, req: Request, source: Source, now: float) -> Response:
        """Process one REGISTER (RFC 3261 §10.3) and return the response to send."""
        try:
            return self._handle(req, source, now)
        except _Reject as r:
            resp = self._response(req, r.status, r.reason)
            for name, value in r.headers:
                resp.add(name, value)
            return resp
        except SipParseError as e:
            return self._response(req, e.status if 400 <= e.status < 600 else 400, e.reason)
        except LocationError as e:
            # storage failed: nothing changed, the UA will retry (§21.5.1)
            return self._response(req, 500, f"Location Store Error: {type(e).__name__}")

    def _handle(self, req: Request, source: Source, now: float) -> Response:
        if req.method != "REGISTER":
            raise _Reject(405, None, [("Allow", "REGISTER")])
        # §8.2.2.3: a UAS refuses option tags it does not understand
        unknown = [t for t in req.option_tags("Require") if t not in SUPPORTED]
        if unknown:
            raise _Reject(420, None, [("Unsupported", ", ".join(unknown))])

        aor = self._aor(req)
        self.store.purge_expired(now)
        existing = {b.key: b for b in self.store.lookup(aor, now)}
        supported = set(req.option_tags("Supported"))

        # RFC 3327 §5.3: Path is honoured only if the UA said it understands it; the recommended
        # answer otherwise is 420, so the UA learns a proxy inserted itself behind its back
        path = tuple(req.values("Path"))
        if path and "path" not in supported:
            raise _Reject(420, None, [("Unsupported", "path")])

        contacts = req.addresses("Contact")
        expires_header = self._expires_header(req)
        call_id, cseq = req.call_id, req.cseq.number

        if not contacts:  # §10.3 step 6: a query
            return self._ok(req, aor, source, path=(), outbound=False, now=now)

        if any(c.star for c in contacts):
            # §10.3 step 6: "*" only alone and only with Expires: 0
            if len(contacts) != 1 or expires_header != 0:
                raise _Reject(400, "Invalid Wildcard Contact")
            for b in existing.values():
                self._check_order(b, call_id, cseq)
            self.store.apply(aor, remove=list(existing))
            return self._ok(req, aor, source, path=(), outbound=False, now=now)

        direct = len(req.vias) == 1
        first_hop_ok = direct or self._path_has_ob(req)
        aor_key = parse_uri(aor).key()
        parsed = [self._contact(na, aor, aor_key, expires_header, supported, first_hop_ok) for na in contacts]
        # RFC 5626 §6: a reg-id registers one flow; several live contacts next to one is malformed
        live = [c for c in parsed if c.expires > 0]
        if len(live) > 1 and any(c.reg_id is not None for c in live):
            raise _Reject(400, "Multiple Contacts With reg-id")

        gruu = "gruu" in supported
        changes: dict[str, Binding | None] = {}
        for c in parsed:
            old = existing.get(c.key)
            if old is not None:
                self._check_order(old, call_id, cseq)
            if c.expires == 0:
                changes[c.key] = None
                continue
            changes[c.key] = self._binding(req, c, old, aor, source, direct, path, gruu, now)

        puts = [b for b in changes.values() if b is not None]
        removes = [k for k, b in changes.items() if b is None and k in existing]
        self._check_source_limit(source, existing, puts, removes)
        try:
            self.store.apply(aor, puts, removes)
        except LocationFull as e:
            # the reason Kamailio and OpenSIPS use; 503 tells the UA to try elsewhere or later
            reason = "Too Many Registered Contacts" if e.scope == "aor" else "Registrar Full"
            raise _Reject(503, reason) from None

        # RFC 5626 §6: Require: outbound only if outbound rules were applied and the UA supports them
        outbound = "outbound" in supported and any(b.outbound for b in puts)
        return self._ok(req, aor, source, path=path if puts else (), outbound=outbound, now=now)

    # ---- request checks ----------------------------------------------------------------------------

    def _aor(self, req: Request) -> str:
        """§10.3 step 5: the AOR is the To URI, canonicalised; it must be one of our domains."""
        to = req.to.uri
        if not isinstance(to, SipUri) or to.host_lower.rstrip(".") not in self.domains or not to.user:
            raise _Reject(404, "Not Found")
        return to.aor()

    @staticmethod
    def _expires_header(req: Request) -> int | None:
        raw = req.get("Expires")
        if raw is None:
            return None
        return parse_int_header("Expires", raw, limit=2**63)

    @staticmethod
    def _check_order(old: Binding, call_id: str, cseq: int) -> None:
        """§10.3 step 7: within one Call-ID a REGISTER older than the binding must fail."""
        if old.call_id == call_id and cseq <= old.cseq:
            raise _Reject(500, "Out Of Order CSeq")

    @staticmethod
    def _path_has_ob(req: Request) -> bool:
        """RFC 5626 §6: outbound applies behind a first-hop proxy only if it flagged its Path with
        ``ob``. §5.1 allows only the first hop to add ``ob``, so finding it on any Path value
        (whichever end "first" means) is the same test."""
        return any(isinstance(p.uri, SipUri) and p.uri.has("ob") for p in req.addresses("Path"))

    def _contact(
        self,
        na: NameAddr,
        aor: str,
        aor_key: tuple[object, ...],
        expires_header: int | None,
        supported: set[str],
        first_hop_ok: bool,
    ) -> _Contact:
        raw = na.param("expires")
        if raw is not None:
            if not _DIGITS.match(raw):
                raise _Reject(400, "Bad Contact expires")
            requested = int(raw)
        elif expires_header is not None:
            requested = expires_header
        else:
            requested = self.default_expires
        # §10.3 step 7: 423 only for 0 < interval < 1 hour and below our minimum
        if 0 < requested < 3600 and requested < self.min_expires:
            raise _Reject(423, None, [("Min-Expires", str(self.min_expires))])
        expires = min(requested, self.max_expires)

        q = 1.0
        qraw = na.param("q")
        if qraw is not None:
            if not _QVALUE.match(qraw):
                raise _Reject(400, "Bad Contact q")
            q = float(qraw)

        instance_raw = na.param("+sip.instance")
        instance = unquote_string(instance_raw).strip() if instance_raw else None
        if instance is not None:
            instance = instance.removeprefix("<").removesuffix(">") or None

        reg_id: int | None = None
        rraw = na.param("reg-id")
        if rraw is not None:
            if not rraw.isdigit() or not 1 <= int(rraw) <= _MAX_REG_ID:
                raise _Reject(400, "Bad reg-id")
            reg_id = int(rraw)
            if instance is None:
                reg_id = None  # RFC 5626 §6: reg-id without instance is ignored
            elif not first_hop_ok:
                if "outbound" in supported:
                    raise _Reject(439)
                reg_id = None

        if expires > 0:
            self._check_loop(na.uri, aor, aor_key, instance is not None)
        return _Contact(na, expires, q, instance, reg_id, contact_key(na.uri, instance, reg_id))

    def _check_loop(self, uri: Uri, aor: str, aor_key: tuple[object, ...], has_instance: bool) -> None:
        """RFC 5627 §5.1: a contact that is the AOR, or one of its GRUUs, would route to itself."""
        if not isinstance(uri, SipUri):
            if has_instance:
                raise _Reject(403, "Contact Must Be A SIP URI")
            return
        if uri.key() == aor_key:
            raise _Reject(403, "Contact Is The Address-of-Record")
        if uri.has("gr") and (uri.aor() == aor or self.store.gruu_aor(uri) == aor):
            raise _Reject(403, "Contact Is A GRUU")

    def _check_source_limit(
        self, source: Source, existing: dict[str, Binding], puts: list[Binding], removes: list[str]
    ) -> None:
        if self.max_per_source is None:
            return
        host = source.host
        delta = sum(1 for b in puts if (old := existing.get(b.key)) is None or old.source_host != host)
        delta -= sum(1 for k in removes if existing[k].source_host == host)
        if delta > 0 and self.store.count_for_source(host) + delta > self.max_per_source:
            raise _Reject(403, "Too Many Registrations From Source")

    # ---- bindings ----------------------------------------------------------------------------------

    def _binding(
        self,
        req: Request,
        c: _Contact,
        old: Binding | None,
        aor: str,
        source: Source,
        direct: bool,
        path: tuple[str, ...],
        gruu: bool,
        now: float,
    ) -> Binding:
        params: tuple[Param, ...] = tuple((n, v) for n, v in c.na.params if n.lower() not in _OWN_PARAMS)
        pub_gruu: str | None = None
        temps: tuple[str, ...] = ()
        if c.instance is not None and isinstance(c.na.uri, SipUri):
            pub_gruu = f"{aor};gr={quote(c.instance, safe=_GR_SAFE)}"
            # RFC 5627 §5.1: a new Call-ID means the UA restarted and flushes its temporary GRUUs
            if old is not None and old.call_id == req.call_id:
                temps = old.temp_gruus
            if gruu:
                temps = (*temps, self._new_temp_gruu(aor))[-self.store.max_temp_gruus :]
        return Binding(
            aor=aor,
            contact=str(c.na.uri),
            expires_at=now + c.expires,
            q=c.q,
            call_id=req.call_id,
            cseq=req.cseq.number,
            instance=c.instance,
            reg_id=c.reg_id,
            # only a flow that reaches the UA itself is worth remembering (RFC 5626 §6)
            flow_id=source.flow_id if direct else None,
            transport=source.transport,
            source=source.as_uri(),
            path=path,
            user_agent=req.get("User-Agent"),
            pub_gruu=pub_gruu,
            temp_gruus=temps,
            registered_at=old.registered_at if old is not None else now,
            updated_at=now,
            params=params,
            key=c.key,
        )

    @staticmethod
    def _new_temp_gruu(aor: str) -> str:
        """RFC 5627 §3.2: unique and unlinkable to the AOR or instance, so 128 random bits."""
        token = base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()
        host = aor.partition("@")[2]
        uri = f"sip:{TEMP_GRUU_PREFIX}{token}@{host};gr"
        return uri

    # ---- responses ---------------------------------------------------------------------------------

    @staticmethod
    def _tag(req: Request) -> str:
        # Derived from the request so a retransmission gets the same tag without any state.
        seed = "|".join((req.call_id, req.get("CSeq") or "", req.get("Via") or "", req.get("From") or ""))
        return hashlib.blake2s(seed.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()

    def _response(self, req: Request, status: int, reason: str | None = None) -> Response:
        try:
            tag: str | None = self._tag(req)
        except SipParseError:
            tag = None
        resp = make_response(req, status, reason, to_tag=tag)
        # §10.3: a registrar never puts Record-Route in a response to REGISTER
        resp.remove("Record-Route")
        return resp

    def _ok(
        self, req: Request, aor: str, source: Source, *, path: tuple[str, ...], outbound: bool, now: float
    ) -> Response:
        """§10.3 step 8: 200 with every current binding, each with the interval we granted."""
        resp = self._response(req, 200)
        gruu = "gruu" in req.option_tags("Supported")
        for b in self.store.lookup(aor, now):
            resp.add("Contact", self.contact_value(b, now, gruu))
        if path:
            resp.add("Path", ", ".join(path))  # RFC 3327 §5.3: echo this request's Path
        if outbound:
            resp.add("Require", "outbound")
            # RFC 5626 §5.4, §6: the keep-alive interval, when we hold the UA's connection ourselves
            if source.reliable and len(req.vias) == 1:
                resp.add("Flow-Timer", str(self.flow_timer))
        resp.add("Supported", ", ".join(SUPPORTED))
        resp.add("Date", formatdate(now, usegmt=True))
        return resp

    @staticmethod
    def contact_value(b: Binding, now: float, gruu: bool = False) -> str:
        """A Contact value for ``b`` as a 200 lists it: stored parameters, ``expires`` and, for a UA
        that supports GRUU, ``pub-gruu`` and ``temp-gruu`` (RFC 5627 §5.1)."""
        value = f"<{b.contact}>{params_text(list(b.params))};expires={b.expires_in(now)}"
        if gruu and b.pub_gruu is not None:
            value += f';pub-gruu="{b.pub_gruu}"'
            if b.temp_gruu is not None:
                value += f';temp-gruu="{b.temp_gruu}"'
        return value


__all__ = ["SUPPORTED", "Registrar"]
