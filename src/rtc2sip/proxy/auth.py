"""Who may use the proxy: digest authentication (RFC 3261 §22.2, the registrar's 401; §22.3, the
proxy's 407; RFC 7616 and RFC 8760 through :mod:`rtc2sip.sip.digest`), a user changing only its own
bindings (§10.3 steps 3-4), and the gateway's "not an open relay" rule for foreign domains.

Sans-I/O: a check returns None (go on) or the :class:`Refusal` to answer with; the proxy sends it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from ..sip import DigestServer, Outcome, find_credentials
from ..sip.errors import SipParseError
from ..sip.message import Request
from ..sip.uri import SipUri
from ..transport.base import Source
from .handlers import LocalServices
from .location import LocationStore
from .throttle import Throttle
from .users import UserStore


@dataclass(slots=True)
class Policy:
    """What the proxy lets through (issue: "not an open relay")."""

    domains: frozenset[str]
    trusted: bool = True  # every listener on loopback: everything is trusted
    open_relay: bool = False
    auth_required: bool = False
    upstream: SipUri | None = None
    users: dict[str, str] = field(default_factory=dict)
    digest_algorithms: tuple[str, ...] = ("MD5",)  # see GatewayOptions.digest_algorithms


class Refusal(NamedTuple):
    """The final response a request gets instead of being routed."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


class Gatekeeper:
    """The digest server and the rules of :class:`Policy`; ``user_store`` holds the SQLite users
    beside the TOML ones."""

    def __init__(self, policy: Policy, store: LocationStore, user_store: UserStore | None = None,
                 nonce_lifetime: float = 300.0, throttle: Throttle | None = None) -> None:
        self.policy = policy
        self.throttle = throttle
        self.store = store
        self.user_store = user_store
        self.digest = DigestServer(
            next(iter(sorted(policy.domains)), "rtc2sip"), os.urandom(32), nonce_lifetime=nonce_lifetime,
            algorithms=policy.digest_algorithms,
        )

    def relay_refusal(self, req: Request, source: Source, services: LocalServices | None) -> Refusal | None:
        """Not an open relay: beyond loopback, only registered or authenticated sources may send
        requests to domains that are not ours (requests *for* local users never get here)."""
        p = self.policy
        if p.trusted or p.open_relay:
            return None
        if req.method == "ACK" or (services is not None and services.is_source(source.host, source.port)):
            return None  # our own services' in-dialog MESSAGE and BYE
        try:
            aor = req.from_.uri
        except SipParseError:
            aor = None
        if isinstance(aor, SipUri):
            for b in self.store.lookup(aor.aor(), time.time()):
                if b.flow_id == source.flow_id or b.source.split(";")[0].endswith(f"{source.host}:{source.port}"):
                    return None
        have_users = bool(p.users) or (self.user_store is not None and len(self.user_store) > 0)
        if not have_users:
            return Refusal(403, "Relaying Denied")
        return self.auth_refusal(req, "Proxy-Authorization", 407, None, source.host)

    def auth_refusal(self, req: Request, header: str, status: int, owner: str | None = None,
                     source_host: str | None = None) -> Refusal | None:
        """Digest-authenticate ``req``: None when it is, else the challenge (``status`` 401 or 407);
        with ``owner``, the user must be that one (§10.3 steps 3-4), else 403. Credentials that fail
        count against ``source_host`` in the throttle (a password being guessed)."""
        now = time.time()
        creds = find_credentials(req.get_all(header), self.digest.realm)
        if creds is not None:
            result = self.digest.verify(creds, req.method, now, self._lookup_password, request_uri=req.uri_text)
            if result.outcome is Outcome.ACCEPTED:
                if owner is not None and result.username != owner:
                    return Refusal(403, "Forbidden")
                return None
            stale = result.outcome is Outcome.STALE
            if not stale and self.throttle is not None and source_host is not None:
                self.throttle.auth_failed(source_host, time.monotonic())
        else:
            stale = False
        challenge_header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        return Refusal(status, None, tuple((challenge_header, c) for c in self.digest.challenge(now, stale=stale)))

    def _lookup_password(self, username: str, realm: str, algorithm: str) -> str | None:
        password = self.policy.users.get(username)
        if password is None and self.user_store is not None:
            password = self.user_store.password(username)
        return password
