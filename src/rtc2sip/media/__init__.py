"""Secure-media building blocks of the breaker's WebRTC leg, without I/O.

- ``certificate``: the process's ECDSA P-256 DTLS certificate and SDP fingerprints (RFC 8122).
- ``dtls``: DTLS 1.2 handshake producing SRTP keys (RFC 5764, RFC 6347 retransmission).
- ``srtp``: SRTP/SRTCP protect and unprotect over libsrtp, SDES ``a=crypto`` keys (RFC 3711, 4568, 7714).
- ``rtp``: RTP header codec and in-place rewrite, RFC 7983 demultiplexing.
- ``rtcp``: RTCP packet table (RFC 3550, 4585, 5104, REMB); ``rtcpstats``: RFC 3550 appendix A statistics.

Sockets, ICE and timers belong to the caller: every object here is fed bytes and times.
"""

from .certificate import Certificate, Fingerprint, FingerprintError, default_certificate, verify_fingerprint
from .dtls import DtlsEndpoint, DtlsError, DtlsRole, DtlsState, FingerprintMismatchError, SrtpKeys
from .rtp import PacketKind, RtpPacket, RtpRewriter, classify, rewrite_header
from .srtp import AEAD_AES_128_GCM, AES128_CM_SHA1_80, SdesCrypto, SrtpError, SrtpProfile, SrtpSession

__all__ = [
    "AEAD_AES_128_GCM",
    "AES128_CM_SHA1_80",
    "Certificate",
    "DtlsEndpoint",
    "DtlsError",
    "DtlsRole",
    "DtlsState",
    "Fingerprint",
    "FingerprintError",
    "FingerprintMismatchError",
    "PacketKind",
    "RtpPacket",
    "RtpRewriter",
    "SdesCrypto",
    "SrtpError",
    "SrtpKeys",
    "SrtpProfile",
    "SrtpSession",
    "classify",
    "default_certificate",
    "rewrite_header",
    "verify_fingerprint",
]
