"""Login, logout and the caller's own profile."""
from flask import current_app, g, request
from marshmallow import Schema
from redis import RedisError

from webapp import auth, live
from webapp.api.bodies import Blueprint
from webapp.api.schemas import StrictSchema, UserSchema, fields, validate
from webapp.errors import ApiError
from webapp.extensions import db
from webapp.models import User
from webapp.models.base import utcnow
from webapp.redis_client import get_redis, key

bp = Blueprint("auth", __name__, description="Authentication")


class LoginSchema(StrictSchema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=320))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))


class TokenSchema(Schema):
    access_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    user = fields.Nested(UserSchema)


def _failures_key(email: str) -> str:
    return key("login-failures", email.strip().lower(), request.remote_addr or "-")


def _refuse_if_rate_limited(email: str) -> None:
    """Too many failed logins for this email from this address: 429 until the window ends.
    Without Redis, logins still work."""
    try:
        failures = int(get_redis().get(_failures_key(email)) or 0)
    except RedisError:
        return
    if failures >= current_app.config["LOGIN_RATE_LIMIT"]:
        window = current_app.config["LOGIN_RATE_WINDOW"]
        error = ApiError(429, "rate_limited", "too many failed logins; try again later",
                         {"retry_after": window})
        error.headers = {"Retry-After": str(window)}
        raise error


def _count_failure(email: str) -> None:
    try:
        r = get_redis()
        if r.incr(_failures_key(email)) == 1:
            r.expire(_failures_key(email), current_app.config["LOGIN_RATE_WINDOW"])
    except RedisError:
        pass


@bp.post("/auth/login")
@bp.arguments(LoginSchema)
@bp.response(200, TokenSchema)
def login(body):
    _refuse_if_rate_limited(body["email"])
    user = db.session.execute(db.select(User).where(
        db.func.lower(User.email) == body["email"].strip().lower(),
        User.deleted_at.is_(None))).scalar_one_or_none()
    if user is None:
        auth.spend_verify_time(body["password"])
    if user is None or not auth.verify_password(user.password_hash, body["password"]):
        _count_failure(body["email"])
        raise ApiError(401, "unauthorized", "invalid email or password")
    token, ttl = auth.issue_token(user)
    db.session.commit()
    return {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "user": user}


@bp.post("/auth/logout")
@bp.response(204)
def logout():
    g.token.revoked_at = utcnow()
    db.session.commit()
    live.announce_access_change(auth.current_user().account_id)
    return ""


@bp.get("/me")
@bp.response(200, UserSchema)
def me():
    return auth.current_user()
