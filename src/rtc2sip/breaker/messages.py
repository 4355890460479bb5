"""What crosses from one leg of a broken call to the other, and small helpers for the messages of
either leg: the headers carried (everything else is per dialog, RFC 3261 §12), the B2BUA's Contact
marker (§12.2.2: a late request for a gone dialog gets 481), tags (§19.3), URIs and From/To without
the client's parameters, the credentials an ACK repeats (§22.4).
"""

from __future__ import annotations

import os

from ..sip.headers import NameAddr, parse_name_addr
from ..sip.message import Request, Response
from ..sip.uri import SipUri
from .policy import CLIENT_PARAMS, strip_client_params

# A URI parameter in the Contacts the B2BUA gives out: a late request for a call already gone is
# answered 481 (§12.2.2) instead of being routed as if it were for a registered user.
B2B_PARAM = "r2sb"
ALLOW = "INVITE, ACK, CANCEL, BYE, UPDATE, INFO, MESSAGE, REFER, NOTIFY, OPTIONS, PRACK"

# Headers carried from one leg to the other. Everything else is per leg and never crosses: Via, Route,
# Contact, tags, Call-ID, CSeq, credentials of the other hop, and the client's ha1 (issue 3, item 3).
REQUEST_HEADERS = frozenset({
    "Subject", "Priority", "Alert-Info", "Call-Info", "P-Asserted-Identity", "P-Preferred-Identity",
    "Privacy", "Event", "Subscription-State", "Referred-By", "Info-Package", "Recv-Info", "Reason",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Accept", "Allow-Events", "Expires",
    "User-Agent", "Organization",
})
RESPONSE_HEADERS = frozenset({
    "WWW-Authenticate", "Proxy-Authenticate", "Retry-After", "Warning", "Reason", "Unsupported",
    "Error-Info", "Alert-Info", "Call-Info", "P-Asserted-Identity", "Accept", "Min-SE", "Allow-Events",
    "Server",
})
# Credentials a browser answered a relayed challenge with: reused on the legacy leg (issue 3 item 3).
CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization")


def new_tag() -> str:
    return os.urandom(6).hex()


def oneline(e: Exception) -> str:
    return str(e).replace("\r", " ").replace("\n", " ").replace('"', "'")[:120]


def user_of(uri: object) -> str | None:
    return uri.user if isinstance(uri, SipUri) else None


def safe_uri(uri: object) -> str:
    """A URI for a log line: without the client's parameters (ha1 is never logged)."""
    return str(strip_client_params(uri)) if isinstance(uri, SipUri) else str(uri)


def strip_na(na: NameAddr) -> NameAddr:
    """From/To for the other leg: no tag, no client parameters."""
    out = parse_name_addr(str(na), allow_star=False)
    out.params = [p for p in out.params if p[0].lower() not in ("tag", *CLIENT_PARAMS)]
    if isinstance(out.uri, SipUri):
        out.uri = strip_client_params(out.uri)
    return out


def carried(msg: Request | Response, allowed: frozenset[str]) -> list[tuple[str, str]]:
    return [(h[0], h[1]) for h in msg.headers if h[0] in allowed]


def credentials(req: Request | None) -> list[tuple[str, str]]:
    """§22.4 / §13.2.2.4: the ACK of a 2xx carries the credentials of its INVITE."""
    if req is None:
        return []
    return [(h, v) for h in CREDENTIAL_HEADERS for v in req.get_all(h)]


def direction(body: bytes) -> str:
    for d in (b"a=sendonly", b"a=recvonly", b"a=inactive"):
        if d in body:
            return d[2:].decode()
    return "sendrecv"
