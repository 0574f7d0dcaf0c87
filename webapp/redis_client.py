"""One Redis connection pool per process, shared by publishing, limits and locks."""
from __future__ import annotations

import redis
from flask import Flask, current_app
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

KEY_PREFIX = "esc:"


def init_redis(app: Flask) -> None:
    # one quick retry: a Redis that is down must not hold up the request that publishes
    app.extensions["redis"] = redis.Redis.from_url(
        app.config["REDIS_URL"], socket_timeout=2.0, socket_connect_timeout=1.0,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 1),
        health_check_interval=30, max_connections=app.config.get("REDIS_MAX_CONNECTIONS", 200))


def get_redis(app: Flask | None = None) -> redis.Redis:
    return (app or current_app).extensions["redis"]


def key(*parts: object) -> str:
    """A namespaced Redis key, so the app's keys never collide with the broker's."""
    return KEY_PREFIX + ":".join(str(part) for part in parts)
