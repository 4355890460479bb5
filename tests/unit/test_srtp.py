"""SRTP sessions (RFC 3711, RFC 7714) and SDES keys (RFC 4568)."""

from __future__ import annotations

import base64
import os
import time

import pytest

from rtc2sip.media.rtcp import ReceiverReport, ReportBlock, SourceDescription, parse_compound, serialize_compound
from rtc2sip.media.rtp import build_rtp
from rtc2sip.media.srtp import (
    AEAD_AES_128_GCM,
    AES128_CM_SHA1_32,
    AES128_CM_SHA1_80,
    SdesCrypto,
    SdesError,
    SrtpAuthenticationError,
    SrtpError,
    SrtpProfile,
    SrtpReplayError,
    SrtpSession,
    UnsupportedCryptoError,
)

KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"  # RFC 4568 §4 example key
ALL = [AEAD_AES_128_GCM, AES128_CM_SHA1_80, AES128_CM_SHA1_32]


def sessions(profile: SrtpProfile) -> tuple[SrtpSession, SrtpSession]:
    key = os.urandom(profile.master_length)
    return SrtpSession(profile, key, outbound=True), SrtpSession(profile, key, outbound=False)


def rtp(seq: int, size: int = 160) -> bytes:
    return build_rtp(0, seq, seq * 160, 0xCAFE, bytes(range(size)))


@pytest.mark.parametrize("profile", ALL, ids=str)
def test_rtp_round_trip(profile: SrtpProfile) -> None:
    tx, rx = sessions(profile)
    for seq in (1, 2, 3, 65535, 0):  # across the 16-bit wrap (ROC, RFC 3711 §3.3.1)
        packet = rtp(seq)
        protected = tx.protect(packet)
        assert protected != packet and protected[:12] == packet[:12]
        assert rx.unprotect(protected) == packet


@pytest.mark.parametrize("profile", ALL, ids=str)
def test_rtcp_round_trip(profile: SrtpProfile) -> None:
    tx, rx = sessions(profile)
    compound = serialize_compound(
        [ReceiverReport(0xCAFE, [ReportBlock(0xBEEF, 12, 3, 70000, 44, 5, 6)]), SourceDescription.cname(0xCAFE, "x")]
    )
    protected = tx.protect_rtcp(compound)
    assert rx.unprotect_rtcp(protected) == compound
    assert parse_compound(rx.unprotect_rtcp(tx.protect_rtcp(compound)))[0] == parse_compound(compound)[0]


@pytest.mark.parametrize("profile", ALL, ids=str)
def test_replay_rejected(profile: SrtpProfile) -> None:
    tx, rx = sessions(profile)
    protected = tx.protect(rtp(10))
    rx.unprotect(protected)
    with pytest.raises(SrtpReplayError):
        rx.unprotect(protected)
    # SRTCP replay too (RFC 3711 §3.4: SRTCP index).
    protected_rtcp = tx.protect_rtcp(ReceiverReport(1).serialize())
    rx.unprotect_rtcp(protected_rtcp)
    with pytest.raises(SrtpReplayError):
        rx.unprotect_rtcp(protected_rtcp)


@pytest.mark.parametrize("profile", ALL, ids=str)
def test_tampered_rejected(profile: SrtpProfile) -> None:
    tx, rx = sessions(profile)
    protected = bytearray(tx.protect(rtp(10)))
    protected[20] ^= 1
    with pytest.raises(SrtpAuthenticationError):
        rx.unprotect(bytes(protected))
    # The session survives: the next genuine packet still passes.
    assert rx.unprotect(tx.protect(rtp(11))) == rtp(11)


def test_wrong_key_rejected_and_errors_are_typed() -> None:
    tx, _ = sessions(AES128_CM_SHA1_80)
    _, other_rx = sessions(AES128_CM_SHA1_80)
    with pytest.raises(SrtpError):
        other_rx.unprotect(tx.protect(rtp(1)))
    with pytest.raises(ValueError):
        SrtpSession(AES128_CM_SHA1_80, b"short", outbound=True)


def test_too_long_packet_is_an_srtp_error_and_a_bytearray_is_accepted() -> None:
    tx, rx = sessions(AES128_CM_SHA1_80)
    with pytest.raises(SrtpError):
        tx.protect(bytes(1500))
    with pytest.raises(SrtpError):
        rx.unprotect(bytes(1501))
    # The relay protects the bytearray it rewrote in place.
    assert rx.unprotect(tx.protect(bytearray(rtp(1)))) == rtp(1)


def test_repeat_tx_refused_unless_allowed() -> None:
    key = os.urandom(30)
    tx = SrtpSession(AES128_CM_SHA1_80, key, outbound=True)
    tx.protect(rtp(5))
    with pytest.raises(SrtpReplayError):
        tx.protect(rtp(5))
    lenient = SrtpSession(AES128_CM_SHA1_80, key, outbound=True, allow_repeat_tx=True)
    assert lenient.protect(rtp(5)) == lenient.protect(rtp(5))


# --- SDES ---------------------------------------------------------------------------------------------


def test_sdes_rfc4568_example() -> None:
    # RFC 4568 §4 example key, with its lifetime; its MKI (1:4) is what we cannot honour.
    crypto = SdesCrypto.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20")
    assert crypto.tag == 1 and crypto.profile is AES128_CM_SHA1_80 and crypto.lifetime == 2**20
    assert len(crypto.key_salt) == 30
    with pytest.raises(UnsupportedCryptoError):
        SdesCrypto.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4")
    # A zero-length MKI means "no MKI in packets" and is accepted.
    assert SdesCrypto.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:0").lifetime is None


@pytest.mark.parametrize("profile", ALL, ids=str)
def test_sdes_generate_format_parse(profile: SrtpProfile) -> None:
    mine = SdesCrypto.generate(3, profile)
    line = str(mine)
    assert line.startswith(f"3 {profile.sdes_name} inline:")
    theirs = SdesCrypto.parse(line)
    assert theirs == mine
    tx, rx = mine.session(outbound=True), theirs.session(outbound=False)
    assert rx.unprotect(tx.protect(rtp(1))) == rtp(1)


def test_sdes_gcm_key_length() -> None:
    key = base64.b64encode(bytes(28)).decode()
    assert SdesCrypto.parse(f"2 AEAD_AES_128_GCM inline:{key}").profile is AEAD_AES_128_GCM
    with pytest.raises(SdesError):
        SdesCrypto.parse(f"2 AES_CM_128_HMAC_SHA1_80 inline:{key}")  # 28 bytes is not 30


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80", SdesError),
        ("x AES_CM_128_HMAC_SHA1_80 inline:AAAA", SdesError),
        ("1 AES_CM_128_HMAC_SHA1_80 notinline:AAAA", SdesError),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", SdesError),
        (f"1 F8_128_HMAC_SHA1_80 inline:{KEY}", UnsupportedCryptoError),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTP",
         UnsupportedCryptoError),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY};inline:{KEY}",
         UnsupportedCryptoError),
    ],
)  # fmt: skip
def test_sdes_errors(line: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        SdesCrypto.parse(line)


def test_sdes_window_hint() -> None:
    crypto = SdesCrypto.parse(f"1 AES_CM_128_HMAC_SHA1_32 inline:{KEY} WSH=128")
    assert crypto.window_size_hint == 128 and crypto.profile is AES128_CM_SHA1_32
    crypto.session(outbound=False)


# --- micro-benchmark (printed, not asserted) -------------------------------------------------------------


@pytest.mark.parametrize("profile", [AEAD_AES_128_GCM, AES128_CM_SHA1_80], ids=str)
def test_benchmark_protect_unprotect(profile: SrtpProfile, capsys: pytest.CaptureFixture[str]) -> None:
    tx, rx = sessions(profile)
    n = 20000
    packets = [build_rtp(0, i, i * 160, 0xCAFE, b"\xd5" * 160) for i in range(n)]  # 172-byte G.711 packets
    start = time.perf_counter()
    protected = [tx.protect(p) for p in packets]
    middle = time.perf_counter()
    for p in protected:
        rx.unprotect(p)
    end = time.perf_counter()
    with capsys.disabled():
        print(
            f"\n[bench] {profile}: protect {(middle - start) / n * 1e6:.2f} µs, "
            f"unprotect {(end - middle) / n * 1e6:.2f} µs per 172-byte packet"
        )
