"""A real worker process runs a real task delivered through the run's broker (Redis, or
RabbitMQ in the pipeline pass)."""
import pytest

from tests.conftest import wait_for
from webapp.redis_client import get_redis, key

pytestmark = pytest.mark.pipeline


def test_worker_runs_task_sent_through_redis_broker(app, celery_worker_process):
    r = get_redis(app)
    r.delete(key("worker", "heartbeat"))
    assert r.get(key("worker", "heartbeat")) is None
    app.extensions["celery"].send_task("maintenance.heartbeat")
    stamp = wait_for(lambda: r.get(key("worker", "heartbeat")), 15, message="heartbeat")
    assert float(stamp) > 0
    assert celery_worker_process.process.poll() is None
