"""Logging of every ``callboard`` command: human-readable text, or JSON lines.

The CLI configures logging here and nowhere else; the packages only log. A
record about a task carries ``task_id`` (and ``agent``, ``capability``) as
``extra`` fields, which both formats show: text as a ``[task <id>]`` prefix,
JSON as fields a log pipeline can index and join with the status events.

The lines that scripts and people wait for (the daemon's ready line, a
reload, the error that ends a command) are not log records, since a log level
must never hide them; ``Announcer`` prints them in the same format.
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import msgspec

from .._errors import ConfigError

__all__ = [
    "LOG_FORMATS",
    "LOG_FORMAT_ENV",
    "REPEAT_WINDOW",
    "REPEAT_WINDOW_ENV",
    "TASK_FIELDS",
    "Announcer",
    "JsonFormatter",
    "RepeatFilter",
    "TextFormatter",
    "configure_logging",
    "resolve_log_format",
    "resolve_repeat_window",
]

LOG_FORMATS = ("text", "json")
"""``text`` (the default) for people, ``json`` (one object a line) for log pipelines."""
LOG_FORMAT_ENV = "CALLBOARD_LOG_FORMAT"
"""The environment variable that picks the format when ``--log-format`` is not given."""
TASK_FIELDS = ("task_id", "agent", "capability")
"""The ``extra`` fields of a record that the formats show."""

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_encoder = msgspec.json.Encoder(enc_hook=str)


def resolve_log_format(flag: str | None, environ: Mapping[str, str]) -> str:
    """The flag, else ``CALLBOARD_LOG_FORMAT``, else ``text``.

    Raises:
        ConfigError: the environment variable names no format.
    """
    if flag is not None:
        return flag
    value = environ.get(LOG_FORMAT_ENV, "").strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ConfigError(
            f"{LOG_FORMAT_ENV}={environ[LOG_FORMAT_ENV]!r} is not a log format: "
            f"use {' or '.join(LOG_FORMATS)}"
        )
    return value


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: [task <id>] <message>``, and the traceback below."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        task_id = getattr(record, "task_id", None)
        message = f"[task {task_id}] {record.message}" if task_id else record.message
        return f"{record.asctime} {record.levelname} {record.name}: {message}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, the task fields the record has, and ``exc`` with the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        document: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in TASK_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exc"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return _encoder.encode(document).decode()


def _formatter(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"unknown log format {log_format!r}: use {' or '.join(LOG_FORMATS)}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


REPEAT_WINDOW = 30.0
"""Seconds during which a warning said once is not said again word for word."""
REPEAT_WINDOW_ENV = "CALLBOARD_LOG_REPEAT_WINDOW"
"""The environment variable that sets ``REPEAT_WINDOW`` (0: say every repeat)."""


def resolve_repeat_window(environ: Mapping[str, str]) -> float:
    """``CALLBOARD_LOG_REPEAT_WINDOW`` in seconds, else ``REPEAT_WINDOW``.

    Raises:
        ConfigError: the variable is not a number of seconds.
    """
    text = environ.get(REPEAT_WINDOW_ENV, "").strip()
    if not text:
        return REPEAT_WINDOW
    try:
        window = float(text)
    except ValueError:
        window = -1.0
    if not 0 <= window < float("inf"):
        raise ConfigError(
            f"{REPEAT_WINDOW_ENV}={text!r} is not a number of seconds (0 says every repeat)"
        )
    return window


class RepeatFilter(logging.Filter):
    """Says a burst of the same warning once per ``window``: the first at once, then
    at most one a window, with how many were held back (``... (12 more like this in
    the last 31s)``).

    An outage makes nats-py report the same refused reconnect several times a
    second; the first line says it all, and the count says it goes on. Records
    that differ in a word (another server, another task) are different records.
    A burst ends when its logger says something else (``reconnected``): what
    follows is said again, so every change of state is seen.

    Args:
        window: seconds between two sayings of the same record.
        clock: the monotonic clock (a test passes its own).
    """

    def __init__(
        self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window = window
        self._clock = clock
        self._bursts: dict[str, tuple[object, dict[tuple[int, str], tuple[float, int]]]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        template, said = self._bursts.get(record.name, (None, {}))
        if template != record.msg or len(said) >= _MAX_REMEMBERED:
            said = {}  # another kind of line from this logger: a new burst
            if len(self._bursts) >= _MAX_REMEMBERED:
                self._bursts.clear()
            self._bursts[record.name] = (record.msg, said)
        message = record.getMessage()
        key = (record.levelno, message)
        now = self._clock()
        said_at, held_back = said.get(key, (None, 0))
        if said_at is not None and now - said_at < self.window:
            said[key] = (said_at, held_back + 1)
            return False
        said[key] = (now, 0)
        if held_back and said_at is not None:
            record.msg = f"{message} ({held_back} more like this in the last {now - said_at:.0f}s)"
            record.args = None
        return True


_MAX_REMEMBERED = 1000
"""Distinct records (and loggers) remembered before forgetting them (bounded memory)."""


class _CallboardHandler(logging.StreamHandler[IO[str]]):
    """The handler ``configure_logging`` installs, so a second call replaces it."""

    def __init__(self, stream: IO[str], repeat_window: float) -> None:
        super().__init__(stream)
        self.addFilter(RepeatFilter(repeat_window))

    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_tls_eof_noise(record) and super().filter(record)


_TLS_EOF_NOISE = "returning true from eof_received() has no effect when using ssl"


def _is_tls_eof_noise(record: logging.LogRecord) -> bool:
    """asyncio's warning when a TLS server closes the connection: nats-py's protocol
    asks to keep the transport half-open, which TLS cannot; it means nothing to the
    user, yet every TLS command printed it on exit.
    """
    return record.name == "asyncio" and record.msg == _TLS_EOF_NOISE


def configure_logging(
    level: int,
    log_format: str = "text",
    *,
    stream: IO[str] | None = None,
    repeat_window: float = REPEAT_WINDOW,
) -> None:
    """Send every record at ``level`` or above to stderr (or ``stream``) in ``log_format``,
    a warning repeated word for word at most once per ``repeat_window`` seconds."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _CallboardHandler)]:
        root.removeHandler(handler)
        handler.close()
    handler = _CallboardHandler(stream if stream is not None else sys.stderr, repeat_window)
    handler.setFormatter(_formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level)


class Announcer:
    """Prints the lines scripts wait for on stderr, whatever the log level: as
    they are in text format, as a JSON record (``message`` holds the line) in
    json format, so that a json-format stderr holds nothing but JSON lines.

    Args:
        log_format: ``text`` or ``json``.
        logger: the ``logger`` field of the JSON records.
        stream: where to print; stderr (as it is at the time of the call) by default.
    """

    def __init__(
        self, log_format: str, *, logger: str = "callboard", stream: IO[str] | None = None
    ) -> None:
        self._formatter = _formatter(log_format) if log_format == "json" else None
        self._logger = logger
        self._stream = stream

    def __call__(self, line: str, *, level: int = logging.INFO, **fields: Any) -> None:
        """Print ``line``; in json format with ``fields`` (``task_id``, ``agent``,
        ``capability``) beside it, those that are not None."""
        if self._formatter is not None:
            record = logging.LogRecord(self._logger, level, __name__, 0, line, None, None)
            for name, value in fields.items():
                if value is not None:
                    setattr(record, name, value)
            line = self._formatter.format(record)
        print(line, file=self._stream or sys.stderr, flush=True)
