"""ICE-lite for the gateway's WebRTC leg (RFC 8445 §2.5, §7.3, RFC 7675), sans I/O.

The gateway has a public (or, in tests, loopback) address and answers ``a=ice-lite``: it gathers
host candidates only, never sends checks and is always the controlled agent. The browser (a full
agent, controlling) checks from each of its candidates, relay and server-reflexive ones included, so
those need nothing special here: the address a valid check comes from is where media goes.

The agent is fed STUN datagrams and returns the response to send back (RFC 8445 §7.3: a Binding
success with XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY keyed with our ice-pwd and FINGERPRINT). It tracks:

- the selected address: the source of the latest valid check carrying USE-CANDIDATE (RFC 8445
  §7.3.1.5, §8.2: the controlling agent may nominate again, and the newest nomination wins), or,
  before any nomination, of the latest valid check, so that DTLS can start at once;
- which addresses passed a check: media from anywhere else is dropped (RFC 8445 §7.3.1.4 gives an
  address no trust before a check from it succeeded);
- consent (RFC 7675 §5.1): the browser's periodic checks are its consent; none for
  :data:`CONSENT_TIMEOUT` seconds means the path is gone.

Later slice: full ICE (the gateway checking and nominating, its own srflx candidate from
``stun-server`` / ``enable-icestun``, TCP candidates). Only needed when the gateway itself is behind
a NAT; ice-lite is what a gateway with a routable address should run (RFC 8445 §2.5).
"""

from __future__ import annotations

import secrets
import string

from aioice import stun

__all__ = ["CONSENT_TIMEOUT", "IceLiteAgent", "generate_password", "generate_ufrag"]

# RFC 7675 §5.1: consent expires 30 s after the last successful check.
CONSENT_TIMEOUT = 30.0
# Addresses remembered as validated; a browser checks from a handful of candidates at most, and a
# bound keeps a peer spraying checks from growing the table.
MAX_VALIDATED = 16
_ICE_CHARS = string.ascii_letters + string.digits + "+/"  # ice-char (RFC 8839 §5.4)

Address = tuple[str, int]


def generate_ufrag() -> str:
    """RFC 8839 §5.4: at least 24 bits of randomness (4 ice-chars); 8 chars give 48 bits."""
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(8))


def generate_password() -> str:
    """RFC 8839 §5.4: at least 128 bits of randomness (22 ice-chars); 24 chars give 144 bits."""
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(24))


class IceLiteAgent:
    """The controlled, lite side of one ICE session (one component: rtcp-mux and BUNDLE)."""

    def __init__(self, local_ufrag: str | None = None, local_pwd: str | None = None) -> None:
        self.local_ufrag = local_ufrag or generate_ufrag()
        self.local_pwd = local_pwd or generate_password()
        self.remote_ufrag: str | None = None
        self.remote_pwd: str | None = None
        self.selected: Address | None = None
        self.nominated = False
        self.last_check: float | None = None
        self.checks = 0
        self.rejected_checks = 0
        self._validated: dict[Address, float] = {}
        # During an ICE restart the browser keeps checking with the old credentials until it has our
        # answer (RFC 8445 §9): both are accepted until a check with the new ones succeeds.
        self._previous: tuple[str, str] | None = None

    # -- signalling ---------------------------------------------------------------------------------

    def set_remote(self, ufrag: str, pwd: str) -> bool:
        """The peer's credentials from its SDP; True when they changed (an ICE restart, RFC 8839 §4.4.1.1.1)."""
        changed = self.remote_ufrag is not None and (ufrag, pwd) != (self.remote_ufrag, self.remote_pwd)
        self.remote_ufrag, self.remote_pwd = ufrag, pwd
        return changed

    def restart(self) -> None:
        """New local credentials (RFC 8445 §9); the selected address stays until a new nomination."""
        self._previous = (self.local_ufrag, self.local_pwd)
        self.local_ufrag = generate_ufrag()
        self.local_pwd = generate_password()
        self.nominated = False

    # -- datagrams ----------------------------------------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float) -> bytes | None:
        """Handle one STUN datagram from ``addr``; returns the response to send back, if any."""
        try:
            request = stun.parse_message(data)
        except ValueError:
            return None  # not STUN, or a bad FINGERPRINT (RFC 8489 §7.3): silently dropped
        if request.message_method != stun.Method.BINDING or request.message_class != stun.Class.REQUEST:
            return None  # indications and stray responses: a lite agent sends no requests
        username = request.attributes.get("USERNAME")
        if not isinstance(username, str) or "MESSAGE-INTEGRITY" not in request.attributes:
            self.rejected_checks += 1
            return self._error(request, 400, "Bad Request", None)  # RFC 8445 §7.3: short-term auth required
        local_ufrag, _, remote_ufrag = username.partition(":")
        password = self._password_for(local_ufrag)
        if password is None or not request.check_message_integrity(password.encode()):
            self.rejected_checks += 1
            return self._error(request, 401, "Unauthorized", None)  # RFC 8489 §9.1.3
        if self.remote_ufrag is not None and remote_ufrag != self.remote_ufrag and self._previous is None:
            # A check for another session of the same peer, or a stale one: not ours to answer.
            self.rejected_checks += 1
            return None
        if self._previous is not None and local_ufrag == self.local_ufrag:
            self._previous = None  # the restart went through
        self.checks += 1
        self.last_check = now
        if addr not in self._validated and len(self._validated) >= MAX_VALIDATED:
            oldest = min(self._validated, key=self._validated.__getitem__)
            del self._validated[oldest]
        self._validated[addr] = now
        if "USE-CANDIDATE" in request.attributes:
            self.selected = addr
            self.nominated = True
        elif not self.nominated:
            self.selected = addr
        response = stun.Message(
            stun.Method.BINDING,
            stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
            attributes={"XOR-MAPPED-ADDRESS": addr},
        )
        response.add_message_integrity(password.encode())  # also adds FINGERPRINT (RFC 8445 §7.3)
        return bytes(response)

    def _password_for(self, ufrag: str) -> str | None:
        if ufrag == self.local_ufrag:
            return self.local_pwd
        if self._previous is not None and ufrag == self._previous[0]:
            return self._previous[1]
        return None

    @staticmethod
    def _error(request: stun.Message, code: int, reason: str, password: str | None) -> bytes:
        response = stun.Message(
            stun.Method.BINDING,
            stun.Class.ERROR,
            transaction_id=request.transaction_id,
            attributes={"ERROR-CODE": (code, reason)},
        )
        if password is None:
            response.add_fingerprint()
        else:
            response.add_message_integrity(password.encode())
        return bytes(response)

    # -- state --------------------------------------------------------------------------------------

    def is_validated(self, addr: Address) -> bool:
        return addr in self._validated

    @property
    def connected(self) -> bool:
        return self.selected is not None

    def consent_expired(self, now: float) -> bool:
        """RFC 7675 §5.1: no valid check for :data:`CONSENT_TIMEOUT` seconds after the first one."""
        return self.last_check is not None and now - self.last_check > CONSENT_TIMEOUT
