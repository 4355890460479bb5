"""The registrar (RFC 3261 §10.3, RFC 3327, RFC 5626 §6, RFC 5627 §5.1), driven by REGISTERs as real
clients send them: JsSIP over WebSocket, baresip and sipp over UDP."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from rtc2sip.proxy.location import LocationStore, reachable, targets_for
from rtc2sip.proxy.registrar import Registrar
from rtc2sip.sip import NameAddr, Request, Response, SipUri, parse_message, parse_uri, unquote_string
from rtc2sip.transport.base import Source

NOW = 1_700_000_000.0
INSTANCE = "urn:uuid:4a8cd1b2-6f1a-4d3c-9b9e-2f0c6c0e5d11"

WSS = Source("wss", "192.0.2.10", 50123, "127.0.0.1", 8443, "wss-7")
UDP = Source("udp", "127.0.0.1", 5070, "127.0.0.1", 5060, "udp:127.0.0.1:5060/127.0.0.1:5070")
SIPP = Source("udp", "127.0.0.1", 5061, "127.0.0.1", 5060, "udp:127.0.0.1:5060/127.0.0.1:5061")
EDGE = Source("tcp", "198.51.100.7", 41000, "127.0.0.1", 5060, "tcp-3")

# What JsSIP 3.13 sends (TESTING.md, "What JsSIP and Chrome send").
JSSIP = """\
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/WSS 2e7gkpfcftbn.invalid;branch=z9hG4bK6392139
Max-Forwards: 69
To: <sip:alice@example.com>
From: "Alice" <sip:alice@example.com>;tag=l7qpvd6s1r
Call-ID: {call_id}
CSeq: {cseq} REGISTER
Contact: <sip:{user}@2e7gkpfcftbn.invalid;transport=ws>;+sip.ice;reg-id={reg_id};\
+sip.instance="<{instance}>";expires={expires}
Expires: {expires}
Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY
Supported: path,gruu,outbound
User-Agent: JsSIP 3.13.0
Content-Length: 0

"""

# baresip 1.0 with an account line `<sip:bob@example.com;transport=udp>;outbound="sip:REGISTRAR"`.
BARESIP = """\
REGISTER sip:example.com;transport=udp SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch};rport
Contact: <sip:bob-0x5611f0c0@127.0.0.1:5070;transport=udp>;expires={expires}
Max-Forwards: 70
To: <sip:bob@example.com;transport=udp>
From: <sip:bob@example.com;transport=udp>;tag=8c2a7d1f3b9e0a64
Call-ID: {call_id}
CSeq: {cseq} REGISTER
User-Agent: baresip v1.0.0 (x86_64/linux)
Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE
Supported: replaces,norefersub
Content-Length: 0

"""

# sipp -sn-style REGISTER: addr-spec Contact, Expires header, no Supported.
SIPP_REG = """\
REGISTER sip:127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{cseq}-1-0
From: sipp <sip:sipp@127.0.0.1>;tag={cseq}SIPpTag001
To: sipp <sip:sipp@127.0.0.1>
Call-ID: 1-4242@127.0.0.1
CSeq: {cseq} REGISTER
Contact: sip:sipp@127.0.0.1:5061
Max-Forwards: 70
Subject: Performance Test
Expires: {expires}
Content-Length: 0

"""


def msg(text: str) -> Request:
    m = parse_message(text.replace("\r\n", "\n").replace("\n", "\r\n").encode())
    assert isinstance(m, Request)
    return m


def jssip(
    *, call_id: str = "6vd3pkes2qhbhcq4v0rcgq", cseq: int = 1, user: str = "jtq3gcrl", reg_id: int = 1,
    instance: str = INSTANCE, expires: int = 600,
) -> Request:
    return msg(JSSIP.format(call_id=call_id, cseq=cseq, user=user, reg_id=reg_id, instance=instance,
                            expires=expires))


def baresip(*, call_id: str = "a1b2c3d4e5f60718", cseq: int = 31442, expires: int = 3600) -> Request:
    return msg(BARESIP.format(call_id=call_id, cseq=cseq, expires=expires, branch=cseq))


def register(
    contacts: list[str] | None = None, *, aor: str = "sip:carol@example.com", call_id: str = "cid-1",
    cseq: int = 1, extra: str = "", vias: int = 1,
) -> Request:
    """A plain REGISTER with the given Contact values (one header line each)."""
    lines = ["REGISTER sip:example.com SIP/2.0"]
    lines += [f"Via: SIP/2.0/UDP 192.0.2.{9 - i}:5060;branch=z9hG4bK-{i}-{cseq}" for i in range(vias)]
    lines += [
        "Max-Forwards: 70", f"To: <{aor}>", f"From: <{aor}>;tag=ft{cseq}", f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    lines += [f"Contact: {c}" for c in contacts or []]
    lines += [x for x in extra.split("\n") if x]
    lines += ["Content-Length: 0", "", ""]
    return msg("\n".join(lines))


@pytest.fixture
def store() -> LocationStore:
    return LocationStore(None)


@pytest.fixture
def reg(store: LocationStore) -> Registrar:
    return Registrar(store, {"example.com", "127.0.0.1"})


def contacts(resp: Response) -> list[NameAddr]:
    return resp.addresses("Contact")


def temp_gruu(resp: Response) -> str:
    return unquote_string(contacts(resp)[0].param("temp-gruu") or "")


def by_uri(resp: Response) -> dict[str, NameAddr]:
    return {str(c.uri): c for c in contacts(resp)}


# ---- JsSIP over WebSocket (outbound + GRUU) ----------------------------------------------------------


def test_jssip_register_over_websocket(reg: Registrar, store: LocationStore) -> None:
    resp = reg.handle(jssip(), WSS, NOW)
    assert resp.status == 200
    (c,) = contacts(resp)
    assert str(c.uri) == "sip:jtq3gcrl@2e7gkpfcftbn.invalid;transport=ws"
    assert c.param("expires") == "600"
    assert c.param("reg-id") == "1" and c.has("+sip.ice")
    assert unquote_string(c.param("+sip.instance") or "") == f"<{INSTANCE}>"
    assert unquote_string(c.param("pub-gruu") or "") == f"sip:alice@example.com;gr={INSTANCE}"
    temp = unquote_string(c.param("temp-gruu") or "")
    assert temp.startswith("sip:tgr.") and temp.endswith("@example.com;gr")
    # RFC 5626 §6: outbound applied and the UA supports it; we hold the (reliable) flow ourselves
    assert resp.option_tags("Require") == ["outbound"]
    assert "outbound" in resp.option_tags("Supported")
    assert resp.get("Flow-Timer") == "120"
    assert parsedate_to_datetime(resp.get("Date") or "").timestamp() == int(NOW)
    assert resp.to.tag
    assert resp.get("Record-Route") is None and resp.get("Path") is None

    (b,) = store.lookup("sip:alice@example.com", NOW)
    assert (b.instance, b.reg_id, b.flow_id, b.transport) == (INSTANCE, 1, "wss-7", "wss")
    assert b.outbound and b.websocket_flow and not b.persistent
    assert b.source == "sip:192.0.2.10:50123;transport=wss"
    assert b.user_agent == "JsSIP 3.13.0"
    assert b.expires_at == NOW + 600
    # the proxy routes down the WebSocket, never to the .invalid host
    assert targets_for(b) == ("sip:jtq3gcrl@2e7gkpfcftbn.invalid;transport=ws", "wss-7", [])
    assert reachable(b)
    assert not reachable(b, flow_alive=lambda f: False)


def test_jssip_reconnect_replaces_binding_by_instance_reg_id(reg: Registrar, store: LocationStore) -> None:
    reg.handle(jssip(), WSS, NOW)
    # page reload / reconnect: new WebSocket, new Call-ID, new random contact user, same instance+reg-id
    ws2 = Source("wss", "192.0.2.10", 50999, "127.0.0.1", 8443, "wss-8")
    resp = reg.handle(jssip(call_id="other-call-id", user="zz9", cseq=1), ws2, NOW + 30)
    assert resp.status == 200
    (c,) = contacts(resp)
    assert c.uri.user == "zz9"  # type: ignore[union-attr]
    (b,) = store.lookup("sip:alice@example.com", NOW + 30)
    assert b.flow_id == "wss-8" and b.registered_at == NOW
    # the old connection closing later must not take the new binding with it
    assert store.flow_closed("wss-7") == []
    assert store.lookup("sip:alice@example.com", NOW + 31) == [b]


def test_websocket_close_removes_binding(reg: Registrar, store: LocationStore) -> None:
    reg.handle(jssip(), WSS, NOW)
    removed = store.flow_closed("wss-7")
    assert [b.aor for b in removed] == ["sip:alice@example.com"]
    assert store.lookup("sip:alice@example.com", NOW) == []
    assert store.count() == 0


def test_jssip_unregister(reg: Registrar, store: LocationStore) -> None:
    reg.handle(jssip(), WSS, NOW)
    resp = reg.handle(jssip(cseq=2, expires=0), WSS, NOW + 5)
    assert resp.status == 200
    assert contacts(resp) == []
    assert resp.get("Require") is None
    assert store.count() == 0


def test_jssip_refresh_keeps_pub_gruu_and_adds_temp_gruu(reg: Registrar, store: LocationStore) -> None:
    r1 = reg.handle(jssip(), WSS, NOW)
    r2 = reg.handle(jssip(cseq=2), WSS, NOW + 300)
    c1, c2 = contacts(r1)[0], contacts(r2)[0]
    assert c1.param("pub-gruu") == c2.param("pub-gruu")
    t1 = unquote_string(c1.param("temp-gruu") or "")
    t2 = unquote_string(c2.param("temp-gruu") or "")
    assert t1 != t2
    # RFC 5627 §3.2: earlier temporary GRUUs stay valid while the registration lasts
    (b,) = store.lookup("sip:alice@example.com", NOW + 300)
    assert store.lookup_gruu(t1, NOW + 300) == [b] == store.lookup_gruu(t2, NOW + 300)
    assert b.temp_gruus == (t1, t2)


# ---- baresip and sipp over UDP ---------------------------------------------------------------------


def test_baresip_register(reg: Registrar, store: LocationStore) -> None:
    resp = reg.handle(baresip(), UDP, NOW)
    assert resp.status == 200
    (c,) = contacts(resp)
    assert str(c.uri) == "sip:bob-0x5611f0c0@127.0.0.1:5070;transport=udp"
    assert c.param("expires") == "3600"
    assert c.param("pub-gruu") is None
    assert resp.get("Require") is None and resp.get("Flow-Timer") is None
    (b,) = store.lookup("sip:bob@example.com", NOW)
    assert b.persistent and not b.outbound
    assert b.flow_id == UDP.flow_id and b.transport == "udp"
    assert targets_for(b) == ("sip:bob-0x5611f0c0@127.0.0.1:5070;transport=udp", UDP.flow_id, [])


def test_baresip_refresh_and_unregister(reg: Registrar, store: LocationStore) -> None:
    reg.handle(baresip(), UDP, NOW)
    assert reg.handle(baresip(cseq=31443, expires=3600), UDP, NOW + 1800).status == 200
    (b,) = store.lookup("sip:bob@example.com", NOW + 1800)
    assert b.expires_at == NOW + 1800 + 3600 and b.cseq == 31443
    assert reg.handle(baresip(cseq=31444, expires=0), UDP, NOW + 1801).status == 200
    assert store.lookup("sip:bob@example.com", NOW + 1801) == []


def test_sipp_register_addr_spec_contact_and_expires_header(reg: Registrar, store: LocationStore) -> None:
    resp = reg.handle(msg(SIPP_REG.format(cseq=1, expires=120)), SIPP, NOW)
    assert resp.status == 200
    (c,) = contacts(resp)
    assert str(c.uri) == "sip:sipp@127.0.0.1:5061" and c.param("expires") == "120"
    (b,) = store.lookup("sip:sipp@127.0.0.1", NOW)
    assert b.expires_at == NOW + 120


def test_response_lists_every_binding_with_remaining_time(reg: Registrar) -> None:
    reg.handle(register(["<sip:carol@192.0.2.1>;expires=600"]), UDP, NOW)
    resp = reg.handle(register(["<sip:carol@192.0.2.2>;expires=900"], call_id="cid-2"), UDP, NOW + 100)
    got = {u: c.param("expires") for u, c in by_uri(resp).items()}
    assert got == {"sip:carol@192.0.2.1": "500", "sip:carol@192.0.2.2": "900"}


# ---- §10.3 step by step ----------------------------------------------------------------------------


def test_not_register_is_405(reg: Registrar) -> None:
    req = msg(SIPP_REG.format(cseq=1, expires=60).replace("REGISTER", "OPTIONS"))
    resp = reg.handle(req, SIPP, NOW)
    assert resp.status == 405 and resp.get("Allow") == "REGISTER"


def test_foreign_domain_is_404(reg: Registrar, store: LocationStore) -> None:
    resp = reg.handle(register(["<sip:x@192.0.2.1>"], aor="sip:mallory@elsewhere.net"), UDP, NOW)
    assert resp.status == 404
    assert store.count() == 0


def test_domain_match_is_case_insensitive(reg: Registrar, store: LocationStore) -> None:
    assert reg.handle(register(["<sip:x@192.0.2.1>"], aor="sip:Dave@EXAMPLE.com"), UDP, NOW).status == 200
    assert len(store.lookup("sip:Dave@example.com", NOW)) == 1


def test_tel_or_userless_to_is_404(reg: Registrar) -> None:
    assert reg.handle(register(["<sip:x@192.0.2.1>"], aor="tel:+15551234"), UDP, NOW).status == 404
    assert reg.handle(register(["<sip:x@192.0.2.1>"], aor="sip:example.com"), UDP, NOW).status == 404


def test_storage_failure_is_500_and_changes_nothing(tmp_path: Path) -> None:
    store = LocationStore(tmp_path / "loc.db")
    reg = Registrar(store, {"example.com"})
    assert reg.handle(baresip(), UDP, NOW).status == 200
    assert store._db is not None
    store._db.execute("DROP TABLE bindings")
    resp = reg.handle(baresip(cseq=31443, expires=0), UDP, NOW + 1)
    assert resp.status == 500
    assert len(store.lookup("sip:bob@example.com", NOW + 1)) == 1


def test_unknown_require_is_420(reg: Registrar) -> None:
    resp = reg.handle(register(["<sip:c@192.0.2.1>"], extra="Require: foo, gruu"), UDP, NOW)
    assert resp.status == 420 and resp.get("Unsupported") == "foo"
    assert reg.handle(register(["<sip:c@192.0.2.1>"], extra="Require: gruu"), UDP, NOW).status == 200


def test_query_without_contact_changes_nothing(reg: Registrar, store: LocationStore) -> None:
    reg.handle(register(["<sip:carol@192.0.2.1>"]), UDP, NOW)
    resp = reg.handle(register(cseq=2), UDP, NOW + 10)
    assert resp.status == 200
    assert [str(c.uri) for c in contacts(resp)] == ["sip:carol@192.0.2.1"]
    assert store.lookup("sip:carol@example.com", NOW + 10)[0].cseq == 1


def test_expires_param_beats_header_and_default_applies(store: LocationStore) -> None:
    reg = Registrar(store, {"example.com"}, default_expires=1234)
    resp = reg.handle(register(["<sip:a@192.0.2.1>;expires=700", "<sip:b@192.0.2.1>"], extra="Expires: 800"),
                      UDP, NOW)
    assert {u: c.param("expires") for u, c in by_uri(resp).items()} == {
        "sip:a@192.0.2.1": "700", "sip:b@192.0.2.1": "800",
    }
    resp = reg.handle(register(["<sip:c@192.0.2.1>"], call_id="x"), UDP, NOW)
    assert by_uri(resp)["sip:c@192.0.2.1"].param("expires") == "1234"


def test_expires_is_shortened_to_max(store: LocationStore) -> None:
    reg = Registrar(store, {"example.com"}, max_expires=7200)
    resp = reg.handle(register(["<sip:a@192.0.2.1>;expires=99999999999999"]), UDP, NOW)
    assert contacts(resp)[0].param("expires") == "7200"


def test_interval_too_brief_is_423_with_min_expires(reg: Registrar, store: LocationStore) -> None:
    resp = reg.handle(register(["<sip:a@192.0.2.1>;expires=3600", "<sip:b@192.0.2.1>;expires=30"]), UDP, NOW)
    assert resp.status == 423 and resp.get("Min-Expires") == "60"
    assert store.count() == 0  # all or nothing
    resp = reg.handle(register(["<sip:a@192.0.2.1>"], extra="Expires: 59", cseq=2), UDP, NOW)
    assert resp.status == 423


def test_423_only_below_one_hour(store: LocationStore) -> None:
    # §10.3: an interval of an hour or more is never "too brief", whatever the configured minimum
    reg = Registrar(store, {"example.com"}, min_expires=7200, default_expires=7200)
    assert reg.handle(register(["<sip:a@192.0.2.1>;expires=3599"]), UDP, NOW).status == 423
    resp = reg.handle(register(["<sip:a@192.0.2.1>;expires=3600"], cseq=2), UDP, NOW)
    assert resp.status == 200 and contacts(resp)[0].param("expires") == "3600"


def test_bad_expires_and_q_are_400(reg: Registrar) -> None:
    assert reg.handle(register(["<sip:a@192.0.2.1>;expires=soon"]), UDP, NOW).status == 400
    assert reg.handle(register(["<sip:a@192.0.2.1>;q=1.5"]), UDP, NOW).status == 400
    assert reg.handle(register(["<sip:a@192.0.2.1>;q=0.1234"]), UDP, NOW).status == 400


def test_q_orders_lookup(reg: Registrar, store: LocationStore) -> None:
    req = register(["<sip:a@192.0.2.1>;q=0.1", "<sip:b@192.0.2.1>;q=0.9", "<sip:c@192.0.2.1>"])
    assert reg.handle(req, UDP, NOW).status == 200
    assert [b.contact for b in store.lookup("sip:carol@example.com", NOW)] == [
        "sip:c@192.0.2.1", "sip:b@192.0.2.1", "sip:a@192.0.2.1",
    ]
    assert [b.q for b in store.lookup("sip:carol@example.com", NOW)] == [1.0, 0.9, 0.1]


def test_expires_zero_removes_only_that_contact(reg: Registrar, store: LocationStore) -> None:
    reg.handle(register(["<sip:a@192.0.2.1>", "<sip:b@192.0.2.1>"]), UDP, NOW)
    resp = reg.handle(register(["<sip:a@192.0.2.1>;expires=0"], cseq=2), UDP, NOW)
    assert [str(c.uri) for c in contacts(resp)] == ["sip:b@192.0.2.1"]
    # URI comparison of §19.1.4: host case-insensitive, so this removes b
    reg.handle(register(["<sip:b@192.0.2.1>"], extra="Expires: 0", cseq=3), UDP, NOW)
    assert store.lookup("sip:carol@example.com", NOW) == []


def test_removing_unknown_contact_is_fine(reg: Registrar) -> None:
    assert reg.handle(register(["<sip:nobody@192.0.2.1>;expires=0"]), UDP, NOW).status == 200


def test_star_with_expires_zero_removes_all(reg: Registrar, store: LocationStore) -> None:
    reg.handle(register(["<sip:a@192.0.2.1>"], call_id="one"), UDP, NOW)
    reg.handle(register(["<sip:b@192.0.2.1>"], call_id="two", cseq=7), UDP, NOW)
    resp = reg.handle(register(["*"], extra="Expires: 0", call_id="two", cseq=8), UDP, NOW)
    assert resp.status == 200 and contacts(resp) == []
    assert store.count() == 0


@pytest.mark.parametrize(
    ("contacts_", "extra"),
    [(["*"], ""), (["*"], "Expires: 3600"), (["*", "<sip:a@192.0.2.1>"], "Expires: 0")],
)
def test_star_misuse_is_400(reg: Registrar, store: LocationStore, contacts_: list[str], extra: str) -> None:
    reg.handle(register(["<sip:a@192.0.2.1>"], call_id="keep"), UDP, NOW)
    assert reg.handle(register(contacts_, extra=extra, cseq=5), UDP, NOW).status == 400
    assert store.count() == 1


def test_star_with_stale_cseq_fails_whole(reg: Registrar, store: LocationStore) -> None:
    reg.handle(register(["<sip:a@192.0.2.1>"], call_id="one", cseq=5), UDP, NOW)
    reg.handle(register(["<sip:b@192.0.2.1>"], call_id="two", cseq=5), UDP, NOW)
    resp = reg.handle(register(["*"], extra="Expires: 0", call_id="two", cseq=5), UDP, NOW)
    assert resp.status == 500
    assert store.count() == 2


def test_same_call_id_needs_higher_cseq(reg: Registrar, store: LocationStore) -> None:
    reg.handle(register(["<sip:a@192.0.2.1>;expires=600"], cseq=10), UDP, NOW)
    for cseq in (10, 9):
        resp = reg.handle(register(["<sip:a@192.0.2.1>;expires=0"], cseq=cseq), UDP, NOW)
        assert resp.status == 500
    assert store.count() == 1
    assert reg.handle(register(["<sip:a@192.0.2.1>;expires=900"], cseq=11), UDP, NOW).status == 200
    assert store.lookup("sip:carol@example.com", NOW)[0].expires_at == NOW + 900


def test_other_call_id_updates_whatever_its_cseq(reg: Registrar, store: LocationStore) -> None:
    reg.handle(register(["<sip:a@192.0.2.1>;expires=600"], cseq=10), UDP, NOW)
    resp = reg.handle(register(["<sip:a@192.0.2.1>;expires=900"], call_id="rebooted", cseq=1), UDP, NOW)
    assert resp.status == 200
    (b,) = store.lookup("sip:carol@example.com", NOW)
    assert (b.call_id, b.cseq, b.expires_at) == ("rebooted", 1, NOW + 900)


def test_same_contact_twice_in_one_request(reg: Registrar, store: LocationStore) -> None:
    resp = reg.handle(register(["<sip:a@192.0.2.1>;expires=600", "<sip:a@192.0.2.1>;expires=700"]), UDP, NOW)
    assert resp.status == 200
    (b,) = store.lookup("sip:carol@example.com", NOW)
    assert b.expires_at == NOW + 700


def test_failed_request_changes_nothing(reg: Registrar, store: LocationStore) -> None:
    resp = reg.handle(register(["<sip:a@192.0.2.1>", "<sip:b@192.0.2.1>;q=7"]), UDP, NOW)
    assert resp.status == 400
    assert store.count() == 0


def test_expired_binding_is_gone(reg: Registrar, store: LocationStore) -> None:
    reg.handle(register(["<sip:a@192.0.2.1>;expires=60"]), UDP, NOW)
    assert store.lookup("sip:carol@example.com", NOW + 59.5)
    assert store.lookup("sip:carol@example.com", NOW + 60) == []
    # an expired binding no longer takes part in the CSeq rule and is not listed
    resp = reg.handle(register(["<sip:b@192.0.2.1>"], cseq=1), UDP, NOW + 61)
    assert resp.status == 200 and [str(c.uri) for c in contacts(resp)] == ["sip:b@192.0.2.1"]


def test_record_route_is_never_echoed(reg: Registrar) -> None:
    resp = reg.handle(register(["<sip:a@192.0.2.1>"], extra="Record-Route: <sip:p.example.net;lr>"), UDP, NOW)
    assert resp.status == 200 and resp.get("Record-Route") is None


def test_to_tag_is_stable_for_a_retransmission(reg: Registrar) -> None:
    r1 = reg.handle(register(["<sip:a@192.0.2.1>"]), UDP, NOW)
    r2 = reg.handle(register(cseq=1), UDP, NOW)  # same Via/From/Call-ID/CSeq
    assert r1.to.tag == r2.to.tag
    assert r1.to.tag != reg.handle(register(cseq=2), UDP, NOW).to.tag


def test_contact_equal_to_aor_is_403(reg: Registrar) -> None:
    assert reg.handle(register(["<sip:carol@example.com>"]), UDP, NOW).status == 403
    assert reg.handle(register(["<sip:carol@example.com:5080>"]), UDP, NOW).status == 200


def test_malformed_contact_is_400(reg: Registrar, store: LocationStore) -> None:
    # the parser refuses this already; a request built or rewritten in code reaches us unchecked
    req = register(["<sip:a@192.0.2.1>"])
    req.set("Contact", "<sip:a@192.0.2.1")
    assert reg.handle(req, UDP, NOW).status == 400
    assert store.count() == 0


# ---- RFC 3327 Path ---------------------------------------------------------------------------------

PATHS = "Path: <sip:p3.example.com;lr>, <sip:p1.example.net;lr>\nSupported: path"


def test_path_is_stored_and_echoed(reg: Registrar, store: LocationStore) -> None:
    resp = reg.handle(register(["<sip:ua1@192.0.2.4>"], extra=PATHS, vias=3), EDGE, NOW)
    assert resp.status == 200
    assert resp.values("Path") == ["<sip:p3.example.com;lr>", "<sip:p1.example.net;lr>"]
    (b,) = store.lookup("sip:carol@example.com", NOW)
    assert b.path == ("<sip:p3.example.com;lr>", "<sip:p1.example.net;lr>")
    assert b.flow_id is None  # the flow leads to a proxy, not to the UA
    assert targets_for(b) == ("sip:ua1@192.0.2.4", None, list(b.path))


def test_path_without_ua_support_is_420(reg: Registrar, store: LocationStore) -> None:
    req = register(["<sip:ua1@192.0.2.4>"], extra="Path: <sip:p1.example.net;lr>", vias=2)
    resp = reg.handle(req, EDGE, NOW)
    assert resp.status == 420 and resp.get("Unsupported") == "path"
    assert store.count() == 0


def test_path_not_echoed_on_query(reg: Registrar) -> None:
    reg.handle(register(["<sip:ua1@192.0.2.4>"], extra=PATHS, vias=2), EDGE, NOW)
    resp = reg.handle(register(extra=PATHS, vias=2, cseq=2), EDGE, NOW)
    assert resp.get("Path") is None and len(contacts(resp)) == 1


def test_invalid_contact_behind_path_is_reachable(reg: Registrar, store: LocationStore) -> None:
    extra = "Path: <sip:tok@edge.example.com;lr;ob>\nSupported: path, outbound, gruu"
    c = f'<sip:x@y.invalid;transport=ws>;reg-id=1;+sip.instance="<{INSTANCE}>"'
    resp = reg.handle(register([c], extra=extra, vias=2), EDGE, NOW)
    assert resp.status == 200
    (b,) = store.lookup("sip:carol@example.com", NOW)
    assert b.persistent and b.flow_id is None and reachable(b)


# ---- RFC 5626 Outbound -----------------------------------------------------------------------------

OB = f'+sip.instance="<{INSTANCE}>"'


def test_outbound_via_edge_proxy_with_ob(reg: Registrar, store: LocationStore) -> None:
    extra = "Path: <sip:VskztcQ@ep1.example.com;lr;ob>\nSupported: path, outbound"
    resp = reg.handle(register([f"<sip:bob@192.0.2.2;transport=tcp>;reg-id=1;{OB}"], extra=extra, vias=2),
                      EDGE, NOW)
    assert resp.status == 200 and resp.get("Require") == "outbound"
    assert resp.get("Flow-Timer") is None  # the edge proxy holds the UA's connection, not us
    (b,) = store.lookup("sip:carol@example.com", NOW)
    assert b.outbound and b.flow_id is None and b.path == ("<sip:VskztcQ@ep1.example.com;lr;ob>",)


def test_first_hop_without_outbound_is_439(reg: Registrar, store: LocationStore) -> None:
    c = f"<sip:bob@192.0.2.2;transport=tcp>;reg-id=1;{OB}"
    resp = reg.handle(register([c], extra="Supported: outbound", vias=2), EDGE, NOW)
    assert resp.status == 439
    resp = reg.handle(register([c], extra="Path: <sip:p1.example.net;lr>\nSupported: path, outbound", vias=2),
                      EDGE, NOW)
    assert resp.status == 439
    assert store.count() == 0


def test_reg_id_ignored_when_outbound_cannot_apply(reg: Registrar, store: LocationStore) -> None:
    c = f"<sip:bob@192.0.2.2;transport=tcp>;reg-id=1;{OB}"
    resp = reg.handle(register([c], vias=2), EDGE, NOW)
    assert resp.status == 200 and resp.get("Require") is None
    (b,) = store.lookup("sip:carol@example.com", NOW)
    assert b.reg_id is None and not b.outbound and b.instance == INSTANCE


def test_reg_id_without_instance_is_ignored(reg: Registrar, store: LocationStore) -> None:
    resp = reg.handle(register(["<sip:bob@192.0.2.2>;reg-id=1"], extra="Supported: outbound"), UDP, NOW)
    assert resp.status == 200 and resp.get("Require") is None
    assert store.lookup("sip:carol@example.com", NOW)[0].reg_id is None


def test_outbound_without_ua_support_has_no_require(reg: Registrar, store: LocationStore) -> None:
    resp = reg.handle(register([f"<sip:bob@192.0.2.2>;reg-id=1;{OB}"]), UDP, NOW)
    assert resp.status == 200 and resp.get("Require") is None
    assert store.lookup("sip:carol@example.com", NOW)[0].outbound


def test_several_live_contacts_with_reg_id_is_400(reg: Registrar) -> None:
    cs = [f"<sip:bob@192.0.2.2>;reg-id=1;{OB}", "<sip:bob@192.0.2.3>"]
    assert reg.handle(register(cs, extra="Supported: outbound"), UDP, NOW).status == 400
    # one live reg-id contact plus removals is fine (RFC 5626 §6)
    cs = [f"<sip:bob@192.0.2.2>;reg-id=1;{OB}", "<sip:bob@192.0.2.3>;expires=0"]
    assert reg.handle(register(cs, extra="Supported: outbound"), UDP, NOW).status == 200


def test_two_flows_then_replace_one(reg: Registrar, store: LocationStore) -> None:
    tcp1 = Source("tcp", "192.0.2.2", 40001, "127.0.0.1", 5060, "tcp-1")
    tcp2 = Source("tcp", "192.0.2.2", 40002, "127.0.0.1", 5060, "tcp-2")
    sup = "Supported: path, outbound"
    r = reg.handle(register([f"<sip:bob@192.0.2.2;transport=tcp>;reg-id=1;{OB}"], extra=sup, call_id="c1"),
                   tcp1, NOW)
    assert r.get("Flow-Timer") == "120"
    r = reg.handle(register([f"<sip:bob@192.0.2.2;transport=tcp>;reg-id=2;{OB}"], extra=sup, call_id="c2"),
                   tcp2, NOW)
    assert r.status == 200
    assert sorted(b.flow_id or "" for b in store.lookup("sip:carol@example.com", NOW)) == ["tcp-1", "tcp-2"]
    # flow 1 fails; the UA re-registers reg-id 1 on a new connection, with a new contact port
    assert [b.reg_id for b in store.flow_closed("tcp-1")] == [1]
    tcp3 = Source("tcp", "192.0.2.2", 40003, "127.0.0.1", 5060, "tcp-3")
    reg.handle(register([f"<sip:bob@192.0.2.2:5070;transport=tcp>;reg-id=1;{OB}"], extra=sup, call_id="c1",
                        cseq=2), tcp3, NOW + 1)
    got = {b.reg_id: (b.flow_id, b.contact) for b in store.lookup("sip:carol@example.com", NOW + 1)}
    assert got == {
        1: ("tcp-3", "sip:bob@192.0.2.2:5070;transport=tcp"),
        2: ("tcp-2", "sip:bob@192.0.2.2;transport=tcp"),
    }


def test_outbound_replace_without_flow_loss(reg: Registrar, store: LocationStore) -> None:
    sup = "Supported: outbound"
    reg.handle(register([f"<sip:bob@192.0.2.2>;reg-id=1;{OB}"], extra=sup, call_id="c1"), UDP, NOW)
    reg.handle(register([f"<sip:bob@192.0.2.99>;reg-id=1;{OB}"], extra=sup, call_id="c9"), SIPP, NOW + 1)
    (b,) = store.lookup("sip:carol@example.com", NOW + 1)
    assert b.contact == "sip:bob@192.0.2.99" and b.flow_id == SIPP.flow_id


# ---- RFC 5627 GRUU ---------------------------------------------------------------------------------


def test_gruu_lookup_reaches_only_that_instance(reg: Registrar, store: LocationStore) -> None:
    r = reg.handle(jssip(), WSS, NOW)
    other = "urn:uuid:00000000-0000-1000-8000-000a95a0e128"
    ws2 = Source("wss", "192.0.2.11", 50124, "127.0.0.1", 8443, "wss-9")
    reg.handle(jssip(instance=other, user="other", call_id="c-other"), ws2, NOW)
    reg.handle(register(["<sip:alice@192.0.2.50>"], aor="sip:alice@example.com", call_id="desk"), UDP, NOW)
    assert len(store.lookup("sip:alice@example.com", NOW)) == 3

    c = contacts(r)[0]
    pub = unquote_string(c.param("pub-gruu") or "")
    temp = unquote_string(c.param("temp-gruu") or "")
    for g in (pub, temp):
        (b,) = store.lookup_gruu(g, NOW)
        assert b.instance == INSTANCE and b.flow_id == "wss-7"
        assert store.knows_gruu(g)
    pub_uri = parse_uri(pub)
    assert isinstance(pub_uri, SipUri) and pub_uri.aor() == "sip:alice@example.com"
    # the temporary GRUU says nothing of the AOR or the instance
    assert "alice" not in temp and INSTANCE not in temp

    store.flow_closed("wss-7")
    assert store.lookup_gruu(pub, NOW) == [] and store.knows_gruu(pub)  # 480: valid, nobody there
    assert store.lookup_gruu(temp, NOW) == [] and not store.knows_gruu(temp)  # 404: gone
    assert not store.knows_gruu("sip:alice@example.com")


def test_new_call_id_flushes_temp_gruus(reg: Registrar, store: LocationStore) -> None:
    t1 = temp_gruu(reg.handle(jssip(), WSS, NOW))
    t2 = temp_gruu(reg.handle(jssip(call_id="rebooted"), WSS, NOW + 1))
    assert store.lookup_gruu(t2, NOW + 1)
    assert store.lookup_gruu(t1, NOW + 1) == [] and not store.knows_gruu(t1)


def test_temp_gruus_are_bounded(store: LocationStore) -> None:
    store.max_temp_gruus = 3
    reg = Registrar(store, {"example.com"})
    temps = [
        unquote_string(contacts(reg.handle(jssip(cseq=i), WSS, NOW + i))[0].param("temp-gruu") or "")
        for i in range(1, 6)
    ]
    (b,) = store.lookup("sip:alice@example.com", NOW + 5)
    assert b.temp_gruus == tuple(temps[-3:])
    assert not store.knows_gruu(temps[0]) and store.knows_gruu(temps[-1])


def test_no_gruu_params_without_supported_gruu(reg: Registrar, store: LocationStore) -> None:
    req = jssip()
    req.set("Supported", "path, outbound")
    c = contacts(reg.handle(req, WSS, NOW))[0]
    assert c.param("pub-gruu") is None and c.param("temp-gruu") is None
    (b,) = store.lookup("sip:alice@example.com", NOW)
    assert b.temp_gruus == () and b.pub_gruu is not None


def test_gruu_params_sent_by_ua_are_not_stored(reg: Registrar, store: LocationStore) -> None:
    c = f'<sip:bob@192.0.2.2>;{OB};pub-gruu="sip:evil@example.com;gr=x";temp-gruu="sip:t@example.com;gr"'
    reg.handle(register([c], extra="Supported: gruu"), UDP, NOW)
    (b,) = store.lookup("sip:carol@example.com", NOW)
    assert [n for n, _ in b.params] == ["+sip.instance"]


def test_contact_that_is_a_gruu_is_403(reg: Registrar) -> None:
    r = reg.handle(jssip(), WSS, NOW)
    c = contacts(r)[0]
    pub = unquote_string(c.param("pub-gruu") or "")
    temp = unquote_string(c.param("temp-gruu") or "")
    for i, g in enumerate((pub, temp)):
        resp = reg.handle(register([f"<{g}>"], aor="sip:alice@example.com", call_id=f"gr{i}"), UDP, NOW)
        assert resp.status == 403


def test_instance_with_non_sip_contact_is_403(reg: Registrar) -> None:
    assert reg.handle(register([f"<tel:+15551234>;{OB}"], extra="Supported: gruu"), UDP, NOW).status == 403
    assert reg.handle(register(["<tel:+15551234>"], call_id="t"), UDP, NOW).status == 200


# ---- limits ----------------------------------------------------------------------------------------


def test_per_source_limit(store: LocationStore) -> None:
    reg = Registrar(store, {"example.com"}, max_per_source=2)
    assert reg.handle(register(["<sip:a@192.0.2.1>", "<sip:b@192.0.2.1>"]), UDP, NOW).status == 200
    assert store.count_for_source("127.0.0.1") == 2
    resp = reg.handle(register(["<sip:c@192.0.2.1>"], call_id="x"), UDP, NOW)
    assert resp.status == 403
    # refreshing and replacing stay possible at the limit
    assert reg.handle(register(["<sip:a@192.0.2.1>"], cseq=2), UDP, NOW).status == 200
    swap = register(["<sip:a@192.0.2.1>;expires=0", "<sip:c@192.0.2.1>"], cseq=3)
    assert reg.handle(swap, UDP, NOW).status == 200
    # another host has its own budget
    assert reg.handle(register(["<sip:d@192.0.2.1>"], call_id="y"), EDGE, NOW).status == 200
    assert store.count_for_source("198.51.100.7") == 1


def test_per_aor_bound_is_503(store: LocationStore) -> None:
    store.max_per_aor = 2
    reg = Registrar(store, {"example.com"})
    assert reg.handle(register(["<sip:a@192.0.2.1>", "<sip:b@192.0.2.1>"]), UDP, NOW).status == 200
    resp = reg.handle(register(["<sip:c@192.0.2.1>"], cseq=2), UDP, NOW)
    assert resp.status == 503 and resp.reason == "Too Many Registered Contacts"
    assert reg.handle(register(["<sip:a@192.0.2.1>"], cseq=3), UDP, NOW).status == 200
    swap = register(["<sip:b@192.0.2.1>;expires=0", "<sip:c@192.0.2.1>"], cseq=4)
    assert reg.handle(swap, UDP, NOW).status == 200


def test_total_bound_is_503(store: LocationStore) -> None:
    store.max_total = 2
    reg = Registrar(store, {"example.com"})
    assert reg.handle(register(["<sip:a@192.0.2.1>"], aor="sip:u1@example.com"), UDP, NOW).status == 200
    assert reg.handle(register(["<sip:a@192.0.2.1>"], aor="sip:u2@example.com"), UDP, NOW).status == 200
    resp = reg.handle(register(["<sip:a@192.0.2.1>"], aor="sip:u3@example.com"), UDP, NOW)
    assert resp.status == 503
    # expired bindings make room again
    later = register(["<sip:a@192.0.2.1>"], aor="sip:u3@example.com")
    assert reg.handle(later, UDP, NOW + 3600).status == 200


def test_bad_configuration_is_refused(store: LocationStore) -> None:
    with pytest.raises(ValueError):
        Registrar(store, {"example.com"}, min_expires=600, default_expires=60)


# ---- persistence through the registrar -------------------------------------------------------------


def test_restart_keeps_udp_drops_websocket(tmp_path: Path) -> None:
    db = tmp_path / "location.db"
    store = LocationStore(db)
    reg = Registrar(store, {"example.com"})
    reg.handle(baresip(), UDP, NOW)
    reg.handle(jssip(), WSS, NOW)
    store.close()

    store2 = LocationStore(db, now=NOW + 10)
    assert [b.contact for b in store2.all(NOW + 10)] == ["sip:bob-0x5611f0c0@127.0.0.1:5070;transport=udp"]
    # the CSeq rule still holds after the restart
    reg2 = Registrar(store2, {"example.com"})
    assert reg2.handle(baresip(cseq=31442), UDP, NOW + 20).status == 500
    assert reg2.handle(baresip(cseq=31443), UDP, NOW + 20).status == 200
    store2.close()
