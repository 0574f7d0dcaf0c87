"""A Postgres advisory lock so each beat job runs once at a time, whatever runs beat."""
from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

from sqlalchemy import text

from webapp.extensions import db


def lock_id(name: str) -> int:
    return zlib.crc32(f"beat:{name}".encode())


@contextlib.contextmanager
def single_run(name: str) -> Iterator[bool]:
    """Yield True to the one holder of the job's lock, False to anyone else meanwhile."""
    connection = db.engine.connect()
    try:
        acquired = connection.execute(text("SELECT pg_try_advisory_lock(:id)"),
                                      {"id": lock_id(name)}).scalar()
        connection.commit()
        try:
            yield bool(acquired)
        finally:
            if acquired:
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id(name)})
                connection.commit()
    finally:
        connection.close()
