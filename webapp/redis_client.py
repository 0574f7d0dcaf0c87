"""One Redis connection pool per process, shared by publishing, limits and locks."""
from __future__ import annotations

import redis
from flask import Flask, current_app

KEY_PREFIX = "esc:"


def init_redis(app: Flask) -> None:
    app.extensions["redis"] = redis.Redis.from_url(
        app.config["REDIS_URL"], socket_timeout=2.0, socket_connect_timeout=1.0,
        health_check_interval=30, max_connections=app.config.get("REDIS_MAX_CONNECTIONS", 200))


def get_redis(app: Flask | None = None) -> redis.Redis:
    return (app or current_app).extensions["redis"]


def key(*parts: object) -> str:
    """A namespaced Redis key, so the app's keys never collide with the broker's."""
    return KEY_PREFIX + ":".join(str(part) for part in parts)
