"""Password hashing with Argon2, bounded per process so a flood of logins cannot take every
core; shared by the login view and the account services."""
from __future__ import annotations

import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

from webapp.services.errors import Busy


def _hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=current_app.config["PASSWORD_HASH_TIME_COST"],
                          memory_cost=current_app.config["PASSWORD_HASH_MEMORY_KIB"])


def _off_the_hub(fn, *args):
    """Argon2 takes a fifth of a second of CPU. Under gunicorn's gevent workers it runs in the
    hub's thread pool (argon2-cffi releases the GIL), so live streams and other requests in
    the process keep moving meanwhile."""
    try:
        from gevent import get_hub, monkey
    except ImportError:
        return fn(*args)
    if monkey.is_module_patched("socket"):
        return get_hub().threadpool.apply(fn, args)
    return fn(*args)


_checks_lock = threading.Lock()
_checks: dict[int, threading.BoundedSemaphore] = {}


def password_checks() -> threading.BoundedSemaphore:
    """The process's bound on concurrent Argon2 runs (PASSWORD_CHECKS_CONCURRENT): a flood of
    logins queues here for a moment instead of taking every core from everything else."""
    size = current_app.config["PASSWORD_CHECKS_CONCURRENT"]
    with _checks_lock:
        if size not in _checks:
            _checks[size] = threading.BoundedSemaphore(size)
        return _checks[size]


def _bounded(fn, *args):
    checks = password_checks()
    if not checks.acquire(timeout=current_app.config["PASSWORD_CHECK_WAIT_SECONDS"]):
        raise Busy("too many logins at once; try again in a moment", retry_after=1)
    try:
        return _off_the_hub(fn, *args)
    finally:
        checks.release()


def hash_password(password: str) -> str:
    return _bounded(_hasher().hash, password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _bounded(_hasher().verify, password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH: dict[tuple, str] = {}


def spend_verify_time(password: str) -> None:
    """Verify against a throwaway hash so unknown emails take as long as known ones."""
    key = (current_app.config["PASSWORD_HASH_TIME_COST"],
           current_app.config["PASSWORD_HASH_MEMORY_KIB"])
    if key not in _DUMMY_HASH:
        _DUMMY_HASH[key] = hash_password(secrets.token_urlsafe(16))
    verify_password(_DUMMY_HASH[key], password)
