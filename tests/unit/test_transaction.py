"""SIP transaction machines and layer (RFC 3261 §17, RFC 6026), driven by a virtual clock."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtc2sip.sip import (
    Action,
    CancelTimer,
    ClientTransaction,
    Deliver,
    InviteClientTransaction,
    InviteServerTransaction,
    LayerAction,
    LayerFull,
    LocalProtocolError,
    Message,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Request,
    Response,
    ServerTransaction,
    StartTimer,
    State,
    Terminated,
    Timeout,
    Timers,
    Transaction,
    TransactionLayer,
    Transmit,
    TransportError,
    client_transaction,
    make_ack,
    make_cancel,
    make_response,
    new_branch,
    parse_message,
    server_transaction,
)

K = TypeVar("K")
_counter = itertools.count()


# ---- helpers ---------------------------------------------------------------------------------------------


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKabc",
    host: str = "10.0.0.1",
    port: int | None = 5060,
    cseq: int = 1,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    from_tag: str = "ft",
    call_id: str = "call-1",
    uri: str = "sip:bob@b.example",
    routes: tuple[str, ...] = (),
    transport: str = "UDP",
) -> Request:
    sent_by = host if port is None else f"{host}:{port}"
    via = f"SIP/2.0/{transport} {sent_by}" + (f";branch={branch}" if branch else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKbelow",
        "Max-Forwards: 70",
        *(f"Route: {r}" for r in routes),
        f"From: <sip:alice@a.example>;tag={from_tag}",
        "To: <sip:bob@b.example>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:alice@10.0.0.1>",
    ]
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def unique_request(method: str = "INVITE", transport: str = "UDP") -> Request:
    n = next(_counter)
    return request(method, branch=f"z9hG4bKu{n}", call_id=f"call-{n}", transport=transport)


def response(req: Request, status: int, to_tag: str | None = "tt") -> Response:
    return make_response(req, status, to_tag=to_tag)


def kinds(actions: Sequence[Action]) -> list[type]:
    return [type(a) for a in actions]


def only(actions: Sequence[Action], kind: type[K]) -> list[K]:
    return [a for a in actions if isinstance(a, kind)]


def one(actions: Sequence[Action], kind: type[K]) -> K:
    found = only(actions, kind)
    assert len(found) == 1, actions
    return found[0]


def status_of(action: Action) -> int:
    assert isinstance(action, Transmit | Deliver)
    assert isinstance(action.message, Response)
    return action.message.status


def delivered_txn(actions: Sequence[Action]) -> Transaction | None:
    return one(actions, Deliver).txn


def new_server(layer: TransactionLayer, req: Request, now: float = 0.0, **kw: object) -> ServerTransaction:
    txn = one(layer.receive_request(req, now, **kw), Deliver).txn  # type: ignore[arg-type]
    assert isinstance(txn, ServerTransaction)
    return txn


def timers_started(actions: Sequence[Action]) -> dict[str, float]:
    return {a.name: a.delay for a in only(actions, StartTimer)}


class Clock:
    """Virtual time for a layer: runs every timer in order, recording what each tick produced."""

    def __init__(self, layer: TransactionLayer) -> None:
        self.layer = layer
        self.now = 0.0
        self.log: list[tuple[float, LayerAction]] = []

    def run_until(self, end: float) -> list[tuple[float, LayerAction]]:
        out: list[tuple[float, LayerAction]] = []
        while (deadline := self.layer.next_timer_deadline()) is not None and deadline <= end:
            self.now = deadline
            out.extend((deadline, a) for a in self.layer.tick(deadline))
        self.now = max(self.now, end)
        self.log.extend(out)
        return out


def send_times(log: Sequence[tuple[float, Action]]) -> list[float]:
    return [round(t, 6) for t, a in log if isinstance(a, Transmit)]


def timeline(log: Sequence[tuple[float, Action]]) -> list[tuple[float, type]]:
    return [(round(t, 6), type(a)) for t, a in log]


# ---- INVITE client (§17.1.1, RFC 6026 §7.2) --------------------------------------------------------------


def test_invite_client_start_sends_request_and_arms_a_and_b() -> None:
    req = request()
    txn = client_transaction(req)
    assert isinstance(txn, InviteClientTransaction)
    actions = txn.start()
    assert kinds(actions) == [Transmit, StartTimer, StartTimer]
    assert one(actions, Transmit).message is req
    assert timers_started(actions) == {"A": 0.5, "B": 32.0}
    assert txn.state is State.CALLING


def test_invite_over_udp_retransmits_with_doubling_a_until_b_times_out() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    txn, actions = layer.send_request(request(), 0.0)
    first = one(actions, Transmit)
    log = clock.run_until(100.0)
    # A: 0.5, 1, 2, 4, 8, 16 -> retransmissions at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5; B = 64*T1 = 32 s
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(a is first for _, a in log if isinstance(a, Transmit))  # one Transmit, serialised once
    assert timeline(log)[-2:] == [(32.0, Timeout), (32.0, Terminated)]
    timeout = one([a for _, a in log], Timeout)
    assert timeout.response is not None and timeout.response.status == 408
    assert timeout.response.top_via.branch == "z9hG4bKabc"  # as if it came from downstream (§16.8)
    assert txn.terminated and len(layer) == 0 and layer.next_timer_deadline() is None


def test_invite_over_reliable_transport_never_retransmits() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    _, actions = layer.send_request(request(transport="TCP"), 0.0, reliable=True)
    assert kinds(actions) == [Transmit]
    assert timeline(clock.run_until(100.0)) == [(32.0, Timeout), (32.0, Terminated)]


def test_invite_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    req = request()
    txn, _ = layer.send_request(req, 0.0)
    clock.run_until(0.7)
    actions = layer.receive_response(response(req, 180), 0.7)
    assert kinds(actions) == [Deliver] and delivered_txn(actions) is txn
    assert isinstance(txn, InviteClientTransaction)
    assert txn.state is State.PROCEEDING and txn.cancellable
    assert clock.run_until(1000.0) == []  # Proceeding waits for a final response forever (TU runs timer C)
    assert status_of(layer.receive_response(response(req, 183), 1000.0)[0]) == 183


def test_invite_failure_is_acknowledged_by_the_transaction_and_absorbed_when_retransmitted() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    req = request(routes=("<sip:p1.example;lr>", "<sip:p2.example;lr>"))
    txn, _ = layer.send_request(req, 0.0, peer="next-hop")
    layer.receive_response(response(req, 180), 0.1)
    actions = layer.receive_response(response(req, 486), 0.2)
    assert kinds(actions) == [Transmit, Deliver]
    ack_tx = one(actions, Transmit)
    assert ack_tx.peer == "next-hop" and ack_tx.txn is txn
    assert isinstance(ack_tx.message, Request) and ack_tx.message.method == "ACK"
    assert txn.state is State.COMPLETED and not txn.cancellable  # type: ignore[attr-defined]
    # a retransmitted 486 is answered with the same ACK and not passed up again
    assert layer.receive_response(response(req, 486), 1.0) == [ack_tx]
    assert timeline(clock.run_until(100.0)) == [(32.2, Terminated)]  # timer D, at least 32 s


def test_invite_failure_over_reliable_transport_terminates_at_once() -> None:
    txn = client_transaction(request(transport="TCP"), reliable=True)
    txn.start()
    actions = txn.receive(response(txn.request, 404))
    assert kinds(actions) == [CancelTimer, CancelTimer, Transmit, Deliver, Terminated]  # D = 0
    assert txn.terminated


def test_invite_2xx_moves_to_accepted_delivers_every_2xx_and_ends_on_timer_m() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    req = request()
    txn, _ = layer.send_request(req, 0.0)
    actions = layer.receive_response(response(req, 200), 0.3)
    assert kinds(actions) == [Deliver]  # no ACK from the transaction for a 2xx (§13.2.2.4)
    assert txn.state is State.ACCEPTED
    # RFC 6026 §7.2: retransmitted 2xx (and 2xx from other forks) still match and go up to the TU
    again = layer.receive_response(response(req, 200, to_tag="other-fork"), 2.0)
    assert kinds(again) == [Deliver] and delivered_txn(again) is txn
    assert layer.receive_response(response(req, 486), 2.5) == []  # nothing else goes up in Accepted
    assert timeline(clock.run_until(100.0)) == [(32.3, Terminated)]  # timer M = 64*T1
    stray = layer.receive_response(response(req, 200), 40.0)
    assert kinds(stray) == [Deliver] and delivered_txn(stray) is None
    assert layer.stats.stray_responses == 1


def test_invite_transport_error_in_calling_reports_503() -> None:
    layer = TransactionLayer()
    txn, _ = layer.send_request(request(), 0.0)
    actions = layer.transport_error(txn, 0.1)
    assert kinds(actions) == [TransportError, Terminated]
    err = one(actions, TransportError)
    assert err.response is not None and err.response.status == 503  # §16.9
    assert len(layer) == 0 and layer.next_timer_deadline() is None
    assert layer.transport_error(txn, 0.2) == []


# ---- non-INVITE client (§17.1.2) -------------------------------------------------------------------------


def test_non_invite_retransmissions_are_capped_at_t2_until_timer_f() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    txn, _ = layer.send_request(request("OPTIONS"), 0.0)
    assert isinstance(txn, NonInviteClientTransaction)
    log = clock.run_until(100.0)
    # E: 0.5, 1, 2, 4, 4, 4, ... (capped at T2 = 4) until F = 64*T1 = 32
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert timeline(log)[-2:] == [(32.0, Timeout), (32.0, Terminated)]


def test_non_invite_provisional_switches_e_to_t2() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    req = request("REGISTER")
    layer.send_request(req, 0.0)
    clock.run_until(0.6)  # one retransmission at 0.5, next E due at 1.5
    assert kinds(layer.receive_response(response(req, 100), 0.6)) == [Deliver]
    # 1.5 was armed in Trying; from then on E is T2 (§17.1.2.2)
    assert send_times(clock.run_until(12.0)) == [1.5, 5.5, 9.5]


def test_non_invite_final_response_is_delivered_once_then_timer_k() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    req = request("BYE", to_tag="x")
    txn, _ = layer.send_request(req, 0.0)
    assert kinds(layer.receive_response(response(req, 200), 0.2)) == [Deliver]
    assert txn.state is State.COMPLETED
    assert layer.receive_response(response(req, 200), 0.8) == []  # absorbed
    assert timeline(clock.run_until(100.0)) == [(5.2, Terminated)]  # K = T4, nothing sent


def test_non_invite_over_reliable_transport() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    req = request("MESSAGE", transport="WSS")
    _, actions = layer.send_request(req, 0.0, reliable=True)
    assert kinds(actions) == [Transmit]  # timer actions stay inside the layer
    assert clock.run_until(10.0) == []  # no timer E
    assert kinds(layer.receive_response(response(req, 202), 10.0)) == [Deliver, Terminated]  # K = 0
    assert len(layer) == 0


# ---- INVITE server (§17.2.1, RFC 6026 §7.1) --------------------------------------------------------------


def test_invite_server_delivers_request_and_answers_100_at_once() -> None:
    txn = server_transaction(request(), peer="flow-1")
    assert isinstance(txn, InviteServerTransaction)
    actions = txn.start()
    assert kinds(actions) == [Deliver, Transmit]
    trying = one(actions, Transmit)
    assert trying.peer == "flow-1" and status_of(trying) == 100
    assert isinstance(trying.message, Response) and trying.message.to.tag is None
    assert txn.receive(request()) == [trying]  # a retransmitted INVITE gets the 100 again


def test_invite_server_without_auto_trying_absorbs_retransmissions_until_tu_answers() -> None:
    txn = server_transaction(request(), trying=False)
    assert kinds(txn.start()) == [Deliver]
    assert txn.receive(request()) == []
    sent = txn.send(response(txn.request, 180))
    assert txn.receive(request()) == sent
    assert txn.last_response is not None and txn.last_response.status == 180


def test_invite_server_failure_retransmitted_on_g_capped_at_t2_until_h() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    req = request()
    txn = new_server(layer, req, peer="up")
    assert isinstance(txn, InviteServerTransaction)
    final = one(layer.send_response(txn, response(req, 486), 1.0), Transmit)
    log = clock.run_until(100.0)
    # G from 1.0: 0.5, 1, 2, 4, 4, ... (min(2G, T2)) until H = 64*T1 at 33.0
    assert send_times(log) == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert all(a is final for _, a in log if isinstance(a, Transmit))
    assert timeline(log)[-2:] == [(33.0, Timeout), (33.0, Terminated)]
    assert one([a for _, a in log], Timeout).response is None
    assert len(layer) == 0


def test_invite_server_ack_stops_g_then_timer_i() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    req = request()
    txn = new_server(layer, req)
    err = response(req, 603)
    layer.send_response(txn, err, 0.0)
    assert send_times(clock.run_until(0.6)) == [0.5]
    ack = make_ack(req, err)
    assert layer.receive_request(ack, 0.6) == []  # the ACK of a non-2xx is hop-by-hop: not passed up
    assert txn.state is State.CONFIRMED
    assert layer.receive_request(ack, 0.7) == []  # absorbed
    assert layer.receive_request(req, 0.8) == []  # the INVITE too
    assert timeline(clock.run_until(100.0)) == [(5.6, Terminated)]  # I = T4, no more G


def test_invite_server_resends_final_on_retransmitted_invite() -> None:
    txn = server_transaction(request())
    txn.start()
    sent = txn.send(response(txn.request, 480))
    assert txn.receive(request()) == [sent[0]]


def test_invite_server_reliable_has_no_g_and_ends_on_ack() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    req = request(transport="TCP")
    txn = new_server(layer, req, reliable=True)
    err = response(req, 404)
    layer.send_response(txn, err, 0.0)
    assert clock.run_until(10.0) == []  # no timer G
    assert kinds(layer.receive_request(make_ack(req, err), 10.0)) == [Terminated]  # I = 0
    assert txn.terminated and len(layer) == 0


def test_invite_server_2xx_accepted_absorbs_invites_passes_acks_and_ends_on_l() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    req = request()
    txn = new_server(layer, req)
    ok = response(req, 200)
    assert kinds(layer.send_response(txn, ok, 1.0)) == [Transmit]
    assert txn.state is State.ACCEPTED
    assert layer.receive_request(req, 1.5) == []  # RFC 6026 §7.1: absorbed, not resent, not passed up
    assert clock.run_until(5.0) == []  # the server transaction never retransmits a 2xx itself
    # the TU (UAS core, §13.3.1.4) retransmits the 2xx through the transaction
    assert kinds(layer.send_response(txn, ok, 5.0)) == [Transmit]
    ack = make_ack(req, ok)  # same branch: a legacy or sloppy peer; RFC 6026 figure 7 passes it up
    delivered = layer.receive_request(ack, 5.5)
    assert kinds(delivered) == [Deliver] and delivered_txn(delivered) is txn
    assert timeline(clock.run_until(100.0)) == [(33.0, Terminated)]  # L = 64*T1


def test_invite_server_forwards_a_late_2xx_but_keeps_retransmitting_its_failure() -> None:
    txn = server_transaction(request())
    txn.start()
    fail = txn.send(response(txn.request, 487))[0]
    late = txn.send(response(txn.request, 200, to_tag="fork2"))
    assert kinds(late) == [Transmit] and late[0] is not fail  # §16.7 step 5
    assert txn.timer_fired("G")[0] is fail
    assert txn.send(response(txn.request, 500)) == []  # a second non-2xx final is discarded


def test_invite_server_transport_error_per_rfc_6026() -> None:
    txn = server_transaction(request())
    txn.start()
    assert kinds(txn.transport_error()) == [TransportError]
    assert txn.state is State.PROCEEDING  # RFC 6026 figure 7: the TU is told, the machine stays
    txn.send(response(txn.request, 500))
    assert kinds(txn.transport_error()) == [TransportError, Terminated]


# ---- non-INVITE server (§17.2.2) -------------------------------------------------------------------------


def test_non_invite_server_lifecycle() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    req = request("REGISTER")
    actions = layer.receive_request(req, 0.0)
    assert kinds(actions) == [Deliver]  # the 100 is the TU's call for non-INVITE (RFC 4320)
    txn = delivered_txn(actions)
    assert isinstance(txn, NonInviteServerTransaction)
    assert layer.receive_request(req, 0.5) == []  # Trying: retransmissions are discarded
    prov = layer.send_response(txn, response(req, 100), 0.6)
    assert layer.receive_request(req, 1.0) == prov  # Proceeding: last provisional resent
    final = layer.send_response(txn, response(req, 200), 1.2)
    assert layer.receive_request(req, 2.0) == final  # Completed: final resent
    assert layer.send_response(txn, response(req, 500), 2.1) == []  # other finals discarded (§17.2.2)
    assert timeline(clock.run_until(100.0)) == [(33.2, Terminated)]  # J = 64*T1 over UDP
    with pytest.raises(LocalProtocolError):
        layer.send_response(txn, response(req, 200), 100.0)


def test_non_invite_server_over_reliable_transport_ends_with_the_final_response() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", transport="WS")
    txn = new_server(layer, req, reliable=True, peer="ws-7")
    actions = layer.send_response(txn, response(req, 200), 0.0)
    assert kinds(actions) == [Transmit, Terminated]  # J = 0
    assert one(actions, Transmit).peer == "ws-7"
    assert len(layer) == 0


def test_tu_misuse_raises_local_protocol_error() -> None:
    txn = server_transaction(request("OPTIONS"))
    with pytest.raises(LocalProtocolError):
        txn.send(response(txn.request, 200))  # not started
    txn.start()
    with pytest.raises(LocalProtocolError):
        txn.start()
    txn.send(response(txn.request, 200))
    with pytest.raises(LocalProtocolError):
        txn.send(response(txn.request, 180))  # provisional after final
    with pytest.raises(LocalProtocolError):
        client_transaction(request("ACK"))
    with pytest.raises(LocalProtocolError):
        server_transaction(request("ACK"))


def test_stale_and_unknown_timers_are_absorbed() -> None:
    txn = client_transaction(request())
    txn.start()
    txn.receive(response(txn.request, 180))
    assert txn.timer_fired("A") == [] and txn.timer_fired("B") == [] and txn.timer_fired("Z") == []
    reliable = client_transaction(request(transport="TCP"), reliable=True)
    reliable.start()
    assert reliable.timer_fired("A") == []  # never armed over TCP


# ---- matching (§17.1.3, §17.2.3) -------------------------------------------------------------------------


def test_server_matching_uses_branch_sent_by_and_method() -> None:
    layer = TransactionLayer()
    first = layer.receive_request(request(), 0.0)
    txn = delivered_txn(first)
    assert layer.receive_request(request(), 0.1) == [first[1]]  # retransmission: the 100 again
    assert layer.find_server(request()) is txn
    # the same branch from another sent-by is another transaction
    assert delivered_txn(layer.receive_request(request(port=5070), 0.2)) is not txn
    # sent-by hosts compare case-insensitively
    named = new_server(layer, request(host="PC33.Example.com"), 0.3)
    assert layer.find_server(request(host="pc33.example.COM")) is named
    # the same branch with another method (not ACK, not CANCEL) is another transaction too
    assert delivered_txn(layer.receive_request(request("INFO", to_tag="x"), 0.4)) is not txn
    assert len(layer) == 4


def test_ack_for_2xx_with_a_new_branch_is_stray() -> None:
    layer = TransactionLayer()
    req = request()
    txn = new_server(layer, req)
    layer.send_response(txn, response(req, 200), 0.0)
    ack = request("ACK", branch="z9hG4bKnew", to_tag="tt")
    actions = layer.receive_request(ack, 0.1)
    assert kinds(actions) == [Deliver] and delivered_txn(actions) is None
    assert layer.stats.stray_acks == 1 and len(layer) == 1


def test_cancel_has_its_own_server_transaction_and_finds_its_invite() -> None:
    layer = TransactionLayer()
    invite = request()
    inv_txn = new_server(layer, invite)
    cancel = make_cancel(invite)
    cancel_txn = new_server(layer, cancel, 0.5)
    assert isinstance(cancel_txn, NonInviteServerTransaction) and cancel_txn is not inv_txn
    assert layer.find_cancel_target(cancel) is inv_txn
    assert layer.find_cancel_target(make_cancel(request(branch="z9hG4bKother"))) is None
    assert layer.find_cancel_target(make_cancel(request(port=5099))) is None
    layer.send_response(cancel_txn, response(cancel, 200), 0.5)
    assert status_of(layer.send_response(inv_txn, response(invite, 487), 0.5)[0]) == 487


def test_rfc2543_fallback_matching() -> None:
    layer = TransactionLayer()
    invite = request(branch=None)
    txn = new_server(layer, invite)
    assert status_of(layer.receive_request(request(branch=None), 0.1)[0]) == 100  # a retransmission
    # any field of the §17.2.3 tuple differing makes a new transaction
    for other in (
        request(branch=None, from_tag="other"),
        request(branch=None, cseq=2),
        request(branch=None, uri="sip:carol@b.example"),
        request(branch=None, call_id="call-2"),
        request(branch=None, port=5080),
    ):
        assert new_server(layer, other, 0.2) is not txn
    assert len(layer) == 6
    # a branch without the magic cookie is not an RFC 3261 branch: the fallback applies
    txn2 = new_server(layer, request(branch="1234", call_id="legacy-2"), 0.3)
    assert layer.find_server(request(branch="1234", call_id="legacy-2")) is txn2
    # CANCEL: Request-URI, tags, Call-ID, CSeq number and top Via of the INVITE (§9.2)
    assert layer.find_cancel_target(make_cancel(invite)) is txn
    # ACK: matched with the To tag of the response it acknowledges
    err = response(invite, 486, to_tag="uas-tag")
    layer.send_response(txn, err, 0.4)
    assert layer.find_server(make_ack(invite, err)) is txn
    assert layer.receive_request(make_ack(invite, err), 0.5) == []
    assert txn.state is State.CONFIRMED
    wrong = request("ACK", branch=None, to_tag="other-tag")
    assert delivered_txn(layer.receive_request(wrong, 0.5)) is None


def test_client_matching_by_branch_and_cseq_method_keeps_cancel_apart() -> None:
    layer = TransactionLayer()
    invite = request(branch=layer.new_branch())
    inv_txn, _ = layer.send_request(invite, 0.0)
    layer.receive_response(response(invite, 180), 0.1)
    cancel = make_cancel(invite)
    cancel_txn, _ = layer.send_request(cancel, 0.2)  # same branch as the INVITE (§9.1)
    assert cancel_txn is not inv_txn and isinstance(cancel_txn, NonInviteClientTransaction)
    assert layer.find_client(invite.top_via.branch or "", "CANCEL") is cancel_txn
    assert delivered_txn(layer.receive_response(response(cancel, 200), 0.3)) is cancel_txn
    assert delivered_txn(layer.receive_response(response(invite, 487), 0.4)) is inv_txn
    assert inv_txn.state is State.COMPLETED
    # a response whose branch this element never used is stray
    assert delivered_txn(layer.receive_response(response(request(branch="z9hG4bKnope"), 200), 0.5)) is None


def test_client_transaction_needs_a_fresh_branch() -> None:
    layer = TransactionLayer()
    layer.send_request(request(), 0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request(), 0.1)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request(branch=None), 0.1)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request("ACK", branch="z9hG4bKack"), 0.1)
    assert len(layer) == 1


def test_receive_dispatches_on_message_type() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    client, _ = layer.send_request(req, 0.0)
    assert delivered_txn(layer.receive(response(req, 200), 0.1)) is client
    assert isinstance(delivered_txn(layer.receive(unique_request("OPTIONS"), 0.1, peer="x")), ServerTransaction)


# ---- bounds, cleanup, time -------------------------------------------------------------------------------


def test_layer_is_bounded_and_rejects_statelessly_when_full() -> None:
    layer = TransactionLayer(max_transactions=2)
    layer.send_request(unique_request("OPTIONS"), 0.0, reliable=True)
    srv = new_server(layer, unique_request("OPTIONS"), reliable=True, peer="p")
    assert len(layer) == 2
    with pytest.raises(LayerFull):
        layer.send_request(unique_request(), 0.0)
    busy = layer.receive_request(unique_request(), 0.0, peer="p9")
    tx = one(busy, Transmit)
    assert len(busy) == 1 and tx.txn is None and tx.peer == "p9" and status_of(tx) == 503
    assert tx.message.get("Retry-After") == "5"
    assert layer.stats.rejected == 1 and len(layer) == 2
    # a terminated transaction frees its slot at once
    layer.send_response(srv, response(srv.request, 200), 0.1)
    assert len(layer) == 1
    layer.send_request(unique_request(), 0.2)
    assert len(layer) == 2
    with pytest.raises(ValueError):
        TransactionLayer(max_transactions=0)


def test_next_deadline_skips_cancelled_timers() -> None:
    layer = TransactionLayer()
    req = request()
    layer.send_request(req, 0.0)
    assert layer.next_timer_deadline() == 0.5
    layer.receive_response(response(req, 200), 0.1)  # cancels A and B, arms M
    assert layer.next_timer_deadline() == pytest.approx(32.1)


def test_late_tick_rearms_from_now_instead_of_bursting() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), 0.0)
    assert kinds(layer.tick(10.0)) == [Transmit]  # the loop stalled: E was due at 0.5
    assert layer.next_timer_deadline() == 11.0  # E doubled to 1 s, counted from the late tick


def test_stale_heap_entries_are_compacted() -> None:
    layer = TransactionLayer()
    for _ in range(3000):
        req = unique_request("OPTIONS")
        layer.send_request(req, 0.0)
        layer.receive_response(response(req, 200), 0.0)  # cancels E and F, arms K
    assert len(layer) == 3000
    assert len(layer._heap) < 3 * 3000  # without compaction: 9000 entries, 6000 of them stale
    layer.tick(1000.0)
    assert len(layer) == 0 and layer.next_timer_deadline() is None and layer._heap == []


def test_terminated_transactions_leave_no_keys_behind() -> None:
    layer = TransactionLayer()
    invite = request(branch=None)
    txn = new_server(layer, invite)
    layer.send_response(txn, response(invite, 404), 0.0)  # also indexes the RFC 2543 ACK key
    assert len(layer._servers) == 2
    layer.transport_error(txn, 0.1)
    assert len(layer) == 0 and layer._servers == {} and layer._clients == {}


def test_timers_configurable() -> None:
    timers = Timers(t1=0.1, t2=0.4, t4=1.0)
    assert [timers.b, timers.f, timers.h, timers.j, timers.l, timers.m] == pytest.approx([6.4] * 6)
    assert timers.d == 32.0 and timers.i == timers.k == 1.0
    assert Timers(t1=1.0).d == 64.0
    with pytest.raises(ValueError):
        Timers(t1=5.0, t2=4.0)
    layer = TransactionLayer(timers)
    clock = Clock(layer)
    layer.send_request(request(), 0.0)
    assert send_times(clock.run_until(10.0)) == [0.1, 0.3, 0.7, 1.5, 3.1, 6.3]  # B at 6.4


# ---- ACK, CANCEL, branches -------------------------------------------------------------------------------


def test_make_ack_follows_17_1_1_3() -> None:
    invite = request(routes=("<sip:p1.example;lr>",))
    ack = make_ack(invite, response(invite, 486, to_tag="callee"))
    assert ack.method == "ACK" and ack.uri_text == invite.uri_text
    assert ack.get_all("Via") == ["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc"]  # the top Via only
    assert ack.to.tag == "callee"
    assert ack.from_.tag == "ft" and ack.call_id == invite.call_id
    assert str(ack.cseq) == "1 ACK"
    assert ack.get_all("Route") == ["<sip:p1.example;lr>"]
    assert ack.get("Contact") is None and ack.body == b""
    again = parse_message(ack.to_bytes())
    assert isinstance(again, Request) and again.method == "ACK"


def test_make_cancel_follows_9_1() -> None:
    invite = request(routes=("<sip:p1.example;lr>", "<sip:p2.example;lr>"))
    cancel = make_cancel(invite, reason='SIP;cause=200;text="Call completed elsewhere"')
    assert cancel.method == "CANCEL" and cancel.uri_text == invite.uri_text
    assert cancel.get_all("Via") == [invite.get_all("Via")[0]]
    assert cancel.get("To") == invite.get("To") and cancel.get("From") == invite.get("From")
    assert str(cancel.cseq) == "1 CANCEL" and cancel.call_id == invite.call_id
    assert cancel.get_all("Route") == invite.get_all("Route")
    assert cancel.get("Max-Forwards") == "70"
    assert cancel.get("Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    assert isinstance(parse_message(cancel.to_bytes()), Request)
    with pytest.raises(LocalProtocolError):
        make_cancel(request("ACK"))


def test_top_via_is_cut_from_a_combined_via_line() -> None:
    raw = (
        "INVITE sip:bob@b.example SIP/2.0\r\n"
        "Via: SIP/2.0/UDP p.example;branch=z9hG4bKtop, SIP/2.0/UDP a.example;branch=z9hG4bKlow\r\n"
        "From: <sip:a@a.example>;tag=1\r\nTo: <sip:b@b.example>\r\nCall-ID: x\r\nCSeq: 7 INVITE\r\n\r\n"
    )
    invite = parse_message(raw.encode())
    assert isinstance(invite, Request)
    cancel = make_cancel(invite)
    assert cancel.get_all("Via") == ["SIP/2.0/UDP p.example;branch=z9hG4bKtop"]
    assert cancel.get("Max-Forwards") == "70" and str(cancel.cseq) == "7 CANCEL"


def test_new_branch_has_magic_cookie_and_is_unique() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith("z9hG4bK") and len(b) == 7 + 16 for b in branches)
    assert TransactionLayer(branch_factory=lambda: "z9hG4bKfixed").new_branch() == "z9hG4bKfixed"


# ---- a proxy drives both sides ---------------------------------------------------------------------------


def test_proxy_call_flow_over_udp_both_sides() -> None:
    layer = TransactionLayer()
    clock = Clock(layer)
    invite = request()
    server = new_server(layer, invite, peer="caller")
    fwd = invite.copy()
    fwd.add("Via", f"SIP/2.0/UDP proxy.example;branch={layer.new_branch()}", top=True)
    client, down = layer.send_request(fwd, 0.0, peer="callee", context=server)
    assert one(down, Transmit).peer == "callee"
    for at, status in ((0.1, 180), (0.2, 200)):
        deliver = one(layer.receive_response(response(fwd, status), at), Deliver)
        assert deliver.txn is client and client.context is server
        assert isinstance(deliver.message, Response)
        upstream = deliver.message.copy()
        upstream.pop_first_value("Via")
        assert one(layer.send_response(server, upstream, at), Transmit).peer == "caller"
    log = clock.run_until(200.0)
    assert send_times(log) == []  # a 2xx is end-to-end: neither transaction retransmits it
    assert sorted(type(a.txn).__name__ for _, a in log if isinstance(a, Terminated)) == [
        "InviteClientTransaction",
        "InviteServerTransaction",
    ]
    assert len(layer) == 0


# ---- properties ------------------------------------------------------------------------------------------

t1s = st.floats(min_value=0.01, max_value=2.0, allow_nan=False)
ratios = st.floats(min_value=1.0, max_value=16.0)


@given(t1=t1s, ratio=ratios)
@settings(database=None, max_examples=60, deadline=None)
def test_property_invite_schedule_doubles_uncapped_until_64_t1(t1: float, ratio: float) -> None:
    layer = TransactionLayer(Timers(t1=t1, t2=t1 * ratio))
    clock = Clock(layer)
    layer.send_request(request(), 0.0)
    log = clock.run_until(1e9)
    sends = [t for t, a in log if isinstance(a, Transmit)]
    assert sends == pytest.approx([t1 * (2**k - 1) for k in range(1, 7)])  # T2 does not cap timer A
    assert [type(a) for _, a in log[-2:]] == [Timeout, Terminated]
    assert log[-1][0] == pytest.approx(64 * t1)


@given(t1=t1s, ratio=ratios, provisional_at=st.none() | st.floats(0, 100))
@settings(database=None, max_examples=60, deadline=None)
def test_property_non_invite_intervals_never_exceed_t2(t1: float, ratio: float, provisional_at: float | None) -> None:
    timers = Timers(t1=t1, t2=t1 * ratio)
    layer = TransactionLayer(timers)
    clock = Clock(layer)
    req = request("OPTIONS")
    layer.send_request(req, 0.0)
    if provisional_at is not None:
        clock.run_until(provisional_at)
        layer.receive_response(response(req, 100), clock.now)
    clock.run_until(1e9)
    sends = [0.0] + [t for t, a in clock.log if isinstance(a, Transmit)]
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert all(g <= timers.t2 * (1 + 1e-9) for g in gaps)
    assert all(b >= a * (1 - 1e-9) for a, b in itertools.pairwise(gaps))  # never shrinking
    assert sends[-1] < 64 * t1 and len(layer) == 0


NETWORK_STATUS = {"1xx": 180, "2xx": 200, "486": 486}
TU_STATUS = {"tu-1xx": 180, "tu-2xx": 200, "tu-486": 486}
EVENTS = [*NETWORK_STATUS, *TU_STATUS, "request", "ack", "transport", *"ABDEFGHIJKLM"]


def _feed(txn: Transaction, event: str) -> list[Action]:
    """One event into either kind of machine; events meaningless for its side are skipped."""
    req = txn.request
    if event in NETWORK_STATUS:
        return txn.receive(response(req, NETWORK_STATUS[event])) if isinstance(txn, ClientTransaction) else []
    if not isinstance(txn, ServerTransaction):
        return txn.transport_error() if event == "transport" else txn.timer_fired(event) if len(event) == 1 else []
    if event in TU_STATUS:
        try:
            return txn.send(response(req, TU_STATUS[event]))
        except LocalProtocolError:
            return []
    if event == "request":
        return txn.receive(req)
    if event == "ack":
        return txn.receive(request("ACK"))
    return txn.transport_error() if event == "transport" else txn.timer_fired(event)


@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]),
    side=st.sampled_from(["client", "server"]),
    reliable=st.booleans(),
    events=st.lists(st.sampled_from(EVENTS), max_size=30),
)
@settings(database=None, max_examples=300, deadline=None)
def test_property_machines_never_crash_and_terminate_once(
    method: str, side: str, reliable: bool, events: list[str]
) -> None:
    req = request(method)
    factory = client_transaction if side == "client" else server_transaction
    txn = factory(req, reliable=reliable)
    actions = list(txn.start())
    for event in events:
        was_terminated = txn.terminated
        got = _feed(txn, event)
        if was_terminated:
            assert got == []  # nothing moves once terminated
        if reliable:
            assert not any(a.name in "AEG" for a in only(got, StartTimer))  # no retransmission timers
        actions.extend(got)
    assert len(only(actions, Terminated)) == (1 if txn.terminated else 0)
    if txn.terminated:
        assert isinstance(actions[-1], Terminated)  # always the last action of a machine


@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from(["client", "server"]),
            st.sampled_from(["INVITE", "BYE", "OPTIONS"]),
            st.sampled_from([None, 100, 180, 200, 404]),
            st.booleans(),
            st.floats(0, 60),
        ),
        min_size=1,
        max_size=25,
    )
)
@settings(database=None, max_examples=80, deadline=None)
def test_property_layer_drains_to_empty(plan: list[tuple[str, str, int | None, bool, float]]) -> None:
    """Whatever happens, once each request has a final answer (or none, on the client side), time
    empties the layer: no transaction, key or timer is left behind."""
    layer = TransactionLayer()
    clock = Clock(layer)
    servers: list[ServerTransaction] = []
    for side, method, status, reliable, at in sorted(plan, key=lambda p: p[4]):
        clock.run_until(at)
        req = unique_request(method, transport="TCP" if reliable else "UDP")
        if side == "client":
            layer.send_request(req, clock.now, reliable=reliable)
            if status is not None:
                layer.receive_response(response(req, status), clock.now)
            if status is not None and status < 200:  # Proceeding waits for a final response forever
                layer.receive_response(response(req, 486), clock.now)
        else:
            txn = new_server(layer, req, clock.now, reliable=reliable)
            if status is not None:
                layer.send_response(txn, response(req, status), clock.now)
            servers.append(txn)
    for txn in servers:  # the TU must answer every request it was given
        if txn.state in (State.TRYING, State.PROCEEDING):
            layer.send_response(txn, response(txn.request, 500), clock.now)
        if txn.state is State.COMPLETED and isinstance(txn, InviteServerTransaction):
            assert txn.last_response is not None
            layer.receive_request(make_ack(txn.request, txn.last_response), clock.now)
    clock.run_until(clock.now + 1e6)
    assert len(layer) == 0 and layer._clients == {} and layer._servers == {}
    assert layer.next_timer_deadline() is None


def test_message_base_is_what_actions_carry() -> None:
    # Transmit and Deliver carry the message model's objects unchanged (no copies on the hot path)
    req = request("OPTIONS")
    txn = client_transaction(req)
    tx = one(txn.start(), Transmit)
    assert isinstance(tx.message, Message) and tx.message is req
    assert tx.payload() is tx.payload() and tx.payload().startswith(b"OPTIONS sip:bob@b.example SIP/2.0\r\n")


def test_cancel_and_ack_follow_a_request_uri_edited_in_place() -> None:
    invite = request()
    uri = invite.uri
    assert uri.scheme == "sip"
    uri.host = "gw.example"  # type: ignore[union-attr]  # a proxy retargeting its copy in place
    assert make_cancel(invite).uri_text == "sip:bob@gw.example"
    assert make_ack(invite, response(invite, 404)).uri_text == "sip:bob@gw.example"


def test_rfc2543_ack_matches_after_the_tu_rewrote_the_request() -> None:
    layer = TransactionLayer()
    invite = request(branch=None)
    txn = new_server(layer, invite)
    ack = make_ack(invite, response(invite, 404, to_tag="u"))  # what the client will send
    txn.request.uri_text = "sip:bob@elsewhere.example"  # the core retargeted the request it was given
    layer.send_response(txn, response(invite, 404, to_tag="u"), 0.0)
    assert layer.receive_request(ack, 0.1) == [] and txn.state is State.CONFIRMED


def test_server_requests_reusing_a_branch_in_other_calls_are_distinct_transactions() -> None:
    # RFC 4475 escnull and regescrt share a branch; over UDP the second went unanswered.
    layer = TransactionLayer()
    first = new_server(layer, request("REGISTER", branch="z9hG4bKshared", call_id="call-a"))
    second = new_server(layer, request("REGISTER", branch="z9hG4bKshared", call_id="call-b"))
    third = new_server(layer, request("REGISTER", branch="z9hG4bKshared", call_id="call-a", cseq=2))
    assert len({id(first), id(second), id(third)}) == 3
    # a true retransmission still matches its transaction
    again = layer.receive_request(request("REGISTER", branch="z9hG4bKshared", call_id="call-a"), 0.1)
    assert not only(again, Deliver)


def test_cancel_and_non_2xx_ack_still_match_their_invite_with_the_new_key() -> None:
    layer = TransactionLayer()
    invite = request("INVITE", branch="z9hG4bKinv", call_id="call-c", cseq=7)
    txn = new_server(layer, invite)
    cancel = request("CANCEL", branch="z9hG4bKinv", call_id="call-c", cseq=7)
    assert layer.find_cancel_target(cancel) is txn
    assert layer.find_server(invite) is txn
