"""The layers of docs/ARCHITECTURE.md hold (issue 14): no upward import, no cycle, media knows no SIP.

The contracts are in pyproject.toml (``[tool.importlinter]``) and import-linter checks them: it reads
every import statement, those under ``TYPE_CHECKING`` included. A failure prints the chain of imports
that breaks a contract; the fix is a ``typing.Protocol`` declared in the lower layer, or plain data
passed down, never an import from above.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
