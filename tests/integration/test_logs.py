"""Logs (issue 5 item 8): the real ``rtc2sip`` command, run with a webrtc2sip ``config.xml``: one JSON
object per line with ``--log-format json``, the Call-ID on a SIP event's line, and ``debug-level``
honoured (ERROR: the INFO events are not written)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

READY = "rtc2sip ready"


def _free_udp_tcp_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


def _run(tmp_path: Path, level: str) -> list[str]:
    """Start rtc2sip, send one REGISTER and one INVITE for nobody over UDP until both are answered (it is
    running then, whatever it logged), stop it with SIGTERM; its stderr lines."""
    port = _free_udp_tcp_port()
    cfg = tmp_path / "config.xml"
    cfg.write_text(f"""<?xml version="1.0" encoding="utf-8" ?>
<config>
  <debug-level>{level}</debug-level>
  <transport>udp;127.0.0.1;{port}</transport>
  <transport>ws;127.0.0.1;{port + 1}</transport>
</config>
""")
    options = tmp_path / "rtc2sip.toml"
    options.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\ndomains = ["example.test"]\n')
    err = tmp_path / "stderr.txt"
    with err.open("wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "rtc2sip", "--config", str(cfg), "--options", str(options),
                                 "--log-format", "json"], stdout=subprocess.PIPE, stderr=f)
    try:
        deadline = time.monotonic() + 60  # a loaded machine starts it slowly
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            s.bind(("127.0.0.1", 0))
            me = s.getsockname()
            answered: set[str] = set()
            for method, call_id, to in (("REGISTER", "log-test-register", "alice"),
                                        ("INVITE", "log-test-invite", "nobody")):
                request = (f"{method} sip:{to}@example.test SIP/2.0\r\n"
                           f"Via: SIP/2.0/UDP 127.0.0.1:{me[1]};branch=z9hG4bK-{call_id}\r\n"
                           "Max-Forwards: 70\r\nFrom: <sip:alice@example.test>;tag=1\r\n"
                           f"To: <sip:{to}@example.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
                           f"Contact: <sip:alice@127.0.0.1:{me[1]}>\r\nContent-Length: 0\r\n\r\n")
                while call_id not in answered and proc.poll() is None and time.monotonic() < deadline:
                    s.sendto(request.encode(), ("127.0.0.1", port))
                    try:
                        while True:
                            reply = s.recv(4096).decode("utf-8", "replace")
                            if f"Call-ID: {call_id}" in reply and not reply.startswith("SIP/2.0 100"):
                                answered.add(call_id)
                                break
                    except TimeoutError:
                        continue
            assert answered == {"log-test-register", "log-test-invite"}, err.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0, err.read_text()
    return err.read_text().splitlines()


def test_json_lines_with_the_call_id(tmp_path: Path) -> None:
    lines = _run(tmp_path, "INFO")
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(set(r) >= {"ts", "level", "logger", "msg"} for r in records), records
    msgs = [r["msg"] for r in records]
    assert any(READY in m for m in msgs) and any("Web phone on http://127.0.0.1:" in m for m in msgs), msgs
    assert any("log-test-invite" in m for m in msgs), msgs  # the INVITE's event, with its Call-ID


def test_debug_level_error_keeps_info_out(tmp_path: Path) -> None:
    lines = _run(tmp_path, "ERROR")
    records = [json.loads(line) for line in lines]
    assert all(r["level"] in ("error", "critical") for r in records), records
