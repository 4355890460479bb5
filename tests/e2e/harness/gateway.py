"""rtc2sip itself, run as `python -m rtc2sip --options FILE` with a TOML the harness writes.

Contract with the gateway (written before the gateway could run it): it listens where `[[listen]]`
says, keeps its state under `[gateway] data_dir`, serves `[gateway] domains`, exits on SIGTERM.
Readiness is the listening sockets, not the banner it prints. The admin listener (`[admin]`) is on
`admin_port` of 127.0.0.1, never its default 8089: two gateways of one test would collide there.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import sys
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from .artifacts import Artifacts
from .procs import HarnessError, Proc, free_port, wait_for, wait_tcp, wait_tcp_listening, wait_udp_bound

__all__ = ["Gateway", "toml_value"]

TomlScalar = str | int | float | bool
TomlValue = TomlScalar | Sequence[TomlScalar]


def toml_value(value: TomlValue) -> str:
    """A TOML literal for a string, number, boolean or flat list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string of printable text is a valid TOML basic string.
        return json.dumps(value)
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


class Gateway:
    """One rtc2sip process on `host` (127.0.0.1; "::1" for IPv6): SIP over UDP and TCP on `sip_port`,
    WebSocket on `ws_port` (on `ws_host` when given: browsers on one address family, phones on the
    other); media binds the address of its leg's signalling.

    `gateway_options` adds keys to the `[gateway]` table; `extra_toml` is appended verbatim and must
    start with its own table header (`[media]`, `[[route]]`...), or its keys would land in the last
    `[[listen]]` table (checked). Ports and data_dir survive `restart()`.

    `netns` (a path for ``nsenter --net=``, e.g. harness.impair's ImpairedLink.netns) runs it in another
    network namespace, reached at `host` through whatever links the two (bench/soak.py's delay line);
    its admin listener on 127.0.0.1 is then that namespace's, out of this one's reach.
    """

    def __init__(
        self,
        artifacts: Artifacts,
        *,
        domains: Sequence[str] = ("example.test",),
        gateway_options: Mapping[str, TomlValue] | None = None,
        extra_toml: str = "",
        name: str = "gateway",
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        ws_host: str | None = None,
        netns: str | None = None,
    ) -> None:
        self.artifacts = artifacts
        self.netns = netns
        self.host = host
        self.ws_host = ws_host or host
        # in URIs and URLs an IPv6 address goes in brackets (RFC 3261 §25.1, RFC 3986 §3.2.2)
        self.uri_host = f"[{host}]" if ":" in host else host
        self.ws_uri_host = f"[{self.ws_host}]" if ":" in self.ws_host else self.ws_host
        self.domains = list(domains)
        self.gateway_options = dict(gateway_options or {})
        self.extra_toml = extra_toml
        self.name = name
        self.python = python
        self.dir = artifacts.subdir(name)
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.options_path = self.dir / "rtc2sip.toml"
        self.log_path = self.dir / "gateway.log"
        self.sip_port = free_port()
        self.ws_port = free_port()
        self.admin_port = free_port()
        process_env = dict(os.environ)
        # Output reaches the log as it happens, not when a buffer fills.
        process_env["PYTHONUNBUFFERED"] = "1"
        process_env.update(env or {})
        self.env = process_env
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def domain(self) -> str:
        return self.domains[0]

    @property
    def udp_uri(self) -> str:
        """Outbound proxy address for UDP peers (baresip's `outbound`, sipp's remote)."""
        return f"sip:{self.uri_host}:{self.sip_port};transport=udp"

    @property
    def tcp_uri(self) -> str:
        return f"sip:{self.uri_host}:{self.sip_port};transport=tcp"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.ws_uri_host}:{self.ws_port}/"

    @property
    def admin_url(self) -> str:
        """The admin listener: the admin API's POST/DELETE and the live view with its actions."""
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def sip_address(self) -> str:
        return f"{self.uri_host}:{self.sip_port}"

    def aor(self, user: str, domain: str | None = None) -> str:
        return f"sip:{user}@{domain or self.domain}"

    def render_options(self) -> str:
        lines = [
            "[gateway]",
            f"data_dir = {toml_value(str(self.data_dir))}",
            f"domains = {toml_value(self.domains)}",
            *(f"{k} = {toml_value(v)}" for k, v in self.gateway_options.items()),
        ]
        if not re.search(r"^\[admin\]", self.extra_toml, re.M):
            # before [[listen]]: extra_toml's check below relies on the last table being a listener
            lines += ["", "[admin]", f'listen = "127.0.0.1:{self.admin_port}"']
        for transport, host, port in (("udp", self.host, self.sip_port), ("tcp", self.host, self.sip_port),
                                      ("ws", self.ws_host, self.ws_port)):
            lines += [
                "",
                "[[listen]]",
                f'transport = "{transport}"',
                f"host = {toml_value(host)}",
                f"port = {port}",
            ]
        text = "\n".join(lines) + "\n"
        if self.extra_toml.strip():
            text += "\n" + self.extra_toml.strip() + "\n"
        parsed = tomllib.loads(text)
        if any(set(entry) != {"transport", "host", "port"} for entry in parsed.get("listen", [])[:3]):
            raise HarnessError("extra_toml must start with a table header: its keys went into [[listen]]")
        return text

    def start(self, timeout: float = 20.0) -> Gateway:
        self.options_path.write_text(self.render_options())
        self.artifacts.add_log(self.name, self.log_path)
        argv: list[str | os.PathLike[str]] = [self.python, "-m", "rtc2sip", "--options", self.options_path]
        if self.netns is not None:
            # nsenter execs the gateway: the pid stays the gateway's own (SIGUSR1, /proc/PID)
            argv = ["nsenter", f"--net={self.netns}", "--", *argv]
        self.proc = Proc(
            self.name,
            argv,
            self.log_path,
            env=self.env,
            stop_timeout=10,
        )
        self.proc.start()
        self.starts += 1
        alive = self.proc.check_alive
        # in another namespace, the sockets are read from the gateway's own tables (/proc/PID/net)
        net_dir = "/proc/net" if self.netns is None else f"/proc/{self.proc.pid}/net"
        with self.proc.explain_failure():
            wait_udp_bound(self.sip_port, timeout, alive, net_dir)
            wait_tcp(self.host, self.sip_port, timeout, alive)
            wait_tcp(self.ws_host, self.ws_port, timeout, alive)
            if not re.search(r"^\[admin\]", self.extra_toml, re.M):
                if self.netns is None:
                    wait_tcp("127.0.0.1", self.admin_port, timeout, alive)
                else:
                    wait_tcp_listening(self.admin_port, timeout, alive, net_dir)
        return self

    def stop(self) -> int | None:
        return None if self.proc is None else self.proc.stop()

    def restart(self, timeout: float = 20.0) -> Gateway:
        """Stop and start again with the same ports, options and data_dir (persistence tests)."""
        self.stop()
        return self.start(timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def state(self, timeout: float = 5.0) -> dict[str, int]:
        """What the gateway reports holding (SIGUSR1 -> one "rtc2sip state:" log line)."""
        assert self.proc is not None and self.proc.pid is not None
        before = self.log_text().count("rtc2sip state:")
        os.kill(self.proc.pid, signal.SIGUSR1)

        def logged() -> str | None:
            lines = [ln for ln in self.log_text().splitlines() if "rtc2sip state:" in ln]
            return lines[-1] if len(lines) > before else None

        line = wait_for(logged, timeout, "the gateway's state line after SIGUSR1", interval=0.05)
        assert isinstance(line, str)
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.split("rtc2sip state:", 1)[1])}

    def assert_relay_mode(self) -> None:
        """After a bridged call has ended: its media went through the compiled fast path's engine when
        ``RTC2SIP_FAST_PATH`` is auto (the engine's own counts, logged at the hand-back), through Python
        when off (unset: ``[media] fast_path``'s default, auto; the e2e run requires the extension built)."""
        if os.environ.get("RTC2SIP_FAST_PATH", "auto") == "off":
            text = self.log_text()
            assert "fast path off" in text and "relayed by the fast path" not in text
            return
        # released when the call closed, or just before when the browser's DTLS close_notify came first
        relayed = self.logged_dict(r"fast path released the call(?: \(closing\))?, it relayed (\{.*\})",
                                   "what the fast path relayed")
        for kind, legs in relayed.items():
            assert legs["webrtc"]["packets_in"] > 0 and legs["legacy"]["packets_in"] > 0, (kind, legs)
            assert legs["webrtc"]["packets_out"] > 0 and legs["legacy"]["packets_out"] > 0, (kind, legs)

    def logged_dict(self, pattern: str, what: str, timeout: float = 10.0) -> dict[str, Any]:
        """The Python dict literal the gateway logs in group 1 of ``pattern`` (its end-of-call reports:
        video feedback, BUNDLE sources, transcoding), waited for up to ``timeout``."""
        regex = re.compile(pattern)

        def find() -> dict[str, Any] | None:
            m = regex.search(self.log_text())
            return ast.literal_eval(m.group(1)) if m else None

        found = wait_for(find, timeout, f"the gateway to log {what}")
        assert isinstance(found, dict)
        print(f"gateway {what}: {found}")
        return found
