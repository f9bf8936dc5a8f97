"""Structured logs: one JSON object per line in the data directory's ``runas.log``.

What is logged is chosen field by field (command, outcome, error kind and message, actor,
duration); request bodies and secrets are never passed to the logger, and error messages
are written to name problems without echoing secret values.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

LOGGER = "runas"


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # One record may go to several destinations: format it once.
        cached = record.__dict__.get("_runas_json")
        if isinstance(cached, str):
            return cached
        text = self._format(record)
        record.__dict__["_runas_json"] = text
        return text

    def _format(self, record: logging.LogRecord) -> str:
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


#: how long the log thread lets lines gather before writing them
BATCH_WAIT_S = 0.05


class BackgroundLog(logging.Handler):
    """Hands records to a thread that formats each one once and writes them, in batches, to
    every stream it was given.

    For the server: a request must not wait for its access-log line to be formatted twice
    and written and flushed to two destinations (that cost more than answering a cached
    question). Lines keep their order; :meth:`close` writes everything still queued."""

    def __init__(self, streams: list[TextIO], *, owned: list[TextIO] | None = None) -> None:
        super().__init__()
        self.setFormatter(JsonLines())
        self._streams = streams
        self._owned = owned or []
        self._queue: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="runas-log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        self._queue.put(record)

    def _run(self) -> None:
        done = False
        while not done:
            batch = [self._queue.get()]
            # Let lines gather instead of waking for each one: every wake-up of this thread
            # takes the GIL from the event loop that is answering requests.
            if batch[0] is not None:
                time.sleep(BATCH_WAIT_S)
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines: list[str] = []
            for record in batch:
                if record is None:
                    done = True
                    continue
                try:
                    lines.append(self.format(record) + "\n")
                except Exception:  # a record that cannot be formatted must not stop logging
                    self.handleError(record)
            text = "".join(lines)
            for stream in self._streams:
                try:
                    stream.write(text)
                    stream.flush()
                except (OSError, ValueError):
                    pass  # a closed or full destination: the others still get the lines

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)
        for stream in self._owned:
            stream.close()
        super().close()


def open_log_file(path: Path) -> TextIO:
    """``path`` opened for appending, created 0600 (logs name users and computers)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")
