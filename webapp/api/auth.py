"""Login, logout and the caller's own profile."""
import hashlib

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
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, validate=validate.OneOf(("Bearer",)))
    expires_in = fields.Integer(required=True)
    user = fields.Nested(UserSchema, required=True)


# Count one attempt on each budget, each key getting its window when it is new; returns
# [count, seconds left] per key. One script, so concurrent attempts cannot slip between an
# INCR and its EXPIRE, nor between the count and the check.
_COUNT_ATTEMPT = """
local out = {}
for i, name in ipairs(KEYS) do
  local count = redis.call('INCR', name)
  local left = redis.call('TTL', name)
  if left < 0 then
    redis.call('EXPIRE', name, ARGV[1])
    left = tonumber(ARGV[1])
  end
  out[#out + 1] = count
  out[#out + 1] = left
end
return out
"""


def _budgets(email: str) -> list[tuple[str, int]]:
    """Failure budgets for this attempt: per email, per address, and for all logins."""
    config = current_app.config
    email_digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return [(key("login", "email", email_digest), config["LOGIN_RATE_LIMIT"]),
            (key("login", "address", request.remote_addr or "-"),
             config["LOGIN_RATE_LIMIT_PER_ADDRESS"]),
            (key("login", "all"), config["LOGIN_RATE_LIMIT_TOTAL"])]


def _count_attempt(email: str) -> list[str]:
    """Count the attempt before the password is checked, and refuse it with 429 when any
    budget is spent; returns the keys, to give the attempt back if it succeeds. Without
    Redis, logins still work (unbudgeted)."""
    budgets = _budgets(email)
    names = [name for name, _limit in budgets]
    try:
        counted = get_redis().eval(_COUNT_ATTEMPT, len(names), *names,
                                   current_app.config["LOGIN_RATE_WINDOW"])
    except RedisError:
        return []
    waits = [int(counted[2 * i + 1]) for i, (_name, limit) in enumerate(budgets)
             if int(counted[2 * i]) > limit]
    if waits:
        wait = max(1, max(waits))
        error = ApiError(429, "rate_limited", "too many failed logins; try again later",
                         {"retry_after": wait})
        error.headers = {"Retry-After": str(wait)}
        raise error
    return names


def _give_back(names: list[str]) -> None:
    """A successful login was no failure: it spends no budget."""
    if not names:
        return
    try:
        pipe = get_redis().pipeline(transaction=False)
        for name in names:
            pipe.decr(name)
        pipe.execute()
    except RedisError:
        pass


@bp.post("/auth/login")
@bp.arguments(LoginSchema)
@bp.response(200, TokenSchema)
@bp.refuses(401, "`unauthorized`: invalid email or password")
@bp.refuses(429, "`rate_limited`: too many failed logins (per email, per address, in all), "
                 "or too many password checks at once; try again after `Retry-After`")
def login(body):
    counted = _count_attempt(body["email"])
    user = db.session.execute(db.select(User).where(
        db.func.lower(User.email) == body["email"].strip().lower(),
        User.deleted_at.is_(None))).scalar_one_or_none()
    if user is None:
        auth.spend_verify_time(body["password"])
    if user is None or not auth.verify_password(user.password_hash, body["password"]):
        raise ApiError(401, "unauthorized", "invalid email or password")
    _give_back(counted)
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
