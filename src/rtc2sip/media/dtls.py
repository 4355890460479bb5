"""DTLS-SRTP endpoint without I/O (RFC 5764, RFC 6347, RFC 5763 §5, RFC 8842).

The caller owns the socket and the clock: it hands received DTLS datagrams to :meth:`DtlsEndpoint.feed`,
sends what :meth:`DtlsEndpoint.datagrams_to_send` returns, and calls :meth:`DtlsEndpoint.handle_timeout`
when :meth:`DtlsEndpoint.next_timeout` says so, so that lost handshake flights are retransmitted
(RFC 6347 §4.2.4). pyOpenSSL runs over memory BIOs; this module turns its byte stream back into
datagrams and its exceptions into states.

OpenSSL keeps its own retransmission clock (it reads the system time itself and pyOpenSSL exposes no
``DTLS_set_timer_cb``), so the ``now`` arguments only translate its remaining time into the caller's
clock: virtual time cannot make OpenSSL retransmit early. Its timer starts at 1 s and doubles up to
60 s, as RFC 6347 §4.2.4.1 recommends.
"""

from __future__ import annotations

import enum
import functools
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from OpenSSL._util import lib as _openssl_lib

from .certificate import Certificate, Fingerprint, verify_fingerprint
from .srtp import AEAD_AES_128_GCM, AES128_CM_SHA1_80, PROFILES_BY_DTLS_NAME, SrtpProfile, SrtpSession

__all__ = [
    "DEFAULT_SRTP_PROFILES",
    "DtlsAlertError",
    "DtlsEndpoint",
    "DtlsError",
    "DtlsHandshakeError",
    "DtlsRole",
    "DtlsState",
    "DtlsTimeoutError",
    "FingerprintMismatchError",
    "SrtpKeys",
]

DTLS1_2_VERSION = 0xFEFD
# RFC 5764 §4.2 exporter label.
EXTRACTOR_LABEL = b"EXTRACTOR-dtls_srtp"
# Offered/selected in this order (OpenSSL's server picks by its own list order): GCM is both the
# stronger and, in libsrtp, the cheaper profile; CM-SHA1-80 is what every WebRTC stack supports.
DEFAULT_SRTP_PROFILES: tuple[SrtpProfile, ...] = (AEAD_AES_128_GCM, AES128_CM_SHA1_80)
# ECDHE only (forward secrecy). ECDSA suites serve our own certificate; the RSA ones let us act as a
# client toward older peers whose certificates are RSA.
CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:"
    b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA"
)
# A flight that needs more than this many retransmissions (1+2+4+8+16+32 s of waiting at the
# default timer) is abandoned: nobody waits a minute for a call's media to start.
MAX_RETRANSMISSIONS = 6
_RECORD_HEADER = 13  # content type, version, epoch, sequence number (RFC 6347 §4.1)
_APP_READ_SIZE = 65536


class DtlsRole(enum.StrEnum):
    """RFC 5763 §5: ``a=setup:active`` is the DTLS client, ``passive`` the server."""

    CLIENT = "client"
    SERVER = "server"


class DtlsState(enum.StrEnum):
    """As RTCDtlsTransportState (W3C webrtc-pc §5.5.1)."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"
    FAILED = "failed"


# Legal transitions; anything else is a bug in this module, not in the peer.
_TRANSITIONS: dict[DtlsState, frozenset[DtlsState]] = {
    DtlsState.NEW: frozenset({DtlsState.CONNECTING, DtlsState.CLOSED, DtlsState.FAILED}),
    DtlsState.CONNECTING: frozenset({DtlsState.CONNECTED, DtlsState.CLOSED, DtlsState.FAILED}),
    DtlsState.CONNECTED: frozenset({DtlsState.CLOSED, DtlsState.FAILED}),
    DtlsState.CLOSED: frozenset(),
    DtlsState.FAILED: frozenset(),
}


class DtlsError(Exception):
    """Why an endpoint failed; kept in :attr:`DtlsEndpoint.error` once the state is ``failed``."""


class FingerprintMismatchError(DtlsError):
    """The peer's certificate matches none of its SDP fingerprints (RFC 5763 §5, RFC 8122 §5)."""


class DtlsHandshakeError(DtlsError):
    """The handshake broke: no common version, cipher or SRTP profile, malformed records."""


class DtlsAlertError(DtlsError):
    """The peer sent a fatal alert (RFC 5246 §7.2.2)."""

    def __init__(self, description: str) -> None:
        super().__init__(f"peer sent fatal alert: {description}")
        self.description = description


class DtlsTimeoutError(DtlsError):
    """A handshake flight stayed unanswered after every retransmission (RFC 6347 §4.2.4)."""


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """The DTLS-SRTP keying material of RFC 5764 §4.2, already assigned to directions."""

    profile: SrtpProfile
    local_key_salt: bytes
    remote_key_salt: bytes

    def tx_session(self, **options: Any) -> SrtpSession:
        """Protects what we send: keyed with our side's write key."""
        return SrtpSession(self.profile, self.local_key_salt, outbound=True, **options)

    def rx_session(self, **options: Any) -> SrtpSession:
        """Unprotects what the peer sends: keyed with its write key."""
        return SrtpSession(self.profile, self.remote_key_salt, outbound=False, **options)


def split_keying_material(material: bytes, profile: SrtpProfile, role: DtlsRole) -> SrtpKeys:
    """RFC 5764 §4.2: client_key | server_key | client_salt | server_salt, each side writes with its own."""
    k, s = profile.key_length, profile.salt_length
    if len(material) != 2 * (k + s):
        raise ValueError(f"{profile} needs {2 * (k + s)} bytes of keying material")
    client = material[:k] + material[2 * k : 2 * k + s]
    server = material[k : 2 * k] + material[2 * k + s :]
    if role is DtlsRole.CLIENT:
        return SrtpKeys(profile, client, server)
    return SrtpKeys(profile, server, client)


SSL_MODE_RELEASE_BUFFERS = 0x00000010  # openssl/ssl.h; pyOpenSSL does not name it


@functools.lru_cache(maxsize=8)
def _context(certificate: Certificate, profiles: tuple[SrtpProfile, ...]) -> SSL.Context:
    # Shared by every endpoint with this certificate: building a context (loading key and certificate)
    # costs ~0.3 ms, as much as a quarter of a handshake. Sharing is safe because nothing per call
    # lives in it: verification callbacks are set on each connection, and pyOpenSSL freezes a context
    # once a connection uses it. Bounded: a process has one certificate, a few after renewals.
    ctx = SSL.Context(SSL.DTLS_METHOD)
    # DTLS 1.0 is out (RFC 8827 §6.5 requires 1.2); capped at 1.2 until DTLS 1.3 with memory BIOs is proven.
    ctx.set_min_proto_version(DTLS1_2_VERSION)
    ctx.set_max_proto_version(DTLS1_2_VERSION)
    # No tickets or renegotiation: every association is one fresh handshake (RFC 5764 §4.2 keys per
    # handshake), and the ticket would only fatten the server's last flight.
    # NO_QUERY_MTU: a memory BIO has no path MTU to ask; SSL_set_mtu supplies it per connection.
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_QUERY_MTU | SSL.OP_NO_COMPRESSION)
    # SSL_MODE_RELEASE_BUFFERS: an idle connection gives back its ~34 KB of record buffers. Once the
    # handshake is over a media session's DTLS only wakes for a rare alert, and calls are many.
    ctx.set_mode(SSL_MODE_RELEASE_BUFFERS)
    ctx.set_cipher_list(CIPHERS)
    ctx.use_certificate(certificate.x509)
    ctx.use_privatekey(certificate.private_key)
    ctx.set_tlsext_use_srtp(b":".join(p.dtls_name for p in profiles))
    return ctx


def _split_records(stream: bytes) -> list[bytes]:
    """Cut OpenSSL's output stream back into DTLS records (RFC 6347 §4.1 header: length at 11..12)."""
    records = []
    offset = 0
    end = len(stream)
    while offset + _RECORD_HEADER <= end:
        size = _RECORD_HEADER + int.from_bytes(stream[offset + 11 : offset + 13], "big")
        records.append(stream[offset : offset + size])
        offset += size
    return records


class DtlsEndpoint:
    """One DTLS association for one ICE component, producing SRTP keys (RFC 5764 §4).

    ``remote_fingerprints`` may be empty when the peer's SDP is not known yet (we offered, and its
    DTLS packets outran its answer): the handshake proceeds, and the endpoint waits in ``connecting``
    until :meth:`set_remote_fingerprints` allows or refuses the certificate it received.

    ``mtu`` bounds each datagram (records included); 1200 leaves room for IPv6, UDP and a TURN
    ChannelData or Send indication header below the usual 1280-byte minimum path MTU.
    """

    def __init__(
        self,
        certificate: Certificate,
        role: DtlsRole | str,
        remote_fingerprints: Iterable[Fingerprint | str] = (),
        *,
        srtp_profiles: tuple[SrtpProfile, ...] = DEFAULT_SRTP_PROFILES,
        mtu: int = 1200,
        max_retransmissions: int = MAX_RETRANSMISSIONS,
    ) -> None:
        self.role = DtlsRole(role)
        self.state = DtlsState.NEW
        self.error: DtlsError | None = None
        self.srtp_keys: SrtpKeys | None = None
        self.application_bytes_dropped = 0
        self.retransmissions = 0
        self._remote_fingerprints = [Fingerprint.parse(fp) if isinstance(fp, str) else fp for fp in remote_fingerprints]
        self._mtu = mtu
        self._max_retransmissions = max_retransmissions
        self._handshake_done = False
        self._fingerprint_mismatch = False
        self._alert_received: str | None = None
        self._pending: list[bytes] = []

        ssl = SSL.Connection(_context(certificate, srtp_profiles), None)
        # Callbacks reach us through a weak reference: a bound method would make endpoint and SSL object
        # a cycle, and the SSL object and its buffers would wait for the cyclic GC instead of going
        # away with the call.
        me = weakref.ref(self)

        def verify(conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
            endpoint = me()
            return endpoint is not None and endpoint._verify(cert, depth)

        def info(conn: SSL.Connection, where: int, ret: int) -> None:
            endpoint = me()
            if endpoint is not None:
                endpoint._info(where, ret)

        # The CA chain means nothing here; the fingerprint check in _verify is the authentication.
        ssl.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        ssl.set_info_callback(info)
        # pyOpenSSL has no public SSL_set_mtu; its private cffi handle is the only way to reach it.
        _openssl_lib.SSL_set_mtu(ssl._ssl, mtu)
        if self.role is DtlsRole.CLIENT:
            ssl.set_connect_state()
        else:
            ssl.set_accept_state()
        self._ssl: SSL.Connection | None = ssl

    # -- caller API ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin: a client sends its ClientHello; a server just moves to ``connecting`` and waits."""
        if self.state is not DtlsState.NEW:
            return
        self._set_state(DtlsState.CONNECTING)
        if self.role is DtlsRole.CLIENT:
            self._handshake()
        self._collect()

    def feed(self, datagram: bytes) -> None:
        """One received datagram, already demultiplexed as DTLS (RFC 7983: first byte 20..63)."""
        if self.state in (DtlsState.CLOSED, DtlsState.FAILED) or not datagram:
            return
        if self._ssl is None:
            # released (see release()): only the record type is readable; an alert (21, RFC 6347
            # §4.1) after the handshake is the peer closing or failing the association
            if datagram[0] == 21:
                self._set_state(DtlsState.CLOSED)
            return
        if self.state is DtlsState.NEW:
            if self.role is DtlsRole.CLIENT:
                # A server does not speak first (RFC 6347 §4.2.1); a client that has not started drops it.
                return
            self._set_state(DtlsState.CONNECTING)
        self._conn.bio_write(datagram)
        if not self._handshake_done:
            self._handshake()
        if self._handshake_done:
            self._read_application_data()
        self._collect()

    def datagrams_to_send(self) -> list[bytes]:
        """Datagrams produced since the last call, each at most ``mtu`` bytes."""
        out, self._pending = self._pending, []
        return out

    def next_timeout(self, now: float) -> float | None:
        """When (in the caller's clock) :meth:`handle_timeout` is due, or None when no flight is pending."""
        if self.state is not DtlsState.CONNECTING:
            return None
        remaining = self._conn.DTLSv1_get_timeout()
        return None if remaining is None else now + remaining

    def handle_timeout(self, now: float) -> None:
        """Retransmit the last flight if OpenSSL's timer has expired (RFC 6347 §4.2.4)."""
        del now  # OpenSSL reads its own clock; see the module docstring.
        if self.state is not DtlsState.CONNECTING:
            return
        try:
            retransmitted = self._conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(DtlsTimeoutError(f"handshake timed out: {exc}"))
            self._collect()
            return
        if retransmitted:
            self.retransmissions += 1
            if self.retransmissions > self._max_retransmissions:
                self._pending.clear()
                self._fail(DtlsTimeoutError(f"no answer after {self._max_retransmissions} retransmissions"))
                return
        self._collect()

    def set_remote_fingerprints(self, fingerprints: Iterable[Fingerprint | str]) -> None:
        """The peer's SDP arrived (or changed before the handshake ended): check against it."""
        self._remote_fingerprints = [Fingerprint.parse(fp) if isinstance(fp, str) else fp for fp in fingerprints]
        if self._handshake_done and self.state is DtlsState.CONNECTING:
            self._complete()
            self._collect()

    def release(self) -> None:
        """Free the OpenSSL connection of an established association: ~65 KB of native memory per
        call that a media session no longer needs once it holds its SRTP keys.

        The caller keeps the connection a while after the handshake (a peer that missed our last
        flight retransmits its own and must get ours again, RFC 6347 §4.2.4), then releases it. After
        that no close_notify can be sent, and of what the peer sends only an alert record means
        something (:meth:`feed`)."""
        if self.state is DtlsState.CONNECTED:
            self._ssl = None
            self._pending.clear()

    @property
    def released(self) -> bool:
        return self._ssl is None

    @property
    def _conn(self) -> SSL.Connection:
        ssl = self._ssl
        if ssl is None:
            raise DtlsError("the DTLS connection was released")
        return ssl

    def close(self) -> None:
        """Send close_notify (RFC 5246 §7.2.1) and stop; SRTP keys stay usable by whoever holds them."""
        if self.state in (DtlsState.CLOSED, DtlsState.FAILED):
            return
        if self._ssl is None:
            self._set_state(DtlsState.CLOSED)
            return
        if self.state is not DtlsState.NEW:
            self._shutdown()
        self._set_state(DtlsState.CLOSED)

    @property
    def srtp_profile(self) -> SrtpProfile | None:
        return None if self.srtp_keys is None else self.srtp_keys.profile

    # -- internals ----------------------------------------------------------------------------------

    def _set_state(self, state: DtlsState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise AssertionError(f"DTLS {self.state} -> {state} is not a legal transition")
        self.state = state

    def _fail(self, error: DtlsError) -> None:
        self.error = error
        self._set_state(DtlsState.FAILED)

    def _verify(self, cert: Any, depth: int) -> bool:
        # Called per chain element and per verification error; only the leaf is pinned by the
        # fingerprint (RFC 8122 §5). Deferred when the peer's SDP has not arrived yet.
        if depth != 0 or not self._remote_fingerprints:
            return True
        der: bytes = cert.to_cryptography().public_bytes(Encoding.DER)
        if verify_fingerprint(der, self._remote_fingerprints):
            return True
        self._fingerprint_mismatch = True
        return False  # OpenSSL answers with a bad_certificate alert, so the peer fails fast too.

    def _info(self, where: int, ret: int) -> None:
        # ret packs level << 8 | description for alerts (SSL_CTX_set_info_callback(3)).
        if where & SSL.SSL_CB_READ_ALERT and ret >> 8 == 2:
            self._alert_received = _ALERTS.get(ret & 0xFF, f"alert {ret & 0xFF}")

    def _handshake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as exc:
            self._fail(self._classify(exc))
            return
        self._handshake_done = True
        self._complete()

    def _classify(self, exc: SSL.Error) -> DtlsError:
        if self._fingerprint_mismatch:
            return FingerprintMismatchError("peer certificate matches none of the SDP fingerprints")
        if self._alert_received is not None:
            return DtlsAlertError(self._alert_received)
        return DtlsHandshakeError(str(exc))

    def _complete(self) -> None:
        """Handshake finished: pin the certificate, then derive keys (RFC 5764 §4.2)."""
        if not self._remote_fingerprints:
            return  # stay connecting until set_remote_fingerprints()
        peer = self._conn.get_peer_certificate(as_cryptography=True)
        if peer is None or not verify_fingerprint(peer.public_bytes(Encoding.DER), self._remote_fingerprints):
            self._shutdown()
            self._fail(FingerprintMismatchError("peer certificate matches none of the SDP fingerprints"))
            return
        profile = PROFILES_BY_DTLS_NAME.get(self._conn.get_selected_srtp_profile())
        if profile is None:
            self._shutdown()
            self._fail(DtlsHandshakeError("no SRTP profile negotiated (use_srtp, RFC 5764 §4.1.1)"))
            return
        material = self._conn.export_keying_material(EXTRACTOR_LABEL, 2 * profile.master_length)
        self.srtp_keys = split_keying_material(material, profile, self.role)
        self._set_state(DtlsState.CONNECTED)

    def _read_application_data(self) -> None:
        # Reading also lets OpenSSL see a peer's retransmitted final flight (our last flight was lost)
        # and answer it, and surfaces close_notify and alerts. No data channel here: bytes are dropped.
        while True:
            try:
                data = self._conn.recv(_APP_READ_SIZE)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                # close_notify (RFC 5246 §7.2.1): answer with ours and close.
                self._shutdown()
                if self.state is not DtlsState.FAILED:
                    self._set_state(DtlsState.CLOSED)
                return
            except SSL.Error as exc:
                if self.state is not DtlsState.FAILED:
                    self._fail(self._classify(exc))
                return
            self.application_bytes_dropped += len(data)

    def _shutdown(self) -> None:
        try:
            self._conn.shutdown()
        except SSL.Error:
            pass  # a broken association cannot say goodbye; nothing to do
        self._collect()

    def _collect(self) -> None:
        """Move OpenSSL's output into datagrams: whole records, packed up to the MTU (RFC 6347 §4.1.1)."""
        chunks = []
        while True:
            try:
                chunks.append(self._conn.bio_read(_APP_READ_SIZE))
            except SSL.WantReadError:
                break
        if not chunks:
            return
        datagram = b""
        for record in _split_records(b"".join(chunks)):
            if datagram and len(datagram) + len(record) > self._mtu:
                self._pending.append(datagram)
                datagram = b""
            datagram += record
        if datagram:
            self._pending.append(datagram)


# RFC 5246 §7.2 / RFC 8446 §6 AlertDescription names, for diagnostics.
_ALERTS: dict[int, str] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    90: "user_canceled",
    100: "no_renegotiation",
    110: "unsupported_extension",
}
