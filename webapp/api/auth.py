"""Login, logout and the caller's own profile."""
from flask import current_app, g, request
from flask_smorest import Blueprint
from marshmallow import Schema
from redis import RedisError

from webapp import auth
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


def _check_login_rate(email: str) -> None:
    """Count attempts per email and address in Redis; without Redis, logins still work."""
    limit = current_app.config["LOGIN_RATE_LIMIT"]
    window = current_app.config["LOGIN_RATE_WINDOW"]
    counter = key("login", email.lower(), request.remote_addr or "-")
    try:
        r = get_redis()
        attempts = r.incr(counter)
        if attempts == 1:
            r.expire(counter, window)
    except RedisError:
        return
    if attempts > limit:
        raise ApiError(429, "rate_limited", "too many login attempts; try again later",
                       {"retry_after": window})


@bp.post("/auth/login")
@bp.arguments(LoginSchema)
@bp.response(200, TokenSchema)
def login(body):
    _check_login_rate(body["email"])
    user = db.session.execute(db.select(User).where(
        db.func.lower(User.email) == body["email"].strip().lower(),
        User.deleted_at.is_(None))).scalar_one_or_none()
    if user is None:
        auth.spend_verify_time(body["password"])
        raise ApiError(401, "unauthorized", "invalid email or password")
    if not auth.verify_password(user.password_hash, body["password"]):
        raise ApiError(401, "unauthorized", "invalid email or password")
    token, ttl = auth.issue_token(user)
    db.session.commit()
    return {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "user": user}


@bp.post("/auth/logout")
@bp.response(204)
def logout():
    g.token.revoked_at = utcnow()
    db.session.commit()
    return ""


@bp.get("/me")
@bp.response(200, UserSchema)
def me():
    return auth.current_user()
