"""Bearer tokens, password hashing and the role checks views declare."""
from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, g, request

from webapp.errors import ApiError
from webapp.extensions import db
from webapp.models import ApiToken, User
from webapp.models.base import utcnow

# Paths under /api/v1 that answer without a token
PUBLIC_ENDPOINTS = {"auth.login", "api-docs.openapi_json"}


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
        error = ApiError(429, "rate_limited", "too many logins at once; try again in a moment",
                         {"retry_after": 1})
        error.headers = {"Retry-After": "1"}
        raise error
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


def token_digest(token: str) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def issue_token(user: User) -> tuple[str, int]:
    """Create a token for the user; only its keyed hash is stored. Returns (token, ttl)."""
    ttl = current_app.config["TOKEN_TTL_SECONDS"]
    token = secrets.token_urlsafe(32)
    db.session.add(ApiToken(user_id=user.id, token_hash=token_digest(token),
                            expires_at=utcnow() + timedelta(seconds=ttl)))
    return token, ttl


def user_for_token(token: str) -> tuple[User, ApiToken] | None:
    row = db.session.execute(
        db.select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(
            ApiToken.token_hash == token_digest(token),
            ApiToken.revoked_at.is_(None),
            ApiToken.expires_at > utcnow(),
            User.deleted_at.is_(None),
        )).first()
    return (row.User, row.ApiToken) if row else None


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate_request() -> None:
    """before_request for /api/v1: every path but login and the OpenAPI document needs a token."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return
    if not request.path.startswith("/api/v1"):
        return
    token = bearer_token()
    found = user_for_token(token) if token else None
    if found is None:
        raise ApiError(401, "unauthorized",
                       "missing bearer token" if not token else "invalid or expired token")
    g.user, g.token = found


def current_user() -> User:
    return g.user


def _require(check: Callable[[User], bool], message: str):
    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if not check(current_user()):
                raise ApiError(403, "forbidden", message)
            return view(*args, **kwargs)
        return wrapper
    return decorator


require_senior = _require(lambda user: user.is_senior, "requires an engineer, admin or owner")
require_admin = _require(lambda user: user.is_admin, "requires an admin or owner")
