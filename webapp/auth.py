"""Bearer tokens, password hashing and the role checks views declare."""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta

from flask import current_app, g, request
from sqlalchemy import DateTime, bindparam

from webapp import token_lookups
from webapp.errors import ApiError
from webapp.extensions import db
from webapp.models import ApiToken, User
from webapp.models.base import utcnow
from webapp.passwords import (  # noqa: F401  (the views' names for them)
    hash_password,
    password_checks,
    spend_verify_time,
    verify_password,
)

log = logging.getLogger(__name__)

# Paths under /api/v1 that answer without a token
PUBLIC_ENDPOINTS = {"auth.login", "api-docs.openapi_json"}


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
    row = db.session.execute(_TOKEN_AND_USER, {"digest": token_digest(token),
                                               "now": utcnow()}).first()
    return (row.User, row.ApiToken) if row else None


# built once, as every request asks it: building it anew cost more than running it
_TOKEN_AND_USER = db.select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(
    ApiToken.token_hash == bindparam("digest"), ApiToken.revoked_at.is_(None),
    ApiToken.expires_at > bindparam("now", type_=DateTime(timezone=True)),
    User.deleted_at.is_(None))


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
    if request.endpoint in token_lookups.ENDPOINTS:   # checked together with its neighbours
        caller = _caller_for_token(token) if token else None
        found = (caller, None) if caller is not None else None
    else:
        found = user_for_token(token) if token else None
    if found is None:
        raise ApiError(401, "unauthorized",
                       "missing bearer token" if not token else "invalid or expired token")
    g.user, g.token = found


def _caller_for_token(token: str) -> token_lookups.Caller | None:
    try:
        return token_lookups.lookups(current_app._get_current_object()).caller(
            token_digest(token))
    except token_lookups.Unavailable as error:
        log.warning("database unavailable: %s", error)
        raise ApiError(503, "unavailable", "database unavailable") from None


def current_user() -> User:
    """The caller: a User, or on token_lookups.ENDPOINTS a token_lookups.Caller."""
    return g.user


def _require(check: Callable[[User], bool], message: str):
    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if not check(current_user()):
                raise ApiError(403, "forbidden", message)
            return view(*args, **kwargs)
        wrapper.role_rule = message   # the OpenAPI document's 403 (webapp/api/openapi.py)
        return wrapper
    return decorator


require_senior = _require(lambda user: user.is_senior, "requires an engineer, admin or owner")
require_admin = _require(lambda user: user.is_admin, "requires an admin or owner")
