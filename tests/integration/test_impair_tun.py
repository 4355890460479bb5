"""The delay line over real TUN devices between two network namespaces (tests/e2e/harness/impair.py).

Runs :func:`harness.impair.probe` in a namespace of its own (``unshare --net``), so that the test's
interfaces never show in the namespace the other tests run in (the browser tests want ``lo`` alone).
Only loose checks: packets get through, and the round trips show the added delay; no timing bound
that a loaded machine could break.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

E2E = Path(__file__).resolve().parents[1] / "e2e"
sys.path.insert(0, str(E2E))

from harness.impair import impair_available  # noqa: E402


def test_udp_through_the_delay_line() -> None:
    why = impair_available() or (None if shutil.which("unshare") else "unshare is not installed")
    if why:
        pytest.skip(why)
    code = ("import json,sys; sys.path.insert(0, sys.argv[1]); from harness.impair import probe; "
            "print(json.dumps(probe(count=300, interval=0.005, delay_ms=20.0, jitter_ms=10.0, "
            "loss_percent=5.0, seed=7)))")
    inner = f"ip link set lo up && exec '{sys.executable}' -c '{code}' '{E2E}'"
    result = subprocess.run(["unshare", "--net", "sh", "-c", inner], capture_output=True, text=True, timeout=60,
                            check=False)
    if result.returncode != 0 and "unshare failed" in result.stderr:
        pytest.skip(f"no network namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["received"] >= 200, out["received"]  # ~10 % lost over both ways
    line = out["line"]
    ab, ba = line["a->b"], line["b->a"]
    assert ab["dropped"] > 0 and ab["forwarded"] > 0 and ba["forwarded"] > 0
    # each way adds 20 +- 10 ms: a round trip is at least 2 x 10 ms, and most are above 2 x 20
    assert min(out["rtt_ms"]) >= 20.0
    assert ab["added_delay"]["min_ms"] >= 10.0 and ab["added_delay"]["max_ms"] >= 20.0
    assert line["link"]["error"] is None
