"""Random packet loss on chosen UDP ports of ``lo`` (an nftables table of the test's own), for tests
that need a real receiver to see loss: its NACKs, its keyframe requests. Only inside the test
command's private network namespace (``lo`` alone): on a host it would disturb everything else on
loopback, so it refuses there. (tc netem would do, but this kernel has no sch_netem/sch_prio.)

Datagrams to the chosen destination ports are dropped at the output hook with probability
``loss_percent``; everything else is untouched. :meth:`LossyPorts.clear` (or leaving the ``with``
block) deletes the table.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from types import TracebackType

from .procs import HarnessError

__all__ = ["LossyPorts", "loss_available"]

_TABLE = "rtc2sip_test_loss"


def _nft(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    result = subprocess.run([nft, *args], capture_output=True, text=True, timeout=10, check=False)
    if check and result.returncode != 0:
        raise HarnessError(f"nft {' '.join(args)}: {result.stderr.strip()}")
    return result


def loss_available() -> str | None:
    """None when usable, else why not."""
    from .browser import non_loopback_interfaces

    if shutil.which("nft") is None and not os.path.exists("/usr/sbin/nft"):
        return "nft (nftables) is not installed"
    if non_loopback_interfaces():
        return "not in a private network namespace: dropping packets on lo would disturb the host"
    return None


class LossyPorts:
    """Drop about ``loss_percent`` % of the UDP datagrams sent to any of ``ports`` on this host."""

    def __init__(self, ports: list[int], loss_percent: int, hook: str = "output") -> None:
        why = loss_available()
        if why is not None:
            raise HarnessError(f"packet loss: {why}")
        if not ports or not 0 < loss_percent <= 100:
            raise HarnessError(f"packet loss: bad ports {ports} or share {loss_percent}")
        self.hook = hook
        self.ports = ports
        self.loss = loss_percent
        self.active = False

    def __enter__(self) -> LossyPorts:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.clear()

    def start(self) -> None:
        self.clear()
        _nft("add", "table", "inet", _TABLE)
        # "output": the sender's sendto() fails with EPERM (what the older tests were written with);
        # "input": the datagram vanishes on the way, as on a real network (bench/soak.py)
        _nft("add", "chain", "inet", _TABLE, "out", f"{{ type filter hook {self.hook} priority 0; }}")
        ports = ", ".join(str(p) for p in self.ports)
        share = [] if self.loss >= 100 else ["numgen", "random", "mod", "100", "<", str(self.loss)]
        _nft("add", "rule", "inet", _TABLE, "out", "udp", "dport", f"{{ {ports} }}", *share, "counter", "drop")
        self.active = True

    def dropped(self) -> int:
        """Datagrams dropped so far (the rule's counter)."""
        text = _nft("list", "table", "inet", _TABLE, check=False).stdout
        for word, following in zip(text.split(), text.split()[1:], strict=False):
            if word == "packets":
                return int(following)
        return 0

    def clear(self) -> None:
        _nft("delete", "table", "inet", _TABLE, check=False)
        self.active = False
