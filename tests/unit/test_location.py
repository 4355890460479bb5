"""The location service: indexes, expiry, flows, bounds and SQLite persistence."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from rtc2sip.proxy.location import (
    SCHEMA_VERSION,
    Binding,
    LocationFull,
    LocationStorageError,
    LocationStore,
    contact_key,
    reachable,
    targets_for,
)

NOW = 1_700_000_000.0
AOR = "sip:alice@example.com"
INST = "urn:uuid:4a8cd1b2-6f1a-4d3c-9b9e-2f0c6c0e5d11"
UDP_FLOW = "udp:127.0.0.1:5060/192.0.2.1:5060"


def udp(contact: str = "sip:alice@192.0.2.1:5060", aor: str = AOR, **kw: object) -> Binding:
    base: dict[str, object] = dict(
        aor=aor, contact=contact, expires_at=NOW + 3600, call_id="c1", cseq=1, flow_id=UDP_FLOW,
        transport="udp", source="sip:192.0.2.1:5060;transport=udp", registered_at=NOW, updated_at=NOW,
    )
    base.update(kw)
    return Binding(**base)  # type: ignore[arg-type]


def ws(flow: str = "wss-1", reg_id: int = 1, instance: str = INST, aor: str = AOR, **kw: object) -> Binding:
    base: dict[str, object] = dict(
        aor=aor, contact="sip:x@y.invalid;transport=ws", expires_at=NOW + 600, call_id="w1", cseq=1,
        instance=instance, reg_id=reg_id, flow_id=flow, transport="wss",
        source="sip:[2001:db8::5]:50000;transport=wss", registered_at=NOW, updated_at=NOW,
        params=(("+sip.ice", None), ("reg-id", str(reg_id)), ("+sip.instance", f'"<{instance}>"')),
        pub_gruu=f"{aor};gr={instance}", temp_gruus=("sip:tgr.aaaa@example.com;gr",),
    )
    base.update(kw)
    return Binding(**base)  # type: ignore[arg-type]


# ---- Binding -----------------------------------------------------------------------------------------


def test_binding_key_follows_uri_comparison() -> None:
    # §19.1.4: host and scheme are case-insensitive, user is not; parameter order does not matter
    k = contact_key("sip:a@EXAMPLE.com;transport=UDP;x=1")
    assert k == contact_key("SIP:a@example.com;x=1;transport=udp")
    assert contact_key("sip:A@example.com") != contact_key("sip:a@example.com")
    assert contact_key("sip:a@example.com") != contact_key("sip:a@example.com:5060")
    # outbound: the (instance, reg-id) pair, whatever the contact
    assert contact_key("sip:a@h1", INST, 1) == contact_key("sip:b@h2", INST.upper(), 1)
    assert contact_key("sip:a@h1", INST, 1) != contact_key("sip:a@h1", INST, 2)
    assert contact_key("sip:a@h1", INST, None) == contact_key("sip:a@h1")


def test_binding_properties() -> None:
    b = ws()
    assert b.outbound and b.websocket_flow and not b.persistent
    assert b.source_host == "2001:db8::5"
    assert b.temp_gruu == "sip:tgr.aaaa@example.com;gr"
    assert b.expires_in(NOW) == 600 and b.expires_in(NOW + 599.7) == 1 and b.expires_in(NOW + 600) == 0
    u = udp()
    assert not u.outbound and u.persistent and u.source_host == "192.0.2.1" and u.temp_gruu is None
    # a WebSocket binding that reached us through a proxy is not tied to a flow of ours
    assert replace(ws(), flow_id=None).persistent


def test_targets_for_and_reachability() -> None:
    b = ws(path=("<sip:edge.example.com;lr;ob>",))
    assert targets_for(b) == ("sip:x@y.invalid;transport=ws", "wss-1", ["<sip:edge.example.com;lr;ob>"])
    assert targets_for(b, flow_alive=lambda f: False)[1] is None
    assert reachable(b, flow_alive=lambda f: False)  # through the Path
    lost = replace(ws(), flow_id=None)
    assert targets_for(lost) == ("sip:x@y.invalid;transport=ws", None, [])
    assert not reachable(lost)
    assert reachable(replace(udp(), flow_id=None))


# ---- store basics ------------------------------------------------------------------------------------


def test_lookup_orders_by_q_then_recency() -> None:
    s = LocationStore(None)
    s.apply(AOR, [
        udp("sip:a@h", q=0.5, updated_at=NOW),
        udp("sip:b@h", q=1.0, updated_at=NOW - 10),
        udp("sip:c@h", q=1.0, updated_at=NOW - 5),
        udp("sip:d@h", q=0.5, updated_at=NOW + 1),
    ])
    assert [b.contact for b in s.lookup(AOR, NOW)] == ["sip:c@h", "sip:b@h", "sip:d@h", "sip:a@h"]
    assert s.lookup("sip:nobody@example.com", NOW) == []


def test_lookup_skips_expired_and_purge_removes_them() -> None:
    s = LocationStore(None)
    s.apply(AOR, [udp("sip:a@h", expires_at=NOW + 10), udp("sip:b@h", expires_at=NOW + 20)])
    assert [b.contact for b in s.lookup(AOR, NOW + 10)] == ["sip:b@h"]
    assert s.count() == 2  # not purged yet
    assert s.purge_expired(NOW + 5) == []
    assert [b.contact for b in s.purge_expired(NOW + 10)] == ["sip:a@h"]
    assert s.count() == 1 and s.count_for_aor(AOR) == 1
    assert [b.contact for b in s.purge_expired(NOW + 100)] == ["sip:b@h"]
    assert s.count() == 0 and s.count_for_source("192.0.2.1") == 0


def test_refresh_does_not_purge_early() -> None:
    s = LocationStore(None)
    b = udp("sip:a@h", expires_at=NOW + 10)
    s.apply(AOR, [b])
    s.apply(AOR, [replace(b, expires_at=NOW + 100, cseq=2)])
    assert s.purge_expired(NOW + 50) == []
    assert s.lookup(AOR, NOW + 50)[0].cseq == 2


def test_expiry_heap_stays_bounded_under_refreshes() -> None:
    s = LocationStore(None)
    b = udp()
    for i in range(10_000):
        s.apply(AOR, [replace(b, expires_at=NOW + 3600 + i, cseq=i)])
    assert len(s._expiry) <= 2 * s.count() + 65


def test_apply_remove_and_replace() -> None:
    s = LocationStore(None)
    a, b = udp("sip:a@h"), udp("sip:b@h")
    s.apply(AOR, [a, b])
    s.apply(AOR, [replace(a, cseq=2)], [b.key])
    assert [(x.contact, x.cseq) for x in s.lookup(AOR, NOW)] == [("sip:a@h", 2)]
    assert s.remove(AOR, a.key) is not None and s.remove(AOR, a.key) is None
    assert s.count() == 0
    with pytest.raises(ValueError):
        s.apply(AOR, [udp(aor="sip:bob@example.com")])


def test_bounds() -> None:
    s = LocationStore(None, max_per_aor=2, max_total=3)
    s.apply(AOR, [udp("sip:a@h"), udp("sip:b@h")])
    with pytest.raises(LocationFull) as e:
        s.apply(AOR, [udp("sip:c@h")])
    assert e.value.scope == "aor"
    s.apply(AOR, [udp("sip:c@h")], [udp("sip:a@h").key])  # a swap is not growth
    s.apply("sip:bob@example.com", [udp(aor="sip:bob@example.com")])
    with pytest.raises(LocationFull) as e:
        s.apply("sip:carol@example.com", [udp(aor="sip:carol@example.com")])
    assert e.value.scope == "total"
    assert s.count() == 3


def test_counts_and_all() -> None:
    s = LocationStore(None)
    s.apply(AOR, [udp("sip:a@h"), ws()])
    s.apply("sip:bob@example.com", [udp("sip:b@h", aor="sip:bob@example.com")])
    assert s.count() == 3
    assert s.count_for_source("192.0.2.1") == 2 and s.count_for_source("2001:db8::5") == 1
    assert [(b.aor, b.contact) for b in s.all(NOW)] == [
        (AOR, "sip:a@h"), (AOR, "sip:x@y.invalid;transport=ws"), ("sip:bob@example.com", "sip:b@h"),
    ]
    assert sorted(s.flows()) == [UDP_FLOW, "wss-1"]


# ---- flows -------------------------------------------------------------------------------------------


def test_flow_closed_removes_websocket_and_outbound_keeps_others() -> None:
    s = LocationStore(None)
    tcp_plain = udp("sip:p@h;transport=tcp", flow_id="tcp-1", transport="tcp")
    tcp_ob = udp("sip:o@h;transport=tcp", flow_id="tcp-1", transport="tcp", instance=INST, reg_id=2)
    s.apply(AOR, [ws(flow="tcp-1", transport="wss"), tcp_plain, tcp_ob, udp()])
    removed = s.flow_closed("tcp-1")
    assert sorted(b.contact for b in removed) == ["sip:o@h;transport=tcp", "sip:x@y.invalid;transport=ws"]
    left = {b.contact: b.flow_id for b in s.lookup(AOR, NOW)}
    assert left == {"sip:p@h;transport=tcp": None, "sip:alice@192.0.2.1:5060": UDP_FLOW}
    assert s.flow_closed("tcp-1") == [] and s.flow_closed("never") == []
    assert "tcp-1" not in s.flows()


def test_binding_moving_flow_is_reindexed() -> None:
    s = LocationStore(None)
    b = ws(flow="wss-1")
    s.apply(AOR, [b])
    s.apply(AOR, [replace(b, flow_id="wss-2", call_id="w2")])
    assert s.flow_closed("wss-1") == []
    assert [x.flow_id for x in s.flow_closed("wss-2")] == ["wss-2"]


# ---- GRUU --------------------------------------------------------------------------------------------


def test_gruu_lookup_in_store() -> None:
    s = LocationStore(None)
    other = "urn:uuid:00000000-0000-1000-8000-000a95a0e128"
    mine = ws()
    theirs = ws(flow="wss-2", instance=other, temp_gruus=("sip:tgr.bbbb@example.com;gr",))
    s.apply(AOR, [mine, theirs, udp()])
    assert s.lookup_gruu("sip:tgr.aaaa@example.com;gr", NOW) == [mine]
    assert s.lookup_gruu(f"sip:alice@example.com;gr={INST.upper()}", NOW) == [mine]
    assert s.lookup_gruu("sip:tgr.bbbb@example.com;gr", NOW) == [theirs]
    assert s.gruu_aor("sip:tgr.bbbb@example.com;gr") == AOR
    assert s.lookup_gruu("sip:tgr.cccc@example.com;gr", NOW) == []
    assert not s.knows_gruu("sip:tgr.cccc@example.com;gr")
    assert not s.knows_gruu("sip:alice@example.com") and not s.knows_gruu("tel:+1555")
    assert s.lookup_gruu("sip:alice@example.com", NOW) == []
    assert s.lookup_gruu(f"sip:alice@example.com;gr={INST}", NOW + 601) == []  # expired


# ---- persistence -------------------------------------------------------------------------------------


def test_persistence_keeps_udp_drops_websocket(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    s = LocationStore(db)
    keep = udp(path=("<sip:p1.example.net;lr>",), params=(("q", "0.5"),), q=0.5, user_agent="baresip",
               pub_gruu=f"{AOR};gr={INST}", instance=INST, temp_gruus=("sip:tgr.zzzz@example.com;gr",))
    s.apply(AOR, [keep, ws()])
    s.close()

    s2 = LocationStore(db, now=NOW)
    assert s2.all(NOW) == [keep]
    assert s2.count_for_source("192.0.2.1") == 1 and s2.count_for_source("2001:db8::5") == 0
    assert s2.lookup_gruu("sip:tgr.zzzz@example.com;gr", NOW) == [keep]
    s2.close()


def test_restart_forgets_dead_connections(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    s = LocationStore(db)
    tcp_plain = udp("sip:p@h;transport=tcp", flow_id="tcp-1", transport="tcp")
    tcp_ob = udp("sip:o@h;transport=tcp", flow_id="tcp-2", transport="tls", instance=INST, reg_id=1)
    via_proxy = replace(ws(), flow_id=None, path=("<sip:edge;lr;ob>",))
    s.apply(AOR, [tcp_plain, tcp_ob, via_proxy, udp()])
    s.close()

    s2 = LocationStore(db, now=NOW)
    got = {b.contact: b.flow_id for b in s2.all(NOW)}
    assert got == {
        "sip:p@h;transport=tcp": None,  # reachable again by a new connection
        "sip:x@y.invalid;transport=ws": None,  # through the edge proxy's Path
        "sip:alice@192.0.2.1:5060": UDP_FLOW,  # UDP flows outlive us
    }
    s2.close()
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT COUNT(*) FROM bindings").fetchone()[0] == 3


def test_restart_drops_expired(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    s = LocationStore(db)
    s.apply(AOR, [udp("sip:a@h", expires_at=NOW + 10), udp("sip:b@h", expires_at=NOW + 100)])
    s.close()
    s2 = LocationStore(db, now=NOW + 50)
    assert [b.contact for b in s2.all(NOW + 50)] == ["sip:b@h"]
    s2.close()


def test_changes_are_written_through(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    s = LocationStore(db)
    a, b = udp("sip:a@h", expires_at=NOW + 10), udp("sip:b@h")
    s.apply(AOR, [a, b])
    s.apply(AOR, [replace(b, cseq=5)])
    s.purge_expired(NOW + 10)
    plain = udp("sip:t@h", flow_id="tcp-1", transport="tcp")
    s.apply(AOR, [plain])
    s.flow_closed("tcp-1")
    # the same key moving onto a WebSocket must not linger on disk
    s.apply(AOR, [replace(b, flow_id="wss-4", transport="wss", cseq=6)])
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT contact, flow_id, cseq FROM bindings ORDER BY contact").fetchall()
    assert rows == [("sip:t@h", None, 1)]
    s.close()


def test_restart_respects_bounds(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    s = LocationStore(db)
    s.apply(AOR, [udp(f"sip:{i}@h", updated_at=NOW + i) for i in range(5)])
    s.close()
    s2 = LocationStore(db, max_per_aor=2, now=NOW)
    assert [b.contact for b in s2.lookup(AOR, NOW)] == ["sip:4@h", "sip:3@h"]  # the most recent
    s2.close()


def test_database_settings_and_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    LocationStore(db).close()
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        raw.execute("PRAGMA user_version=99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        LocationStore(db)


def test_memory_only_store_writes_nothing(tmp_path: Path) -> None:
    s = LocationStore(None)
    s.apply(AOR, [udp()])
    s.close()
    assert list(tmp_path.iterdir()) == []


def test_websocket_registrations_never_touch_disk(tmp_path: Path) -> None:
    s = LocationStore(tmp_path / "loc.db")
    assert s._db is not None
    before = s._db.total_changes
    b = ws()
    s.apply(AOR, [b])
    s.apply(AOR, [replace(b, cseq=2)])
    s.flow_closed("wss-1")
    assert s._db.total_changes == before
    s.close()


def test_storage_failure_changes_nothing(tmp_path: Path) -> None:
    s = LocationStore(tmp_path / "loc.db")
    s.apply(AOR, [udp("sip:a@h")])
    assert s._db is not None
    s._db.execute("DROP TABLE bindings")
    with pytest.raises(LocationStorageError):
        s.apply(AOR, [udp("sip:b@h")], [udp("sip:a@h").key])
    assert [b.contact for b in s.lookup(AOR, NOW)] == ["sip:a@h"]
    s.close()
