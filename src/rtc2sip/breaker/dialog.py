"""SIP dialogs (RFC 3261 §12), sans-I/O: the state one side of a call keeps between transactions.

A :class:`Dialog` is identified by its Call-ID, local tag and remote tag (§12). It builds the requests
its user sends inside it (§12.2.1.1: Request-URI, Route, CSeq, From/To with tags, Contact on target
refresh requests), the ACK of a 2xx (§13.2.2.4), PRACK (RFC 3262 §7.2), and checks the requests that
arrive in it (§12.2.2: tags match, CSeq grows, target refreshed). It never adds a Via and never sends:
the caller picks the transport, adds the Via with its branch and hands the request to a transaction.

A UAC dialog starts *before* it exists on the wire (``remote_tag`` is None) so that the initial
request is built by the same code; the first tagged response binds it (§12.1.2), and
:meth:`Dialog.fork` gives the dialog of another UAS that answered the same request (§13.2.2.4).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import StrEnum

from ..sip import NameAddr, Request, Response, SipParseError, SipUri, make_response, parse_name_addr, parse_uri

__all__ = ["TARGET_REFRESH", "Dialog", "DialogError", "State", "new_call_id", "new_tag"]

# Requests that carry a Contact and may change the remote target (§12.2, RFC 3311 §5.1, RFC 6665 §4.1).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


class DialogError(SipParseError):
    """An in-dialog request the dialog refuses; ``status`` is the response to send (500, 481)."""


class State(StrEnum):
    INIT = "init"  # UAC: the initial request is out, no tagged response yet
    EARLY = "early"  # a tagged 1xx (§12.1)
    CONFIRMED = "confirmed"  # a 2xx
    TERMINATED = "terminated"


def new_tag() -> str:
    """§19.3: at least 32 bits of randomness."""
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    """§8.1.1.4: globally unique; random so it says nothing of the other leg's Call-ID."""
    return f"{secrets.token_hex(10)}@{host}"


def _without_tag(na: NameAddr) -> NameAddr:
    uri = na.uri.copy()
    return NameAddr(uri, na.display, [p for p in na.params if p[0].lower() != "tag"])


def _with_tag(na: NameAddr, tag: str | None) -> str:
    out = _without_tag(na)
    if tag is not None:
        out.params.append(("tag", tag))
    return str(out)


def _contact_uri(msg: Request | Response) -> str | None:
    """The URI of the (single, §12.1.1) Contact, or None."""
    values = msg.values("Contact")
    if not values:
        return None
    try:
        return str(parse_name_addr(values[0]).uri)
    except SipParseError:
        return None


@dataclass(eq=False, slots=True)
class Dialog:
    """One dialog as seen by one side. Build with :meth:`uac` or :meth:`uas`."""

    call_id: str
    local_tag: str
    remote_tag: str | None
    local: NameAddr  # our address (From of our requests), without tag
    remote: NameAddr  # theirs (To of our requests), without tag
    remote_target: str  # their Contact URI (§12.1.1)
    local_contact: str  # our Contact header value
    local_seq: int
    remote_seq: int | None = None
    route_set: list[str] = field(default_factory=list)  # Route values, in the order they are sent
    state: State = State.INIT
    is_uac: bool = True
    invite_seq: int = 0  # CSeq number of our last INVITE: its ACK reuses it (§13.2.2.4)

    # ---- creation ------------------------------------------------------------------------------

    @classmethod
    def uac(
        cls,
        call_id: str,
        local: str,
        remote: str,
        target: str,
        local_contact: str,
        *,
        cseq: int = 1,
        route_set: list[str] | None = None,
        local_tag: str | None = None,
    ) -> Dialog:
        """The dialog a UAC is about to create (§8.1.1, §12.1.2): its initial request comes from
        :meth:`request`; ``route_set`` preloads Route (an outbound proxy, a registered Path)."""
        return cls(
            call_id=call_id,
            local_tag=local_tag or new_tag(),
            remote_tag=None,
            local=_without_tag(parse_name_addr(local, allow_star=False)),
            remote=_without_tag(parse_name_addr(remote, allow_star=False)),
            remote_target=target,
            local_contact=local_contact,
            local_seq=cseq - 1,
            route_set=list(route_set or ()),
        )

    @classmethod
    def uas(cls, request: Request, local_contact: str, local_tag: str | None = None) -> Dialog:
        """§12.1.1: the dialog a UAS creates with its 1xx/2xx to ``request``. Route set = Record-Route
        in order, remote target = Contact, remote sequence = the request's CSeq."""
        contact = _contact_uri(request)
        if contact is None:
            raise DialogError(400, "Missing Contact in a dialog-creating request")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag or new_tag(),
            remote_tag=request.from_.tag,
            local=_without_tag(request.to),
            remote=_without_tag(request.from_),
            remote_target=contact,
            local_contact=local_contact,
            local_seq=0,
            remote_seq=request.cseq.number,
            route_set=request.values("Record-Route"),
            state=State.EARLY,
            is_uac=False,
        )

    def fork(self, response: Response) -> Dialog:
        """The dialog of another UAS answering our initial request (§12.1.2, §13.2.2.4: a second
        2xx gets its ACK, then usually a BYE)."""
        d = Dialog(self.call_id, self.local_tag, None, self.local, self.remote, self.remote_target,
                   self.local_contact, self.local_seq, route_set=[], invite_seq=self.invite_seq)
        d.on_response(response, force=True)
        return d

    # ---- UAC: responses to the initial request -------------------------------------------------

    def on_response(self, response: Response, *, force: bool = False) -> bool:
        """A response to our dialog-creating request (§12.1.2). Returns False when it belongs to
        another dialog (a different To tag once this one is confirmed): see :meth:`fork`.

        The first tagged 1xx makes the dialog early; a 2xx confirms it. Route set and remote target
        come from the response (Record-Route reversed, Contact); an early dialog takes those of the
        latest UAS that answered, a confirmed one never changes them again except by target refresh.
        """
        status = response.status
        tag = response.to.tag
        if status <= 100 or status >= 300 or tag is None:
            return True
        if self.state is State.CONFIRMED and not force:
            return tag == self.remote_tag
        self.remote_tag = tag
        self.route_set = list(reversed(response.values("Record-Route")))
        contact = _contact_uri(response)
        if contact is not None:
            self.remote_target = contact
        self.state = State.CONFIRMED if status >= 200 else State.EARLY
        return True

    # ---- building requests ---------------------------------------------------------------------

    def _routing(self) -> tuple[str, list[str]]:
        """§12.2.1.1: Request-URI and Route for a loose (``lr``) or strict first route."""
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0])
        if isinstance(first.uri, SipUri) and not first.uri.has("lr"):
            # strict router: it becomes the Request-URI, the remote target goes last in Route
            uri = first.uri.copy()
            uri.headers = ""
            return str(uri), [*self.route_set[1:], f"<{self.remote_target}>"]
        return self.remote_target, list(self.route_set)

    def next_hop(self) -> str:
        """The URI whose address the request goes to (§8.1.2, RFC 3263): first Route, else target."""
        if self.route_set:
            return str(parse_name_addr(self.route_set[0]).uri)
        return self.remote_target

    def request(
        self,
        method: str,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        *,
        cseq: int | None = None,
    ) -> Request:
        """A request in this dialog, or the initial one while ``remote_tag`` is None (§12.2.1.1,
        §8.1.1). Takes the next local CSeq unless ``cseq`` is given. No Via: the sender adds it.
        An ACK is built in a terminated dialog too: a 2xx that crossed our BYE still needs one."""
        if self.state is State.TERMINATED and method != "ACK":
            raise DialogError(481, "Dialog terminated")
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        if method == "INVITE":
            self.invite_seq = cseq
        ruri, routes = self._routing()
        hdrs: list[list[str]] = [["Route", r] for r in routes]
        hdrs += [
            ["Max-Forwards", "70"],
            ["From", _with_tag(self.local, self.local_tag)],
            ["To", _with_tag(self.remote, self.remote_tag)],
            ["Call-ID", self.call_id],
            ["CSeq", f"{cseq} {method}"],
        ]
        if method in TARGET_REFRESH:
            hdrs.append(["Contact", self.local_contact])
        for name, value in headers or ():
            hdrs.append([name, value])
        if body:
            hdrs.append(["Content-Type", content_type or "application/sdp"])
        return Request(method, ruri, hdrs, body)

    def ack(self, body: bytes = b"", content_type: str | None = None,
            headers: list[tuple[str, str]] | None = None) -> Request:
        """§13.2.2.4: the ACK of a 2xx to our last INVITE: same CSeq number, method ACK, built like
        any in-dialog request (it is end to end; its own Via branch)."""
        return self.request("ACK", body, content_type, headers, cseq=self.invite_seq)

    def prack(self, response: Response) -> Request:
        """RFC 3262 §7.2: PRACK for a reliable provisional response (``RAck: RSeq CSeq-num method``)."""
        rseq = response.get("RSeq")
        if rseq is None:
            raise DialogError(400, "Reliable provisional response without RSeq")
        cseq = response.cseq
        return self.request("PRACK", headers=[("RAck", f"{rseq.strip()} {cseq.number} {cseq.method}")])

    # ---- UAS side ------------------------------------------------------------------------------

    def response(self, request: Request, status: int, reason: str | None = None, body: bytes = b"",
                 content_type: str | None = None, headers: list[tuple[str, str]] | None = None) -> Response:
        """A response to ``request`` received in (or creating) this dialog: our tag in To (§8.2.6.2,
        §12.1.1) and our Contact where a target is set (1xx/2xx to target refresh requests)."""
        resp = make_response(request, status, reason, to_tag=self.local_tag if status > 100 else None)
        if 100 < status < 300 and request.method in TARGET_REFRESH:
            resp.add("Contact", self.local_contact)
        if not self.is_uac and request.method == "INVITE" and 200 <= status < 300:
            self.state = State.CONFIRMED  # the 2xx confirms the dialog its INVITE created (§12.1.1)
        for name, value in headers or ():
            resp.add(name, value)
        if body:
            resp.add("Content-Type", content_type or "application/sdp")
            resp.body = body
        return resp

    # ---- incoming requests ---------------------------------------------------------------------

    def matches(self, request: Request) -> bool:
        """§12.2.2: Call-ID, To tag = local tag, From tag = remote tag."""
        try:
            return (request.call_id == self.call_id and request.to.tag == self.local_tag
                    and request.from_.tag == self.remote_tag)
        except SipParseError:
            return False

    def receive(self, request: Request) -> None:
        """§12.2.2 for a request that :meth:`matches`: the CSeq must not go backwards (500 otherwise);
        a target refresh request updates the remote target. ACK and CANCEL carry the CSeq of the
        request they belong to and are not checked."""
        if request.method in ("ACK", "CANCEL"):
            return
        n = request.cseq.number
        if self.remote_seq is not None and n < self.remote_seq:
            raise DialogError(500, "CSeq out of order")
        self.remote_seq = n
        if request.method in TARGET_REFRESH:
            contact = _contact_uri(request)
            if contact is not None:
                self.remote_target = contact

    def refresh_from_response(self, response: Response) -> None:
        """A 2xx to our target refresh request carries the peer's new Contact (§12.2.1.2)."""
        if 200 <= response.status < 300 and response.cseq.method in TARGET_REFRESH:
            contact = _contact_uri(response)
            if contact is not None:
                self.remote_target = contact

    def terminate(self) -> None:
        self.state = State.TERMINATED

    @property
    def key(self) -> tuple[str, str]:
        """How incoming requests find this dialog: Call-ID and our tag."""
        return (self.call_id, self.local_tag)

    def target_uri(self) -> SipUri | None:
        u = parse_uri(self.next_hop())
        return u if isinstance(u, SipUri) else None
