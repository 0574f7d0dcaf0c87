"""Liveness and readiness for operators and orchestrators."""
from flask import Blueprint, jsonify
from redis import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from webapp.extensions import db
from webapp.redis_client import get_redis

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    down = []
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        down.append("postgres")
    finally:
        db.session.remove()
    try:
        get_redis().ping()
    except RedisError:
        down.append("redis")
    if down:
        response = jsonify({"error": {"code": "unavailable",
                                      "message": f"{' and '.join(down)} unavailable",
                                      "details": {"down": down}}})
        response.status_code = 503
        return response
    return jsonify({"status": "ready", "postgres": "ok", "redis": "ok"})
