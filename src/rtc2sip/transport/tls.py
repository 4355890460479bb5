"""TLS for SIP over TLS and WSS (RFC 3261 §26.2.1, RFC 7118 §5, RFC 5246/8446 through Python's ssl).

Built from webrtc2sip's ``<ssl-certificates>priv;pub;ca;verify</ssl-certificates>``:

- ``pub`` is a PEM file with the gateway's certificate first and the intermediates after it, so that
  a chain that ends at a root the client trusts is presented whole (RFC 8446 §4.4.2);
- ``verify`` is webrtc2sip's: both ways. As a server, a client certificate is then required and
  checked against ``ca``; as a client (outgoing TLS to a PBX or trunk), the server's chain is checked
  against ``ca`` (or the system's roots when there is none) and its name against the host dialled.
  Without ``verify`` outgoing TLS encrypts but does not authenticate, as webrtc2sip did.

:meth:`TlsContexts.reload` reads the files again (SIGHUP) into the same :class:`ssl.SSLContext`
objects the listeners hold: new handshakes get the new certificate, established connections (and the
calls signalled over them) are untouched. Files that do not load leave the old certificate in place.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ..config.validate import load_key_pair

__all__ = ["TlsContexts"]


@dataclass(frozen=True, slots=True)
class _Files:
    key: Path
    cert: Path
    ca: Path | None


class TlsContexts:
    """The gateway's server and client TLS contexts (see the module docstring)."""

    def __init__(self, key: Path, cert: Path, ca: Path | None, verify: bool) -> None:
        self.files = _Files(key, cert, ca)
        self.verify = verify
        _check(self.files)  # raises before anything listens, with the file named
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.minimum_version = ssl.TLSVersion.TLSv1_2
        if verify:
            self.client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        else:
            self.client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.client.check_hostname = False
            self.client.verify_mode = ssl.CERT_NONE
        self.client.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load()
        if verify:
            self.server.verify_mode = ssl.CERT_REQUIRED

    def _load(self) -> None:
        f = self.files
        # the client presents the same certificate to servers that ask for one (mutual TLS trunks)
        for ctx in (self.server, self.client):
            load_key_pair(ctx, f.cert, f.key)
        if f.ca is not None:
            self.server.load_verify_locations(str(f.ca))
            if self.verify:
                self.client.load_verify_locations(str(f.ca))

    def reload(self) -> str:
        """Read the files again; returns the new leaf's subject and serial (for the log line). Raises
        (ssl.SSLError, OSError, ValueError) and changes nothing when they do not load."""
        summary = _check(self.files)
        self._load()
        return summary


def _check(f: _Files) -> str:
    """Load the files into a scratch context first: a key that does not match the certificate would
    otherwise leave the live context half replaced."""
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_key_pair(scratch, f.cert, f.key)
    if f.ca is not None:
        scratch.load_verify_locations(str(f.ca))
    return _leaf(f.cert)


def _leaf(cert: Path) -> str:
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    return f"{leaf.subject.rfc4514_string()} serial {leaf.serial_number:x} until {leaf.not_valid_after_utc:%Y-%m-%d}"
