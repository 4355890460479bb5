"""The RTCWeb Breaker's B2BUA and dialogs, driven message by message.

The harness plays the proxy: a real :class:`TransactionLayer` (so retransmission absorption, ACK of
non-2xx and CANCEL matching are the genuine ones), every Transmit collected instead of sent, and a fake
media plane that stamps the SDP it returns so a test can see which translation a message carries.
Every scenario ends by checking that the B2BUA's tables and the media plane's sessions are empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from b2bua_messages import (
    BROWSER_OFFER,
    PICTURE_FAST_UPDATE,
    browser_cancel,
    browser_invite,
    browser_response,
    in_dialog,
    phone_invite,
    phone_prack,
    phone_request,
    phone_response,
    replacing_invite,
    rtp_event,
    sdp,
    wire,
)

from rtc2sip.breaker import refer
from rtc2sip.breaker.b2bua import B2bua
from rtc2sip.breaker.call import BreakerConfig
from rtc2sip.breaker.dialog import Dialog, DialogError, State
from rtc2sip.breaker.host import Cancellable
from rtc2sip.breaker.refer import rewrite_refer_to
from rtc2sip.media.ports import PortsExhausted
from rtc2sip.media.workerproc import WorkerGone
from rtc2sip.sdp import NoCommonCodec, SessionDescription
from rtc2sip.sip import (
    ClientTransaction,
    Deliver,
    InviteServerTransaction,
    LayerAction,
    Message,
    Request,
    Response,
    ServerTransaction,
    SipUri,
    Timeout,
    TransactionLayer,
    Transmit,
    TransportError,
    check_response,
    compute_ha1,
    make_response,
    parse_credentials,
    parse_message,
)
from rtc2sip.transport.base import Source, Target

BROWSER = Source("ws", "127.0.0.1", 50000, "127.0.0.1", 8080, "ws-7")
PHONE = Target("udp", "192.0.2.10", 5060)
PHONE_SRC = Source("udp", "192.0.2.10", 5060, "192.0.2.1", 5060, "udp:192.0.2.1:5060/192.0.2.10:5060")
HA1_PASSWORD = "secret"


class FakeMedia:
    """The media plane's API; each returned SDP has a session name telling what produced it."""

    def __init__(self) -> None:
        self.sessions: dict[str, str] = {}
        self.calls: list[tuple[str, object]] = []
        self.failure: Callable[[str, str], None] | None = None
        self.refuse = False
        self.unavailable: Exception | None = None
        self._n = 0

    def _new(self, kind: str) -> str:
        self._n += 1
        sid = f"s{self._n}"
        self.sessions[sid] = kind
        return sid

    async def offer_from_webrtc(self, call_id: str, offer: SessionDescription) -> tuple[str, SessionDescription]:
        await asyncio.sleep(0)
        if self.refuse:
            raise NoCommonCodec("no codec in common")
        if self.unavailable is not None:
            raise self.unavailable
        assert "SAVPF" in str(offer)
        self.calls.append(("offer_from_webrtc", call_id))
        return self._new("webrtc"), SessionDescription.parse(sdp("legacy-offer"))

    async def answer_from_legacy(self, session: str, answer: SessionDescription) -> SessionDescription:
        await asyncio.sleep(0)
        self.calls.append(("answer_from_legacy", answer.name))
        return SessionDescription.parse(sdp("browser-answer", "UDP/TLS/RTP/SAVPF", _dir(answer)))

    async def offer_from_legacy(self, call_id: str, offer: SessionDescription) -> tuple[str, SessionDescription]:
        self.calls.append(("offer_from_legacy", call_id))
        return self._new("legacy"), SessionDescription.parse(sdp("browser-offer", "UDP/TLS/RTP/SAVPF"))

    async def answer_from_webrtc(self, session: str, answer: SessionDescription) -> SessionDescription:
        self.calls.append(("answer_from_webrtc", answer.name))
        return SessionDescription.parse(sdp("legacy-answer"))

    async def update(self, session: str, offer: SessionDescription, from_webrtc: bool) -> SessionDescription:
        assert session in self.sessions
        self.calls.append(("update", from_webrtc))
        proto = "RTP/AVP" if from_webrtc else "UDP/TLS/RTP/SAVPF"
        return SessionDescription.parse(sdp("updated-offer", proto, _dir(offer)))

    async def delete(self, session: str) -> None:
        self.calls.append(("delete", session))
        del self.sessions[session]

    def stats(self, session: str) -> dict[str, object]:
        return {}

    def on_failure(self, callback: Callable[[str, str], None]) -> None:
        self.failure = callback

    async def send_dtmf(self, session: str, digit: str, duration_ms: int = 100) -> bool:
        self.calls.append(("send_dtmf", digit))
        return False  # no telephone-event on the legacy leg: INFO is relayed


def _dir(s: SessionDescription) -> str:
    return s.media[0].direction if s.media else "sendrecv"


class Harness:
    """The proxy around the B2BUA: its transaction layer, routing and transports, all fake."""

    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.tl = TransactionLayer()
        self.sent: list[tuple[Message, object]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.alive = {BROWSER.flow_id}
        self.targets = [PHONE]
        self.media = FakeMedia()
        self.b2b = B2bua(self, self.media, config or BreakerConfig())

    # -- Host --------------------------------------------------------------------------------------
    def now(self) -> float:
        return 0.0

    def new_branch(self) -> str:
        return self.tl.new_branch()

    def local_address(self, transport: str, ipv6: bool = False) -> tuple[str, int] | None:
        return ("192.0.2.1", 8080 if transport in ("ws", "wss") else 5060)

    def send_request(self, request: Request, target: Target, context: object) -> ClientTransaction | None:
        txn, actions = self.tl.send_request(request, 0.0, reliable=target.transport != "udp", peer=target,
                                            context=context)
        self._act(actions)
        return txn

    def send_response(self, st: ServerTransaction, response: Response) -> None:
        self._act(self.tl.send_response(st, response, 0.0))

    def send_stateless(self, request: Request, target: Target) -> None:
        self.sent.append((request, target))

    def find_cancel_target(self, cancel: Request) -> InviteServerTransaction | None:
        return self.tl.find_cancel_target(cancel)

    def target_is_webrtc(self, request: Request) -> bool | None:
        return self.targets[0].transport in ("ws", "wss") if self.targets else False

    async def route_initial(self, request: Request) -> list[Target]:
        return list(self.targets)

    async def resolve(self, uri: SipUri) -> list[Target]:
        return [Target(uri.transport or "udp", uri.host, uri.port or 5060)]

    def flow_alive(self, flow_id: str) -> bool:
        return flow_id in self.alive

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback)

    # -- the proxy's dispatch ------------------------------------------------------------------------
    def _act(self, actions: list[LayerAction]) -> None:
        for a in actions:
            if isinstance(a, Transmit):
                self.sent.append((a.message, a.peer))
            elif isinstance(a, Timeout | TransportError):
                self.b2b.on_transaction_failed(a.txn, a.response)

    def request(self, text: str, source: Source = BROWSER, body: str = "") -> None:
        req = parse_message(wire(text, body))
        assert isinstance(req, Request)
        for a in self.tl.receive_request(req, 0.0, reliable=source.reliable, peer=source):
            if isinstance(a, Deliver):
                st = a.txn if isinstance(a.txn, ServerTransaction) else None
                if self.b2b.on_request(req, source, st):
                    continue
                assert st is not None, "a stray ACK the breaker did not take"
                assert req.method == "INVITE" and self.b2b.should_break(req, source).breaks
                self.b2b.handle_invite(req, source, st)
            else:
                self._act([a])

    def response(self, resp: Response) -> None:
        resp = parse_message(resp.to_bytes())  # type: ignore[assignment]
        for a in self.tl.receive_response(resp, 0.0):
            if isinstance(a, Deliver):
                assert self.b2b.on_response(a.txn, resp)
            else:
                self._act([a])

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)
            if not self.tasks:
                await asyncio.sleep(0)
                if not self.tasks:
                    return

    def take(self, pred: str, to: object | None = None) -> Message:
        """The first message sent whose start line contains ``pred`` (removed from the list)."""
        for i, (m, peer) in enumerate(self.sent):
            if pred in m.start_line() and (to is None or peer == to or getattr(peer, "flow_id", None) == to):
                del self.sent[i]
                return m
        raise AssertionError(f"no {pred!r} among {[m.start_line() for m, _ in self.sent]}")

    def none(self, pred: str) -> None:
        assert not [m for m, _ in self.sent if pred in m.start_line()], self.sent

    def assert_clean(self) -> None:
        assert self.b2b.table_sizes() == {"calls": 0, "dialogs": 0, "call_ids": 0, "by_flow": 0, "by_session": 0}
        assert self.media.sessions == {}


HA1 = compute_ha1("MD5", "alice", "pbx.example", HA1_PASSWORD)


async def invited(h: Harness, provisional: int | None = None) -> Message:
    """Browser -> phone call up to the legacy INVITE, and the phone's ``provisional`` to it when given."""
    h.request(browser_invite(), body=BROWSER_OFFER)
    await h.settle()
    inv = h.take("INVITE", PHONE)
    if provisional is not None:
        h.response(phone_response(inv, provisional))
        await h.settle()
    return inv


async def established(h: Harness, contact_params: str = "") -> tuple[Request, str]:
    """Browser -> phone call up to the browser's ACK; returns the legacy INVITE and our browser-leg tag."""
    h.request(browser_invite(contact_params=contact_params), body=BROWSER_OFFER)
    await h.settle()
    assert h.take("100 Trying", BROWSER.flow_id)
    inv = h.take("INVITE", PHONE)
    assert isinstance(inv, Request)
    h.response(phone_response(inv, 180))
    await h.settle()
    ringing = h.take("180", BROWSER.flow_id)
    h.response(phone_response(inv, 200, sdp("phone-answer")))
    await h.settle()
    h.take("ACK", PHONE)
    ok = h.take("200 OK", BROWSER.flow_id)
    assert isinstance(ok, Response)
    tag = ok.to.tag
    assert tag is not None and tag == ringing.to.tag
    h.request(in_dialog("ACK", 1, tag, branch="z9hG4bKack1"))
    await h.settle()
    assert h.sent == []
    return inv, tag


# ---- browser -> phone ----------------------------------------------------------------------------


async def test_call_setup_translates_sdp_both_ways() -> None:
    h = Harness()
    h.request(browser_invite(), body=BROWSER_OFFER)
    await h.settle()
    assert h.take("100 Trying", BROWSER.flow_id)
    inv = h.take("INVITE", PHONE)
    assert isinstance(inv, Request)
    # a leg of its own: new Call-ID and tag, our Contact, the translated offer, the same CSeq
    assert inv.call_id != "browser-call-1"
    assert inv.from_.tag != "atag"
    assert inv.uri_text == "sip:bob@pbx.example"
    assert inv.cseq.number == 1
    assert b"s=legacy-offer" in inv.body
    assert "r2sb" in (inv.get("Contact") or "") and "invalid" not in (inv.get("Contact") or "")
    assert inv.top_via.transport == "UDP" and inv.top_via.host == "192.0.2.1"
    assert h.media.calls[0][0] == "offer_from_webrtc"

    h.response(phone_response(inv, 183, sdp("phone-early")))
    await h.settle()
    early = h.take("183", BROWSER.flow_id)
    assert b"s=browser-answer" in early.body
    h.response(phone_response(inv, 200, sdp("phone-early")))
    await h.settle()
    ack = h.take("ACK", PHONE)
    assert isinstance(ack, Request)
    assert ack.cseq.number == 1 and ack.call_id == inv.call_id and ack.to.tag == "phonetag"
    assert ack.uri_text == "sip:bob@192.0.2.10:5060"  # the remote target (§12.2.1.1)
    ok = h.take("200 OK", BROWSER.flow_id)
    assert isinstance(ok, Response)
    assert b"s=browser-answer" in ok.body
    assert ok.call_id == "browser-call-1" and ok.to.tag == early.to.tag
    # the 183 carried the answer already: the 200 repeats it, the media plane is asked once (§13.2.1)
    assert [c for c in h.media.calls if c[0] == "answer_from_legacy"] == [("answer_from_legacy", "phone-early")]


async def test_bye_from_browser_ends_legacy_leg() -> None:
    h = Harness()
    inv, tag = await established(h)
    h.request(in_dialog("BYE", 2, tag))
    await h.settle()
    assert h.take("200 OK", BROWSER.flow_id).cseq.method == "BYE"
    bye = h.take("BYE", PHONE)
    assert isinstance(bye, Request)
    assert bye.call_id == inv.call_id and bye.cseq.number == 2 and bye.to.tag == "phonetag"
    h.response(phone_response(bye, 200))
    await h.settle()
    h.assert_clean()


async def test_bye_from_phone_ends_browser_leg() -> None:
    h = Harness()
    inv, tag = await established(h)
    h.request(phone_request("BYE", inv, 1), source=PHONE_SRC)
    await h.settle()
    assert h.take("200 OK", PHONE_SRC).cseq.method == "BYE"
    bye = h.take("BYE", BROWSER.flow_id)
    assert isinstance(bye, Request)
    assert bye.call_id == "browser-call-1" and bye.from_.tag == tag and bye.to.tag == "atag"
    assert bye.uri_text == "sip:alice@df7jal23ls0d.invalid;transport=ws"  # its Contact, sent down its flow
    h.assert_clean()
    # a late request for the gone dialog is answered 481 (§12.2.2), not routed as a new one
    h.request(phone_request("INFO", inv, 2, branch="z9hG4bKlate"), source=PHONE_SRC)
    await h.settle()
    assert h.take("481", PHONE_SRC)


async def test_cancel_before_answer() -> None:
    h = Harness()
    inv = await invited(h, 180)
    h.sent.clear()
    h.request(browser_cancel())
    await h.settle()
    assert h.take("200 OK", BROWSER.flow_id).cseq.method == "CANCEL"
    assert h.take("487", BROWSER.flow_id).cseq.method == "INVITE"
    cancel = h.take("CANCEL", PHONE)
    assert isinstance(cancel, Request) and isinstance(inv, Request)
    assert cancel.top_via.branch == inv.top_via.branch and cancel.call_id == inv.call_id
    h.assert_clean()  # released at once; the legacy INVITE transaction finishes on its own
    h.response(phone_response(cancel, 200))
    h.response(phone_response(inv, 487))
    await h.settle()
    assert h.take("ACK", PHONE).cseq.method == "ACK"  # the transaction's own ACK of the 487
    h.none("BYE")
    h.assert_clean()


async def test_cancel_crossing_a_200_ends_the_legacy_dialog() -> None:
    h = Harness()
    inv = await invited(h, 180)
    h.request(browser_invite().replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL"))
    await h.settle()
    h.take("CANCEL", PHONE)
    h.response(phone_response(inv, 200, sdp("phone-answer")))
    await h.settle()
    h.take("ACK", PHONE)
    assert h.take("BYE", PHONE).call_id == inv.call_id
    h.none("200 OK\r")
    h.assert_clean()


async def test_busy_is_mapped() -> None:
    h = Harness()
    inv = await invited(h)
    h.response(phone_response(inv, 486, extra=[("Retry-After", "30"), ("X-Internal", "leak")]))
    await h.settle()
    h.take("ACK", PHONE)
    busy = h.take("486 Busy Here", BROWSER.flow_id)
    assert isinstance(busy, Response)
    assert busy.call_id == "browser-call-1" and busy.to.tag
    assert busy.get("Retry-After") == "30" and busy.get("X-Internal") is None
    h.assert_clean()


async def test_refused_offer_is_488_for_that_call_only() -> None:
    h = Harness()
    h.media.refuse = True
    h.request(browser_invite(), body=BROWSER_OFFER)
    await h.settle()
    resp = h.take("488", BROWSER.flow_id)
    assert (resp.get("Warning") or "").startswith("305 ")
    h.none("INVITE")
    h.assert_clean()


@pytest.mark.parametrize("error", [PortsExhausted("no port pair left"), WorkerGone("no media worker is running")])
async def test_media_plane_without_resources_is_503(error: Exception) -> None:
    h = Harness()
    h.media.unavailable = error
    h.request(browser_invite(), body=BROWSER_OFFER)
    await h.settle()
    resp = h.take("503", BROWSER.flow_id)
    assert resp.get("Retry-After") == "5"
    h.none("INVITE")
    h.assert_clean()


async def test_no_route_is_480() -> None:
    h = Harness()
    h.targets = []
    h.request(browser_invite(), body=BROWSER_OFFER)
    await h.settle()
    h.take("480", BROWSER.flow_id)
    h.assert_clean()


# ---- legacy authentication ---------------------------------------------------------------------


async def test_401_answered_with_ha1_which_is_never_forwarded() -> None:
    h = Harness()
    params = f";rtcweb-breaker=yes;impi=alice;ha1={HA1}"
    h.request(browser_invite(contact_params=params), body=BROWSER_OFFER)
    await h.settle()
    inv = h.take("INVITE", PHONE)
    challenge = 'Digest realm="pbx.example", nonce="n0nce", qop="auth", algorithm=MD5'
    h.response(phone_response(inv, 401, extra=[("WWW-Authenticate", challenge)]))
    await h.settle()
    h.take("ACK", PHONE)
    retry = h.take("INVITE", PHONE)
    assert isinstance(retry, Request) and isinstance(inv, Request)
    # §22.2: same dialog identifiers and Request-URI, next CSeq, a new branch
    assert retry.call_id == inv.call_id and retry.from_.tag == inv.from_.tag
    assert retry.cseq.number == inv.cseq.number + 1 and retry.top_via.branch != inv.top_via.branch
    creds = parse_credentials(retry.get("Authorization") or "")
    assert creds.username == "alice" and creds.uri == retry.uri_text
    assert check_response(creds, "INVITE", password=HA1_PASSWORD, username="alice")
    h.none("401")  # the browser never sees the challenge
    h.response(phone_response(retry, 200, sdp("phone-answer")))
    await h.settle()
    ack = h.take("ACK", PHONE)
    assert ack.get("Authorization") == retry.get("Authorization")  # §13.2.2.4 / §22.4
    h.take("200 OK", BROWSER.flow_id)
    sent = [inv, retry, ack]
    # nothing that left the gateway carries the client's secret, nor its parameters
    for m in sent:
        raw = m.to_bytes().lower()
        assert HA1.encode() not in raw and b"ha1" not in raw and b"impi" not in raw


async def test_407_without_ha1_is_relayed_and_the_browser_credentials_reused() -> None:
    h = Harness()
    inv = await invited(h)
    challenge = 'Digest realm="pbx.example", nonce="abc", qop="auth", algorithm=MD5'
    h.response(phone_response(inv, 407, extra=[("Proxy-Authenticate", challenge)]))
    await h.settle()
    relayed = h.take("407", BROWSER.flow_id)
    assert relayed.get("Proxy-Authenticate") == challenge
    h.assert_clean()
    # the browser ACKs the 407 (absorbed by its transaction) and tries again with credentials
    h.request(browser_invite().replace("INVITE sip", "ACK sip").replace("1 INVITE", "1 ACK"))
    auth = 'Digest username="alice", realm="pbx.example", nonce="abc", uri="sip:bob@pbx.example", response="x"'
    h.request(browser_invite(2, extra=f"Proxy-Authorization: {auth}"), body=BROWSER_OFFER)
    await h.settle()
    retry = h.take("INVITE", PHONE)
    assert isinstance(retry, Request) and isinstance(inv, Request)
    assert retry.get("Proxy-Authorization") == auth
    assert retry.uri_text == "sip:bob@pbx.example"  # the digest's uri still matches (same Request-URI)
    # the same legacy dialog tries again: servers that bind nonces to a Call-ID accept it
    assert retry.call_id == inv.call_id and retry.cseq.number == 2
    h.response(phone_response(retry, 486))
    await h.settle()
    h.take("486", BROWSER.flow_id)
    h.assert_clean()


# ---- mid-call ------------------------------------------------------------------------------------


async def test_hold_reinvite_from_browser() -> None:
    h = Harness()
    inv, tag = await established(h)
    h.request(in_dialog("INVITE", 2, tag, "Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\n"
                        "Content-Type: application/sdp"), body=sdp("hold", "UDP/TLS/RTP/SAVPF", "sendonly"))
    await h.settle()
    assert ("update", True) in h.media.calls
    re_inv = h.take("INVITE", PHONE)
    assert isinstance(re_inv, Request)
    assert re_inv.call_id == inv.call_id and re_inv.cseq.number == 2 and re_inv.to.tag == "phonetag"
    assert b"s=updated-offer" in re_inv.body and b"a=sendonly" in re_inv.body
    h.response(phone_response(re_inv, 200, sdp("phone-held", direction="recvonly")))
    await h.settle()
    ack = h.take("ACK", PHONE)
    assert ack.cseq.number == 2
    ok = h.take("200 OK", BROWSER.flow_id)
    assert b"s=browser-answer" in ok.body and b"a=recvonly" in ok.body
    # after the offer/answer, BYE still ends everything
    h.request(in_dialog("BYE", 3, tag))
    await h.settle()
    h.take("BYE", PHONE)
    h.assert_clean()


async def test_reinvite_2xx_retransmission_is_acked_again_and_answered_once() -> None:
    """Seen in the soak on a loaded gateway: baresip retransmitted its 200 to an unhold before our
    ACK arrived; the retransmission went through the media plane again (no offer waiting: internal
    error) and ended the call with a 500. RFC 6026 §7.2: ACK it again, nothing more."""
    h = Harness()
    _, tag = await established(h)
    h.request(in_dialog("INVITE", 2, tag, "Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\n"
                        "Content-Type: application/sdp"), body=sdp("hold", "UDP/TLS/RTP/SAVPF", "sendonly"))
    await h.settle()
    re_inv = h.take("INVITE", PHONE)
    answer = phone_response(re_inv, 200, sdp("phone-held", direction="recvonly"))
    h.response(answer)
    await h.settle()
    first = h.take("ACK", PHONE)
    h.take("200 OK", BROWSER.flow_id)
    h.response(answer)  # the same 2xx again
    await h.settle()
    again = h.take("ACK", PHONE)
    assert again.to_bytes() == first.to_bytes()
    h.none("200 OK")
    h.none("BYE")
    h.request(in_dialog("BYE", 3, tag))
    await h.settle()
    h.take("BYE", PHONE)
    h.assert_clean()


async def test_reinvite_2xx_after_the_call_ended_is_still_acked() -> None:
    """A BYE crossing the 2xx of a re-INVITE: the dialog is over, but the 2xx needs its ACK
    (RFC 3261 §13.2.2.4), or the phone retransmits it for 32 s (the soak's "481 Dialog terminated"
    internal errors)."""
    h = Harness()
    _, tag = await established(h)
    h.request(in_dialog("INVITE", 2, tag, "Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\n"
                        "Content-Type: application/sdp"), body=sdp("hold", "UDP/TLS/RTP/SAVPF", "sendonly"))
    await h.settle()
    re_inv = h.take("INVITE", PHONE)
    h.request(in_dialog("BYE", 3, tag))
    await h.settle()
    h.take("BYE", PHONE)
    h.response(phone_response(re_inv, 200, sdp("phone-held", direction="recvonly")))
    await h.settle()
    ack = h.take("ACK", PHONE)
    assert ack.cseq.number == re_inv.cseq.number


async def test_reinvite_from_phone_goes_to_browser() -> None:
    h = Harness()
    inv, tag = await established(h)
    h.request(phone_request("INVITE", inv, 5), source=PHONE_SRC, body=sdp("phone-hold", direction="sendonly"))
    await h.settle()
    assert ("update", False) in h.media.calls
    out = h.take("INVITE", BROWSER.flow_id)
    assert isinstance(out, Request)
    assert out.call_id == "browser-call-1" and out.to.tag == "atag" and out.from_.tag == tag
    resp = browser_response(out, 200, sdp("browser-held", "UDP/TLS/RTP/SAVPF", "recvonly"))
    h.response(resp)
    await h.settle()
    assert h.take("ACK", BROWSER.flow_id).cseq.number == out.cseq.number
    ok = h.take("200 OK", PHONE_SRC)
    assert b"s=legacy-answer" in ok.body


async def test_info_is_relayed_with_its_body() -> None:
    h = Harness()
    _, tag = await established(h)
    h.request(in_dialog("INFO", 2, tag, "Content-Type: application/dtmf-relay"), body="Signal=5\r\nDuration=160\r\n")
    await h.settle()
    info = h.take("INFO", PHONE)
    assert info.body == b"Signal=5\r\nDuration=160\r\n" and info.get("Content-Type") == "application/dtmf-relay"
    h.response(phone_response(info, 200))
    await h.settle()
    assert h.take("200 OK", BROWSER.flow_id).cseq.method == "INFO"


async def test_glare_is_491() -> None:
    h = Harness()
    inv, tag = await established(h)
    h.request(in_dialog("INVITE", 2, tag, "Content-Type: application/sdp"), body=BROWSER_OFFER)
    await h.settle()
    h.take("INVITE", PHONE)
    h.request(phone_request("INVITE", inv, 5), source=PHONE_SRC, body=sdp("phone-offer"))
    await h.settle()
    assert h.take("491", PHONE_SRC)


# ---- a leg that dies ---------------------------------------------------------------------------


async def test_websocket_closed_ends_the_legacy_leg_with_bye() -> None:
    h = Harness()
    inv, _ = await established(h)
    h.alive.clear()
    h.b2b.on_flow_closed(BROWSER.flow_id)
    await h.settle()
    bye = h.take("BYE", PHONE)
    assert bye.call_id == inv.call_id
    h.none("BYE")
    h.assert_clean()


async def test_websocket_closed_while_ringing_cancels() -> None:
    h = Harness()
    await invited(h, 180)
    h.b2b.on_flow_closed(BROWSER.flow_id)
    await h.settle()
    h.take("CANCEL", PHONE)
    h.assert_clean()


async def test_media_failure_ends_both_legs() -> None:
    h = Harness()
    await established(h)
    assert h.media.failure is not None
    h.media.failure(next(iter(h.media.sessions)), "no media for 30 s")
    await h.settle()
    assert "no media" in (h.take("BYE", PHONE).get("Reason") or "")
    h.take("BYE", BROWSER.flow_id)
    h.assert_clean()


# ---- phone -> browser ----------------------------------------------------------------------------


async def test_phone_calls_browser() -> None:
    h = Harness()
    h.targets = [Target("ws", "127.0.0.1", 50000, BROWSER.flow_id)]
    h.request(phone_invite(), source=PHONE_SRC, body=sdp("phone-offer"))
    await h.settle()
    out = h.take("INVITE", BROWSER.flow_id)
    assert isinstance(out, Request)
    assert b"s=browser-offer" in out.body and out.top_via.transport == "WS"
    resp = browser_response(out, 200, sdp("browser-answer", "UDP/TLS/RTP/SAVPF"), "btag",
                            "<sip:alice@x.invalid;transport=ws>")
    h.response(resp)
    await h.settle()
    h.take("ACK", BROWSER.flow_id)
    ok = h.take("200 OK", PHONE_SRC)
    assert b"s=legacy-answer" in ok.body and ok.call_id == "phone-call-1"
    h.b2b.on_flow_closed(BROWSER.flow_id)
    await h.settle()
    bye = h.take("BYE", PHONE_SRC.flow_id)  # back where its INVITE came from
    assert bye.call_id == "phone-call-1" and bye.get("To") == "<sip:bob@pbx.example>;tag=phonetag"
    h.assert_clean()


# ---- dialogs (RFC 3261 §12) ------------------------------------------------------------------------


def test_uac_dialog_from_responses() -> None:
    d = Dialog.uac("c1", "<sip:a@x>", "<sip:b@y>", "sip:b@y", "<sip:a@10.0.0.1>", local_tag="lt",
                   route_set=["<sip:proxy;lr>"])
    inv = d.request("INVITE", b"v=0", "application/sdp")
    assert inv.get("To") == "<sip:b@y>" and inv.get("From") == "<sip:a@x>;tag=lt"
    assert inv.get("Route") == "<sip:proxy;lr>" and inv.get("Contact") == "<sip:a@10.0.0.1>"
    inv.add("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1", top=True)
    r180 = make_response(inv, 180, to_tag="rt1")
    r180.add("Record-Route", "<sip:p2;lr>, <sip:p1;lr>")
    r180.add("Contact", "<sip:b@10.0.0.2>")
    d.on_response(r180)
    assert d.state is State.EARLY and d.remote_tag == "rt1"
    assert d.route_set == ["<sip:p1;lr>", "<sip:p2;lr>"] and d.remote_target == "sip:b@10.0.0.2"
    ok = make_response(inv, 200, to_tag="rt1")
    ok.add("Contact", "<sip:b@10.0.0.3>")
    assert d.on_response(ok)
    assert d.state.value == "confirmed" and d.remote_target == "sip:b@10.0.0.3"
    other = make_response(inv, 200, to_tag="rt2")
    other.add("Contact", "<sip:c@10.0.0.4>")
    assert not d.on_response(other)  # another UAS: a dialog of its own
    fork = d.fork(other)
    assert fork.remote_tag == "rt2" and fork.remote_target == "sip:c@10.0.0.4" and d.remote_tag == "rt1"
    ack = d.ack()
    assert ack.cseq.number == 1 and ack.cseq.method == "ACK" and ack.uri_text == "sip:b@10.0.0.3"
    bye = d.request("BYE")
    assert bye.cseq.number == 2 and bye.get("To") == "<sip:b@y>;tag=rt1" and not bye.has("Contact")


def test_strict_route_set() -> None:
    d = Dialog.uac("c1", "<sip:a@x>", "<sip:b@y>", "sip:b@10.0.0.2", "<sip:a@h>", route_set=["<sip:strict@p1>"])
    req = d.request("BYE")
    assert req.uri_text == "sip:strict@p1" and req.values("Route") == ["<sip:b@10.0.0.2>"]  # §12.2.1.1
    assert d.next_hop() == "sip:strict@p1"


def test_uas_dialog_checks_requests() -> None:
    inv = parse_message(wire(browser_invite()))
    assert isinstance(inv, Request)
    inv.add("Record-Route", "<sip:edge;lr>")
    d = Dialog.uas(inv, "<sip:b2b@h>", local_tag="ours")
    assert d.route_set == ["<sip:edge;lr>"] and d.remote_tag == "atag" and d.remote_seq == 1
    ok = d.response(inv, 200)
    assert ok.to.tag == "ours" and ok.get("Contact") == "<sip:b2b@h>" and d.state is State.CONFIRMED
    bye = parse_message(wire(in_dialog("BYE", 2, "ours")))
    assert isinstance(bye, Request) and d.matches(bye)
    d.receive(bye)
    old = parse_message(wire(in_dialog("INFO", 1, "ours")))
    assert isinstance(old, Request)
    with pytest.raises(DialogError) as e:
        d.receive(old)
    assert e.value.status == 500
    stranger = parse_message(wire(in_dialog("BYE", 3, "theirs")))
    assert isinstance(stranger, Request) and not d.matches(stranger)


def test_prack() -> None:
    d = Dialog.uac("c1", "<sip:a@x>", "<sip:b@y>", "sip:b@y", "<sip:a@h>")
    inv = d.request("INVITE")
    inv.add("Via", "SIP/2.0/UDP h;branch=z9hG4bK1", top=True)
    r = make_response(inv, 183, to_tag="t")
    r.add("RSeq", "7")
    r.add("Require", "100rel")
    d.on_response(r)
    prack = d.prack(r)
    assert prack.get("RAck") == "7 1 INVITE" and prack.cseq.number == 2


# ---- REFER (RFC 3515, RFC 3891) --------------------------------------------------------------------


def test_refer_to_replaces_rewritten_to_the_other_leg() -> None:
    def lookup(call_id: str, to_tag: str, from_tag: str) -> tuple[str, str, str, str] | None:
        if (call_id, to_tag, from_tag) == ("browser-2", "ours", "alice"):
            return ("legacy-2", "carol-tag", "our-legacy-tag", "sip:carol@192.0.2.20:5060")
        return None

    value = "<sip:b2b@192.0.2.1:8080;transport=ws?Replaces=browser-2%3Bto-tag%3Dours%3Bfrom-tag%3Dalice>"
    out = rewrite_refer_to(value, lookup)
    assert out == ("<sip:carol@192.0.2.20:5060?Replaces=legacy-2%3Bto-tag%3Dcarol-tag%3Bfrom-tag%3D"
                   "our-legacy-tag>")
    blind = "<sip:carol@pbx.example>"
    assert rewrite_refer_to(blind, lookup) == blind
    unknown = "<sip:x@y?Replaces=nope%3Bto-tag%3Da%3Bfrom-tag%3Db>"
    assert rewrite_refer_to(unknown, lookup) == unknown


async def test_blind_refer_is_relayed() -> None:
    h = Harness()
    inv, tag = await established(h)
    h.request(in_dialog("REFER", 2, tag, "Refer-To: <sip:carol@pbx.example>\n"
                        "Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>"))
    await h.settle()
    refer = h.take("REFER", PHONE)
    assert refer.get("Refer-To") == "<sip:carol@pbx.example>" and refer.call_id == inv.call_id
    h.response(phone_response(refer, 202))
    await h.settle()
    assert h.take("202", BROWSER.flow_id)


def test_refer_subscription_state_ends_only_with_a_final_response() -> None:
    state = refer.refer_subscription_state
    assert state("terminated", "refer", b"SIP/2.0 100 Trying") == "active;expires=60"
    assert state("terminated;reason=noresource", "refer;id=3", b"SIP/2.0 180 Ringing\r\n") == "active;expires=60"
    assert state("terminated", "refer", b"SIP/2.0 200 OK") == "terminated"
    assert state("terminated", "refer", b"SIP/2.0 486 Busy Here") == "terminated"
    assert state("active;expires=60", "refer", b"SIP/2.0 100 Trying") == "active;expires=60"
    assert state("terminated", "presence", b"SIP/2.0 100 Trying") == "terminated"
    assert state("terminated", None, b"") == "terminated"


async def test_refer_notify_with_a_provisional_keeps_the_subscription_toward_the_phone() -> None:
    """SIP.js 0.21 sends every NOTIFY of a REFER with ``Subscription-State: terminated``: toward the
    phone, the 100's keeps the subscription active (the phone would 481 the final one), the 200's
    ends it."""
    h = Harness()
    _, tag = await established(h)
    for cseq, frag, want in ((2, "SIP/2.0 100 Trying", "active;expires=60"), (3, "SIP/2.0 200 OK", "terminated")):
        h.request(in_dialog("NOTIFY", cseq, tag, "Event: refer\nSubscription-State: terminated\n"
                            "Content-Type: message/sipfrag"), body=frag)
        await h.settle()
        notify = h.take("NOTIFY", PHONE)
        assert notify.get("Subscription-State") == want and notify.body == frag.encode()
        h.response(phone_response(notify, 200))
        await h.settle()
        assert h.take("200 OK", BROWSER.flow_id).cseq.method == "NOTIFY"


# ---- attended transfer: INVITE with Replaces (RFC 3891) ---------------------------------------------


async def test_invite_replacing_our_legacy_leg_goes_to_the_browser_with_its_dialog() -> None:
    """A legacy phone's INVITE whose Replaces names our legacy leg (to-tag = our tag): the new call
    goes to the browser of that call, its Replaces naming the browser's dialog as the browser knows
    it; the browser's BYE of the old dialog then ends the old call (BYE to the phone)."""
    h = Harness()
    inv, tag = await established(h)
    h.request(replacing_invite(f"{inv.call_id};to-tag={inv.from_.tag};from-tag=phonetag"), source=PHONE_SRC,
              body=sdp("dave-offer"))
    await h.settle()
    out = h.take("INVITE", BROWSER.flow_id)
    assert isinstance(out, Request)
    assert out.get("Replaces") == f"browser-call-1;to-tag=atag;from-tag={tag}"
    assert out.uri_text == "sip:alice@df7jal23ls0d.invalid;transport=ws"  # the browser's own Contact
    assert out.get("To") == '"Alice" <sip:alice@pbx.example>'
    assert b"s=browser-offer" in out.body
    resp = browser_response(out, 200, sdp("browser-answer", "UDP/TLS/RTP/SAVPF"), "newtag")
    h.response(resp)
    await h.settle()
    h.take("ACK", BROWSER.flow_id)
    assert h.take("200 OK", PHONE_SRC).call_id == "phone-call-2"
    # JsSIP ends the replaced session: the old call ends, the phone's old dialog with it
    h.request(in_dialog("BYE", 2, tag))
    await h.settle()
    h.take("200 OK", BROWSER.flow_id)
    bye = h.take("BYE", PHONE)
    assert bye.call_id == inv.call_id
    h.response(phone_response(bye, 200))
    assert len(h.b2b.calls) == 1  # the new call stays up
    h.b2b.on_flow_closed(BROWSER.flow_id)
    await h.settle()
    h.take("BYE", PHONE_SRC.flow_id)
    h.assert_clean()


async def test_invite_replacing_an_unknown_dialog_of_ours_is_481() -> None:
    h = Harness()
    inv, _tag = await established(h)
    h.request(replacing_invite(f"{inv.call_id};to-tag=wrong;from-tag=phonetag"), source=PHONE_SRC,
              body=sdp("dave-offer"))
    await h.settle()
    assert h.take("481", PHONE_SRC)
    h.none("INVITE")
    assert len(h.b2b.calls) == 1


async def test_invite_replacing_a_dialog_as_our_peer_knows_it_passes() -> None:
    """After a REFER we rewrote, the transferee's INVITE names the dialog from the far end's side
    (to-tag = the peer's tag): it is for that peer, not for us, and is not taken."""
    h = Harness()
    inv, _tag = await established(h)
    raw = parse_message(wire(replacing_invite(f"{inv.call_id};to-tag=phonetag;from-tag={inv.from_.tag}"),
                              sdp("dave-offer")))
    assert isinstance(raw, Request)
    assert refer.replaces(h.b2b, raw) is None
    assert h.b2b.on_request(raw, PHONE_SRC, None) is False
    other = parse_message(wire(replacing_invite("elsewhere@x;to-tag=a;from-tag=b"), sdp("dave-offer")))
    assert isinstance(other, Request) and refer.replaces(h.b2b, other) is None


async def test_refer_with_replaces_toward_a_browser_names_its_address_of_record() -> None:
    """A browser's Contact (….invalid;transport=ws) routes nowhere: the rewritten Refer-To points at the
    address of record of the browser leg instead."""
    h = Harness()
    inv, tag = await established(h)
    found = refer.replaced_dialog(h.b2b, inv.call_id, inv.from_.tag or "", "phonetag")
    assert found == ("browser-call-1", "atag", tag, "sip:alice@pbx.example")


# ---- reliable provisional responses (RFC 3262) --------------------------------------------------------

REL = (("Require", "100rel"), ("RSeq", "7"))


async def test_reliable_183_is_acknowledged_by_the_b2bua_when_the_browser_has_no_100rel() -> None:
    """JsSIP never supports 100rel: the B2BUA PRACKs the phone's reliable 183 itself and gives the
    browser an ordinary 183 with the translated early SDP."""
    h = Harness()
    inv = await invited(h)
    assert "100rel" not in (inv.get("Supported") or "")
    h.response(phone_response(inv, 183, sdp("phone-early"), REL))
    await h.settle()
    prack = h.take("PRACK", PHONE)
    assert prack.get("RAck") == "7 1 INVITE" and prack.call_id == inv.call_id
    early = h.take("183", BROWSER.flow_id)
    assert early.get("Require") is None and early.get("RSeq") is None and b"s=browser-answer" in early.body
    h.response(phone_response(prack, 200))
    h.response(phone_response(inv, 183, sdp("phone-early"), REL))  # a retransmission: no new PRACK
    await h.settle()
    h.none("PRACK")
    h.b2b.on_flow_closed(BROWSER.flow_id)
    await h.settle()
    h.assert_clean()


async def test_reliable_183_relayed_end_to_end_and_the_prack_mapped() -> None:
    h = Harness(BreakerConfig(enable_100rel=True))
    h.request(browser_invite(extra="Supported: 100rel, ice"), body=BROWSER_OFFER)
    await h.settle()
    inv = h.take("INVITE", PHONE)
    assert "100rel" in (inv.get("Supported") or "")
    h.response(phone_response(inv, 183, sdp("phone-early"), REL))
    await h.settle()
    h.none("PRACK")  # the browser's PRACK will be the one
    early = h.take("183", BROWSER.flow_id)
    assert isinstance(early, Response)
    assert early.get("Require") == "100rel" and b"s=browser-answer" in early.body
    rseq = early.get("RSeq")
    assert rseq is not None and rseq.isdigit()
    tag = early.to.tag
    assert tag is not None
    # a PRACK that matches nothing
    h.request(in_dialog("PRACK", 2, tag, f"RAck: {int(rseq) + 1} 1 INVITE", branch="z9hG4bKpr0"))
    await h.settle()
    assert h.take("481", BROWSER.flow_id)
    h.request(in_dialog("PRACK", 3, tag, f"RAck: {rseq} 1 INVITE", branch="z9hG4bKpr1"))
    await h.settle()
    prack = h.take("PRACK", PHONE)
    assert prack.get("RAck") == "7 1 INVITE" and prack.call_id == inv.call_id
    h.response(phone_response(prack, 200))
    await h.settle()
    ok = h.take("200 OK", BROWSER.flow_id)
    assert ok.cseq.method == "PRACK"
    h.response(phone_response(inv, 200, sdp("phone-early")))
    await h.settle()
    h.take("ACK", PHONE)
    assert h.take("200 OK", BROWSER.flow_id).cseq.method == "INVITE"
    h.request(in_dialog("ACK", 1, tag, branch="z9hG4bKack1"))
    h.request(in_dialog("BYE", 4, tag))
    await h.settle()
    h.take("BYE", PHONE)
    h.assert_clean()


async def test_caller_requiring_100rel_gets_reliable_provisionals_retransmitted_until_prack() -> None:
    """A phone that requires 100rel calls a browser (whose 180 is unreliable): the B2BUA sends it a
    reliable 180, retransmits it (T1, doubling) until the PRACK, and answers the PRACK itself."""
    h = Harness()
    h.targets = [Target("ws", "127.0.0.1", 50000, BROWSER.flow_id)]
    h.request(phone_invite("Require: 100rel"), source=PHONE_SRC, body=sdp("phone-offer"))
    await h.settle()
    out = h.take("INVITE", BROWSER.flow_id)
    assert isinstance(out, Request) and "100rel" in (out.get("Supported") or "")
    h.response(make_response(out, 180, to_tag="btag"))
    await h.settle()
    ringing = h.take("180", PHONE_SRC)
    assert isinstance(ringing, Response)
    assert ringing.get("Require") == "100rel"
    rseq = ringing.get("RSeq")
    await asyncio.sleep(0.6)  # T1 = 0.5 s
    again = h.take("180", PHONE_SRC)
    assert again.get("RSeq") == rseq
    ours = ringing.to.tag
    h.request(phone_prack(ours, rseq), source=PHONE_SRC)
    await h.settle()
    assert h.take("200 OK", PHONE_SRC).cseq.method == "PRACK"
    await asyncio.sleep(0.6)
    h.none("180")  # acknowledged: no more retransmissions
    h.none("PRACK")  # nothing toward the browser
    h.b2b.on_flow_closed(BROWSER.flow_id)
    await h.settle()
    h.assert_clean()


# ---- UPDATE (RFC 3311) --------------------------------------------------------------------------------


async def test_update_with_sdp_from_the_phone_goes_through_the_media_plane_without_ack() -> None:
    h = Harness()
    inv, _tag = await established(h)
    h.request(phone_request("UPDATE", inv, 5), source=PHONE_SRC, body=sdp("phone-hold", direction="sendonly"))
    await h.settle()
    assert ("update", False) in h.media.calls
    out = h.take("UPDATE", BROWSER.flow_id)
    assert isinstance(out, Request) and b"s=updated-offer" in out.body and b"a=sendonly" in out.body
    assert out.call_id == "browser-call-1" and out.get("Contact") is not None
    resp = browser_response(out, 200, sdp("browser-held", "UDP/TLS/RTP/SAVPF", "recvonly"))
    h.response(resp)
    await h.settle()
    h.none("ACK")  # an UPDATE has no ACK
    ok = h.take("200 OK", PHONE_SRC)
    assert ok.cseq.method == "UPDATE" and b"s=legacy-answer" in ok.body


async def test_update_with_sdp_from_the_browser_and_its_failure_mapped() -> None:
    h = Harness()
    _, tag = await established(h)
    h.request(in_dialog("UPDATE", 2, tag, "Content-Type: application/sdp"),
              body=sdp("browser-hold", "UDP/TLS/RTP/SAVPF", "sendonly"))
    await h.settle()
    assert ("update", True) in h.media.calls
    out = h.take("UPDATE", PHONE)
    assert b"a=sendonly" in out.body
    h.response(phone_response(out, 488))
    await h.settle()
    assert h.take("488", BROWSER.flow_id).cseq.method == "UPDATE"
    # the leg is free for the next offer
    h.request(in_dialog("UPDATE", 3, tag, "Content-Type: application/sdp", branch="z9hG4bKup2"),
              body=sdp("browser-resume", "UDP/TLS/RTP/SAVPF"))
    await h.settle()
    assert h.take("UPDATE", PHONE)


async def test_update_without_sdp_is_relayed_in_an_early_dialog() -> None:
    h = Harness()
    inv = await invited(h, 180)
    ringing = h.take("180", BROWSER.flow_id)
    tag = ringing.to.tag
    assert tag is not None
    h.request(in_dialog("UPDATE", 2, tag, "Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>"))
    await h.settle()
    up = h.take("UPDATE", PHONE)
    assert up.body == b"" and up.call_id == inv.call_id and up.to.tag == "phonetag"
    h.response(phone_response(up, 200))
    await h.settle()
    assert h.take("200 OK", BROWSER.flow_id).cseq.method == "UPDATE"
    h.b2b.on_flow_closed(BROWSER.flow_id)
    await h.settle()
    h.assert_clean()


# ---- RFC 4733 from the phone -> SIP INFO toward the browser (dtmf-type info) ---------------------------


def test_dtmf_sink_reports_each_event_once_at_its_end() -> None:
    from rtc2sip.media.dtmf_sink import DtmfSink
    from rtc2sip.media.tap import CodecInfo

    got: list[tuple[str, int]] = []
    sink = DtmfSink(lambda d, ms: got.append((d, ms)))
    sink.codecs_changed({"audio": {"legacy": {0: CodecInfo("PCMU", 8000), 101: CodecInfo("telephone-event", 8000)},
                                   "webrtc": {126: CodecInfo("telephone-event", 48000)}}})
    sink.packet("audio", "legacy", rtp_event(101, 5, False, 160), 0.0)
    sink.packet("audio", "legacy", rtp_event(101, 5, True, 800, seq=2), 0.0)
    sink.packet("audio", "legacy", rtp_event(101, 5, True, 800, seq=3), 0.0)  # the end, retransmitted
    sink.packet("audio", "webrtc", rtp_event(126, 1, True, 800), 0.0)  # the browser's: not ours to report
    sink.packet("audio", "legacy", rtp_event(0, 7, True, 800, ts=5000), 0.0)  # PCMU, not an event
    sink.packet("audio", "legacy", rtp_event(101, 11, True, 400, ts=9000), 0.0)
    sink.packet("audio", "legacy", rtp_event(101, 16, True, 400, ts=9999), 0.0)  # flash: no DTMF digit
    sink.packet("audio", "legacy", b"\x80\x65\x00\x01", 0.0)  # short: ignored
    assert got == [("5", 100), ("#", 50)]
    sink.close()
    sink.packet("audio", "legacy", rtp_event(101, 1, True, 400, ts=12000), 0.0)
    assert got == [("5", 100), ("#", 50)]


class TapMedia(FakeMedia):
    def __init__(self) -> None:
        super().__init__()
        self.sinks: dict[str, list[Any]] = {}

    def attach(self, session: str, sink: Any) -> None:
        self.sinks.setdefault(session, []).append(sink)

    async def delete(self, session: str) -> None:
        for sink in self.sinks.pop(session, []):
            sink.close()
        await super().delete(session)


async def test_phone_rfc4733_becomes_info_toward_the_browser_with_dtmf_type_info() -> None:
    from rtc2sip.media.tap import CodecInfo

    h = Harness(BreakerConfig(dtmf_type="info"))
    h.media = TapMedia()
    h.b2b = B2bua(h, h.media, BreakerConfig(dtmf_type="info"))
    _inv, tag = await established(h)
    [sink] = h.media.sinks[next(iter(h.media.sessions))]
    sink.codecs_changed({"audio": {"legacy": {101: CodecInfo("telephone-event", 8000)}}})
    sink.packet("audio", "legacy", rtp_event(101, 10, True, 1280), 0.0)
    await h.settle()
    info = h.take("INFO", BROWSER.flow_id)
    assert info.get("Content-Type") == "application/dtmf-relay"
    assert info.body == b"Signal=*\r\nDuration=160\r\n" and info.call_id == "browser-call-1"
    h.response(make_response(info, 200, to_tag="atag"))
    # and the browser's own INFO digits stay INFO toward the phone (no RFC 4733 conversion)
    h.request(in_dialog("INFO", 2, tag, "Content-Type: application/dtmf-relay"), body="Signal=5\r\nDuration=160\r\n")
    await h.settle()
    assert h.take("INFO", PHONE).body == b"Signal=5\r\nDuration=160\r\n"
    assert ("send_dtmf", "5") not in h.media.calls
    h.request(in_dialog("BYE", 3, tag))
    await h.settle()
    h.take("BYE", PHONE)
    h.assert_clean()
    assert h.media.sinks == {}


async def test_browser_invite_replacing_its_own_dialog_goes_to_the_phone_with_the_legacy_dialog() -> None:
    """The other leg (RFC 3891 from the browser side): a browser's new INVITE whose Replaces names its
    dialog with us goes to the phone, with Replaces naming the legacy dialog as the phone knows it."""
    h = Harness()
    inv, tag = await established(h)
    replaces = f"browser-call-1;to-tag={tag};from-tag=atag"
    text = browser_invite(cseq=1).replace("Call-ID: browser-call-1", "Call-ID: browser-call-2")
    h.request(text.replace("z9hG4bKbr1", "z9hG4bKbr9") + f"\nReplaces: {replaces}", body=BROWSER_OFFER)
    await h.settle()
    out = h.take("INVITE", PHONE)
    assert out.get("Replaces") == f"{inv.call_id};to-tag=phonetag;from-tag={inv.from_.tag}"
    assert out.uri_text == "sip:bob@192.0.2.10:5060" and out.call_id not in (inv.call_id, "browser-call-2")
    h.b2b.on_flow_closed(BROWSER.flow_id)
    await h.settle()
    h.assert_clean()


async def test_200_waits_for_the_prack_of_a_reliable_183_with_sdp() -> None:
    """RFC 3262 §3: toward a phone that requires 100rel, the browser's 183 with SDP goes reliably and
    the browser's 200 is held until the phone PRACKs that 183."""
    h = Harness()
    h.targets = [Target("ws", "127.0.0.1", 50000, BROWSER.flow_id)]
    h.request(phone_invite("Require: 100rel"), source=PHONE_SRC, body=sdp("phone-offer"))
    await h.settle()
    out = h.take("INVITE", BROWSER.flow_id)
    assert isinstance(out, Request)
    for status in (183, 200):
        resp = browser_response(out, status, sdp("browser-answer", "UDP/TLS/RTP/SAVPF"), "btag",
                                "<sip:alice@x.invalid;transport=ws>")
        h.response(resp)
        await h.settle()
    h.take("ACK", BROWSER.flow_id)
    early = h.take("183", PHONE_SRC)
    assert isinstance(early, Response) and early.get("Require") == "100rel" and early.body
    h.none("200 OK")  # held
    h.request(phone_prack(early.to.tag, early.get("RSeq")), source=PHONE_SRC)
    await h.settle()
    assert h.take("200 OK", PHONE_SRC).cseq.method == "PRACK"
    ok = h.take("200 OK", PHONE_SRC)
    assert ok.cseq.method == "INVITE" and b"s=legacy-answer" in ok.body
    h.b2b.on_flow_closed(BROWSER.flow_id)
    await h.settle()
    h.assert_clean()


async def test_update_with_sdp_in_an_early_dialog_after_the_early_answer() -> None:
    """RFC 3311 §5.1: once the phone's 183 gave the early answer, its UPDATE with a new offer goes to the
    browser (in the still early dialog) through the media plane; before that it is 491."""
    h = Harness()
    inv = await invited(h, 180)
    assert isinstance(inv, Request)
    h.take("180", BROWSER.flow_id)
    h.request(phone_request("UPDATE", inv, 2, branch="z9hG4bKu0"), source=PHONE_SRC,
              body=sdp("phone-early-hold", direction="sendonly"))
    await h.settle()
    assert h.take("491", PHONE_SRC)  # no offer/answer done yet
    h.response(phone_response(inv, 183, sdp("phone-early")))
    await h.settle()
    early = h.take("183", BROWSER.flow_id)
    h.request(phone_request("UPDATE", inv, 3, branch="z9hG4bKu1"), source=PHONE_SRC,
              body=sdp("phone-early-hold", direction="sendonly"))
    await h.settle()
    up = h.take("UPDATE", BROWSER.flow_id)
    assert isinstance(up, Request) and b"a=sendonly" in up.body and up.to.tag == "atag"
    assert up.from_.tag == early.to.tag
    resp = browser_response(up, 200, sdp("browser-held", "UDP/TLS/RTP/SAVPF", "recvonly"))
    h.response(resp)
    await h.settle()
    ok = h.take("200 OK", PHONE_SRC)
    assert ok.cseq.method == "UPDATE" and b"s=legacy-answer" in ok.body
    h.b2b.on_flow_closed(BROWSER.flow_id)
    await h.settle()
    h.assert_clean()


# ---- RFC 5168 picture_fast_update ------------------------------------------------------------------


class VideoMedia(FakeMedia):
    """A plane with video: takes keyframe requests, and tells when it asked the legacy side for one."""

    def __init__(self) -> None:
        super().__init__()
        self.keyframe_hook: Callable[[str, str], None] | None = None

    def request_keyframe(self, session: str, *, from_webrtc: bool) -> bool:
        self.calls.append(("request_keyframe", from_webrtc))
        return True

    def on_keyframe_request(self, callback: Callable[[str, str], None]) -> None:
        self.keyframe_hook = callback


async def test_picture_fast_update_both_ways() -> None:
    """A phone's INFO picture_fast_update becomes a keyframe request to the media plane (answered
    200 here, not relayed to the browser); the plane's keyframe request toward the phone becomes an
    INFO picture_fast_update to it, at most one a second."""
    h = Harness()
    media = VideoMedia()
    h.media = media
    h.b2b = B2bua(h, media, BreakerConfig())
    inv, _ = await established(h)
    request = phone_request("INFO", inv, 5).rstrip() + "\n        Content-Type: application/media_control+xml"
    h.request(request, source=PHONE_SRC, body=PICTURE_FAST_UPDATE)
    await h.settle()
    assert ("request_keyframe", True) in media.calls
    assert h.take("200 OK", PHONE_SRC).cseq.method == "INFO"
    assert not [m for m, _ in h.sent if isinstance(m, Request) and m.method == "INFO"]
    assert media.keyframe_hook is not None
    session = next(iter(media.sessions))
    media.keyframe_hook(session, "browser-call-1")
    media.keyframe_hook(session, "browser-call-1")  # within the second: no second INFO
    await h.settle()
    info = h.take("INFO", PHONE)
    assert info.get("Content-Type") == "application/media_control+xml" and b"picture_fast_update" in info.body
    assert not [m for m, _ in h.sent if isinstance(m, Request) and m.method == "INFO"]


async def test_a_callee_that_never_answers_gets_the_caller_a_408_and_a_cancel_once_it_rings() -> None:
    h = Harness(BreakerConfig(final_response_timeout=0.05))
    inv = await invited(h)
    h.sent.clear()
    await asyncio.sleep(0.1)
    assert h.take("408", BROWSER.flow_id).cseq.method == "INVITE"
    h.assert_clean()
    h.response(phone_response(inv, 180))  # it wakes up: §9.1, the CANCEL goes now
    await h.settle()
    cancel = h.take("CANCEL", PHONE)
    assert isinstance(inv, Request) and cancel.call_id == inv.call_id


async def test_a_ringing_callee_is_not_cut_by_the_final_response_timeout() -> None:
    h = Harness(BreakerConfig(final_response_timeout=0.05))
    await invited(h, 180)
    h.sent.clear()
    await asyncio.sleep(0.1)
    h.none("408")
    assert h.b2b.table_sizes()["calls"] == 1
