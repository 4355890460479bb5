"""Packet capture on loopback with tshark, into the test's artifacts (open with wireshark or sngrep)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .artifacts import Artifacts
from .procs import HarnessError, Proc, wait_for

__all__ = ["Capture", "port_filter"]


def port_filter(ports: Sequence[int]) -> str:
    """Capture filter for every packet to or from one of `ports` (UDP and TCP)."""
    return " or ".join(f"port {p}" for p in ports) or "udp or tcp"


class Capture:
    """`tshark -i lo -f FILTER -w artifacts/<test>/<name>.pcapng` for the duration of a test."""

    def __init__(
        self,
        artifacts: Artifacts,
        name: str = "capture",
        *,
        capture_filter: str = "udp or tcp",
        interface: str = "lo",
        binary: str = "tshark",
    ) -> None:
        self.artifacts = artifacts
        self.name = name
        self.binary = shutil.which(binary) or binary
        self.pcap = artifacts.path(f"{name}.pcapng")
        self.log_path = artifacts.path(f"{name}.log")
        self.proc = Proc(
            name,
            [self.binary, "-i", interface, "-f", capture_filter, "-w", self.pcap, "-q"],
            self.log_path,
            # SIGINT lets tshark flush and close the file properly.
            stop_signal=signal.SIGINT,
            stop_timeout=10,
        )

    def start(self, timeout: float = 15.0) -> Capture:
        self.artifacts.add_log(self.name, self.log_path)
        self.proc.start()

        def capturing() -> bool:
            return "Capturing on" in self.log_path.read_text(errors="replace")

        # Packets sent before tshark is ready would silently be missing from the capture.
        with self.proc.explain_failure():
            wait_for(capturing, timeout, "tshark to start capturing", alive=self.proc.check_alive)
        return self

    def stop(self, settle: float = 0.5) -> Path:
        """Stop capturing (idempotent). Packets of the last moments before the stop were seen missing
        from the file (the 486 that ended a test's call, sent tens of ms earlier): give dumpcap
        `settle` seconds to take what the kernel still holds before it is told to stop."""
        if self.proc.running and settle > 0:
            time.sleep(settle)
        self.proc.stop()
        return self.pcap

    def decode(self, display_filter: str = "sip", *, verbose: bool = False, timeout: float = 60.0) -> str:
        """tshark's reading of the capture so far (stop first for a complete file)."""
        if not self.pcap.exists():
            raise HarnessError(f"no capture file {self.pcap}")
        # Heuristic dissectors first: SIP on a random port that tshark registers for another protocol
        # (25826 is collectd's) would not be read as SIP, and then neither would the RTP its SDP sets up.
        argv = [self.binary, "-o", "udp.try_heuristic_first:TRUE", "-r", str(self.pcap), "-Y", display_filter,
                *(["-V"] if verbose else [])]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise HarnessError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
        return done.stdout
