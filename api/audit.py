"""Audit logs modelled on the DSS API node's loggers: JSON lines through Python logging, no secrets.

Loggers: `hindsight.audit.auth` (every authentication or scope failure), `hindsight.audit.admin`
(key changes), `hindsight.audit.outcomes` (what was written, by which key) and
`hindsight.audit.calls` (every call, when enabled). By default each writes JSON lines to
`<logs_dir>/audit-<name>.log`; a `logging.config.dictConfig` JSON file replaces those handlers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import logging.config
import logging.handlers
import queue
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from service.errors import ConfigError

AUDIT_LOGGERS = ("auth", "admin", "outcomes", "calls")

auth_log = logging.getLogger("hindsight.audit.auth")
admin_log = logging.getLogger("hindsight.audit.admin")
outcomes_log = logging.getLogger("hindsight.audit.outcomes")
calls_log = logging.getLogger("hindsight.audit.calls")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, logger, event and the record's `audit` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="microseconds"),
            "logger": record.name,
            "level": record.levelname,
            "event": record.getMessage(),
        }
        entry.update(getattr(record, "audit", {}))
        return orjson.dumps(entry, default=str).decode()


_Queued = logging.LogRecord | tuple[str, str, dict[str, Any], float]
"""A queued audit line: a record, or (logger name, event, fields, time) made into one by the writer."""

_direct: dict[str, queue.SimpleQueue[_Queued]] = {}
"""The default handlers' queues by logger name: audit() puts a tuple there, skipping the LogRecord."""


def audit(logger: logging.Logger, event: str, **fields: Any) -> None:
    """Write one audit line (fields must never hold a secret)."""
    if logger.isEnabledFor(logging.INFO):
        records = _direct.get(logger.name)
        if records is not None:  # the default handlers: the writer thread builds the record
            records.put((logger.name, event, fields, time.time()))
        else:
            logger.info(event, extra={"audit": fields})


def _as_record(item: _Queued) -> logging.LogRecord:
    if isinstance(item, logging.LogRecord):
        return item
    name, event, fields, created = item
    record = logging.LogRecord(name, logging.INFO, __file__, 0, event, None, None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.audit = fields
    return record


class _BatchingListener(logging.handlers.QueueListener):
    """A QueueListener that wakes every DRAIN_INTERVAL and writes all waiting lines at once.

    The stock listener wakes for every record; each wake-up competes with the request loop for the
    GIL (measured: the audit line then cost a third of the single-outcome request rate). Lines of the
    last DRAIN_INTERVAL can be lost if the process is killed -9; stop() writes everything out.
    """

    DRAIN_INTERVAL = 0.05

    def start(self) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._drain_loop, name="hindsight-audit-writer", daemon=True)
        self._thread.start()

    def _drain_loop(self) -> None:
        while not self._stopping.wait(self.DRAIN_INTERVAL):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        assert isinstance(self.queue, queue.SimpleQueue)
        records: list[logging.LogRecord] = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            records.append(_as_record(item))
        if records:
            for handler in self.handlers:
                self._write(handler, records)

    @staticmethod
    def _write(handler: logging.Handler, records: list[logging.LogRecord]) -> None:
        # One write and one flush per drain: FileHandler.emit flushes after every line, and each of
        # those syscalls hands the GIL back and forth with the request loop.
        stream = getattr(handler, "stream", None)
        if not isinstance(handler, logging.FileHandler) or stream is None or handler.filters:
            for record in records:
                handler.handle(record)
            handler.flush()
            return
        try:
            text = "".join([handler.format(record) + handler.terminator for record in records])
        except Exception:  # a line that cannot be formatted: let logging report it line by line
            for record in records:
                handler.handle(record)
            return
        with handler.lock or contextlib.nullcontext():
            try:
                stream.write(text)
                stream.flush()
            except OSError:
                handler.handleError(records[0])

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None


class _PassThroughQueueHandler(logging.handlers.QueueHandler):
    """Queues the record as is: the JSON formatting happens on the writer thread, not per request.

    The stock `prepare()` formats and copies every record on the caller's thread; audit records
    carry their data in `record.audit` and no lazy args or exception, so nothing needs freezing.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


_listeners: list[logging.handlers.QueueListener] = []


def _reset(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def configure_audit(logs_dir: Path, *, config_file: Path | None = None) -> None:
    """Attach the audit handlers: the dictConfig in `config_file`, else JSON files under `logs_dir`."""
    close_audit()
    if config_file is not None:
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
            config.setdefault("version", 1)
            config.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(config)
        except (OSError, ValueError, TypeError, AttributeError, ImportError) as exc:
            raise ConfigError(f"cannot apply logging config {config_file}: {exc}") from exc
        return
    try:
        logs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the audit log folder {logs_dir}: {exc.strerror}") from exc
    for name in AUDIT_LOGGERS:
        logger = logging.getLogger(f"hindsight.audit.{name}")
        try:
            handler = logging.FileHandler(logs_dir / f"audit-{name}.log", encoding="utf-8")
        except OSError as exc:  # a read-only root: one clear line, not a traceback from the server's start-up
            close_audit()
            raise ConfigError(
                f"cannot open the audit log {logs_dir / f'audit-{name}.log'}: {exc.strerror}"
            ) from exc
        handler.setFormatter(JsonFormatter())
        # A queue keeps file writes off the request path: the listener thread writes the lines.
        records: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        listener = _BatchingListener(records, handler)
        listener.start()
        _listeners.append(listener)
        logger.addHandler(_PassThroughQueueHandler(records))  # for logger.info() calls other than audit()
        _direct[logger.name] = records
        logger.setLevel(logging.INFO)
        logger.propagate = False  # audit lines go to their files, not to the operational stderr log


def close_audit() -> None:
    """Write out queued lines and close the audit handlers (at shutdown)."""
    _direct.clear()
    while _listeners:
        listener = _listeners.pop()
        listener.stop()  # drains the queue first
        for handler in listener.handlers:
            handler.close()
    for name in AUDIT_LOGGERS:
        _reset(logging.getLogger(f"hindsight.audit.{name}"))
