"""Structured logs: one JSON object per line in the data directory's ``runas.log``.

What is logged is chosen field by field (command, outcome, error kind and message, actor,
duration); request bodies and secrets are never passed to the logger, and error messages
are written to name problems without echoing secret values.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOGGER = "runas"


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            doc.update(extra)
        if record.exc_info and record.exc_info[0] is not None:
            doc["exception"] = record.exc_info[0].__name__
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_file_logging(path: Path) -> logging.Handler | None:
    """Attach a JSON-lines handler for ``path`` if its directory exists (before ``init`` there
    is nowhere to log, and creating directories as a side effect of logging would surprise)."""
    if not path.parent.is_dir():
        return None
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.close(fd)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonLines())
    logger.addHandler(handler)
    return handler


def detach(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger(LOGGER).removeHandler(handler)
        handler.close()


def event(name: str, **fields: Any) -> None:
    logging.getLogger(LOGGER).info(name, extra={"fields": fields})
