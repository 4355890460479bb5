"""sipp (Debian's sip-tester) for load and protocol scenarios: built-in uac/uas or XML files from
tests/e2e/scenarios/, with the outcome read from its statistics CSV and exit status."""

from __future__ import annotations

import csv
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import Artifacts
from .procs import HarnessError, Proc, free_port, tail, wait_tcp_listening, wait_udp_bound

__all__ = ["SCENARIOS", "Sipp", "SippResult"]

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"

# sipp's documented exit statuses.
_EXIT_MEANING = {
    0: "all calls successful",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}


@dataclass
class SippResult:
    returncode: int | None
    successful: int
    failed: int
    stats: dict[str, str] = field(default_factory=dict)  # last row of the statistics CSV
    log: Path | None = None
    errors: Path | None = None

    @property
    def meaning(self) -> str:
        return _EXIT_MEANING.get(self.returncode if self.returncode is not None else -1, "killed")

    def summary(self) -> str:
        keys = (
            "OutgoingCall(C)",
            "IncomingCall(C)",
            "SuccessfulCall(C)",
            "FailedCall(C)",
            "Retransmissions(C)",
        )
        figures = ", ".join(f"{k}={self.stats[k]}" for k in keys if k in self.stats)
        errors = tail(self.errors, 20) if self.errors and self.errors.exists() else ""
        return f"sipp exit {self.returncode} ({self.meaning}); {figures}\n{errors}"


class Sipp:
    """One sipp run. `scenario` is "uac"/"uas"/... (built-in) or an XML path (a bare name is looked up in
    tests/e2e/scenarios/). `remote` is host:port to send to (omit for a uas). `keys` fill
    [keyword]s of XML scenarios (-key)."""

    def __init__(
        self,
        artifacts: Artifacts,
        name: str,
        scenario: str | Path,
        *,
        remote: str | None = None,
        service: str | None = None,
        calls: int | None = None,
        rate: float | None = None,
        rate_period_ms: int | None = None,
        limit: int | None = None,
        transport: str = "u1",
        keys: Mapping[str, str] | None = None,
        duration_ms: int | None = None,
        timeout_s: float | None = None,
        trace_msg: bool = False,
        extra_args: Sequence[str] = (),
        binary: str = "sipp",
    ) -> None:
        self.artifacts = artifacts
        self.name = name
        self.transport = transport
        self.remote = remote
        self.dir = artifacts.subdir(name)
        self.port = free_port()
        self.media_port = free_port(4)
        self.control_port = free_port()
        self.binary = shutil.which(binary) or binary
        self.stat_file = self.dir / "stats.csv"
        self.error_file = self.dir / "errors.log"
        self.screen_file = self.dir / "screen.log"
        self.log_path = self.dir / "sipp.log"
        argv: list[str] = [self.binary]
        if remote:
            argv.append(remote)
        if isinstance(scenario, Path) or str(scenario).endswith(".xml"):
            path = Path(scenario)
            if not path.is_absolute():
                path = path.resolve() if path.exists() else SCENARIOS / path
            argv += ["-sf", str(path)]
        else:
            argv += ["-sn", str(scenario)]
        argv += [
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-mp",
            str(self.media_port),
            "-cp",
            str(self.control_port),
            "-t",
            transport,
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(self.stat_file),
            "-fd",
            "1",
            "-trace_err",
            "-error_file",
            str(self.error_file),
            "-trace_screen",
            "-screen_file",
            str(self.screen_file),
        ]
        if trace_msg:
            argv += ["-trace_msg", "-message_file", str(self.dir / "messages.log")]
        if service is not None:
            argv += ["-s", service]
        if calls is not None:
            argv += ["-m", str(calls)]
        if rate is not None:
            argv += ["-r", f"{rate:g}"]
        if rate_period_ms is not None:
            argv += ["-rp", str(rate_period_ms)]
        if limit is not None:
            argv += ["-l", str(limit)]
        if duration_ms is not None:
            argv += ["-d", str(duration_ms)]
        if timeout_s is not None:
            argv += ["-timeout", f"{timeout_s:g}s"]
        for key, value in (keys or {}).items():
            argv += ["-key", key, value]
        argv += list(extra_args)
        # SIGUSR1 makes sipp finish gracefully and still write its final statistics.
        self.proc = Proc(name, argv, self.log_path, cwd=self.dir, stop_signal=signal.SIGUSR1, stop_timeout=5)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Sipp:
        """Start in the background (a uas, or a uac whose end you wait for with `wait`)."""
        self.artifacts.add_log(self.name, self.log_path)
        self.artifacts.add_log(f"{self.name} errors", self.error_file)
        self.proc.start()
        with self.proc.explain_failure():
            if self.transport.startswith("u"):
                wait_udp_bound(self.port, timeout, self.proc.check_alive)
            elif self.remote is None:
                # a TCP/TLS uas listens on its port; a TCP uac only connects (nothing to wait for)
                wait_tcp_listening(self.port, timeout, self.proc.check_alive)
        return self

    def wait(self, timeout: float) -> SippResult:
        """Wait for sipp to finish on its own (-m calls done or -timeout)."""
        self.proc.wait(timeout)
        return self.result()

    def run(self, timeout: float = 120.0) -> SippResult:
        self.start()
        return self.wait(timeout)

    def stop(self) -> SippResult:
        self.proc.stop()
        return self.result()

    def result(self) -> SippResult:
        stats = self.final_stats()
        try:
            successful = int(stats.get("SuccessfulCall(C)", "0"))
            failed = int(stats.get("FailedCall(C)", "0"))
        except ValueError as exc:
            raise HarnessError(f"unreadable sipp statistics in {self.stat_file}: {exc}") from None
        return SippResult(self.proc.returncode, successful, failed, stats, self.log_path, self.error_file)

    def final_stats(self) -> dict[str, str]:
        """Last row of the statistics CSV (cumulative counters are the "(C)" columns)."""
        if not self.stat_file.exists():
            return {}
        with self.stat_file.open(newline="", encoding="utf-8", errors="replace") as f:
            rows = [r for r in csv.reader(f, delimiter=";") if r]
        if len(rows) < 2:
            return {}
        header = rows[0]
        return {k: v for k, v in zip(header, rows[-1], strict=False) if k}
