"""The sans-I/O rules of a proxy (RFC 3261 §16) and the fix-ups that make browsers routable.

Everything here is a pure function of a message and what the gateway knows of itself; the asyncio
proxy (:mod:`rtc2sip.proxy.server`) decides where to send and owns the transactions.

Browsers put an unroutable ``.invalid`` host in their Via and Contact (RFC 7118 §5.2, §5.4). The
gateway keeps track of them with *flow tokens*: the id of the WebSocket flow (and, in a Contact, the
original URI) encoded into a URI parameter of an address that is ours. A request that later comes
back to that address is sent down the same WebSocket, as RFC 5626 §5.3 edge proxies do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from ..sip import (
    MAGIC_COOKIE,
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
    del_param,
    get_param,
    parse_name_addr,
    parse_uri,
    set_param,
)
from ..transport.base import Source

FLOW_PARAM = "r2sflow"
DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
SUPPORTED_OPTIONS = frozenset({"path", "outbound", "gruu", "100rel", "timer", "replaces", "norefersub"})

IsLocal = Callable[[str, "int | None"], bool]


def fix_via(req: Request, source: Source) -> None:
    """§18.2.1 and RFC 3581 §4: note where the request really came from in the top Via.

    ``received`` is added when the sent-by host differs from the packet's source; ``rport`` gets a
    value when the client asked for it. A WebSocket client's Via names a ``.invalid`` host and no
    rport (RFC 7118 §5.2): both are always filled so responses can be matched to the flow.
    """
    via = req.top_via
    changed = False
    if via.host.strip("[]") != source.host or source.websocket:
        via.set("received", source.host)
        changed = True
    if via.has("rport") or source.websocket:
        via.set("rport", str(source.port))
        changed = True
    if changed:
        req.replace_first_value("Via", str(via))


def encode_flow(flow_id: str, original: str | None = None) -> str:
    """A flow token: the flow id, plus the original URI (base64url) when a Contact was rewritten."""
    if original is None:
        return flow_id
    b = base64.urlsafe_b64encode(original.encode("utf-8", "surrogateescape")).decode("ascii").rstrip("=")
    return f"{flow_id}~{b}"


def decode_flow(token: str) -> tuple[str, str | None]:
    flow_id, sep, b = token.partition("~")
    if not sep:
        return flow_id, None
    try:
        original = base64.urlsafe_b64decode(b + "=" * (-len(b) % 4)).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return flow_id, None
    return flow_id, original


@dataclass(slots=True)
class RouteResult:
    """What loose-routing our own Route entries left behind (§16.4)."""

    flow_token: str | None = None  # from a Route or Record-Route entry of ours
    popped: int = 0


def pop_own_routes(req: Request, is_local: IsLocal) -> RouteResult:
    """§16.4: strict-router fix-up, then remove the Route entries that name us (two when we
    double-record-routed, RFC 5658), keeping the flow token of the last one: that entry names the
    side the request leaves by (the first names the side it came in on, whose flow leads back)."""
    res = RouteResult()
    uri = req.uri
    routes = req.values("Route")
    if isinstance(uri, SipUri) and routes and is_local(uri.host, uri.port) and uri.has("lr"):
        # the previous hop was a strict router: the real Request-URI is the last Route (§16.4)
        last = parse_name_addr(routes[-1])
        req.uri = last.uri
        token = get_param(uri.params, FLOW_PARAM)
        if token:
            res.flow_token = token
        _remove_last_value(req, "Route")
    while True:
        routes = req.values("Route")
        if not routes:  # no Route, or only empty ones ("Route: ,"): nothing of ours to pop
            break
        na = parse_name_addr(routes[0])
        ruri = na.uri
        if not isinstance(ruri, SipUri) or not is_local(ruri.host, ruri.port):
            break
        res.flow_token = ruri.param(FLOW_PARAM) or None
        req.pop_first_value("Route")
        res.popped += 1
    return res


def _remove_last_value(msg: Request, name: str) -> None:
    values = msg.values(name)
    msg.remove(name)
    for v in values[:-1]:
        msg.add(name, v)


def ruri_flow(req: Request, is_local: IsLocal) -> tuple[str, str | None] | None:
    """A Request-URI that is a Contact we rewrote: (flow id, original URI)."""
    uri = req.uri
    if not isinstance(uri, SipUri) or not is_local(uri.host, uri.port):
        return None
    token = uri.param(FLOW_PARAM)
    if not token:
        return None
    return decode_flow(token)


# Contact parameters that carry a browser's secret toward the gateway (webrtc2sip's ha1) and must
# never leave it, whether in a parameter or inside the flow token's copy of the original URI
SECRET_PARAMS = ("ha1",)


def _drop_secrets(*param_lists: list[tuple[str, str | None]]) -> None:
    for params in param_lists:
        for secret in SECRET_PARAMS:
            del_param(params, secret)


def _map_contacts(msg: Request | Response, change: Callable[[NameAddr], str | None]) -> None:
    """Rewrite each Contact value with ``change`` (None keeps it as it was); unparsable ones stay."""
    if not msg.has("Contact"):
        return
    out: list[str] = []
    changed = False
    for value in msg.values("Contact"):
        try:
            na = parse_name_addr(value)
        except SipParseError:
            out.append(value)
            continue
        new = change(na)
        out.append(value if new is None else new)
        changed = changed or new is not None
    if changed:
        msg.remove("Contact")
        for v in out:
            msg.add("Contact", v)


def rewrite_contacts(msg: Request | Response, host: str, port: int, transport: str, flow_id: str) -> None:
    """Replace a browser's Contact URIs by addresses of ours that carry the flow (RFC 7118 §5.4 makes
    them unroutable), so that requests sent to them later reach the browser's WebSocket."""

    def change(na: NameAddr) -> str | None:
        uri = na.uri
        if na.star or not isinstance(uri, SipUri) or uri.has(FLOW_PARAM):
            return None
        _drop_secrets(uri.params, na.params)
        token = encode_flow(flow_id, str(uri))
        new = SipUri("sip", uri.user, None, _uri_host(host), port, [], "")
        set_param(new.params, "transport", transport)
        if uri.has("ob"):
            set_param(new.params, "ob", None)
        set_param(new.params, FLOW_PARAM, token)
        na.uri = new
        return str(na)

    _map_contacts(msg, change)


def strip_secret_params(req: Request) -> None:
    """Remove webrtc2sip's ``ha1`` (a password equivalent, RFC 7616 §3.4.2) from the Request-URI and
    the Contacts of a request forwarded as it is (the breaker did not take it, the client is not on a
    WebSocket, whose Contacts :func:`rewrite_contacts` replaces): it never leaves the gateway."""
    if "ha1" in req.uri_text.lower():
        uri = req.uri
        if isinstance(uri, SipUri):
            _drop_secrets(uri.params)
            req.uri = uri
    if not any("ha1" in c.lower() for c in req.get_all("Contact")):
        return

    def change(na: NameAddr) -> str | None:
        uri = na.uri
        if na.star or not isinstance(uri, SipUri):
            return None
        _drop_secrets(uri.params, na.params)
        return str(na)

    _map_contacts(req, change)


def restore_contacts(msg: Request | Response, is_local: IsLocal) -> None:
    """Undo :func:`rewrite_contacts` on messages going down to the browser, so it sees its own URIs."""

    def change(na: NameAddr) -> str | None:
        uri = na.uri
        token = uri.param(FLOW_PARAM) if isinstance(uri, SipUri) else None
        if not token or not isinstance(uri, SipUri) or not is_local(uri.host, uri.port):
            return None
        original = decode_flow(token)[1]
        if not original:
            return None
        try:
            na.uri = parse_uri(original)
        except SipParseError:
            return None
        return str(na)

    _map_contacts(msg, change)


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def our_uri(host: str, port: int, transport: str, flow_token: str | None = None, user: str | None = None) -> str:
    """``sip:[user@]host:port;transport=x;lr[;r2sflow=...]``: one of our own Route/Record-Route/Path URIs."""
    u = SipUri("sip", user, None, _uri_host(host), port, [("transport", transport), ("lr", None)])
    if flow_token:
        u.params.append((FLOW_PARAM, flow_token))
    return str(u)


def add_record_route(
    req: Request,
    inbound: tuple[str, int, str],
    outbound: tuple[str, int, str],
    inbound_flow: str | None,
    outbound_flow: str | None,
) -> None:
    """Record-Route (§16.6 step 4), twice when the request crosses transports or addresses (RFC 5658):
    the lower entry names the interface the request came in on, the top one the interface it leaves by.
    A WebSocket side carries its flow token so in-dialog requests find the browser again."""
    in_uri = our_uri(inbound[0], inbound[1], inbound[2], inbound_flow)
    out_uri = our_uri(outbound[0], outbound[1], outbound[2], outbound_flow)
    if in_uri == out_uri:
        req.add("Record-Route", f"<{in_uri}>", top=True)
        return
    req.add("Record-Route", f"<{in_uri}>", top=True)
    req.add("Record-Route", f"<{out_uri}>", top=True)


def branch_for(req: Request, salt: str) -> str:
    """A branch that is the same for a retransmission of the same request and differs otherwise
    (§16.6 step 8), so stateless forwarding of ACK and loop detection stay consistent."""
    top = req.get("Via") or ""
    key = "|".join((salt, req.uri_text, req.call_id, str(req.cseq.number), top))
    return MAGIC_COOKIE + hashlib.blake2s(key.encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()


def decrement_max_forwards(req: Request) -> int:
    """§16.6 step 3: returns the value before decrementing (70 when absent, and then one is added)."""
    raw = req.get("Max-Forwards")
    value = int(raw) if raw is not None and raw.strip().isdigit() else 70
    if value > 0:
        req.set("Max-Forwards", str(value - 1))
    return value


def looped(req: Request, own_sent_by: Callable[[str, int | None], bool], limit: int = 3) -> bool:
    """§16.3 step 4 (simplified): the request already went through us more often than a spiral can
    explain. Counting our own Via entries catches loops that change the Request-URI on each turn."""
    if len(req.values("Via")) < limit:
        return False  # the usual case, decided without parsing a single Via
    n = 0
    for via in req.vias:
        if own_sent_by(via.host, via.port):
            n += 1
    return n >= limit
