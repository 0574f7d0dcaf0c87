"""Beat jobs: each reads like a query over what is due, and runs once at a time."""
from __future__ import annotations

import time

from celery import shared_task

from webapp.redis_client import get_redis, key
from webapp.services.locks import single_run


@shared_task(name="maintenance.heartbeat")
def heartbeat() -> None:
    """Record that a worker is alive and consuming, for operators and readiness probes."""
    get_redis().set(key("worker", "heartbeat"), f"{time.time():.3f}", ex=600)


@shared_task(name="maintenance.redeliver_due")
def redeliver_due() -> int:
    """Re-enqueue deliveries whose time has come; the queries arrive with the pipeline."""
    with single_run("redeliver_due") as acquired:
        if not acquired:
            return 0
        return 0
