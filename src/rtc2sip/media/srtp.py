"""SRTP/SRTCP protection over libsrtp (RFC 3711, RFC 7714) and SDES keying (RFC 4568).

A session protects one direction: DTLS-SRTP (RFC 5764 §4.2) and SDES (RFC 4568 §6.1) both give
each side its own master key, so a call leg holds a tx session and an rx session. Errors are typed
so the media loop can drop one packet and count why, without catching anything broader.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]  # compiled cffi module, no stubs

__all__ = [
    "AEAD_AES_128_GCM",
    "AES128_CM_SHA1_32",
    "AES128_CM_SHA1_80",
    "PROFILES",
    "SdesCrypto",
    "SdesError",
    "SrtpAuthenticationError",
    "SrtpError",
    "SrtpProfile",
    "SrtpReplayError",
    "SrtpSession",
    "UnsupportedCryptoError",
]


@dataclass(frozen=True, slots=True)
class SrtpProfile:
    """One protection profile, under its DTLS-SRTP name (RFC 5764 §4.1.2, RFC 7714 §14.2) and its
    SDES crypto-suite name (RFC 4568 §6.2, RFC 7714 §14.1)."""

    dtls_name: bytes
    sdes_name: str
    key_length: int
    salt_length: int
    libsrtp_profile: int

    @property
    def master_length(self) -> int:
        """Bytes of key || salt, the form libsrtp and SDES ``inline:`` use."""
        return self.key_length + self.salt_length

    def __str__(self) -> str:
        return self.sdes_name


AES128_CM_SHA1_80 = SrtpProfile(
    b"SRTP_AES128_CM_SHA1_80", "AES_CM_128_HMAC_SHA1_80", 16, 14, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
)
AES128_CM_SHA1_32 = SrtpProfile(
    b"SRTP_AES128_CM_SHA1_32", "AES_CM_128_HMAC_SHA1_32", 16, 14, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32
)
# RFC 7714 §12: 12-byte salt; cheaper than CM+HMAC in libsrtp (PERFORMANCE.md), so preferred.
AEAD_AES_128_GCM = SrtpProfile(
    b"SRTP_AEAD_AES_128_GCM", "AEAD_AES_128_GCM", 16, 12, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
)
PROFILES: tuple[SrtpProfile, ...] = (AEAD_AES_128_GCM, AES128_CM_SHA1_80, AES128_CM_SHA1_32)
PROFILES_BY_DTLS_NAME: dict[bytes, SrtpProfile] = {p.dtls_name: p for p in PROFILES}
PROFILES_BY_SDES_NAME: dict[str, SrtpProfile] = {p.sdes_name: p for p in PROFILES}


class SrtpError(Exception):
    """libsrtp refused a packet; the caller drops that packet and nothing else."""


class SrtpAuthenticationError(SrtpError):
    """Authentication tag mismatch (RFC 3711 §3.3 step 7): forged, corrupted or wrong key."""


class SrtpReplayError(SrtpError):
    """Index already seen or left of the replay window (RFC 3711 §3.3.2)."""


# pylibsrtp's working buffer per session and the room it keeps for the trailer (tag + MKI, RFC 3711 §3.1).
_BUFFER_SIZE = 1500
_RTP_TRAILER = pylibsrtp.SRTP_MAX_TRAILER_LEN
_RTCP_TRAILER = pylibsrtp.SRTP_MAX_SRTCP_TRAILER_LEN
_ERRORS: list[str] = pylibsrtp.ERRORS
_protect = lib.srtp_protect
_unprotect = lib.srtp_unprotect


def _error(rc: int) -> SrtpError:
    """The typed error of a libsrtp status code (pylibsrtp's message table)."""
    message = _ERRORS[rc] if 0 <= rc < len(_ERRORS) else f"libsrtp error {rc}"
    if message.startswith("replay check failed") or "index" in message:
        return SrtpReplayError(message)
    if message.startswith("authentication failure") or message.startswith("cipher failure"):
        return SrtpAuthenticationError(message)
    return SrtpError(message)


class SrtpSession:
    """One direction of SRTP+SRTCP under one master key (any SSRC, as RTP/SAVPF streams come and go).

    ``window_size`` is the replay window in packets (RFC 3711 §3.3.2 asks for at least 64); 1024
    tolerates the reordering of video with NACK retransmissions, as libwebrtc does, and costs 128
    bytes per stream. ``allow_repeat_tx`` lets an outbound session re-protect a packet index it has
    already used; only safe when the payload is identical (a verbatim retransmission), hence off.
    """

    __slots__ = ("_buffer", "_ctx", "_data", "_length", "_session", "outbound", "profile")

    def __init__(
        self,
        profile: SrtpProfile,
        key_salt: bytes,
        *,
        outbound: bool,
        window_size: int = 1024,
        allow_repeat_tx: bool = False,
    ) -> None:
        if len(key_salt) != profile.master_length:
            raise ValueError(f"{profile} needs {profile.master_length} bytes of key||salt, got {len(key_salt)}")
        policy = pylibsrtp.Policy(
            key=bytes(key_salt),
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=profile.libsrtp_profile,
        )
        policy.window_size = window_size
        policy.allow_repeat_tx = allow_repeat_tx
        self.profile = profile
        self.outbound = outbound
        self._session = session = pylibsrtp.Session(policy=policy)
        # pylibsrtp's Session.protect costs four Python calls and a cffi allocation per packet; this
        # calls libsrtp itself, on the session's own working buffer (no second 1.5 KB per session)
        # with one reused length cell: 0.3 µs less per packet (bench/relay.py's README section).
        self._ctx = session._srtp[0]
        self._data = session._cdata
        self._buffer = session._buffer
        self._length = ffi.new("int *")

    def _process(self, packet: bytes, func: Any, trailer: int) -> bytes:
        """One libsrtp call on the working buffer; protect/unprotect repeat it inline (one call less)."""
        n = len(packet)
        if n > _BUFFER_SIZE - trailer:
            raise SrtpError(f"packet of {n} bytes is too long")
        buffer = self._buffer
        buffer[0:n] = packet
        length = self._length
        length[0] = n
        rc = func(self._ctx, self._data, length)
        if rc:
            raise _error(rc)
        return buffer[0 : length[0]]  # type: ignore[no-any-return]

    def protect(self, packet: bytes | bytearray) -> bytes:
        """RTP → SRTP (RFC 3711 §3.3)."""
        n = len(packet)
        if n > _BUFFER_SIZE - _RTP_TRAILER:
            raise SrtpError(f"packet of {n} bytes is too long")
        buffer = self._buffer
        buffer[0:n] = packet
        length = self._length
        length[0] = n
        rc = _protect(self._ctx, self._data, length)
        if rc:
            raise _error(rc)
        return buffer[0 : length[0]]  # type: ignore[no-any-return]

    def unprotect(self, packet: bytes) -> bytes:
        """SRTP → RTP, authenticated and replay-checked (RFC 3711 §3.3)."""
        n = len(packet)
        if n > _BUFFER_SIZE:
            raise SrtpError(f"packet of {n} bytes is too long")
        buffer = self._buffer
        buffer[0:n] = packet
        length = self._length
        length[0] = n
        rc = _unprotect(self._ctx, self._data, length)
        if rc:
            raise _error(rc)
        return buffer[0 : length[0]]  # type: ignore[no-any-return]

    def protect_rtcp(self, packet: bytes) -> bytes:
        """RTCP → SRTCP (RFC 3711 §3.4); SRTCP is always encrypted (E bit set)."""
        return self._process(packet, lib.srtp_protect_rtcp, _RTCP_TRAILER)

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """SRTCP → RTCP (RFC 3711 §3.4)."""
        return self._process(packet, lib.srtp_unprotect_rtcp, 0)


# --- SDES (RFC 4568) ---------------------------------------------------------------------------


class SdesError(ValueError):
    """An ``a=crypto`` value that breaks the RFC 4568 §9.2 grammar."""


class UnsupportedCryptoError(SdesError):
    """A well-formed ``a=crypto`` line we cannot honour (suite, MKI, session parameter): the answerer
    skips it and tries the next line (RFC 4568 §7.1.2)."""


# key-params "inline:" key-salt ["|" lifetime] ["|" MKI ":" length] (RFC 4568 §9.2).
_KEY_PARAM = re.compile(r"^inline:([A-Za-z0-9+/=]+)(?:\|(2\^\d+|\d+))?(?:\|(\d+):(\d+))?$")
# RFC 4568 §6.3: session parameters that change packet processing; libsrtp's defaults cannot honour
# them, so an offer carrying one must not be accepted. WSH only sizes the replay window.
_WINDOW_HINT = re.compile(r"^WSH=(\d+)$")


@dataclass(frozen=True, slots=True)
class SdesCrypto:
    """One ``a=crypto`` attribute (RFC 4568 §9.1) with a single inline key."""

    tag: int
    profile: SrtpProfile
    key_salt: bytes
    lifetime: int | None = None
    window_size_hint: int | None = None

    @classmethod
    def generate(cls, tag: int, profile: SrtpProfile) -> SdesCrypto:
        """A fresh random master key and salt for our side (RFC 4568 §6.1)."""
        return cls(tag, profile, os.urandom(profile.master_length))

    @classmethod
    def parse(cls, value: str) -> SdesCrypto:
        """Parse the value after ``a=crypto:`` (RFC 4568 §9.2)."""
        fields = value.strip().split()
        if len(fields) < 3:
            raise SdesError(f"crypto attribute needs tag, suite and key-params: {value!r}")
        tag_text, suite, key_params, *session_params = fields
        if not tag_text.isdigit() or len(tag_text) > 9:
            raise SdesError(f"crypto tag must be 1*9DIGIT: {tag_text!r}")
        profile = PROFILES_BY_SDES_NAME.get(suite)
        if profile is None:
            raise UnsupportedCryptoError(f"unsupported crypto-suite {suite!r}")
        if ";" in key_params:
            # Several keys distinguished by MKI (RFC 4568 §6.1): libsrtp's MKI support is not exposed.
            raise UnsupportedCryptoError("several master keys (MKI) are not supported")
        match = _KEY_PARAM.match(key_params)
        if match is None:
            raise SdesError(f"key-params must be inline:KEY[|lifetime][|MKI:length]: {key_params!r}")
        encoded, lifetime_text, mki_value, mki_length = match.groups()
        try:
            key_salt = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise SdesError("inline key is not base64") from None
        if len(key_salt) != profile.master_length:
            raise SdesError(f"{suite} needs {profile.master_length} bytes of key||salt, got {len(key_salt)}")
        if mki_value is not None and int(mki_length) != 0:
            raise UnsupportedCryptoError("MKI in SRTP packets is not supported")
        lifetime = None
        if lifetime_text is not None:
            lifetime = 2 ** int(lifetime_text[2:]) if lifetime_text.startswith("2^") else int(lifetime_text)
        window_hint = None
        for param in session_params:
            hint = _WINDOW_HINT.match(param)
            if hint is None:
                raise UnsupportedCryptoError(f"unsupported SRTP session parameter {param!r}")
            window_hint = int(hint.group(1))
        return cls(int(tag_text), profile, key_salt, lifetime, window_hint)

    def __str__(self) -> str:
        """The attribute value, ready for ``a=crypto:``; no lifetime/MKI, which RFC 4568 makes optional."""
        key = base64.b64encode(self.key_salt).decode("ascii")
        text = f"{self.tag} {self.profile.sdes_name} inline:{key}"
        if self.window_size_hint is not None:
            text += f" WSH={self.window_size_hint}"
        return text

    def session(self, *, outbound: bool) -> SrtpSession:
        """The SRTP session this key drives: our own line's key protects, the peer's unprotects."""
        if self.window_size_hint is not None and not outbound:
            return SrtpSession(
                self.profile, self.key_salt, outbound=False, window_size=min(max(64, self.window_size_hint), 0x7FFF)
            )
        return SrtpSession(self.profile, self.key_salt, outbound=outbound)
