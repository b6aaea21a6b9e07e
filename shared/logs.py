"""Structured logging: one JSON object a line, with the fields a caller passes.

    log.info("command", extra={"fields": {"type": "AddTarget", "ms": 1.2}})

prints {"level": "info", "logger": "...", "msg": "command", "type": "AddTarget", "ms": 1.2}.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    # The lines carry none of these: skip what logging would work out for each record
    # (finding the caller walks the stack), one line being logged per command.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aio-pika and aiormq log every reconnect attempt at INFO with a traceback.
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
