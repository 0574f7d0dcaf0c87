"""The process's Redis clients under a burst: callers beyond the pool's size wait for a
connection instead of failing."""
import threading

import pytest

from tests.conftest import app_config
from webapp import create_app
from webapp.redis_client import get_redis, quick_client


@pytest.mark.parametrize("which", ["shared", "quick"])
def test_a_caller_beyond_the_pool_waits_for_a_connection_instead_of_failing(app_env, which):
    app = create_app(app_config(app_env, REDIS_MAX_CONNECTIONS=2))
    with app.app_context():
        client = get_redis() if which == "shared" else quick_client(app.config["REDIS_URL"])
    pool = client.connection_pool
    held = [pool.get_connection(), pool.get_connection()]   # every connection in use
    outcome: dict = {}
    started = threading.Event()

    def call() -> None:
        started.set()
        try:
            outcome["ping"] = client.ping()
        except Exception as error:   # noqa: BLE001 - the outcome under test
            outcome["error"] = error

    caller = threading.Thread(target=call)
    caller.start()
    started.wait(5)
    caller.join(0.2)
    assert "error" not in outcome, outcome   # a plain pool says "Too many connections"
    pool.release(held.pop())
    caller.join(10)
    pool.release(held.pop())
    assert outcome == {"ping": True}
    pool.disconnect()
