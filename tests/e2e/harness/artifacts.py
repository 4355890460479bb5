"""Where a test's logs, recordings and captures go: `artifacts/<test-name>/` at the top of the repo."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .procs import tail

__all__ = ["REPO_ROOT", "Artifacts"]

REPO_ROOT = Path(__file__).resolve().parents[3]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:150] or "test"


class Artifacts:
    """One test's artifacts directory plus the logs worth showing when the test fails."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.logs: dict[str, Path] = {}

    @classmethod
    def for_test(cls, nodeid: str, root: Path | None = None) -> Artifacts:
        """A fresh directory per test: the previous run's files would otherwise be mistaken for this one's."""
        directory = (root or REPO_ROOT / "artifacts") / _safe(nodeid.split("::", 1)[-1])
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        return cls(directory)

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def subdir(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def add_log(self, label: str, path: Path) -> None:
        self.logs[label] = path

    def tails(self, lines: int = 40) -> list[tuple[str, str]]:
        return [(f"{label} ({path})", tail(path, lines)) for label, path in self.logs.items()]
