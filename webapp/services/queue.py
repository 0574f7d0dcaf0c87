"""Enqueueing after commit: a broker outage never fails, nor holds up, the request."""
from __future__ import annotations

import logging

from amqp.exceptions import AMQPError, MessageNacked
from flask import current_app
from kombu.exceptions import KombuError
from redis import RedisError

from webapp.redis_client import breaker, quick_client

log = logging.getLogger(__name__)

# One quick retry, then give up: the delivery rows stay pending and beat re-enqueues them.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.05, "interval_step": 0.1,
                        "interval_max": 0.2}
SEND_ERRORS = (KombuError, RedisError, AMQPError, MessageNacked, OSError)


def broker_reachable() -> bool:
    """A Redis broker that is down, or up but not answering, costs one short timeout, then
    nothing for a few seconds (the breaker); without this, a send could wait for seconds.
    Any other broker (RabbitMQ) is never pinged: its send is bounded by the connect timeout
    and the confirm timeout, and a failed send trips the same breaker."""
    url = current_app.config["CELERY_BROKER_URL"]
    if not breaker(url, "broker").allows():
        return False
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return True
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
            retry_policy=PUBLISH_RETRY_POLICY,
            # RabbitMQ: the wait for the publisher confirm; a broker blocking publishers (a
            # memory or disk alarm) would otherwise hold the request for good
            confirm_timeout=current_app.config["PUBLISH_TIMEOUT_SECONDS"])
        return True
    except SEND_ERRORS as error:
        breaker(current_app.config["CELERY_BROKER_URL"], "broker").trip()
        log.warning("could not enqueue %s%r: %s", task_name, args, error)
        return False
