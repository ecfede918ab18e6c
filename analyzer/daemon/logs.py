"""The daemon's log: levels, and text or JSON lines on stderr.

At INFO (the default) the engine writes one line per decision that changes something (a step,
a pause, a rollback, a router refusal) and the scheduler one per ownership change; a tick that
only holds is logged at DEBUG. APScheduler logs "Running job" and "executed successfully" at
INFO for every job, every few seconds even with no rollout: its loggers are held at WARNING
unless the level asked for is DEBUG. `json` writes one object per line (`time`, `level`,
`logger`, `message`, and `error` with the traceback text when there is one) for log pipelines.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: third-party loggers that talk at INFO about every job or request
QUIET_LOGGERS = ("apscheduler",)


class JsonLines(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to whatever `sys.stderr` is at that moment: a handler that kept the
    stream of its creation would write to a stream a redirect (or a test's CLI runner) has
    since closed, and every later log line would become a "Logging error" traceback."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass  # StreamHandler.__init__ and setStream assign it; the current stderr wins


def configure(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Set up the root logger for the daemon. Raises ValueError naming the bad value."""
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"--log-level {level!r}: expected one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"--log-format {fmt!r}: expected one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream) if stream is not None else CurrentStderr()
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name)
    for quiet in QUIET_LOGGERS:
        logging.getLogger(quiet).setLevel(logging.DEBUG if name == "DEBUG" else logging.WARNING)


__all__ = ["FORMATS", "LEVELS", "CurrentStderr", "JsonLines", "configure"]
