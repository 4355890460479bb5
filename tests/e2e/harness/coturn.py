"""coturn (`turnserver`) as a TURN relay on loopback, for browsers forced to `iceTransportPolicy: 'relay'`.

What coturn 4.6 needs on loopback, found by running it:
- it refuses loopback peers by default (403 on CreatePermission): `--allow-loopback-peers` plus
  `--allowed-peer-ip=127.0.0.1`;
- `-n` (no config file) and its own `--userdb` in the artifacts, or it opens /var/lib/turn/turndb;
- `--no-tls --no-dtls` (no certificate), `--no-cli` (no telnet port), relay ports from a private range
  so that they cannot collide with the gateway's or baresip's.
Readiness is its UDP listener being bound.
"""

from __future__ import annotations

import shutil
from typing import Any

from .artifacts import Artifacts
from .procs import Proc, free_port, wait_udp_bound

__all__ = ["Coturn"]


class Coturn:
    """One turnserver on 127.0.0.1 with a static long-term-credential user."""

    def __init__(
        self,
        artifacts: Artifacts,
        *,
        name: str = "coturn",
        username: str = "turnuser",
        password: str = "turnpass",
        realm: str = "rtc2sip.test",
        relay_ports: int = 40,
        binary: str = "turnserver",
    ) -> None:
        self.artifacts = artifacts
        self.name = name
        self.username = username
        self.password = password
        self.realm = realm
        self.binary = shutil.which(binary) or binary
        self.dir = artifacts.subdir(name)
        self.log_path = self.dir / "turnserver.log"
        self.port = free_port()
        self.relay_low = free_port(relay_ports)
        self.relay_high = self.relay_low + relay_ports - 1
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    @property
    def ice_server(self) -> dict[str, Any]:
        """An RTCIceServer for RTCPeerConnection's `iceServers`."""
        return {"urls": self.url, "username": self.username, "credential": self.password}

    def argv(self) -> list[str]:
        return [
            self.binary,
            "-n",
            "--listening-ip=127.0.0.1",
            f"--listening-port={self.port}",
            "--relay-ip=127.0.0.1",
            f"--min-port={self.relay_low}",
            f"--max-port={self.relay_high}",
            "--lt-cred-mech",
            f"--user={self.username}:{self.password}",
            f"--realm={self.realm}",
            "--allow-loopback-peers",
            "--allowed-peer-ip=127.0.0.1",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            f"--userdb={self.dir / 'turndb'}",
            f"--pidfile={self.dir / 'turnserver.pid'}",
            "--log-file=stdout",
            "--simple-log",
            "--verbose",
        ]

    def start(self, timeout: float = 15.0) -> Coturn:
        self.artifacts.add_log(self.name, self.log_path)
        self.proc = Proc(self.name, self.argv(), self.log_path)
        self.proc.start()
        with self.proc.explain_failure():
            wait_udp_bound(self.port, timeout, self.proc.check_alive)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
