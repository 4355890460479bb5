"""Child processes, free ports and readiness checks shared by every peer of the harness.

Each peer runs in its own session (process group), so that stopping it also stops whatever it forked
(kamailio's workers, Chromium's renderers) and nothing survives the test. Output goes to a log file in
the test's artifacts directory, never to a pipe that nobody reads (a full pipe blocks the child).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "HarnessError",
    "Proc",
    "free_port",
    "tail",
    "udp_bound",
    "wait_for",
    "wait_tcp",
    "wait_udp_bound",
]


class HarnessError(RuntimeError):
    """A peer did not start, did not answer in time, or died."""


# Ports below the kernel's ephemeral range (32768+ on Linux): a port picked there could be taken a moment
# later by any outgoing connection (Chromium, node, the gateway's own sockets).
_PORT_RANGE = (20000, 32000)
_handed_out: set[int] = set()


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(count: int = 1) -> int:
    """First of `count` consecutive ports free for both TCP and UDP on 127.0.0.1, never handed out twice.

    Both protocols, because SIP listens on UDP and TCP with the same number and RTP/RTCP pairs need two.
    """
    rng = random.Random()
    for _ in range(500):
        first = rng.randrange(_PORT_RANGE[0], _PORT_RANGE[1] - count)
        if count > 1:
            # RTP on the even port, RTCP on the odd one above (RFC 3550 §11): baresip, given an odd
            # start, takes the even port below it, outside the range handed out.
            first &= ~1
        candidates = range(first, first + count)
        if any(p in _handed_out for p in candidates):
            continue
        if all(_bindable(p, socket.SOCK_STREAM) and _bindable(p, socket.SOCK_DGRAM) for p in candidates):
            _handed_out.update(candidates)
            return first
    raise HarnessError(f"no {count} free consecutive port(s) in {_PORT_RANGE}")


def tail(path: Path, lines: int = 60) -> str:
    """Last `lines` lines of a log file, or a note if it does not exist."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except FileNotFoundError:
        return f"<{path} does not exist>"
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: Callable[[], None] | None = None,
) -> object:
    """Poll `predicate` until it returns something truthy; `alive` raises if the peer died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_tcp(host: str, port: int, timeout: float, alive: Callable[[], None] | None = None) -> None:
    wait_for(lambda: _tcp_accepts(host, port), timeout, f"TCP {host}:{port} to accept", alive=alive)


def udp_bound(port: int, net_dir: str = "/proc/net") -> bool:
    """Whether some socket of this network namespace is bound to UDP `port`.

    UDP has no handshake to probe, and sending a probe would pollute the peer's log and state; the
    kernel's socket table answers without touching the peer. `net_dir` `/proc/PID/net` asks the
    namespace of process PID instead (a peer in a namespace of its own: harness.impair).
    """
    wanted = f":{port:04X}"
    for table in (f"{net_dir}/udp", f"{net_dir}/udp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 1 and fields[1].endswith(wanted):
                        return True
        except FileNotFoundError:
            continue
    return False


def wait_udp_bound(port: int, timeout: float, alive: Callable[[], None] | None = None,
                   net_dir: str = "/proc/net") -> None:
    wait_for(lambda: udp_bound(port, net_dir), timeout, f"UDP port {port} to be bound", alive=alive)


def tcp_listening(port: int, net_dir: str = "/proc/net") -> bool:
    """Whether some socket of this network namespace listens on TCP `port` (read from the kernel's
    table, like `udp_bound`: connecting to probe would show up as a stray connection in the peer)."""
    wanted = f":{port:04X}"
    for table in (f"{net_dir}/tcp", f"{net_dir}/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "0A":  # LISTEN
                        return True
        except FileNotFoundError:
            continue
    return False


def wait_tcp_listening(port: int, timeout: float, alive: Callable[[], None] | None = None,
                       net_dir: str = "/proc/net") -> None:
    wait_for(lambda: tcp_listening(port, net_dir), timeout, f"TCP port {port} to listen", alive=alive)


class Proc:
    """One child process in its own process group, logging to `log_path`.

    Stopped by signalling its group (SIGTERM, then SIGKILL after `stop_timeout`); only ever the group we
    created, so nothing else on the machine is touched.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.argv = [os.fspath(a) for a in argv]
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(os.environ if env is None else env)
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def start(self, *, stdin: int | None = subprocess.DEVNULL, stdout: int | None = None) -> None:
        if self.running:
            raise HarnessError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append, so that a restarted peer keeps the log of its previous life.
        self._log = self.log_path.open("ab")
        self._log.write(f"==== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=stdin,
            stdout=self._log if stdout is None else stdout,
            stderr=self._log,
            start_new_session=True,
        )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def check_alive(self) -> None:
        """Raise with the log tail if the process has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise HarnessError(
                f"{self.name} exited with status {self.popen.returncode}; log tail "
                f"({self.log_path}):\n{tail(self.log_path)}"
            )

    @contextlib.contextmanager
    def explain_failure(self) -> Iterator[None]:
        """Add the log tail to a readiness failure (a bare "timed out" says nothing about why)."""
        try:
            yield
        except HarnessError as exc:
            if self.log_path.name in str(exc):
                raise
            raise HarnessError(f"{self.name}: {exc}; log tail ({self.log_path}):\n{self.tail()}") from exc

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own; on timeout, stop it and raise."""
        assert self.popen is not None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise HarnessError(
                f"{self.name} did not finish within {timeout:g}s; log tail:\n{tail(self.log_path)}"
            ) from None

    def _signal_group(self, sig: int) -> None:
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self) -> int | None:
        """Stop the whole process group; idempotent. Returns the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self._signal_group(self.stop_signal)
            try:
                self.popen.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait(5)
        # The leader may be gone while children it forked are still in the group (kamailio workers).
        self._signal_group(signal.SIGKILL)
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.write(f"==== {time.strftime('%H:%M:%S')} stopped, status {self.popen.returncode}\n".encode())
            self._log.close()
            self._log = None
        return self.popen.returncode

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)
