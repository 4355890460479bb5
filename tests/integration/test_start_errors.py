"""A port another program holds stops the start with the setting named (issue 13 item 5): the
operator reads which listener to move, and the command exits 1 at once, holding nothing."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(tmp_path: Path, sip_port: int, admin: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "config.xml"
    cfg.write_text('<?xml version="1.0" encoding="utf-8" ?>\n'
                   f"<config>\n  <transport>udp;127.0.0.1;{sip_port}</transport>\n</config>\n")
    options = tmp_path / "rtc2sip.toml"
    options.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\nbreaker = "never"\nservices = false\n\n{admin}')
    return subprocess.run([sys.executable, "-m", "rtc2sip", "--config", str(cfg), "--options", str(options)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("taken", ["admin", "sip"])
def test_a_taken_port_names_the_setting(tmp_path: Path, taken: str) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM if taken == "admin" else socket.SOCK_DGRAM)
    try:
        holder.bind(("127.0.0.1", 0))
        if taken == "admin":
            holder.listen()
        port = holder.getsockname()[1]
        sip_port = port if taken == "sip" else free_port(socket.SOCK_DGRAM)
        admin_port = port if taken == "admin" else free_port(socket.SOCK_STREAM)
        done = start(tmp_path, sip_port, f'[admin]\nlisten = "127.0.0.1:{admin_port}"\n')
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr[-2000:]
    want = f"[admin] listen 127.0.0.1:{port}" if taken == "admin" else f"<transport>udp;127.0.0.1;{port}"
    assert want in done.stderr and "another program holds it" in done.stderr, done.stderr[-2000:]
