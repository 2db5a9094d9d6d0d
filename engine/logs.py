"""Log set-up for the entry points: structlog through the standard library, one line per event
on stdout, JSON for log collectors or a readable (coloured in a terminal) format for people,
with secrets scrubbed from every line.

Modules only call `logging.getLogger(__name__)` (lazy `%s` arguments, `extra=` for fields);
handlers are installed here, once, by `python -m engine`, `python -m webapp` and the CLI.
Library loggers (gevent's WSGI server, engine.io, SQLAlchemy, redis-py) go through the same
handler and come out the same way.

Every line carries what applies of: the process's own figures (`consumer` for an engine,
`instance` for a web process, bound once with `bind_process`), the request's (`request_id`,
`user`, bound per request or connection with structlog's contextvars), and the event's own
(`user`, `msg_id`, `entry_id`, passed as `extra`).

Whatever a line says, its message, its fields or a traceback, anything shaped like a JWT, a
`token=` parameter, a Bearer header or a password in a URL is replaced before it is written
(`scrub`, the one place that does it): tokens never reach the logs.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from types import TracebackType
from typing import Any, TextIO

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

_SCRUB = [
    # A JWT, whole or cut anywhere (its header always starts "eyJ", base64url of '{"').
    (re.compile(r"eyJ[A-Za-z0-9_.\-]*"), "[token]"),
    (re.compile(r"(?i)(token=)[^&\s\"']+"), r"\1[token]"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1[token]"),
    (re.compile(r"(?i)(\w+://[^:/@\s]*:)[^@\s]+(@)"), r"\1***\2"),
]

#: Libraries whose per-request lines would repeat Tributary's own access log, and the
#: engine.io lines carry query strings (where a client may put its token).
CHATTY = ("engineio.server", "socketio.server", "geventwebsocket.handler", "werkzeug")

#: Fields of this process, added to every line (see `bind_process`).
_process_fields: dict[str, Any] = {}


def scrub(text: str) -> str:
    """Remove tokens and URL passwords from a piece of text."""
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


def bind_process(**fields: Any) -> None:
    """Add fields to every line this process writes from now on (an engine's consumer name, a
    web process's instance id)."""
    _process_fields.update(fields)


def _add_process_fields(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    for key, value in _process_fields.items():
        event.setdefault(key, value)
    return event


#: What every line gets, whether it came through structlog or the standard library.
_CONTEXT: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    _add_process_fields,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
]


def _orjson_dumps(event: EventDict, **_kwargs: Any) -> str:
    return orjson.dumps(event, default=str).decode()


class TextRenderer:
    """The readable format: `time LEVEL logger: message  key=value …`, then the traceback if
    any; in a terminal the level is coloured and the fields dimmed."""

    COLOURS = {"DEBUG": "\x1b[2m", "INFO": "\x1b[32m", "WARNING": "\x1b[33m",
               "ERROR": "\x1b[31m", "CRITICAL": "\x1b[1;31m"}
    DIM, RESET = "\x1b[2m", "\x1b[0m"

    def __init__(self, colors: bool) -> None:
        self.colors = colors

    def __call__(self, _logger: WrappedLogger, method: str, event: EventDict) -> str:
        stamp = event.pop("timestamp", "")
        level = str(event.pop("level", method)).upper()
        name = event.pop("logger", "")
        message = str(event.pop("event", ""))
        exception = event.pop("exception", None)
        fields = " ".join(f"{key}={value}" for key, value in sorted(event.items()))
        shown = f"{level:<7}"
        if self.colors:
            shown = f"{self.COLOURS.get(level, '')}{shown}{self.RESET}"
            fields = f"{self.DIM}{fields}{self.RESET}" if fields else ""
        line = f"{stamp} {shown} {name}: {message}" + (f"  {fields}" if fields else "")
        return f"{line}\n{exception}" if exception else line


class ScrubbingFormatter(structlog.stdlib.ProcessorFormatter):
    """structlog's formatter for standard-library records, with `scrub` over the whole line
    (message, fields and traceback alike)."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def wants_json(fmt: str, stream: TextIO) -> bool:
    """LOG_FORMAT `auto` means JSON unless the stream is a terminal."""
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (isatty is not None and isatty())
    return fmt == "json"


def formatter(fmt: str = "auto", stream: TextIO | None = None) -> logging.Formatter:
    """The formatter of every line: JSON (`time`, `level`, `logger`, `message`, fields,
    `exception`) or the readable format, coloured when `stream` is a terminal."""
    stream = sys.stdout if stream is None else stream
    pre_chain: list[Processor] = [*_CONTEXT, structlog.stdlib.ExtraAdder()]
    if wants_json(fmt, stream):
        renderer: list[Processor] = [
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
    else:
        colors = bool(getattr(stream, "isatty", lambda: False)())
        renderer = [
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False,
                                             key="timestamp"),
            structlog.processors.format_exc_info,
            TextRenderer(colors),
        ]
    return ScrubbingFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer])


def setup_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Install the one handler (stdout by default); safe to call more than once.

    structlog loggers (`structlog.get_logger()`) and standard-library ones end up in the same
    handler; so do warnings and exceptions nobody caught, in any thread.
    """
    stream = sys.stdout if stream is None else stream
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_CONTEXT,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt, stream))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], value: BaseException,
                  tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("tributary").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or isinstance(args.exc_value, SystemExit):
        return
    logging.getLogger("tributary").critical(
        "uncaught exception in thread %s", getattr(args.thread, "name", "?"),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
