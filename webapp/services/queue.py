"""Enqueueing after commit: a broker outage never fails the request that enqueues."""
from __future__ import annotations

import logging

from flask import current_app
from kombu.exceptions import KombuError
from redis import RedisError

log = logging.getLogger(__name__)

# One quick retry, then give up: the delivery rows stay pending and beat re-enqueues them.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.05, "interval_step": 0.1,
                        "interval_max": 0.2}


def enqueue(task_name: str, *args, countdown: float | None = None) -> bool:
    """Send a task by name; returns False (and logs) when the broker can't take it."""
    try:
        current_app.extensions["celery"].send_task(
            task_name, args=args, countdown=countdown, retry=True,
            retry_policy=PUBLISH_RETRY_POLICY)
        return True
    except (KombuError, RedisError, OSError) as error:
        log.warning("could not enqueue %s%r: %s", task_name, args, error)
        return False
