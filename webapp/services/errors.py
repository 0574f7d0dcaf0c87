"""What the domain refuses, in its own words: services raise these, and webapp/errors.py
answers each in the API's one error shape. Nothing here knows about HTTP."""
from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal with a stable machine-readable code, a message and optional details."""

    code = "error"

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message, self.details = message, details


class NotFound(DomainError):
    """No such object, or it belongs to another account (never reveal other tenants)."""

    code = "not_found"

    def __init__(self, what: str = "resource"):
        super().__init__(f"{what} not found")


class Forbidden(DomainError):
    """The caller's role or relation to the object does not allow this."""

    code = "forbidden"


class Conflict(DomainError):
    """The object's state does not allow this now."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message, details)
        self.code = code


class Invalid(DomainError):
    """The input is not acceptable."""

    code = "validation_error"


class Busy(DomainError):
    """Too much of this is going on at once; the caller may try again after `retry_after`."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message, {"retry_after": retry_after})
        self.retry_after = retry_after
