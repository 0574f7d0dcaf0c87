"""Shared column helpers."""
from datetime import UTC, datetime

from sqlalchemy import DateTime, func
from sqlalchemy.orm import mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def created_at_column():
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now(),
                         default=utcnow)


def sql_in(column: str, values: tuple[str, ...]) -> str:
    """Text of a CHECK constraint limiting a column to fixed values."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"
