"""One logging setup for web, worker and beat: JSON lines (python-json-logger) by default, plain
text with LOG_FORMAT=text. Every line carries the request id of the request it belongs to (or
that caused the task it belongs to), and the handoff, delivery and channel it is about.

The ids travel in context variables: a request sets its id (API.md: X-Request-ID, accepted or
made, echoed); a task published meanwhile carries it in a message header; the worker sets it
again before the task runs, so the tasks that task enqueues carry it too. Context variables are
per thread and per greenlet, so the worker's threads and gunicorn's gevent requests keep theirs
apart.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import secrets
import sys
from collections.abc import Iterator

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
TASK_HEADER = "request_id"               # the Celery message header carrying it
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
FIELDS = ("request_id", "handoff_id", "delivery_id", "channel")

_context: dict[str, contextvars.ContextVar] = {
    name: contextvars.ContextVar(f"log_{name}", default=None) for name in FIELDS}


def current(name: str):
    return _context[name].get()


def new_request_id() -> str:
    return secrets.token_hex(16)


def accepted_request_id(value: str | None) -> str:
    """The caller's id when it is one API.md allows, else a new one."""
    if value and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


@contextlib.contextmanager
def bound(**values) -> Iterator[None]:
    """Lines logged inside carry these fields (None values are left as they were)."""
    tokens = [(_context[name], _context[name].set(value))
              for name, value in values.items() if value is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bind(**values) -> None:
    """Set fields for the rest of this context (a request, a task run)."""
    for name, value in values.items():
        _context[name].set(value)


def clear() -> None:
    for var in _context.values():
        var.set(None)


class ContextFilter(logging.Filter):
    """Puts the context's ids on every record, whichever logger made it."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _context.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class TextFormatter(logging.Formatter):
    """For a terminal: the usual line, with whichever ids are set at its end."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{name}={getattr(record, name)}" for name in FIELDS
                       if getattr(record, name, None) is not None)
        return f"{line} [{ids}]" if ids else line


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "text":
        return TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level",
                                        "name": "logger"},
                         timestamp=False)


def configure(log_format: str = "json", level: str = "INFO") -> None:
    """The root logger writes one line per record to stderr in `log_format`; idempotent (the
    test process and a worker build several apps)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_escalations", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._escalations = True
        handler.addFilter(ContextFilter())
        # a handler somebody added before us (logging.basicConfig) would print every line twice
        for other in list(root.handlers):
            root.removeHandler(other)
        root.addHandler(handler)
    handler.setFormatter(formatter(log_format))
    root.setLevel(level)
    logging.captureWarnings(True)   # warnings too, as lines of the same shape
    sys.excepthook = log_uncaught   # and an exception nothing caught (beat stopped mid-send)


def log_uncaught(kind, error, traceback) -> None:
    """An exception that ends the process, as one log line rather than a bare traceback."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("escalations").critical("uncaught %s: %s", kind.__name__, error,
                                              exc_info=(kind, error, traceback))


def gunicorn_logconfig(log_format: str, level: str = "INFO") -> dict:
    """gunicorn's own error and access logs through the same formatter."""
    fmt = {"()": "webapp.logs.formatter", "log_format": log_format}
    handler = {"class": "logging.StreamHandler", "formatter": "escalations",
               "filters": ["context"], "stream": "ext://sys.stderr"}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"escalations": fmt},
        "filters": {"context": {"()": "webapp.logs.ContextFilter"}},
        "handlers": {"console": handler},
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {"gunicorn.error": {"level": level, "handlers": ["console"],
                                       "propagate": False},
                    "gunicorn.access": {"level": level, "handlers": ["console"],
                                        "propagate": False}},
    }


def init_app(app) -> None:
    """Request ids on the web side; the Celery side is connect_celery."""
    from flask import g, request

    configure(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])

    @app.before_request
    def _request_id():
        g.request_id = accepted_request_id(request.headers.get(REQUEST_ID_HEADER))
        clear()
        bind(request_id=g.request_id)

    @app.after_request
    def _echo_request_id(response):
        response.headers[REQUEST_ID_HEADER] = g.get("request_id") or current("request_id") \
            or new_request_id()
        return response


def connect_celery() -> None:
    """The request id rides along with every task published, and is set again around every
    task run (with nothing left over from the thread's previous task)."""
    from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

    @setup_logging.connect(weak=False, dispatch_uid="escalations.logs.setup")
    def _keep_our_logging(**_kwargs):
        # connected, so Celery's worker and beat leave the root logger as configure() set it
        return None

    @before_task_publish.connect(weak=False, dispatch_uid="escalations.logs.publish")
    def _carry_request_id(headers=None, **_kwargs):
        request_id = current("request_id")
        if headers is not None and request_id and TASK_HEADER not in headers:
            headers[TASK_HEADER] = request_id

    @task_prerun.connect(weak=False, dispatch_uid="escalations.logs.prerun")
    def _bind_task(task=None, **_kwargs):
        clear()
        request_id = task.request.get(TASK_HEADER) if task is not None else None
        bind(request_id=request_id or new_request_id())

    @task_postrun.connect(weak=False, dispatch_uid="escalations.logs.postrun")
    def _unbind_task(**_kwargs):
        clear()
