"""Session-wide test settings. End-to-end fixtures live in tests/e2e/conftest.py."""

from __future__ import annotations

import os
import socket


def pytest_report_header() -> list[str]:
    """Where the run happened: e2e results depend on the network namespace (see TESTING.md)."""
    # if_nameindex asks the kernel about this process's namespace; /sys/class/net may show the host's.
    interfaces = sorted(name for _, name in socket.if_nameindex())
    where = "private namespace, loopback only" if interfaces == ["lo"] else "host network"
    strict = os.environ.get("RTC2SIP_E2E_STRICT", "0") not in ("", "0")
    return [
        f"network interfaces: {', '.join(interfaces)} ({where})",
        f"e2e strict (a missing prerequisite fails instead of skipping): {strict}",
    ]
