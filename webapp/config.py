"""One configuration, read from the environment with typed helpers."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def env_str(name: str, default: str | None = None,
            env: Mapping[str, str] | None = None) -> str | None:
    value = (env if env is not None else os.environ).get(name)
    return value if value not in (None, "") else default


def env_int(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    value = env_str(name, None, env)
    return int(value) if value is not None else default


def env_float(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    value = env_str(name, None, env)
    return float(value) if value is not None else default


def env_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    value = env_str(name, None, env)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def psycopg2_url(url: str) -> str:
    """SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; this project runs on psycopg2."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme):]
    return url


AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def broker_is_amqp(url: str) -> bool:
    """RabbitMQ (py-amqp) rather than Redis: its own transport options, no visibility timeout."""
    return url.startswith(AMQP_SCHEMES)


def queue_name(default_queue: str, role: str) -> str:
    """The queue of a worker role: `psa`, or `<default>.psa` beside a renamed default queue."""
    return role if default_queue == "celery" else f"{default_queue}.{role}"


class Config:
    """Settings as Flask config keys; `from_env` reads the environment, `overrides` win."""

    @classmethod
    def from_env(cls, overrides: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None) -> dict[str, Any]:
        redis_url = env_str("REDIS_URL", "redis://127.0.0.1:6379/0", env)
        default_queue = env_str("CELERY_QUEUE", "celery", env)
        settings: dict[str, Any] = {
            "SQLALCHEMY_DATABASE_URI": psycopg2_url(env_str(
                "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres", env)),
            "SQLALCHEMY_ENGINE_OPTIONS": {
                # instead: a connection idle in the pool is pinged first (webapp/pool_checks.py)
                "pool_pre_ping": False,
                # a failed statement's message must not carry its values (tokens, emails)
                "hide_parameters": True,
                "pool_size": env_int("DB_POOL_SIZE", 10, env),
                "max_overflow": env_int("DB_MAX_OVERFLOW", 20, env),
                "pool_timeout": env_float("DB_POOL_TIMEOUT", 5.0, env),
                "connect_args": {"connect_timeout": env_int("DB_CONNECT_TIMEOUT", 3, env)},
            },
            "DB_PING_AFTER_IDLE_SECONDS": env_float("DB_PING_AFTER_IDLE_SECONDS", 1.0, env),
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": env_str("CELERY_BROKER_URL", redis_url, env),
            "SECRET_KEY": env_str("SECRET_KEY", None, env),   # required: see create_app
            # JSON lines for log collectors; `text` for a terminal (webapp/logs.py)
            "LOG_FORMAT": env_str("LOG_FORMAT", "json", env),
            "LOG_LEVEL": env_str("LOG_LEVEL", "INFO", env).upper(),
            "ENCRYPTION_KEY": env_str("ENCRYPTION_KEY", None, env),
            "TOKEN_TTL_SECONDS": env_int("TOKEN_TTL_SECONDS", 12 * 3600, env),
            # expired or revoked tokens are deleted this long after (beat, hourly)
            "TOKEN_RETENTION_DAYS": env_int("TOKEN_RETENTION_DAYS", 30, env),
            # failed-login budgets per window: per email, per client address, and overall
            "LOGIN_RATE_LIMIT": env_int("LOGIN_RATE_LIMIT", 10, env),
            "LOGIN_RATE_LIMIT_PER_ADDRESS": env_int("LOGIN_RATE_LIMIT_PER_ADDRESS", 20, env),
            "LOGIN_RATE_LIMIT_TOTAL": env_int("LOGIN_RATE_LIMIT_TOTAL", 300, env),
            # Argon2 runs at once per process, and how long a login waits for a turn
            "PASSWORD_CHECKS_CONCURRENT": env_int("PASSWORD_CHECKS_CONCURRENT", 2, env),
            "PASSWORD_CHECK_WAIT_SECONDS": env_float("PASSWORD_CHECK_WAIT_SECONDS", 5.0, env),
            # proxies in front of the web role whose X-Forwarded-For / -Proto are believed
            "TRUSTED_PROXIES": env_int("TRUSTED_PROXIES", 0, env),
            "LOGIN_RATE_WINDOW": env_int("LOGIN_RATE_WINDOW", 60, env),
            "MAIL_SERVER": env_str("MAIL_SERVER", "127.0.0.1", env),
            "MAIL_PORT": env_int("MAIL_PORT", 1025, env),
            "MAIL_USE_TLS": env_bool("MAIL_USE_TLS", False, env),
            "MAIL_USE_SSL": env_bool("MAIL_USE_SSL", False, env),
            "MAIL_USERNAME": env_str("MAIL_USERNAME", None, env),
            "MAIL_PASSWORD": env_str("MAIL_PASSWORD", None, env),
            "MAIL_DEFAULT_SENDER": env_str(
                "MAIL_DEFAULT_SENDER", "Escalations <escalations@localhost>", env),
            "MAIL_TIMEOUT": env_float("MAIL_TIMEOUT", 10.0, env),
            "MAIL_SUPPRESS_SEND": env_bool("MAIL_SUPPRESS_SEND", False, env),
            "PUBLIC_BASE_URL": env_str("PUBLIC_BASE_URL", "http://127.0.0.1:5000", env),
            "AI_PROVIDER": env_str("AI_PROVIDER", "heuristic", env),
            "AI_BASE_URL": env_str("AI_BASE_URL", None, env),
            "AI_API_KEY": env_str("AI_API_KEY", None, env),
            "AI_MODEL": env_str("AI_MODEL", None, env),
            "AI_TIMEOUT": env_float("AI_TIMEOUT", 20.0, env),
            "DELIVERY_MAX_ATTEMPTS": env_int("DELIVERY_MAX_ATTEMPTS", 8, env),
            # a claimed row's lease; renewed every third of it while the side effect runs, so
            # a row still being worked is never retaken, and a killed worker's within minutes
            "DELIVERY_LEASE_SECONDS": env_int("DELIVERY_LEASE_SECONDS", 45, env),
            # multiplies every retry backoff; below 1 only to make drills and tests quick
            "DELIVERY_BACKOFF_SCALE": env_float("DELIVERY_BACKOFF_SCALE", 1.0, env),
            # PSA pushes and AI assessments wait on other tenants' servers: each has a queue
            # (and a worker role) of its own, so a stuck one never delays email or live events
            "CELERY_QUEUE": default_queue,
            "CELERY_PSA_QUEUE": env_str("CELERY_PSA_QUEUE", queue_name(default_queue, "psa"),
                                        env),
            "CELERY_AI_QUEUE": env_str("CELERY_AI_QUEUE", queue_name(default_queue, "ai"), env),
            # concurrent PSA pushes of one account, across all workers; more wait their turn
            "PSA_MAX_CONCURRENT_PER_ACCOUNT": env_int("PSA_MAX_CONCURRENT_PER_ACCOUNT", 2, env),
            "DELIVERY_PENDING_GRACE_SECONDS": env_int("DELIVERY_PENDING_GRACE_SECONDS", 60, env),
            # longer waits are left to beat: Redis redelivers a task held past its visibility
            # timeout, so a long countdown would run twice; RabbitMQ has no visibility timeout,
            # but closes the channel of a consumer holding a message past its consumer_timeout
            # (30 min by default), so its default stays under that
            "MAX_TASK_COUNTDOWN_SECONDS": env_int(
                "MAX_TASK_COUNTDOWN_SECONDS",
                1500 if broker_is_amqp(env_str("CELERY_BROKER_URL", "", env)) else 1800, env),
            "PSA_WAIT_FOR_ASSESSMENT_SECONDS": env_int("PSA_WAIT_FOR_ASSESSMENT_SECONDS", 60, env),
            "PSA_TIMEOUT": env_float("PSA_TIMEOUT", 10.0, env),
            # every URL a tenant types (PSA, chat webhook) and the AI server: loopback and
            # private ranges are refused unless the operator runs them there (or in tests and
            # drills); PSA_ALLOW_PRIVATE_ADDRESSES is the older name of the same switch
            "ALLOW_PRIVATE_ADDRESSES": env_bool("ALLOW_PRIVATE_ADDRESSES", env_bool(
                "PSA_ALLOW_PRIVATE_ADDRESSES", False, env), env),
            # the answer to any outbound call is read up to this many bytes, then abandoned
            "OUTBOUND_MAX_RESPONSE_BYTES": env_int("OUTBOUND_MAX_RESPONSE_BYTES",
                                                   4 * 1024 * 1024, env),
            "SSE_KEEPALIVE_SECONDS": env_float("SSE_KEEPALIVE_SECONDS", 20.0, env),
            "SSE_MAX_STREAMS_PER_USER": env_int("SSE_MAX_STREAMS_PER_USER", 10, env),
            "SSE_MAX_STREAMS_PER_ACCOUNT": env_int("SSE_MAX_STREAMS_PER_ACCOUNT", 200, env),
            "SSE_REPLAY_MAXLEN": env_int("SSE_REPLAY_MAXLEN", 10000, env),
            "SSE_REPLAY_MAX_AGE_SECONDS": env_int("SSE_REPLAY_MAX_AGE_SECONDS", 86400, env),
            "PASSWORD_HASH_TIME_COST": env_int("PASSWORD_HASH_TIME_COST", 3, env),
            "PASSWORD_HASH_MEMORY_KIB": env_int("PASSWORD_HASH_MEMORY_KIB", 65536, env),
            "PUBLISH_TIMEOUT_SECONDS": env_float("PUBLISH_TIMEOUT_SECONDS", 0.5, env),
            # bodies past this many bytes are 413 on every route, never read past the limit
            "MAX_CONTENT_LENGTH": env_int("MAX_CONTENT_LENGTH", 256 * 1024, env),
            # gunicorn's own line limit is raised well past this, so the app answers 422
            "MAX_QUERY_STRING_BYTES": env_int("MAX_QUERY_STRING_BYTES", 2048, env),
            # an AI session's transcript: messages and their total characters
            "SESSION_MAX_MESSAGES": env_int("SESSION_MAX_MESSAGES", 1000, env),
            "SESSION_MAX_CHARACTERS": env_int("SESSION_MAX_CHARACTERS", 2_000_000, env),
            # what an escalation's snapshot copies of it: the newest messages, within both
            "SNAPSHOT_MAX_MESSAGES": env_int("SNAPSHOT_MAX_MESSAGES", 200, env),
            "SNAPSHOT_MAX_CHARACTERS": env_int("SNAPSHOT_MAX_CHARACTERS", 200_000, env),
            # GET /metrics: unset, open to all (it names no tenant); set, it needs
            # `Authorization: Bearer <METRICS_TOKEN>`. METRICS_PORT: a Celery worker serves its
            # own metrics there too (webapp/metrics.py)
            "METRICS_TOKEN": env_str("METRICS_TOKEN", None, env),
            "METRICS_PORT": env_int("METRICS_PORT", 0, env) or None,
            "METRICS_ADDR": env_str("METRICS_ADDR", "0.0.0.0", env),
            "JSON_SORT_KEYS": False,
            "SQLALCHEMY_TRACK_MODIFICATIONS": False,
            "API_TITLE": "Escalations API",
            "API_VERSION": "v1",
            "OPENAPI_VERSION": "3.0.3",
            "OPENAPI_URL_PREFIX": "/api/v1",
            "OPENAPI_JSON_PATH": "openapi.json",
            "PROPAGATE_EXCEPTIONS": False,
        }
        if overrides:
            settings.update(overrides)
            if "ALLOW_PRIVATE_ADDRESSES" not in overrides and \
                    "PSA_ALLOW_PRIVATE_ADDRESSES" in overrides:
                settings["ALLOW_PRIVATE_ADDRESSES"] = bool(overrides["PSA_ALLOW_PRIVATE_ADDRESSES"])
        settings["PSA_ALLOW_PRIVATE_ADDRESSES"] = settings["ALLOW_PRIVATE_ADDRESSES"]
        settings["SQLALCHEMY_DATABASE_URI"] = psycopg2_url(settings["SQLALCHEMY_DATABASE_URI"])
        return settings
