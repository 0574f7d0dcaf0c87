"""The hot paths' statements, compiled once and sent as SQL text on the session's connection.

For a statement built once, SQLAlchemy still does per-execution work in Python: it walks the
statement for its cache key, builds its parameters, renders an expanding IN anew, and sets up
an ORM execution. On this machine that cost about twice the CPU of the round trip itself
(an UPDATE ... RETURNING of five rows and its commit: 1.5-2.1 ms through `Session.execute`,
0.8-1.2 ms as driver SQL, 0.6-0.8 ms on the bare cursor). `Connection.exec_driver_sql` keeps
what matters of SQLAlchemy: the session's transaction, its errors (a dropped connection is an
OperationalError and invalidates the pool) and its events."""
from __future__ import annotations

import threading

from sqlalchemy.engine import CursorResult
from sqlalchemy.sql import ClauseElement

from webapp.extensions import db


class Prepared:
    """A Core statement, compiled for the engine's dialect at its first run. Its rows are
    read by column name, as a Core statement's are; values come as the driver gives them
    (psycopg2 reads JSON and timestamps itself, as SQLAlchemy leaves it to). An IN over a
    list must be written `= ANY(array)`: an expanding IN is rendered anew for every run."""

    def __init__(self, statement: ClauseElement):
        self.statement = statement
        self._sql: str | None = None
        self._defaults: dict = {}
        self._processors: dict = {}
        self._lock = threading.Lock()

    def _compile(self) -> None:
        dialect = db.engine.dialect
        compiled = self.statement.compile(dialect=dialect)
        names = compiled.bind_names   # {bind: its name in the SQL}
        if any(bind.expanding for bind in names):
            raise ValueError("an IN over a list is rendered per run: write = ANY(array)")
        processors = {}
        for bind, name in names.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
        required = {name for bind, name in names.items() if bind.required}
        # the statement's own values (literals, constants), as the driver takes them
        self._defaults = {
            name: processors[name](value) if name in processors and value is not None
            else value
            for name, value in compiled.params.items() if name not in required}
        self._processors = {name: processors[name] for name in required if name in processors}
        self._sql = str(compiled)

    def run(self, params: dict) -> CursorResult:
        """Execute in the session's transaction (begun if need be)."""
        if self._sql is None:
            with self._lock:
                if self._sql is None:
                    self._compile()
        values = {**self._defaults, **params}
        for name, processor in self._processors.items():
            if values.get(name) is not None:
                values[name] = processor(values[name])
        return db.session.connection().exec_driver_sql(self._sql, values)
