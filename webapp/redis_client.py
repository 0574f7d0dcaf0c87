"""One Redis connection pool per process, shared by publishing, limits and locks; and a
quick-failing client for the calls a request makes after its commit."""
from __future__ import annotations

import time

import redis
from flask import Flask, current_app
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

KEY_PREFIX = "esc:"


def _client(url: str, app: Flask, wait: float, **kwargs) -> redis.Redis:
    """A client whose callers, when all REDIS_MAX_CONNECTIONS are in use, wait up to `wait`
    seconds for one to come back: a burst (2,000 streams opening after a deploy) queues for
    a moment instead of being answered "Too many connections" at once."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=app.config.get("REDIS_MAX_CONNECTIONS", 200), timeout=wait,
        **kwargs)
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def init_redis(app: Flask) -> None:
    # one quick retry: a Redis that is down must not hold up whoever calls it for long
    app.extensions["redis"] = _client(
        app.config["REDIS_URL"], app, 5.0, socket_timeout=2.0, socket_connect_timeout=1.0,
        retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 1), health_check_interval=30)
    app.extensions["redis_breakers"] = {}


def get_redis(app: Flask | None = None) -> redis.Redis:
    return (app or current_app).extensions["redis"]


def quick_client(url: str, app: Flask | None = None) -> redis.Redis:
    """A client for `url` that gives up after PUBLISH_TIMEOUT_SECONDS, with no retry: for
    courtesy calls (live events, enqueues) that must never hold up a request."""
    app = app or current_app
    clients = app.extensions.setdefault("redis_quick", {})
    if url not in clients:
        timeout = app.config["PUBLISH_TIMEOUT_SECONDS"]
        clients[url] = _client(url, app, timeout, socket_timeout=timeout,
                               socket_connect_timeout=timeout,
                               retry=Retry(ExponentialBackoff(), 0))
    return clients[url]


class Breaker:
    """After a failure, callers skip the server for `cooldown` seconds instead of each
    waiting out its timeout; the work they skip waits in its rows for beat."""

    def __init__(self, cooldown: float = 5.0):
        self.cooldown, self.open_until = cooldown, 0.0

    def allows(self) -> bool:
        return time.monotonic() >= self.open_until

    def trip(self) -> None:
        self.open_until = time.monotonic() + self.cooldown


def breaker(url: str, purpose: str, app: Flask | None = None) -> Breaker:
    """One breaker per server and purpose: a slow enqueue does not also silence live events
    on the same Redis."""
    breakers = (app or current_app).extensions.setdefault("redis_breakers", {})
    return breakers.setdefault((purpose, url), Breaker())


def key(*parts: object) -> str:
    """A namespaced Redis key, so the app's keys never collide with the broker's."""
    return KEY_PREFIX + ":".join(str(part) for part in parts)
