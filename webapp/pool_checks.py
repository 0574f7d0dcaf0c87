"""A pooled database connection is pinged before use only when it sat idle in the pool.

SQLAlchemy's `pool_pre_ping` sends a `SELECT 1` on every checkout. A worker or a web process
under load checks a connection out several times per escalation, a few milliseconds after it
came back, and each ping cost about as much CPU as the statement it guarded. A connection that
was in use a moment ago is as good as the answer it just gave; one that has waited in the pool
longer than `idle_seconds` (Postgres may have restarted, a proxy dropped it) is pinged first,
and one that fails the ping is replaced before the caller sees it (SQLAlchemy's custom
pessimistic handling: the checkout event raises DisconnectionError and the pool reconnects).
A statement on a connection that died in between fails as a disconnect, and SQLAlchemy then
invalidates the whole pool, as it does without any ping."""
from __future__ import annotations

import time

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

_CHECKED_IN_AT = "checked_in_at"


def ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Ping a connection on checkout if it was idle in the pool for `idle_seconds` or more
    (0: on every checkout); a fresh connection is not pinged."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, proxy) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_seconds:
            return   # new, or in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            # the pool closes this one and connects anew (up to three times)
            raise DisconnectionError("the pooled connection failed its ping") from error
