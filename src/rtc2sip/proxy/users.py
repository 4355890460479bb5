"""Users of the built-in registrar kept in SQLite, beside those of the TOML file's ``[users]``.

Looked up on every digest check, so users added with ``rtc2sip user add`` work without a restart.
Passwords are stored as given, as Kamailio's default subscriber table does: digest needs a hash per
realm and algorithm (RFC 7616 §3.4.2), and the realm follows the configured domains; protect the data
directory as you would the TOML file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password TEXT NOT NULL)"


class UserStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute(SCHEMA)

    def password(self, name: str) -> str | None:
        row = self._db.execute("SELECT password FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def add(self, name: str, password: str) -> None:
        if not name or any(c in name for c in ' \t\r\n"@:;') or not password:
            raise ValueError(f"bad user name or empty password: {name!r}")
        self._db.execute("INSERT OR REPLACE INTO users (name, password) VALUES (?, ?)", (name, password))

    def remove(self, name: str) -> bool:
        return self._db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    def names(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT name FROM users ORDER BY name")]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def close(self) -> None:
        self._db.close()
