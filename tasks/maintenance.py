"""Beat jobs: each reads like a query over what is due, and runs once at a time."""
from __future__ import annotations

import time
from datetime import timedelta

from celery import shared_task
from flask import current_app

from webapp.models.base import utcnow
from webapp.redis_client import get_redis, key
from webapp.services import channels, deliveries, reminders, tokens
from webapp.services.locks import single_run
from webapp.services.queue import enqueue


@shared_task(name="maintenance.heartbeat")
def heartbeat() -> None:
    """Record that a worker is alive and consuming, for operators and readiness probes."""
    get_redis().set(key("worker", "heartbeat"), f"{time.time():.3f}", ex=600)


@shared_task(name="maintenance.purge_tokens")
def purge_tokens() -> int:
    """Delete login tokens that expired or were revoked more than TOKEN_RETENTION_DAYS ago;
    returns how many (-1: another beat holds the lock)."""
    with single_run("purge_tokens") as acquired:
        if not acquired:
            return -1
        return tokens.purge_old(utcnow() - timedelta(
            days=current_app.config["TOKEN_RETENTION_DAYS"]))


@shared_task(name="maintenance.remind_unclaimed")
def remind_unclaimed() -> int:
    """Remind the team of every escalation still unclaimed past its account's
    remind_after_minutes, once each; returns how many (-1: another beat holds the lock)."""
    with single_run("remind_unclaimed") as acquired:
        if not acquired:
            return -1
        return reminders.send_due(utcnow())


@shared_task(name="maintenance.redeliver_due")
def redeliver_due() -> int:
    """Re-enqueue every delivery whose time has come; returns how many (-1: another beat
    holds the lock)."""
    with single_run("redeliver_due") as acquired:
        if not acquired:
            return -1
        return redeliver(utcnow())


def redeliver(now) -> int:
    # each channel's own retry budget also bounds the attempts a dying worker may use up
    deliveries.bury_exhausted(now, channels.max_attempts())
    grace = timedelta(seconds=current_app.config["DELIVERY_PENDING_GRACE_SECONDS"])
    due = deliveries.take_due(now, grace)
    for row in due:
        enqueue(channels.channel(row.channel).task, row.id)
    return len(due)
