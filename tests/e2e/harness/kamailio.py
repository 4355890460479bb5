"""Kamailio as a registrar + proxy on loopback: the legacy SIP server of the tests, and a stand-in for
rtc2sip (WebSocket listener for JsSIP) to prove the browser harness while the gateway is being written."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from .artifacts import Artifacts
from .procs import HarnessError, Proc, free_port, wait_tcp, wait_udp_bound

__all__ = ["Kamailio"]

_TEMPLATE = Path(__file__).with_name("kamailio.cfg.in")


class Kamailio:
    """One kamailio process: UDP and TCP on `sip_port`, optionally WebSocket on `ws_port`.

    `users` (name -> plain-text password) turns on digest authentication: REGISTER, and INVITE,
    MESSAGE and SUBSCRIBE from the domain, are challenged. Without it anyone may register.
    `auth_foreign` (with `users`) challenges INVITE, MESSAGE and SUBSCRIBE whatever the From domain
    (the From user must be one of `users`): a gateway's callers holding accounts here.
    `use_path` (default on) stores the Path of a REGISTER relayed by an edge proxy (RFC 3327) and
    routes requests for that binding through it; off, kamailio ignores Path and sends requests
    straight to the registered Contact.
    """

    def __init__(
        self,
        artifacts: Artifacts,
        *,
        domain: str = "example.test",
        users: Mapping[str, str] | None = None,
        websocket: bool = False,
        use_path: bool = True,
        auth_foreign: bool = False,
        name: str = "kamailio",
        binary: str = "kamailio",
    ) -> None:
        self.artifacts = artifacts
        self.domain = domain
        self.users = dict(users or {})
        self.websocket = websocket
        self.use_path = use_path
        self.auth_foreign = auth_foreign
        self.name = name
        self.binary = shutil.which(binary) or binary
        self.sip_port = free_port()
        self.ws_port = free_port() if websocket else None
        self.rundir = artifacts.subdir(name)
        self.cfg_path = self.rundir / "kamailio.cfg"
        self.proc: Proc | None = None

    # Addresses the peers need.
    @property
    def udp_uri(self) -> str:
        """Outbound proxy / registrar address for UDP peers."""
        return f"sip:127.0.0.1:{self.sip_port};transport=udp"

    @property
    def tcp_uri(self) -> str:
        return f"sip:127.0.0.1:{self.sip_port};transport=tcp"

    @property
    def ws_url(self) -> str:
        if self.ws_port is None:
            raise HarnessError(f"{self.name} was started without websocket=True")
        return f"ws://127.0.0.1:{self.ws_port}/"

    def aor(self, user: str) -> str:
        return f"sip:{user}@{self.domain}"

    def render_config(self) -> str:
        defines = []
        if self.users:
            defines.append("#!define WITH_AUTH")
            if self.auth_foreign:
                defines.append("#!define WITH_AUTH_FOREIGN")
        if self.websocket:
            defines.append("#!define WITH_WS")
        if self.use_path:
            defines.append("#!define WITH_PATH")
        users = []
        for user, password in self.users.items():
            if not user.isalnum() or any(c in password for c in '"\\\n'):
                raise ValueError(f"user {user!r} or its password cannot be written into kamailio.cfg")
            users.append(f'\t$sht(users=>{user}) = "{password}";')
        text = _TEMPLATE.read_text()
        for key, value in {
            "DEFINES": "\n".join(defines),
            "DOMAIN": self.domain,
            "SIP_PORT": str(self.sip_port),
            "WS_PORT": str(self.ws_port or 0),
            "USERS": "\n".join(users) or "\t$var(none) = 0;",
        }.items():
            text = text.replace(f"@@{key}@@", value)
        return text

    def start(self, timeout: float = 15.0) -> Kamailio:
        self.cfg_path.write_text(self.render_config())
        log = self.rundir / "kamailio.log"
        self.artifacts.add_log(self.name, log)
        check = Proc(f"{self.name} -c", [self.binary, "-c", "-f", self.cfg_path], self.rundir / "check.log")
        check.start()
        if check.wait(20) != 0:
            raise HarnessError(f"{self.cfg_path} does not parse:\n{check.tail()}")
        self.proc = Proc(
            self.name,
            [
                self.binary,
                "-f",
                self.cfg_path,
                "-DD",
                "-E",
                "-m",
                "64",
                "-M",
                "8",
                "-Y",
                self.rundir,
                "-w",
                self.rundir,
            ],
            log,
        )
        self.proc.start()
        alive = self.proc.check_alive
        with self.proc.explain_failure():
            wait_udp_bound(self.sip_port, timeout, alive)
            wait_tcp("127.0.0.1", self.sip_port, timeout, alive)
            if self.ws_port is not None:
                wait_tcp("127.0.0.1", self.ws_port, timeout, alive)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def log_text(self) -> str:
        return (self.rundir / "kamailio.log").read_text(errors="replace")
