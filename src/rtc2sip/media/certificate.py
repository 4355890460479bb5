"""The gateway's DTLS certificate and SDP fingerprints (RFC 8122, RFC 5763 §5, RFC 8827 §6.5).

WebRTC authenticates DTLS by the certificate fingerprint carried in the (signalled) SDP, not by a
CA chain, so one self-signed ECDSA P-256 certificate per process is enough: it is what browsers
make for themselves, and ECDSA keeps the handshake flight small (one datagram) and cheap.
"""

from __future__ import annotations

import datetime
import hmac
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "HASH_FUNCTIONS",
    "Certificate",
    "Fingerprint",
    "FingerprintError",
    "default_certificate",
    "fingerprint_of",
    "verify_fingerprint",
]

# RFC 8122 §5 "hash-func" names (IANA "Hash Function Textual Names"), strongest first: RFC 8122 §5
# has the verifier pick its most preferred function among those the peer offered.
HASH_FUNCTIONS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha-512": hashes.SHA512,
    "sha-384": hashes.SHA384,
    "sha-256": hashes.SHA256,
    "sha-224": hashes.SHA224,
    "sha-1": hashes.SHA1,
}

CERT_FILE = "dtls-certificate.pem"
KEY_FILE = "dtls-key.pem"


class FingerprintError(ValueError):
    """An ``a=fingerprint`` value that does not follow RFC 8122 §5 or names an unknown hash."""


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """One ``a=fingerprint`` value: a hash function name (lower case) and the digest bytes."""

    algorithm: str
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        """Parse ``"sha-256 AB:CD:..."`` (the attribute value, RFC 8122 §5).

        Hash names are case-insensitive and lower-case hex is accepted: both are seen in the wild,
        and being lenient here costs nothing since the digest is compared byte for byte.
        """
        parts = text.strip().split()
        if len(parts) != 2:
            raise FingerprintError(f"fingerprint must be 'hash-func HEX:HEX:...': {text!r}")
        algorithm = parts[0].lower()
        if algorithm not in HASH_FUNCTIONS:
            raise FingerprintError(f"unsupported fingerprint hash function {parts[0]!r}")
        octets = parts[1].split(":")
        if any(len(octet) != 2 for octet in octets):
            raise FingerprintError(f"fingerprint octets must be two hex digits: {parts[1]!r}")
        try:
            digest = bytes.fromhex("".join(octets))
        except ValueError:
            raise FingerprintError(f"fingerprint is not hex: {parts[1]!r}") from None
        expected = HASH_FUNCTIONS[algorithm]().digest_size
        if len(digest) != expected:
            raise FingerprintError(f"{algorithm} fingerprint has {len(digest)} octets, expected {expected}")
        return cls(algorithm, digest)

    @property
    def hex(self) -> str:
        """Upper-case colon-separated hex, as RFC 8122 §5 requires on the wire."""
        return ":".join(f"{b:02X}" for b in self.digest)

    def __str__(self) -> str:
        return f"{self.algorithm} {self.hex}"


def fingerprint_of(der: bytes, algorithm: str = "sha-256") -> Fingerprint:
    """The fingerprint of a DER-encoded certificate (RFC 8122 §5: hash over the DER form)."""
    algorithm = algorithm.lower()
    try:
        hash_type = HASH_FUNCTIONS[algorithm]
    except KeyError:
        raise FingerprintError(f"unsupported fingerprint hash function {algorithm!r}") from None
    digest = hashes.Hash(hash_type())
    digest.update(der)
    return Fingerprint(algorithm, digest.finalize())


def verify_fingerprint(der: bytes, fingerprints: Iterable[Fingerprint]) -> bool:
    """True when the peer certificate ``der`` matches the SDP fingerprints (RFC 8122 §5).

    Only fingerprints of the strongest offered hash function count: a peer that signals both
    sha-1 and sha-256 must match on sha-256, so a weak hash cannot be used to slip past.
    """
    offered = [fp for fp in fingerprints if fp.algorithm in HASH_FUNCTIONS]
    for algorithm in HASH_FUNCTIONS:  # strongest first
        candidates = [fp.digest for fp in offered if fp.algorithm == algorithm]
        if candidates:
            actual = fingerprint_of(der, algorithm).digest
            # Not secret, but compare_digest keeps the check free of timing questions.
            return any(hmac.compare_digest(actual, expected) for expected in candidates)
    return False


class Certificate:
    """An ECDSA P-256 key and its self-signed certificate, with SDP fingerprints."""

    __slots__ = ("_fingerprints", "der", "private_key", "x509")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self.private_key = private_key
        self.x509 = certificate
        self.der = certificate.public_bytes(serialization.Encoding.DER)
        self._fingerprints: dict[str, Fingerprint] = {}

    @classmethod
    def generate(cls, common_name: str = "rtc2sip", lifetime: datetime.timedelta | None = None) -> Certificate:
        """A fresh key and certificate; validity starts a day back to absorb peers' clock skew."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + (lifetime or datetime.timedelta(days=365)))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def from_pem(cls, certificate_pem: bytes, key_pem: bytes) -> Certificate:
        """Load a PEM pair; the key must be ECDSA (what the DTLS context is configured for)."""
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("DTLS certificate key must be ECDSA")
        cert = x509.load_pem_x509_certificate(certificate_pem)
        if cert.public_key() != key.public_key():
            raise ValueError("DTLS certificate does not match its private key")
        return cls(key, cert)

    def certificate_pem(self) -> bytes:
        return self.x509.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def save(self, directory: Path) -> None:
        """Write the pair into ``directory``; the key file is created 0600 before any byte is written."""
        directory.mkdir(parents=True, exist_ok=True)
        key_path = directory / KEY_FILE
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key_pem())
        (directory / CERT_FILE).write_bytes(self.certificate_pem())

    @property
    def not_valid_after(self) -> datetime.datetime:
        return self.x509.not_valid_after_utc

    def fingerprint(self, algorithm: str = "sha-256") -> Fingerprint:
        fp = self._fingerprints.get(algorithm)
        if fp is None:
            fp = self._fingerprints[algorithm] = fingerprint_of(self.der, algorithm)
        return fp

    @property
    def sdp_fingerprint(self) -> str:
        """The ``a=fingerprint`` value: ``sha-256 AB:CD:...`` (RFC 8122 §5)."""
        return str(self.fingerprint("sha-256"))


_default: Certificate | None = None
_default_lock = threading.Lock()
# Renew this long before expiry: a call set up just before the deadline must not outlive it.
_RENEW_MARGIN = datetime.timedelta(days=1)


def default_certificate(data_dir: Path | None = None) -> Certificate:
    """The process-wide certificate: loaded from ``data_dir`` when present and valid, else made.

    Generating a P-256 key takes well under a millisecond, but one certificate per process keeps the
    fingerprint stable for every call this process answers (and across restarts with a data dir).
    """
    global _default
    with _default_lock:
        now = datetime.datetime.now(datetime.UTC)
        if _default is not None and _default.not_valid_after - _RENEW_MARGIN > now:
            return _default
        cert: Certificate | None = None
        if data_dir is not None:
            try:
                cert = Certificate.from_pem((data_dir / CERT_FILE).read_bytes(), (data_dir / KEY_FILE).read_bytes())
            except (OSError, ValueError):
                cert = None
            if cert is not None and cert.not_valid_after - _RENEW_MARGIN <= now:
                cert = None
        if cert is None:
            cert = Certificate.generate()
            if data_dir is not None:
                cert.save(data_dir)
        _default = cert
        return cert
