"""The CLI's log formats: text with a ``[task <id>]`` prefix, JSON lines with task fields."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from actors._tasklog import log_outcome, task_logger
from bus import ConfigError, ErrorInfo
from bus.observability._logging import (
    LOG_FORMAT_ENV,
    REPEAT_WINDOW,
    REPEAT_WINDOW_ENV,
    Announcer,
    JsonFormatter,
    RepeatFilter,
    TextFormatter,
    configure_logging,
    resolve_log_format,
    resolve_repeat_window,
)

TASK: dict[str, object] = {"task_id": "01J0TASK", "agent": "math-1", "capability": "math"}


def record(
    message: str = "failed: %s",
    *args: object,
    level: int = logging.WARNING,
    extra: dict[str, object] | None = None,
    exc_info: bool = False,
) -> logging.LogRecord:
    """A record as a logger makes it, ``extra`` fields included."""
    logger = logging.getLogger("callboard.test")
    info = None
    if exc_info:
        try:
            raise RuntimeError("the handler broke")
        except RuntimeError:
            info = sys.exc_info()
    return logger.makeRecord(
        logger.name, level, __file__, 1, message, args, info, extra=extra or None
    )


def test_a_json_line_has_the_standard_fields_and_the_task_fields() -> None:
    line = JsonFormatter().format(record("%s failed", "math", extra=TASK))
    assert "\n" not in line
    document = json.loads(line)
    assert document == {
        "ts": document["ts"],
        "level": "warning",
        "logger": "callboard.test",
        "message": "math failed",
        **TASK,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["ts"])


def test_a_json_line_without_task_fields_has_none() -> None:
    document = json.loads(JsonFormatter().format(record("plain", level=logging.INFO)))
    assert set(document) == {"ts", "level", "logger", "message"}
    assert document["level"] == "info"


def test_a_json_line_carries_the_traceback_in_exc_on_one_line() -> None:
    line = JsonFormatter().format(record("crashed", extra=TASK, exc_info=True))
    assert "\n" not in line
    document = json.loads(line)
    assert document["task_id"] == TASK["task_id"]
    assert document["exc"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: the handler broke" in document["exc"]


def test_a_json_line_survives_fields_json_cannot_hold() -> None:
    document = json.loads(JsonFormatter().format(record("odd", extra={"task_id": object()})))
    assert document["task_id"].startswith("<object object")
    assert json.loads(JsonFormatter().format(record("ünïcode ✓")))["message"] == "ünïcode ✓"


def test_text_puts_the_task_id_first_and_the_traceback_below() -> None:
    text = TextFormatter().format(record("%s failed", "math", extra=TASK, exc_info=True))
    first, *rest = text.splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING callboard.test: "
        r"\[task 01J0TASK\] math failed",
        first,
    )
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: the handler broke"


def test_text_without_a_task_is_as_it_always_was() -> None:
    text = TextFormatter().format(record("agent math-1 serving math", level=logging.INFO))
    assert text.endswith(" INFO callboard.test: agent math-1 serving math")


def test_the_flag_wins_then_the_environment_then_text() -> None:
    assert resolve_log_format("text", {LOG_FORMAT_ENV: "json"}) == "text"
    assert resolve_log_format(None, {LOG_FORMAT_ENV: " JSON "}) == "json"
    assert resolve_log_format(None, {LOG_FORMAT_ENV: ""}) == "text"
    assert resolve_log_format(None, {}) == "text"
    with pytest.raises(ConfigError, match=f"{LOG_FORMAT_ENV}='xml'.*text or json"):
        resolve_log_format(None, {LOG_FORMAT_ENV: "xml"})


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, restored (handlers and level) after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_configure_logging_replaces_its_own_handler_and_keeps_the_level(
    root_logger: logging.Logger,
) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(logging.INFO, "text", stream=first)
    configure_logging(logging.INFO, "json", stream=second)
    task_logger("math-1", "01J0TASK", "math").warning("lost its reply")
    logging.getLogger("callboard.test").debug("below the level")
    assert first.getvalue() == ""
    lines = second.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert json.loads(lines[0])["message"] == "lost its reply"
    assert json.loads(lines[0])["task_id"] == "01J0TASK"
    with pytest.raises(ConfigError, match="unknown log format"):
        configure_logging(logging.INFO, "xml")


def test_announced_lines_are_plain_in_text_and_records_in_json() -> None:
    out = io.StringIO()
    Announcer("text", stream=out)("callboard daemon ready: 1 agent(s): a")
    Announcer("json", logger="callboard.daemon", stream=out)(
        "callboard daemon ready: 1 agent(s): a"
    )
    plain, line = out.getvalue().splitlines()
    assert plain == "callboard daemon ready: 1 agent(s): a"
    assert "callboard daemon ready: 1 agent(s): a" in line
    document = json.loads(line)
    assert (document["logger"], document["level"]) == ("callboard.daemon", "info")


@pytest.mark.parametrize(
    ("code", "reason", "level"),
    [
        (500, "", logging.WARNING),  # the agent's own failure
        (503, "draining", logging.WARNING),  # cut short by a shutdown or reload
        (499, "cancelled by the caller", logging.INFO),
        (400, "", None),  # the caller's mistake: its reply says so
        (408, "", None),
    ],
)
def test_a_task_outcome_is_logged_only_when_it_is_news(
    caplog: pytest.LogCaptureFixture, code: int, reason: str, level: int | None
) -> None:
    caplog.set_level(logging.DEBUG, logger="callboard.agent")
    error = ErrorInfo(code=code, type="x", message="it went wrong")
    log_outcome("math-1", "01J0TASK", "math", error, reason)
    if level is None:
        assert caplog.records == []
        return
    (logged,) = caplog.records
    assert logged.levelno == level
    fields = {name: logged.__dict__[name] for name in ("task_id", "agent", "capability")}
    assert fields == {"task_id": "01J0TASK", "agent": "math-1", "capability": "math"}
    assert str(code) in logged.getMessage() and "it went wrong" in logged.getMessage()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_warning_is_said_once_a_window_with_a_count() -> None:
    clock = FakeClock()
    repeats = RepeatFilter(window=30.0, clock=clock)
    refused = "NATS connection error: %s"

    def passes(message: str = refused, *args: object) -> bool:
        return repeats.filter(record(message, *args or ("Connect call failed",)))

    assert passes()  # the first, at once
    for _ in range(39):  # an outage: a refused reconnect every 0.75 s, for 29.25 s
        clock.now += 0.75
        assert not passes()
    clock.now = 130.0  # a window after the first: said again, with the count
    said = record(refused, "Connect call failed")
    assert repeats.filter(said)
    assert said.getMessage() == (
        "NATS connection error: Connect call failed (39 more like this in the last 30s)"
    )
    clock.now += 0.75
    assert not passes()
    assert passes(refused, "another server refused")  # another text is another record
    assert repeats.filter(record("task %s failed", level=logging.INFO))  # below WARNING


def test_the_handler_holds_back_repeats_and_asyncios_tls_eof_warning() -> None:
    stream = io.StringIO()
    configure_logging(logging.INFO, "text", stream=stream)
    try:
        for _ in range(5):
            logging.getLogger("callboard.bus").warning("disconnected: %s", "refused")
        logging.getLogger("asyncio").warning(
            "returning true from eof_received() has no effect when using ssl"
        )
    finally:
        configure_logging(logging.WARNING, "text")
    assert stream.getvalue().count("disconnected: refused") == 1
    assert "eof_received" not in stream.getvalue()


def test_a_burst_ends_when_its_logger_says_something_else() -> None:
    clock = FakeClock()
    repeats = RepeatFilter(window=30.0, clock=clock)
    disconnected = record("disconnected from NATS (%s); reconnecting", "nats://a:4222")
    assert repeats.filter(disconnected)
    assert repeats.filter(record("NATS connection error: %s", "refused"))
    assert not repeats.filter(record("NATS connection error: %s", "refused"))
    assert repeats.filter(record("reconnected to NATS at %s", "nats://a:4222"))
    clock.now += 1.0  # a second outage, at once: said again, all of it
    assert repeats.filter(record("disconnected from NATS (%s); reconnecting", "nats://a:4222"))
    assert repeats.filter(record("NATS connection error: %s", "refused"))


def test_the_repeat_window_comes_from_the_environment() -> None:
    assert resolve_repeat_window({}) == REPEAT_WINDOW
    assert resolve_repeat_window({REPEAT_WINDOW_ENV: "0"}) == 0.0
    assert resolve_repeat_window({REPEAT_WINDOW_ENV: " 5.5 "}) == 5.5
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(ConfigError, match=REPEAT_WINDOW_ENV):
            resolve_repeat_window({REPEAT_WINDOW_ENV: bad})
    every = RepeatFilter(window=0.0)
    assert all(every.filter(record("refused %s", "again")) for _ in range(3))
