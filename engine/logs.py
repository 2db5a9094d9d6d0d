"""Log set-up for the entry points: text or JSON lines on stderr, with secrets scrubbed.

Modules only call `logging.getLogger(__name__)`; handlers are installed here, once, by
`python -m engine`, `python -m webapp` and the CLI. Whatever a line says, anything shaped like a
JWT, a `token=` parameter, a Bearer header or a password in a URL is replaced before it is
written: tokens never reach the logs.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys

import orjson

_SCRUB = [
    # A JWT, whole or cut anywhere (its header always starts "eyJ", base64url of '{"').
    (re.compile(r"eyJ[A-Za-z0-9_.\-]*"), "[token]"),
    (re.compile(r"(?i)(token=)[^&\s\"']+"), r"\1[token]"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1[token]"),
    (re.compile(r"(?i)(\w+://[^:/@\s]*:)[^@\s]+(@)"), r"\1***\2"),
]


def scrub(text: str) -> str:
    """Remove tokens and URL passwords from a piece of text."""
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus any `extra` fields."""

    _standard = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in self._standard and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return scrub(orjson.dumps(entry, default=str).decode())


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Install the one stderr handler; safe to call more than once."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty libraries: their per-request lines would repeat what Tributary logs, and the
    # engine.io access lines carry query strings (where a client may put its token).
    for name in ("engineio.server", "socketio.server", "geventwebsocket.handler", "werkzeug"):
        logging.getLogger(name).setLevel(logging.WARNING)
