"""``rtc2sip`` command line: start a gateway on embedded defaults or on a webrtc2sip config.xml."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from . import __version__, logs
from .config import ConfigError, load_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="rtc2sip",
        description="WebRTC <-> SIP gateway: SIP proxy and registrar for browsers over WebSocket.",
    )
    p.add_argument("--config", type=Path, help="a webrtc2sip config.xml (read unchanged)")
    p.add_argument("--options", type=Path, help="rtc2sip's own options (TOML)")
    p.add_argument("--log-format", choices=("text", "json"), help="log line format (default: text)")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument("--version", action="version", version=f"rtc2sip {__version__}")
    sub = p.add_subparsers(dest="command", metavar="user", help="manage the registrar's users (SQLite)")
    users = sub.add_parser("user", help="rtc2sip user add NAME PASSWORD | remove NAME | list")
    users.add_argument("action", choices=("add", "remove", "list"))
    users.add_argument("name", nargs="?")
    users.add_argument("password", nargs="?")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.setup(logging.INFO, args.log_format or "text")
    try:
        settings = load_settings(args.config, args.options)
    except ConfigError as e:
        print(f"rtc2sip: bad configuration: {e}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, args.log_format or settings.gateway.log_format)
    if args.command == "user":
        return manage_users(settings.gateway.data_dir, args.action, args.name, args.password)
    if args.check:
        for line in settings.banner_lines():
            print(line)
        return 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional: stock asyncio works, only slower
        pass
    from .app import run

    try:
        asyncio.run(run(settings))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print(f"rtc2sip: cannot start: {e}", file=sys.stderr)
        return 1
    return 0


def manage_users(data_dir: Path, action: str, name: str | None, password: str | None) -> int:
    """The registrar's SQLite users (data_dir/users.sqlite3); the running gateway sees changes at once."""
    from .proxy.users import UserStore

    store = UserStore(data_dir / "users.sqlite3")
    try:
        if action == "list":
            for n in store.names():
                print(n)
            return 0
        if not name:
            print(f"rtc2sip user {action}: a user name is needed", file=sys.stderr)
            return 2
        if action == "remove":
            if not store.remove(name):
                print(f"rtc2sip: no user {name!r}", file=sys.stderr)
                return 1
            return 0
        if not password:
            print("rtc2sip user add: a password is needed", file=sys.stderr)
            return 2
        try:
            store.add(name, password)
        except ValueError as e:
            print(f"rtc2sip: {e}", file=sys.stderr)
            return 2
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
