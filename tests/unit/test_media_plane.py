"""The media plane with real local UDP peers: a fake browser (aioice.stun checks, DTLS client or
server from rtc2sip.media.dtls, SRTP) and a plain RTP phone, both directions, failures, leaks."""

from __future__ import annotations

import asyncio
import gc
import itertools
from typing import Any, cast

import pytest
from aioice import stun

from media_peers import (  # noqa: F401 - test_recording imports them from here
    BROWSER_CERT,
    GW_CERT,
    OTHER_CERT,
    Address,
    FakeBrowser,
    Phone,
    browser_calls_phone,
    legacy_address,
    open_fds,
    until,
)
from rtc2sip.config import MediaOptions, Settings
from rtc2sip.media.dtls import DtlsRole
from rtc2sip.media.plane import InvalidState, MediaPlane, UnknownSession
from rtc2sip.media.ports import PortAllocator, PortsExhausted
from rtc2sip.media.rtcp import ReceiverReport, SenderReport, parse_compound
from rtc2sip.media.rtp import RtpPacket, build_rtp
from rtc2sip.media.srtp import SdesCrypto
from rtc2sip.sdp import SdpError, SessionDescription


def settings(webrtc_socket: str = "shared") -> Settings:
    return Settings(media=MediaOptions(webrtc_socket=webrtc_socket))


# Every test of a plane runs with the browser legs on one shared socket (the default) and with a
# socket per call.
@pytest.fixture(params=["shared", "per-call"])
async def plane(request: pytest.FixtureRequest) -> Any:
    p = MediaPlane(settings(request.param), GW_CERT, port_range=(41000, 41999))
    yield p
    await p.close()


# --------------------------------------------------------------------------------------------------
# Media both ways


async def test_browser_calls_phone_media_flows_both_ways(plane: MediaPlane) -> None:
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        gw_legacy = legacy_address(legacy_offer)
        for seq in range(10):
            browser.send_rtp(0, 100 + seq, bytes([seq]) * 160)
        browser.send_rtp(126, 110, b"\x05\x0a\x00\xa0")  # telephone-event: PT 126 -> 101
        await until(lambda: len(phone.received) == 11, what="browser audio at the phone")
        for seq in range(10):
            phone.send_rtp(gw_legacy, 0, 500 + seq, bytes([0x80 + seq]) * 160)
        phone.send_rtp(gw_legacy, 101, 510, b"\x01\x0a\x00\xa0")
        await until(lambda: len(browser.received) == 11, what="phone audio at the browser")

        st: Any = plane.stats(session)
        stream = st["streams"]["audio"]
        # Browser -> phone: payload intact, the gateway's legacy SSRC, sequence continuous.
        assert [p.payload for p in phone.received[:10]] == [bytes([i]) * 160 for i in range(10)]
        assert {p.ssrc for p in phone.received} == {stream["legacy_ssrc"]}
        assert [p.payload_type for p in phone.received] == [0] * 10 + [101]
        seqs = [p.sequence_number for p in phone.received]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        # Phone -> browser: the SSRC announced to the browser, PT 101 -> 126.
        assert [p.payload for p in browser.received[:10]] == [bytes([0x80 + i]) * 160 for i in range(10)]
        assert {p.ssrc for p in browser.received} == {stream["webrtc_ssrc"]}
        assert [p.payload_type for p in browser.received] == [0] * 10 + [126]

        assert st["webrtc"]["packets_in"] == 11 and st["webrtc"]["packets_out"] == 11
        assert st["legacy"]["packets_in"] == 11 and st["legacy"]["packets_out"] == 11
        assert st["webrtc"]["dtls"]["state"] == "connected" and st["webrtc"]["dtls"]["role"] == "server"
        assert st["webrtc"]["ice"]["selected"] == f"127.0.0.1:{browser.port}" and st["webrtc"]["ice"]["nominated"]
        assert stream["legacy"]["lost"] == 0
    finally:
        browser.close()
        phone.close()


async def test_dtls_connection_is_released_after_the_handshake(
    plane: MediaPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once connected, a session frees its OpenSSL connection (~65 KB) after DTLS_LINGER and keeps
    relaying with the SRTP keys it holds."""
    from rtc2sip.media import session as media_session

    monkeypatch.setattr(media_session, "DTLS_LINGER", 0.0)
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        browser.send_rtp(0, 100, b"x" * 160)
        await until(lambda: len(phone.received) == 1, what="first packet")
        media = plane._sessions[session].media
        await until(lambda: media.dtls is not None and media.dtls.released, what="the DTLS release")
        browser.send_rtp(0, 101, b"y" * 160)
        phone.send_rtp(legacy_address(legacy_offer), 0, 500, b"z" * 160)
        await until(lambda: len(phone.received) == 2 and len(browser.received) == 1, what="media after release")
        st: Any = plane.stats(session)
        assert st["webrtc"]["dtls"]["state"] == "connected"
    finally:
        browser.close()
        phone.close()


async def test_symmetric_rtp_latches_on_the_real_source(plane: MediaPlane) -> None:
    browser, phone, elsewhere = await FakeBrowser().start(), await Phone().start(), await Phone().start()
    try:
        session, legacy_offer = await plane.offer_from_webrtc("call-2", browser.offer())
        # The phone's SDP names `elsewhere`'s port but it sends from its own (a NAT in between).
        answer = await plane.answer_from_legacy(session, phone.sdp(port=elsewhere.port))
        await browser.connect(answer)
        await until(lambda: browser.tx is not None)
        browser.send_rtp(0, 1, b"a" * 160)
        await until(lambda: len(elsewhere.received) == 1, what="first packet to the SDP address")
        phone.send_rtp(legacy_address(legacy_offer), 0, 1, b"b" * 160)
        await until(lambda: len(browser.received) == 1)
        browser.send_rtp(0, 2, b"c" * 160)
        await until(lambda: len(phone.received) == 1, what="packets to the latched source")
        assert len(elsewhere.received) == 1
        st: Any = plane.stats(session)
        assert st["streams"]["audio"]["legacy"]["remote"] == f"127.0.0.1:{phone.port}"
    finally:
        for peer in (browser, phone, elsewhere):
            peer.close()


async def test_phone_calls_browser_with_dtls_before_the_answer(plane: MediaPlane) -> None:
    """Chrome answers a=setup:active and starts DTLS at once: its ClientHello outruns its SIP answer."""
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, browser_offer = await plane.offer_from_legacy("call-3", phone.sdp(offer=True))
        assert not browser_offer.ice_lite and browser_offer.media[0].setup == "actpass"
        assert browser_offer.media[0].proto == "UDP/TLS/RTP/SAVPF" and browser_offer.media[0].rtcp_mux
        await browser.connect(browser_offer, DtlsRole.CLIENT)
        await asyncio.sleep(0.1)  # handshake done, fingerprint not known yet: keys withheld
        assert plane.stats(session)["webrtc"]["dtls"]["state"] == "connecting"  # type: ignore[index]
        legacy_answer = await plane.answer_from_webrtc(session, browser.answer("active"))
        await until(lambda: browser.tx is not None, what="DTLS")
        gw_legacy = legacy_address(legacy_answer)
        phone.send_rtp(gw_legacy, 0, 7, b"p" * 160)
        await until(lambda: len(browser.received) == 1)
        browser.send_rtp(0, 9, b"w" * 160)
        await until(lambda: len(phone.received) == 1)
        assert phone.received[0].payload == b"w" * 160 and browser.received[0].payload == b"p" * 160
    finally:
        browser.close()
        phone.close()


async def test_browser_answering_passive_makes_the_gateway_dtls_client(plane: MediaPlane) -> None:
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, browser_offer = await plane.offer_from_legacy("call-4", phone.sdp(offer=True))
        legacy_answer = await plane.answer_from_webrtc(session, browser.answer("passive"))
        await browser.connect(browser_offer, DtlsRole.SERVER)  # our ICE check lets the gateway start DTLS
        await until(lambda: browser.tx is not None, what="DTLS with the gateway as client")
        assert plane.stats(session)["webrtc"]["dtls"]["role"] == "client"  # type: ignore[index]
        phone.send_rtp(legacy_address(legacy_answer), 0, 1, b"x" * 160)
        await until(lambda: len(browser.received) == 1)
    finally:
        browser.close()
        phone.close()


async def test_rtcp_reports_per_leg(plane: MediaPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rtc2sip.media.feedback.RTCP_INTERVAL", 0.2)
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        gw_host, gw_port = legacy_address(legacy_offer)
        for seq in range(5):
            browser.send_rtp(0, seq, b"a" * 160)
            phone.send_rtp((gw_host, gw_port), 0, seq, b"b" * 160)
        # The phone's RTCP comes from its RTP socket (no RTCP port of its own): symmetric RTCP latches it.
        assert phone.transport is not None
        phone.transport.sendto(ReceiverReport(2222, []).serialize(), (gw_host, gw_port + 1))
        await until(lambda: browser.rtcp and phone.rtcp, timeout=5, what="RTCP on both legs")
        st: Any = plane.stats(session)["streams"]
        to_phone = parse_compound(phone.rtcp[-1])
        to_browser = parse_compound(browser.rtcp[-1])
        assert isinstance(to_phone[0], SenderReport) and to_phone[0].ssrc == st["audio"]["legacy_ssrc"]
        assert to_phone[0].reports[0].ssrc == 2222  # our report block about the phone's stream
        assert isinstance(to_browser[0], SenderReport) and to_browser[0].ssrc == st["audio"]["webrtc_ssrc"]
        assert to_browser[0].reports[0].ssrc == 1111
    finally:
        browser.close()
        phone.close()


# --------------------------------------------------------------------------------------------------
# ICE


async def test_gateway_answers_only_authenticated_checks(plane: MediaPlane) -> None:
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, _ = await plane.offer_from_webrtc("call-auth", browser.offer())
        answer = await plane.answer_from_legacy(session, phone.sdp())
        media = answer.media[0]
        assert [c.type for c in media.candidates] == ["host"] and media.has("end-of-candidates")
        browser.gateway = (media.candidates[0].ip, media.candidates[0].port)
        browser.gw_ufrag, browser.gw_pwd = media.ice_ufrag or "", media.ice_pwd or ""
        bad = await browser.check(pwd="wrongpassword0123456789xx")
        assert bad.message_class == stun.Class.ERROR and bad.error_code == 401
        ice: Any = plane.stats(session)["webrtc"]
        assert ice["ice"]["selected"] is None and ice["ice"]["rejected_checks"] == 1
        assert ice["ice"]["role"] == "controlled"
        # Authenticated but without PRIORITY (RFC 8445 §7.1.1 requires it): refused, nothing learnt.
        assert browser.transport is not None
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{browser.gw_ufrag}:{browser.ufrag}"
        request.add_message_integrity(browser.gw_pwd.encode())
        browser.transport.sendto(bytes(request), browser.gateway)
        refused = await asyncio.wait_for(browser.stun_responses.get(), 2)
        assert refused.message_class == stun.Class.ERROR and refused.error_code == 400
        assert plane.stats(session)["webrtc"]["ice"]["selected"] is None  # type: ignore[index]
        ok = await browser.check()
        assert ok.message_class == stun.Class.RESPONSE
        assert ok.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.1", browser.port)
        assert plane.stats(session)["webrtc"]["ice"]["selected"] == f"127.0.0.1:{browser.port}"  # type: ignore[index]
    finally:
        browser.close()
        phone.close()


async def test_gateway_nominates_when_it_offers(plane: MediaPlane) -> None:
    """A phone calls a browser: the gateway offers, so it is the controlling agent and nominates
    (aioice's aggressive nomination: USE-CANDIDATE on its checks), RFC 8445 §8.1.1."""
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, browser_offer = await plane.offer_from_legacy("call-nominate", phone.sdp(offer=True))
        legacy_answer = await plane.answer_from_webrtc(session, browser.answer("active"))
        await browser.connect(browser_offer, DtlsRole.CLIENT)
        await until(lambda: browser.tx is not None, what="DTLS")
        await until(lambda: plane.stats(session)["webrtc"]["ice"]["nominated"], what="nomination")  # type: ignore[index]
        ice: Any = plane.stats(session)["webrtc"]["ice"]  # type: ignore[index]
        assert ice["role"] == "controlling" and ice["nominated_by"] == "gateway"
        assert ice["use_candidate_sent"] >= 1 and ice["selected"] == f"127.0.0.1:{browser.port}"
        assert any("USE-CANDIDATE" in m.attributes and "ICE-CONTROLLING" in m.attributes
                   for m in browser.checks_received)
        phone.send_rtp(legacy_address(legacy_answer), 0, 1, b"n" * 160)
        await until(lambda: len(browser.received) == 1, what="media on the nominated pair")
    finally:
        browser.close()
        phone.close()


async def test_ice_restart_on_reinvite_keeps_media_flowing(plane: MediaPlane) -> None:
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        gw_legacy = legacy_address(legacy_offer)
        await until(lambda: plane.stats(session)["webrtc"]["ice"]["nominated"], what="nomination")  # type: ignore[index]
        old_ufrag, old_pwd = browser.gw_ufrag, browser.gw_pwd
        # RFC 8839 §4.4.1.1.1: new credentials in a re-offer restart ICE.
        browser.ufrag, browser.pwd = "brw2", "browserpassword2-abcdefgh"
        await plane.update(session, browser.offer(), from_webrtc=True)
        answer = await plane.answer_from_legacy(session, phone.sdp())
        media = answer.media[0]
        assert (media.ice_ufrag, media.ice_pwd) != (old_ufrag, old_pwd)
        # Until the new checks complete, the old credentials still work and media keeps flowing.
        browser.gw_ufrag, browser.gw_pwd, browser.ufrag = old_ufrag, old_pwd, "brws"
        assert (await browser.check()).message_class == stun.Class.RESPONSE
        browser.ufrag = "brw2"
        browser.send_rtp(0, 50, b"o" * 160)
        await until(lambda: len(phone.received) == 1, what="media during the restart")
        browser.gw_ufrag, browser.gw_pwd = media.ice_ufrag or "", media.ice_pwd or ""
        assert (await browser.check(use_candidate=True)).message_class == stun.Class.RESPONSE
        await until(lambda: plane.stats(session)["webrtc"]["ice"]["nominated"], what="nomination after restart")  # type: ignore[index]
        ice: Any = plane.stats(session)["webrtc"]["ice"]  # type: ignore[index]
        assert ice["restarts"] == 1 and ice["local_ufrag"] == media.ice_ufrag
        assert any(m.attributes.get("USERNAME") == f"brw2:{media.ice_ufrag}" for m in browser.checks_received)
        for seq in range(3):
            browser.send_rtp(0, 51 + seq, b"r" * 160)
            phone.send_rtp(gw_legacy, 0, 60 + seq, b"s" * 160)
        await until(lambda: len(phone.received) == 4 and len(browser.received) == 3, what="media after restart")
        assert plane.stats(session)["failed"] is None
    finally:
        browser.close()
        phone.close()


async def test_consent_lost_ends_the_session_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 7675 §5.1: the browser stops answering the gateway's consent checks (it went away)."""
    monkeypatch.setattr("rtc2sip.media.ice.CONSENT_INTERVAL", 0.1)
    monkeypatch.setattr("rtc2sip.media.ice.CONSENT_TIMEOUT", 0.6)
    plane = MediaPlane(Settings(), GW_CERT, port_range=(44000, 44099))
    failures: list[tuple[str, str]] = []
    plane.on_failure(lambda session, reason: failures.append((session, reason)))
    browser, phone = await FakeBrowser().start(), await Phone().start()
    await asyncio.sleep(0)
    tasks = len(asyncio.all_tasks())
    try:
        session, _ = await browser_calls_phone(plane, browser, phone)
        await until(lambda: plane.stats(session)["webrtc"]["ice"]["nominated"], what="nomination")  # type: ignore[index]
        await asyncio.sleep(0.3)
        assert not failures  # consent checks answered
        browser.answering = False
        await until(lambda: failures, timeout=5, what="consent failure")
        assert failures[0][0] == session and "consent" in failures[0][1]
        await plane.delete(session)
    finally:
        browser.close()
        phone.close()
        await plane.close()
    await asyncio.sleep(0.05)
    assert plane.ports.in_use == 0
    assert len(asyncio.all_tasks()) == tasks

# --------------------------------------------------------------------------------------------------
# Failures


async def test_fingerprint_mismatch_fails_only_that_session(plane: MediaPlane) -> None:
    failures: list[tuple[str, str]] = []
    plane.on_failure(lambda session, reason: failures.append((session, reason)))
    good, good_phone = await FakeBrowser().start(), await Phone().start()
    liar, liar_phone = await FakeBrowser(advertised_cert=OTHER_CERT).start(), await Phone().start()
    try:
        good_session, good_offer = await browser_calls_phone(plane, good, good_phone)
        bad_session, _ = await plane.offer_from_webrtc("call-liar", liar.offer())
        await liar.connect(await plane.answer_from_legacy(bad_session, liar_phone.sdp()))
        await until(lambda: failures, what="the failure callback")
        assert failures[0][0] == bad_session and "fingerprint" in failures[0][1]
        assert liar.tx is None
        good.send_rtp(0, 1, b"g" * 160)
        await until(lambda: len(good_phone.received) == 1, what="the other call's media")
        assert plane.stats(good_session)["failed"] is None
        assert len(failures) == 1
        await plane.delete(bad_session)
        assert bad_session not in plane.sessions and good_session in plane.sessions
        del good_offer
    finally:
        for peer in (good, good_phone, liar, liar_phone):
            peer.close()


async def test_nothing_connects_fails_the_session() -> None:
    plane = MediaPlane(Settings(), GW_CERT, port_range=(42000, 42099), connect_timeout=0.3)
    failures: list[tuple[str, str]] = []
    plane.on_failure(lambda session, reason: failures.append((session, reason)))
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, _ = await plane.offer_from_webrtc("call-x", browser.offer())
        await plane.answer_from_legacy(session, phone.sdp())
        await until(lambda: failures, timeout=3)
        assert failures == [(session, "ICE did not connect within 0.3 s")]
    finally:
        browser.close()
        phone.close()
        await plane.close()
    assert plane.ports.in_use == 0


async def test_bad_sdp_propagates_and_leaves_nothing(plane: MediaPlane) -> None:
    browser = await FakeBrowser().start()
    try:
        offer = SessionDescription.parse(str(browser.offer()).replace(f"a=ice-pwd:{browser.pwd}\r\n", ""))
        with pytest.raises(SdpError):
            await plane.offer_from_webrtc("call-bad", offer)
        assert plane.ports.in_use == 0 and plane.sessions == []
        with pytest.raises(UnknownSession):
            await plane.answer_from_legacy("nope", offer)
        session, _ = await plane.offer_from_webrtc("call-ok", browser.offer())
        with pytest.raises(InvalidState):
            await plane.answer_from_webrtc(session, browser.answer())
    finally:
        browser.close()


# --------------------------------------------------------------------------------------------------
# Re-INVITE


async def test_reinvite_hold_and_resume_keeps_the_stream_continuous(plane: MediaPlane) -> None:
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, _legacy_offer = await browser_calls_phone(plane, browser, phone)
        browser.send_rtp(0, 1, b"1" * 160)
        await until(lambda: len(phone.received) == 1)
        # The phone holds (sendonly), then resumes; each time the browser answers through the plane.
        for direction in ("sendonly", "sendrecv"):
            hold = phone.sdp(extra="").__str__().replace("a=sendrecv", f"a={direction}")
            browser_offer = await plane.update(session, SessionDescription.parse(hold), from_webrtc=False)
            assert browser_offer.media[0].direction == direction
            await plane.answer_from_webrtc(session, browser.answer("active"))
        browser.send_rtp(0, 2, b"2" * 160)
        await until(lambda: len(phone.received) == 2)
        a, b = phone.received
        assert a.ssrc == b.ssrc and (b.sequence_number - a.sequence_number) & 0xFFFF == 1
        # ICE restart from the browser: new credentials both ways, media goes on.
        restart = SessionDescription.parse(str(browser.offer()).replace(browser.ufrag, "rstr"))
        await plane.update(session, restart, from_webrtc=True)
        answer = await plane.answer_from_legacy(session, phone.sdp())
        browser.ufrag = "rstr"
        old_ufrag = browser.gw_ufrag
        browser.gw_ufrag, browser.gw_pwd = answer.media[0].ice_ufrag or "", answer.media[0].ice_pwd or ""
        assert browser.gw_ufrag != old_ufrag
        assert (await browser.check(use_candidate=True)).message_class == stun.Class.RESPONSE
        browser.send_rtp(0, 3, b"3" * 160)
        await until(lambda: len(phone.received) == 3)
        assert phone.received[2].sequence_number == (b.sequence_number + 1) & 0xFFFF
    finally:
        browser.close()
        phone.close()


# --------------------------------------------------------------------------------------------------
# Leaks


@pytest.mark.parametrize("webrtc_socket", ["shared", "per-call"])
async def test_twenty_sessions_leave_nothing_behind(webrtc_socket: str) -> None:
    plane = MediaPlane(settings(webrtc_socket), GW_CERT, port_range=(43000, 43999))
    await asyncio.sleep(0)
    gc.collect()  # earlier tests' planes (a fast path engine holds an epoll and an eventfd)
    fds, tasks = open_fds(), len(asyncio.all_tasks())
    peers: list[FakeBrowser | Phone] = []
    try:
        sessions = []
        for i in range(20):
            browser, phone = await FakeBrowser().start(), await Phone().start()
            peers += [browser, phone]
            session, _legacy_offer = await plane.offer_from_webrtc(f"call-{i}", browser.offer())
            answer = await plane.answer_from_legacy(session, phone.sdp())
            if i % 4 == 0:  # some with media flowing, some never connected, all deleted alike
                await browser.connect(answer)
                await until(lambda b=browser: b.tx is not None)  # type: ignore[misc]
                browser.send_rtp(0, 1, b"z" * 160)
                await until(lambda p=phone: p.received)  # type: ignore[misc]
            sessions.append(session)
        # an RTP/RTCP pair per call, and the browser leg's own port when it has one
        assert plane.ports.in_use == 20 * (2 if webrtc_socket == "shared" else 3)
        assert len(asyncio.all_tasks()) >= tasks + 20
        if plane.mux is not None:
            assert len(plane.mux.table) == 20
        for peer in peers:
            peer.close()
        peers.clear()
        for session in sessions:
            await plane.delete(session)
        await plane.delete(sessions[0])  # twice: harmless
        if plane.mux is not None:  # the shared socket stays, with no route left
            table = plane.mux.table
            assert (len(table), table.ufrags, table.addresses, table.transactions) == (0, {}, {}, {})
    finally:
        for peer in peers:
            peer.close()
        await plane.close()
    await asyncio.sleep(0.05)
    assert plane.ports.in_use == 0
    gc.collect()
    assert open_fds() == fds
    assert len(asyncio.all_tasks()) == tasks
    assert plane.mux is None


def test_port_allocator_pairs_round_robin_and_bound() -> None:
    ports = PortAllocator(44001, 44006)  # rounded up to 44002: room for two pairs and a spare port
    a_rtp, a_rtcp = ports.bind_pair("127.0.0.1")
    b_rtp, b_rtcp = ports.bind_pair("127.0.0.1")
    try:
        assert a_rtp.getsockname()[1] == 44002 and a_rtcp.getsockname()[1] == 44003
        assert b_rtp.getsockname()[1] == 44004
        with pytest.raises(PortsExhausted):
            ports.bind_pair("127.0.0.1")
        one = ports.bind_one("127.0.0.1")
        assert one.getsockname()[1] == 44006
        one.close()
        with pytest.raises(PortsExhausted):
            ports.bind_one("127.0.0.1")
    finally:
        for s in (a_rtp, a_rtcp, b_rtp, b_rtcp):
            s.close()
    ports.release(44002, 44003, 44004, 44005, 44006)
    assert ports.in_use == 0


async def test_sdes_srtp_on_the_legacy_leg(plane: MediaPlane) -> None:
    """srtp-mode optional (the default) offers a=crypto; a phone that answers with its key gets SRTP
    (RFC 4568 §6.1: each side sends with its own key)."""
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await plane.offer_from_webrtc("call-sdes", browser.offer())
        ours = SdesCrypto.parse(str(legacy_offer.media[0].cryptos[0]))
        theirs = SdesCrypto.generate(ours.tag, ours.profile)
        answer = await plane.answer_from_legacy(session, phone.sdp(extra=f"a=crypto:{theirs}\r\n"))
        await browser.connect(answer)
        await until(lambda: browser.tx is not None)
        phone_tx, phone_rx = theirs.session(outbound=True), ours.session(outbound=False)
        assert phone.transport is not None
        phone.transport.sendto(phone_tx.protect(build_rtp(0, 1, 160, 2222, b"s" * 160)), legacy_address(legacy_offer))
        await until(lambda: len(browser.received) == 1, what="SRTP from the phone at the browser")
        assert browser.received[0].payload == b"s" * 160
        phone.received.clear()
        phone.datagram_received = lambda data, addr: phone.received.append(  # type: ignore[method-assign]
            RtpPacket.parse(phone_rx.unprotect(data)))
        browser.send_rtp(0, 5, b"t" * 160)
        await until(lambda: len(phone.received) == 1, what="SRTP from the browser at the phone")
        assert phone.received[0].payload == b"t" * 160
        assert plane.stats(session)["streams"]["audio"]["legacy"]["srtp"] is True  # type: ignore[index]
    finally:
        browser.close()
        phone.close()


# --------------------------------------------------------------------------------------------------
# Transcoding (the Media Coder): an Opus-only browser, a PCMU-only phone


def _tone(rate: int, hz: float, samples: int, start: int) -> bytes:
    import math
    import struct

    return struct.pack(f"<{samples}h", *(int(12000 * math.sin(2 * math.pi * hz * (start + i) / rate))
                                          for i in range(samples)))


def _encoder(name: str, rate: int, frame: int) -> Any:
    import av

    ctx = av.CodecContext.create(name, "w")
    ctx.sample_rate, ctx.format, ctx.layout = rate, "s16", "mono"
    ctx.options = {"frame_size": str(frame)} if name != "libopus" else {"frame_duration": "20"}
    if name == "libopus":
        ctx.bit_rate = 32000
    ctx.open()
    return ctx


def _encode(ctx: Any, pcm: bytes, rate: int, pts: int) -> list[bytes]:
    import av

    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.planes[0].update(pcm)
    frame.sample_rate, frame.pts = rate, pts
    return [bytes(p) for p in ctx.encode(frame)]


def _decode(name: str, rate: int, payloads: list[bytes]) -> list[int]:
    import array

    import av

    ctx = av.CodecContext.create(name, "r")
    ctx.sample_rate, ctx.layout = rate, "mono"
    ctx.open()
    out = array.array("h")
    for payload in payloads:
        for frame in ctx.decode(av.Packet(payload)):
            for f in av.AudioResampler(format="s16", layout="mono", rate=rate).resample(frame):
                out.frombytes(bytes(f.planes[0])[: 2 * f.samples])
    return list(out)


def _frequency(samples: list[int], rate: int) -> float:
    """Zero crossings of the steady second half: good to a few Hz for a pure tone."""
    half = samples[len(samples) // 2 :]
    crossings = sum(1 for a, b in itertools.pairwise(half) if (a < 0) != (b < 0))
    return crossings * rate / (2 * len(half))


def _opus_offer(browser: FakeBrowser) -> SessionDescription:
    return SessionDescription.parse(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        f"m=audio {browser.port} UDP/TLS/RTP/SAVPF 111 110\r\n" + browser._transport_sdp("actpass")
        + "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
        "a=rtpmap:110 telephone-event/48000\r\na=ssrc:1111 cname:fake\r\n"
    )


@pytest.fixture
async def coder_plane() -> Any:
    import dataclasses

    from rtc2sip.coder import CoderPool

    settings = Settings()
    settings = dataclasses.replace(settings, webrtc2sip=dataclasses.replace(settings.webrtc2sip,
                                                                            enable_media_coder=True))
    pool = CoderPool(1, workers=1)
    p = MediaPlane(settings, GW_CERT, port_range=(42000, 42999), coder=pool)
    yield p
    await p.close()
    await pool.shutdown()


async def test_transcoded_call_opus_browser_pcmu_phone(coder_plane: MediaPlane) -> None:
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await coder_plane.offer_from_webrtc("call-xc", _opus_offer(browser))
        offered = {c.name for c in legacy_offer.media[0].codecs}
        assert {"opus", "PCMU"} <= offered  # the coder's codecs added for the phone to choose
        answer = await coder_plane.answer_from_legacy(session, phone.sdp())
        assert [c.name for c in answer.media[0].codecs] == ["opus", "telephone-event"]
        # Announced SSRC = the one the browser will receive under (TESTING.md, transcoding traps).
        stream: Any = coder_plane.stats(session)["streams"]["audio"]  # type: ignore[index]
        assert f"a=ssrc:{stream['webrtc_ssrc']} " in str(answer)
        await browser.connect(answer)
        await until(lambda: browser.tx is not None, what="DTLS")

        opus = _encoder("libopus", 48000, 960)
        for i in range(25):  # 500 ms of a 1 kHz tone, Opus 20 ms frames
            for payload in _encode(opus, _tone(48000, 1000, 960, i * 960), 48000, i * 960):
                assert browser.tx is not None and browser.transport is not None and browser.gateway is not None
                browser.transport.sendto(browser.tx.protect(build_rtp(111, 300 + i, 5000 + i * 960, 1111, payload)),
                                         browser.gateway)
        await until(lambda: len(phone.received) >= 24, what="PCMU at the phone")
        pcmu = _encoder("pcm_mulaw", 8000, 160)
        gw_legacy = legacy_address(legacy_offer)
        for i in range(25):  # 500 ms of 440 Hz from the phone
            for payload in _encode(pcmu, _tone(8000, 440, 160, i * 160), 8000, i * 160):
                phone.send_rtp(gw_legacy, 0, 700 + i, payload)
        await until(lambda: len(browser.received) >= 24, what="Opus at the browser")

        st: Any = coder_plane.stats(session)
        stream = st["streams"]["audio"]
        assert st["transcoded"] and stream["transcoding"]["codecs"].startswith("opus/111")
        # Browser -> phone: PCMU under the gateway's legacy SSRC, one numbering, 160 per 20 ms.
        assert {p.payload_type for p in phone.received} == {0}
        assert {p.ssrc for p in phone.received} == {stream["legacy_ssrc"]}
        assert all(len(p.payload) == 160 for p in phone.received)
        seqs = [p.sequence_number for p in phone.received]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(phone.received))
        heard = _frequency(_decode("pcm_mulaw", 8000, [p.payload for p in phone.received]), 8000)
        assert abs(heard - 1000) < 25, heard
        # Phone -> browser: Opus PT 111 under the announced SSRC, 960 per 20 ms at 48 kHz.
        assert {p.payload_type for p in browser.received} == {111}
        assert {p.ssrc for p in browser.received} == {stream["webrtc_ssrc"]}
        assert all((b.timestamp - a.timestamp) & 0xFFFFFFFF == 960 for a, b in itertools.pairwise(browser.received))
        heard = _frequency(_decode("libopus", 48000, [p.payload for p in browser.received]), 48000)
        assert abs(heard - 440) < 25, heard
        assert stream["transcoding"]["to_legacy"]["packets_out"] == len(phone.received)
        assert stream["webrtc"]["packets_in"] == 25 and stream["legacy"]["packets_in"] == 25
    finally:
        browser.close()
        phone.close()


async def test_call_over_the_transcoding_limit_is_refused(coder_plane: MediaPlane) -> None:
    """The pool has one slot. A second call offered while it was free but answered after the first
    took it is refused with 488 (NoCommonCodec); a third is offered without the coder's codecs."""
    from rtc2sip.sdp import NoCommonCodec

    browsers = [await FakeBrowser().start() for _ in range(3)]
    phone = await Phone().start()
    try:
        first, _ = await coder_plane.offer_from_webrtc("call-a", _opus_offer(browsers[0]))
        second, _ = await coder_plane.offer_from_webrtc("call-b", _opus_offer(browsers[1]))
        await coder_plane.answer_from_legacy(first, phone.sdp())
        assert coder_plane.coder is not None and coder_plane.coder.active == 1
        with pytest.raises(NoCommonCodec) as info:
            await coder_plane.answer_from_legacy(second, phone.sdp())
        assert info.value.status == 488 and "busy" in str(info.value)
        await coder_plane.delete(second)
        third, legacy_offer = await coder_plane.offer_from_webrtc("call-c", _opus_offer(browsers[2]))
        assert [c.name for c in legacy_offer.media[0].codecs] == ["opus", "telephone-event"]
        with pytest.raises(NoCommonCodec):
            await coder_plane.answer_from_legacy(third, phone.sdp())
        await coder_plane.delete(third)
        # The slot comes back when the transcoded call ends.
        await coder_plane.delete(first)
        assert coder_plane.coder.active == 0
    finally:
        for b in browsers:
            b.close()
        phone.close()


# --------------------------------------------------------------------------------------------------
# Video feedback (media/feedback.py): PLI/FIR/NACK/REMB translated between the legs


def _vp8_offer(browser: FakeBrowser) -> SessionDescription:
    return SessionDescription.parse(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        f"m=video {browser.port} UDP/TLS/RTP/SAVPF 96\r\n" + browser._transport_sdp("actpass")
        + "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\n"
        "a=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\na=rtcp-rsize\r\na=ssrc:1111 cname:fake\r\n"
    )


def _vp8_phone_answer(phone: Phone) -> SessionDescription:
    # a=rtcp: RTCP to the phone's one socket, so that the test sees it (RFC 3605)
    return SessionDescription.parse(
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=video {phone.port} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp:{phone.port}\r\na=sendrecv\r\n"
    )


class LossyBrowser(FakeBrowser):
    """Loses the ``lose``-th SRTP packet it receives (counting from 1) before decrypting it, as the
    network would: its SRTP context never sees it, so the retransmission is not a replay."""

    def __init__(self, lose: int) -> None:
        super().__init__()
        self.lose = lose
        self.rtp_seen = 0
        self.lost: int | None = None

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if 127 < data[0] < 192 and not 191 < data[1] < 224 and self.rx is not None:
            self.rtp_seen += 1
            if self.rtp_seen == self.lose:
                self.lost = int.from_bytes(data[2:4], "big")
                return
        super().datagram_received(data, addr)


def _browser_rtcp(browser: FakeBrowser, *packets: Any) -> None:
    from rtc2sip.media.rtcp import serialize_compound

    assert browser.tx is not None and browser.transport is not None and browser.gateway is not None
    browser.transport.sendto(browser.tx.protect_rtcp(serialize_compound(packets)), browser.gateway)


async def test_video_feedback_crosses_the_legs(plane: MediaPlane) -> None:
    """Passthrough VP8: the browser's NACK is answered from the history, its PLI reaches the phone as
    PLI + FIR about the phone's own SSRC; the phone's RFC 2032 FIR (libre's, with its own SSRC in
    it) reaches the browser as a PLI about the browser's SSRC; REMB goes across."""
    from rtc2sip.media.rtcp import (
        FullIntraRequest,
        GenericNack,
        PictureLossIndication,
        ReceiverEstimatedMaxBitrate,
    )

    browser, phone = await LossyBrowser(lose=4).start(), await Phone().start()
    assert isinstance(browser, LossyBrowser)
    try:
        session, legacy_offer = await plane.offer_from_webrtc("call-v", _vp8_offer(browser))
        assert "a=rtcp-fb" not in str(legacy_offer)  # plain RTP/AVP toward the phone
        answer = await plane.answer_from_legacy(session, _vp8_phone_answer(phone))
        text = str(answer)
        for fb in ("nack", "nack pli", "ccm fir", "goog-remb"):
            assert f"a=rtcp-fb:96 {fb}\r\n" in text, text
        assert "transport-cc" not in text  # not implemented: not answered
        await browser.connect(answer)
        await until(lambda: browser.tx is not None, what="DTLS")
        stream: Any = plane.stats(session)["streams"]["video"]  # type: ignore[index]
        gw_video = legacy_address(legacy_offer)
        gw_rtcp = (gw_video[0], gw_video[1] + 1)
        for seq in range(100, 110):
            phone.send_rtp(gw_video, 96, seq, b"\x10vp8 frame %d" % seq)
        await until(lambda: len(browser.received) >= 9, what="VP8 at the browser")
        assert {p.ssrc for p in browser.received} == {stream["webrtc_ssrc"]}
        lost = browser.lost
        assert lost is not None and lost not in {p.sequence_number for p in browser.received}
        _browser_rtcp(browser, GenericNack(1111, stream["webrtc_ssrc"], [lost]))
        await until(lambda: len(browser.received) >= 10, what="the retransmission")
        assert browser.received[-1].sequence_number == lost and browser.received[-1].payload == b"\x10vp8 frame 103"

        _browser_rtcp(browser, PictureLossIndication(1111, stream["webrtc_ssrc"]))

        def phone_pli() -> list[Any]:
            return [p for d in phone.rtcp for p in parse_compound(d)
                    if isinstance(p, PictureLossIndication | FullIntraRequest)]

        await until(lambda: len(phone_pli()) >= 2, what="PLI and FIR at the phone")
        pli, fir = phone_pli()[:2]
        assert isinstance(pli, PictureLossIndication) and pli.media_ssrc == 2222
        assert pli.sender_ssrc == stream["legacy_ssrc"]
        assert isinstance(fir, FullIntraRequest) and [e.ssrc for e in fir.entries] == [2222]

        browser.send_rtp(96, 500, b"\x10browser frame", ssrc=1111)  # the gateway learns the browser's SSRC
        await until(lambda: len(phone.received) >= 1, what="VP8 at the phone")
        assert phone.transport is not None
        phone.transport.sendto(b"\x80\xc0\x00\x01" + (2222).to_bytes(4, "big"), gw_rtcp)  # RFC 2032 FIR

        def browser_pli() -> list[Any]:
            return [p for d in browser.rtcp for p in parse_compound(d) if isinstance(p, PictureLossIndication)]

        await until(lambda: browser_pli(), what="PLI at the browser")
        assert browser_pli()[0].media_ssrc == 1111 and browser_pli()[0].sender_ssrc == stream["webrtc_ssrc"]

        _browser_rtcp(browser, ReceiverEstimatedMaxBitrate(1111, 300_000, [stream["webrtc_ssrc"]]))

        def phone_remb() -> list[Any]:
            return [p for d in phone.rtcp for p in parse_compound(d) if isinstance(p, ReceiverEstimatedMaxBitrate)]

        await until(lambda: phone_remb(), what="REMB at the phone")
        assert phone_remb()[0].ssrcs == [2222] and 290_000 <= phone_remb()[0].bitrate <= 300_000

        # RFC 5104 TMMBR from the phone about our stream: TMMBN back, REMB to the browser's sender
        from rtc2sip.media.rtcp import ReceiverReport as Rr
        from rtc2sip.media.rtcp import TmmbItem, Tmmbn, Tmmbr, serialize_compound

        phone.transport.sendto(serialize_compound([Rr(2222, []), Tmmbr(2222, [TmmbItem(stream["legacy_ssrc"],
                                                                                        256_000)])]), gw_rtcp)
        await until(lambda: any(isinstance(p, Tmmbn) for d in phone.rtcp for p in parse_compound(d)), what="TMMBN")
        await until(lambda: any(isinstance(p, ReceiverEstimatedMaxBitrate) and p.ssrcs == [1111]
                                for d in browser.rtcp for p in parse_compound(d)), what="REMB at the browser")

        feedback = cast(Any, plane.stats(session))["streams"]["video"]["feedback"]
        assert feedback["tmmbr_in_legacy"] == 1
        assert feedback["nack_in_webrtc"] == 1 and feedback["retransmitted"] == 1
        assert feedback["pli_in_webrtc"] == 1 and feedback["keyframe_request_to_legacy"] == 1
        assert feedback["fir_in_legacy"] == 1 and feedback["keyframe_request_to_webrtc"] == 1
        assert feedback["remb_in_webrtc"] == 1 and feedback["history_depth"] == 100
    finally:
        browser.close()
        phone.close()


async def test_keyframe_request_api_and_info_hook(plane: MediaPlane) -> None:
    """request_keyframe (a SIP INFO picture_fast_update from the legacy side) sends the browser a
    PLI; a keyframe request toward the legacy side calls the on_keyframe_request hook (the B2BUA's
    RFC 5168 INFO)."""
    from rtc2sip.media.rtcp import PictureLossIndication

    hooked: list[tuple[str, str]] = []
    plane.on_keyframe_request(lambda s, c: hooked.append((s, c)))
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await plane.offer_from_webrtc("call-k", _vp8_offer(browser))
        answer = await plane.answer_from_legacy(session, _vp8_phone_answer(phone))
        await browser.connect(answer)
        await until(lambda: browser.tx is not None, what="DTLS")
        browser.send_rtp(96, 1, b"\x10x", ssrc=1111)
        phone.send_rtp(legacy_address(legacy_offer), 96, 1, b"\x10y")
        await until(lambda: phone.received and browser.received, what="media both ways")
        assert plane.request_keyframe(session, from_webrtc=True)
        await until(lambda: any(isinstance(p, PictureLossIndication) for d in browser.rtcp
                                for p in parse_compound(d)), what="PLI at the browser")
        assert plane.request_keyframe(session, from_webrtc=False)
        assert hooked == [(session, "call-k")]
    finally:
        browser.close()
        phone.close()


def _av_offer(browser: FakeBrowser) -> SessionDescription:
    transport = browser._transport_sdp("actpass").replace("a=mid:0\r\n", "")
    return SessionDescription.parse(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
        f"m=audio {browser.port} UDP/TLS/RTP/SAVPF 0\r\n" + transport + "a=mid:0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"m=video {browser.port} UDP/TLS/RTP/SAVPF 96\r\n" + transport + "a=mid:1\r\na=rtpmap:96 VP8/90000\r\n"
    )


@pytest.mark.parametrize("overflow", ["audio-only", "reject"])
async def test_video_over_the_transcoding_limit(overflow: str) -> None:
    """The pool's one slot is taken by a transcoded call: the next call's offer leaves the coder's
    H.264 out; the phone, H.264 only, rejects the video; ``transcoding_overflow`` then says whether
    the call goes on with audio or is refused (488)."""
    import dataclasses

    from rtc2sip.coder import CoderPool
    from rtc2sip.sdp import NoCommonCodec

    settings = Settings()
    settings = dataclasses.replace(
        settings, webrtc2sip=dataclasses.replace(settings.webrtc2sip, enable_media_coder=True,
                                                 codecs=("opus", "pcmu", "vp8", "h264-bp")),
        limits=dataclasses.replace(settings.limits, transcoding_overflow=overflow))
    pool = CoderPool(1, workers=1)
    p = MediaPlane(settings, GW_CERT, port_range=(43000, 43999), coder=pool)
    browsers = [await FakeBrowser().start() for _ in range(2)]
    phone = await Phone().start()
    try:
        first, _ = await p.offer_from_webrtc("call-a", _opus_offer(browsers[0]))
        await p.answer_from_legacy(first, phone.sdp())
        assert pool.active == 1
        second, legacy_offer = await p.offer_from_webrtc("call-b", _av_offer(browsers[1]))
        assert [c.name for c in legacy_offer.media[1].codecs] == ["VP8"]  # no H.264: the coder is full
        answer = SessionDescription.parse(str(phone.sdp()) + "m=video 0 RTP/AVP 99\r\na=rtpmap:99 H264/90000\r\n")
        if overflow == "reject":
            with pytest.raises(NoCommonCodec, match="video needs transcoding"):
                await p.answer_from_legacy(second, answer)
        else:
            browser_answer = await p.answer_from_legacy(second, answer)
            assert browser_answer.media[0].port != 0 and browser_answer.media[1].port == 0
        assert pool.active == 1
    finally:
        for b in browsers:
            b.close()
        phone.close()
        await p.close()
        await pool.shutdown()


def test_heap_trimmed_after_releases_once_per_burst() -> None:
    from rtc2sip.media import heap

    calls: list[int] = []
    trimmer = heap.HeapTrimmer()
    trimmer._trim = calls.append  # glibc's malloc_trim stands in for a recorder: only the pacing is tested
    trimmer.tick(100.0)
    assert calls == []  # nothing released, nothing to give back
    trimmer.released(100.0)
    trimmer.released(100.5)  # the same burst
    trimmer.tick(100.5)
    assert calls == []  # waits for the rest of the burst
    trimmer.tick(100.0 + heap.TRIM_DELAY)
    assert calls == [0]
    trimmer.released(101.2)
    trimmer.tick(101.2 + heap.TRIM_DELAY)
    assert calls == [0]  # within TRIM_INTERVAL of the last trim: waits
    trimmer.tick(100.0 + heap.TRIM_DELAY + heap.TRIM_INTERVAL)
    assert calls == [0, 0]
    trimmer.tick(200.0)
    assert calls == [0, 0]


async def test_bundle_same_payload_type_audio_and_video_told_apart_by_mid(plane: MediaPlane) -> None:
    """Audio (opus) and video (VP8) both on payload type 96 in one BUNDLE (RFC 8843 §9.2): the gateway
    answers the browser's MID header extension with its ID, and the relay sends each packet to the
    right phone socket: by the MID at first, then by the SSRC it learnt (packets without the MID)."""
    from rtc2sip.media.rtp import RtpPacket, build_extensions

    mid_uri = "urn:ietf:params:rtp-hdrext:sdes:mid"
    browser, audio_phone, video_phone = await FakeBrowser().start(), await Phone().start(), await Phone().start()
    transport = browser._transport_sdp("actpass").replace("a=mid:0\r\n", "")
    offer = SessionDescription.parse(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
        f"m=audio {browser.port} UDP/TLS/RTP/SAVPF 96\r\n" + transport
        + f"a=mid:0\r\na=extmap:5 {mid_uri}\r\na=rtpmap:96 opus/48000/2\r\n"
        f"m=video {browser.port} UDP/TLS/RTP/SAVPF 96\r\n" + transport
        + f"a=mid:1\r\na=extmap:5 {mid_uri}\r\na=rtpmap:96 VP8/90000\r\n"
    )
    try:
        session, _ = await plane.offer_from_webrtc("call-bundle", offer)
        phone_answer = SessionDescription.parse(
            "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {audio_phone.port} RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\na=sendrecv\r\n"
            f"m=video {video_phone.port} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=sendrecv\r\n"
        )
        answer = await plane.answer_from_legacy(session, phone_answer)
        assert [[(e.id, e.uri) for e in m.extmaps] for m in answer.media] == [[(5, mid_uri)], [(5, mid_uri)]]
        await browser.connect(answer)
        await until(lambda: browser.tx is not None, what="DTLS")
        assert browser.tx is not None and browser.transport is not None and browser.gateway is not None

        def send(ssrc: int, seq: int, mid: str | None) -> None:
            profile, ext = build_extensions({5: mid.encode()}) if mid is not None else (None, b"")
            packet = RtpPacket(96, seq, seq * 960, ssrc, b"media %d" % ssrc, extension_profile=profile,
                               extension=ext)
            assert browser.tx is not None and browser.transport is not None
            browser.transport.sendto(browser.tx.protect(packet.serialize()), browser.gateway)

        for seq in range(1, 4):
            send(0xA0D10, seq, "0" if seq == 1 else None)
            send(0x71DE0, seq, "1" if seq == 1 else None)
        await until(lambda: len(audio_phone.received) >= 3 and len(video_phone.received) >= 3, what="both phones")
        assert {p.payload for p in audio_phone.received} == {b"media %d" % 0xA0D10}
        assert {p.payload for p in video_phone.received} == {b"media %d" % 0x71DE0}
    finally:
        browser.close()
        audio_phone.close()
        video_phone.close()
