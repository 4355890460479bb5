"""DTLS-SRTP endpoint: in-memory handshakes, lost flights, fingerprint pinning, openssl interop."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable

import pytest

from rtc2sip.media.certificate import Certificate, Fingerprint, FingerprintError, fingerprint_of, verify_fingerprint
from rtc2sip.media.dtls import (
    DEFAULT_SRTP_PROFILES,
    DtlsAlertError,
    DtlsEndpoint,
    DtlsRole,
    DtlsState,
    DtlsTimeoutError,
    FingerprintMismatchError,
    split_keying_material,
)
from rtc2sip.media.rtp import build_rtp
from rtc2sip.media.srtp import AEAD_AES_128_GCM, AES128_CM_SHA1_80, SrtpProfile

CERT_A = Certificate.generate("a")
CERT_B = Certificate.generate("b")


def pair(
    client_role_first: bool = True, profiles: tuple[SrtpProfile, ...] = DEFAULT_SRTP_PROFILES
) -> tuple[DtlsEndpoint, DtlsEndpoint]:
    """A client (cert A) and a server (cert B), each pinned to the other's fingerprint."""
    client = DtlsEndpoint(CERT_A, DtlsRole.CLIENT, [CERT_B.sdp_fingerprint], srtp_profiles=profiles)
    server = DtlsEndpoint(CERT_B, DtlsRole.SERVER, [CERT_A.fingerprint("sha-256")], srtp_profiles=profiles)
    return (client, server) if client_role_first else (server, client)


def state_of(endpoint: DtlsEndpoint) -> DtlsState:
    """Read the state afresh (a plain attribute read would stay narrowed by an earlier assert)."""
    return endpoint.state


Drop = Callable[[str, int, bytes], bool]


def run(client: DtlsEndpoint, server: DtlsEndpoint, drop: Drop | None = None, deadline: float = 10.0) -> list[str]:
    """Shuttle datagrams (dropping those ``drop`` picks) and fire timers until both sides settle.

    Returns a log of "sender:index:size" entries, "drop" marked, so tests can see what happened.
    """
    log: list[str] = []
    counts = {"client": 0, "server": 0}
    client.start()
    server.start()
    end = time.monotonic() + deadline
    settled = (DtlsState.CONNECTED, DtlsState.FAILED, DtlsState.CLOSED)
    while time.monotonic() < end:
        moved = False
        for name, src, dst in (("client", client, server), ("server", server, client)):
            for datagram in src.datagrams_to_send():
                moved = True
                index = counts[name]
                counts[name] += 1
                if drop is not None and drop(name, index, datagram):
                    log.append(f"{name}:{index}:{len(datagram)}:drop")
                    continue
                log.append(f"{name}:{index}:{len(datagram)}")
                dst.feed(datagram)
        if client.state in settled and server.state in settled and not moved:
            break
        if not moved:
            now = time.monotonic()
            timers = [t for t in (client.next_timeout(now), server.next_timeout(now)) if t is not None]
            if not timers:
                break
            time.sleep(max(0.0, min(timers) - now))
            now = time.monotonic()
            client.handle_timeout(now)
            server.handle_timeout(now)
    return log


def assert_srtp_works(a: DtlsEndpoint, b: DtlsEndpoint) -> None:
    assert a.srtp_keys is not None and b.srtp_keys is not None
    assert a.srtp_keys.local_key_salt == b.srtp_keys.remote_key_salt
    assert a.srtp_keys.remote_key_salt == b.srtp_keys.local_key_salt
    a_tx, b_rx = a.srtp_keys.tx_session(), b.srtp_keys.rx_session()
    b_tx, a_rx = b.srtp_keys.tx_session(), a.srtp_keys.rx_session()
    for seq in range(3):
        packet = build_rtp(0, seq, seq * 160, 0x1234, b"\xff" * 160)
        assert b_rx.unprotect(a_tx.protect(packet)) == packet
        assert a_rx.unprotect(b_tx.protect(packet)) == packet


@pytest.mark.parametrize("client_first", [True, False])
def test_handshake_both_roles_and_keys(client_first: bool) -> None:
    first, second = pair(client_first)
    client, server = (first, second) if first.role is DtlsRole.CLIENT else (second, first)
    log = run(first, second)
    assert client.state is DtlsState.CONNECTED, (client.error, log)
    assert server.state is DtlsState.CONNECTED, (server.error, log)
    assert client.srtp_profile is AEAD_AES_128_GCM
    assert client.retransmissions == server.retransmissions == 0
    assert client.next_timeout(0.0) is None and server.next_timeout(0.0) is None
    assert_srtp_works(client, server)
    # Every datagram fits the default MTU.
    assert all(int(entry.split(":")[2]) <= 1200 for entry in log)


def test_cm_sha1_80_when_only_profile_offered() -> None:
    client = DtlsEndpoint(CERT_A, "client", [CERT_B.sdp_fingerprint], srtp_profiles=(AES128_CM_SHA1_80,))
    server = DtlsEndpoint(CERT_B, "server", [CERT_A.sdp_fingerprint])
    run(client, server)
    assert client.state is server.state is DtlsState.CONNECTED
    assert server.srtp_profile is AES128_CM_SHA1_80
    assert_srtp_works(client, server)


def test_small_mtu_fragments_flights() -> None:
    client = DtlsEndpoint(CERT_A, "client", [CERT_B.sdp_fingerprint], mtu=300)
    server = DtlsEndpoint(CERT_B, "server", [CERT_A.sdp_fingerprint], mtu=300)
    log = run(client, server)
    assert client.state is server.state is DtlsState.CONNECTED
    assert all(int(entry.split(":")[2]) <= 300 for entry in log)


@pytest.mark.parametrize(
    ("who", "index", "what"),
    [
        ("client", 0, "ClientHello"),
        ("server", 0, "server's first flight"),
        ("client", 1, "client's Certificate..Finished flight"),
        ("server", 1, "server's ChangeCipherSpec+Finished (last flight, RFC 6347 §4.2.4)"),
    ],
)
def test_lost_flight_is_retransmitted(who: str, index: int, what: str) -> None:
    client, server = pair()
    log = run(client, server, drop=lambda name, i, _: name == who and i == index)
    assert client.state is DtlsState.CONNECTED, (what, client.error, log)
    assert server.state is DtlsState.CONNECTED, (what, server.error, log)
    assert any(entry.endswith(":drop") for entry in log)
    assert client.retransmissions + server.retransmissions >= 1, log
    assert_srtp_works(client, server)


def test_next_timeout_is_in_callers_clock() -> None:
    client, _server = pair()
    assert client.next_timeout(100.0) is None  # nothing sent yet
    client.start()
    assert len(client.datagrams_to_send()) == 1
    due = client.next_timeout(100.0)
    assert due is not None and 100.0 < due <= 101.0  # RFC 6347 §4.2.4.1: 1 s initial timer
    client.handle_timeout(100.0)  # early: OpenSSL's own clock has not expired, nothing resent
    assert client.datagrams_to_send() == []


def test_gives_up_after_max_retransmissions() -> None:
    client = DtlsEndpoint(CERT_A, "client", [CERT_B.sdp_fingerprint], max_retransmissions=0)
    client.start()
    client.datagrams_to_send()
    due = client.next_timeout(time.monotonic())
    assert due is not None
    time.sleep(max(0.0, due - time.monotonic()) + 0.01)
    client.handle_timeout(time.monotonic())
    assert client.state is DtlsState.FAILED
    assert isinstance(client.error, DtlsTimeoutError)
    assert client.next_timeout(0.0) is None


@pytest.mark.parametrize("wrong_side", ["client", "server"])
def test_fingerprint_mismatch_fails_cleanly(wrong_side: str) -> None:
    wrong = Certificate.generate("mallory").sdp_fingerprint
    client = DtlsEndpoint(CERT_A, "client", [wrong if wrong_side == "client" else CERT_B.sdp_fingerprint])
    server = DtlsEndpoint(CERT_B, "server", [wrong if wrong_side == "server" else CERT_A.sdp_fingerprint])
    run(client, server)
    checker, other = (client, server) if wrong_side == "client" else (server, client)
    assert checker.state is DtlsState.FAILED
    assert isinstance(checker.error, FingerprintMismatchError)
    assert checker.srtp_keys is None
    # The checker's fatal alert (OpenSSL picks unknown_ca for a refused self-signed leaf) fails the other
    # side promptly, without waiting for its timers.
    assert other.state is DtlsState.FAILED
    assert isinstance(other.error, DtlsAlertError)
    assert other.error.description in ("bad_certificate", "unknown_ca")
    # A failed endpoint ignores whatever comes next and never raises.
    checker.feed(b"\x16\xfe\xfd" + b"\x00" * 20)
    assert checker.datagrams_to_send() == [] and checker.next_timeout(0.0) is None


def test_fingerprint_arrives_after_handshake() -> None:
    """We offered; the peer's DTLS outran its SDP answer (server side has no fingerprint yet)."""
    client = DtlsEndpoint(CERT_A, "client", [CERT_B.sdp_fingerprint])
    server = DtlsEndpoint(CERT_B, "server")
    run(client, server)
    assert client.state is DtlsState.CONNECTED
    assert server.state is DtlsState.CONNECTING and server.srtp_keys is None
    server.set_remote_fingerprints([CERT_A.sdp_fingerprint])
    assert state_of(server) is DtlsState.CONNECTED
    assert_srtp_works(client, server)


def test_late_fingerprint_mismatch() -> None:
    client = DtlsEndpoint(CERT_A, "client", [CERT_B.sdp_fingerprint])
    server = DtlsEndpoint(CERT_B, "server")
    run(client, server)
    server.set_remote_fingerprints([Certificate.generate().sdp_fingerprint])
    assert server.state is DtlsState.FAILED
    assert isinstance(server.error, FingerprintMismatchError)
    # It says goodbye; the client closes on that close_notify.
    for datagram in server.datagrams_to_send():
        client.feed(datagram)
    assert client.state is DtlsState.CLOSED


def test_close_notify() -> None:
    client, server = pair()
    run(client, server)
    client.close()
    assert client.state is DtlsState.CLOSED
    for datagram in client.datagrams_to_send():
        server.feed(datagram)
    assert server.state is DtlsState.CLOSED
    assert server.error is None


def test_release_keeps_keys_and_still_hears_the_close() -> None:
    """A released endpoint frees OpenSSL but keeps its SRTP keys; the peer's close_notify (an alert
    record) still closes it, and other records are dropped."""
    client, server = pair()
    run(client, server)
    server.release()
    assert server.released and state_of(server) is DtlsState.CONNECTED
    assert_srtp_works(client, server)
    server.feed(bytes([23, 0xFE, 0xFD]) + bytes(20))  # application data: ignored
    assert state_of(server) is DtlsState.CONNECTED and server.datagrams_to_send() == []
    client.close()
    for datagram in client.datagrams_to_send():
        server.feed(datagram)
    assert state_of(server) is DtlsState.CLOSED
    server.close()  # no connection left to send close_notify on: a no-op, not an error


def test_endpoint_freed_without_cyclic_gc() -> None:
    """No reference cycle keeps the SSL object alive after a call (issue 3: no leaks)."""
    import gc
    import weakref

    client, server = pair()
    run(client, server)
    refs = [weakref.ref(client), weakref.ref(server)]
    gc.disable()
    try:
        del client, server
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()


def test_garbage_fails_handshake_not_caller() -> None:
    server = DtlsEndpoint(CERT_B, "server", [CERT_A.sdp_fingerprint])
    server.feed(b"\x16\xfe\xfd\x00\x00" + b"\xff" * 40)
    assert server.state in (DtlsState.CONNECTING, DtlsState.FAILED)


def test_keying_material_layout() -> None:
    """RFC 5764 §4.2: client_key | server_key | client_salt | server_salt."""
    material = bytes(range(60))
    keys = split_keying_material(material, AES128_CM_SHA1_80, DtlsRole.CLIENT)
    assert keys.local_key_salt == bytes(range(16)) + bytes(range(32, 46))
    assert keys.remote_key_salt == bytes(range(16, 32)) + bytes(range(46, 60))
    server_keys = split_keying_material(material, AES128_CM_SHA1_80, DtlsRole.SERVER)
    assert server_keys.local_key_salt == keys.remote_key_salt


def test_fingerprint_helpers() -> None:
    fp = Fingerprint.parse(CERT_A.sdp_fingerprint)
    assert fp.algorithm == "sha-256" and len(fp.digest) == 32
    assert str(fp) == CERT_A.sdp_fingerprint
    assert Fingerprint.parse(CERT_A.sdp_fingerprint.lower().replace("sha-256", "SHA-256")) == fp
    for algorithm in ("sha-1", "sha-256", "sha-384", "sha-512"):
        assert verify_fingerprint(CERT_A.der, [fingerprint_of(CERT_A.der, algorithm)])
        assert not verify_fingerprint(CERT_B.der, [fingerprint_of(CERT_A.der, algorithm)])
    # The strongest offered hash decides: a matching sha-1 cannot rescue a wrong sha-256.
    assert not verify_fingerprint(CERT_A.der, [fingerprint_of(CERT_A.der, "sha-1"), fingerprint_of(CERT_B.der)])
    assert not verify_fingerprint(CERT_A.der, [])
    for bad in ("sha-256", "md5 AB:CD", "sha-256 AB:CD", "sha-256 " + ":".join(["ZZ"] * 32)):
        with pytest.raises(FingerprintError):
            Fingerprint.parse(bad)


def test_certificate_persistence(tmp_path: object) -> None:
    from pathlib import Path

    from rtc2sip.media import certificate as module

    directory = Path(str(tmp_path))
    module._default = None
    first = module.default_certificate(directory)
    assert first.x509.signature_hash_algorithm is not None
    assert module.default_certificate(directory) is first
    module._default = None
    reloaded = module.default_certificate(directory)
    assert reloaded.sdp_fingerprint == first.sdp_fingerprint
    assert (directory / module.KEY_FILE).stat().st_mode & 0o077 == 0
    module._default = None


# --- interop with the openssl binary ----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")
def test_openssl_s_client_interop(tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    peer = Certificate.generate("s_client")
    (directory / "cert.pem").write_bytes(peer.certificate_pem())
    (directory / "key.pem").write_bytes(peer.key_pem())
    server = DtlsEndpoint(CERT_B, "server", [peer.sdp_fingerprint])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        ["openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}", "-use_srtp", "SRTP_AES128_CM_SHA1_80",
         "-cert", str(directory / "cert.pem"), "-key", str(directory / "key.pem"),
         "-keymatexport", "EXTRACTOR-dtls_srtp", "-keymatexportlen", "60"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        end = time.monotonic() + 10
        while server.state is not DtlsState.CONNECTED and time.monotonic() < end:
            try:
                data, addr = sock.recvfrom(2048)
            except TimeoutError:
                server.handle_timeout(time.monotonic())
            else:
                server.feed(data)
            for datagram in server.datagrams_to_send():
                sock.sendto(datagram, addr)
        assert server.state is DtlsState.CONNECTED, server.error
        assert server.srtp_profile is AES128_CM_SHA1_80
        time.sleep(0.3)
        server.close()
        for datagram in server.datagrams_to_send():
            sock.sendto(datagram, addr)
        out, _ = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    text = out.decode(errors="replace")
    assert "SRTP Extension negotiated, profile=SRTP_AES128_CM_SHA1_80" in text, text
    exported = next(line.split(":", 1)[1].strip() for line in text.splitlines() if "Keying material:" in line)
    keys = server.srtp_keys
    assert keys is not None
    material = bytes.fromhex(exported)
    assert split_keying_material(material, AES128_CM_SHA1_80, DtlsRole.SERVER) == keys
