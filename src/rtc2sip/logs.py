"""One line per event: human-readable on a terminal, JSON with ``--log-format json``."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# Password equivalents never reach a log line, whoever logged them: webrtc2sip's ha1 Contact/URI
# parameter (RFC 7616 §3.4.2: HA1 is as good as the password) and digest responses (open to an
# offline dictionary attack). A last line of defence: the code already logs URIs without them.
_SECRETS = re.compile(r'(?i)(\b(?:ha1|password|passwd)\s*=\s*"?)[^";,>&\s]+|(\bresponse\s*=\s*")[^"]*')


def redact(text: str) -> str:
    return _SECRETS.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info).replace("\n", " | "))
        return json.dumps(out, ensure_ascii=False)


class LineFormatter(logging.Formatter):
    """Keeps tracebacks on one line too, so every event stays one line in the log."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record).replace("\n", " | "))


def setup(level: int, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(LineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # websockets logs every failed handshake at ERROR with a traceback: that is a client's problem
    logging.getLogger("websockets").setLevel(max(level, logging.WARNING))
