"""Enqueueing after commit: a broker outage never fails, nor holds up, the request."""
from __future__ import annotations

import logging

from flask import current_app
from kombu.exceptions import KombuError
from redis import RedisError

from webapp.redis_client import breaker, quick_client

log = logging.getLogger(__name__)

# One quick retry, then give up: the delivery rows stay pending and beat re-enqueues them.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.05, "interval_step": 0.1,
                        "interval_max": 0.2}


def broker_reachable() -> bool:
    """A Redis broker that is down, or up but not answering, costs one short timeout, then
    nothing for a few seconds (the breaker); without this, a send could wait for seconds."""
    url = current_app.config["CELERY_BROKER_URL"]
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return True
    if not breaker(url, "broker").allows():
        return False
    try:
        quick_client(url).ping()
        return True
    except (RedisError, OSError):
        breaker(url, "broker").trip()
        return False


def enqueue(task_name: str, *args, countdown: float | None = None) -> bool:
    """Send a task by name; returns False (and logs) when the broker can't take it."""
    if not broker_reachable():
        log.warning("could not enqueue %s%r: the broker is unavailable", task_name, args)
        return False
    try:
        current_app.extensions["celery"].send_task(
            task_name, args=args, countdown=countdown, retry=True,
            retry_policy=PUBLISH_RETRY_POLICY)
        return True
    except (KombuError, RedisError, OSError) as error:
        breaker(current_app.config["CELERY_BROKER_URL"], "broker").trip()
        log.warning("could not enqueue %s%r: %s", task_name, args, error)
        return False
