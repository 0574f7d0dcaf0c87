"""`live.publish`: one id for the replay entry and the live message, bounded retention, and
never an exception."""
import json
import time

from tests.conftest import app_config
from webapp import create_app, live
from webapp.embedded import free_port
from webapp.redis_client import get_redis


def test_the_stored_entry_and_the_live_message_share_one_id(app, tenant):
    with app.app_context():
        pubsub = get_redis().pubsub()
        pubsub.subscribe(live.channel_name(tenant.account_id))
        try:
            assert pubsub.get_message(timeout=2)["type"] == "subscribe"
            entry_id = live.publish(tenant.account_id, "handoff_claimed", {"handoff": {"id": 7}})
            message = pubsub.get_message(timeout=2)
        finally:
            pubsub.close()
        ((stored_id, fields),) = get_redis().xrange(live.stream_key(tenant.account_id))
    body = json.loads(message["data"])
    assert body["id"] == entry_id == stored_id.decode()
    assert body["event"] == "handoff_claimed" == fields[b"event"].decode()
    assert json.loads(body["data"]) == {"type": "handoff_claimed", "handoff": {"id": 7}}
    assert body["data"] == fields[b"data"].decode()


def test_replay_keeps_at_least_the_last_maxlen_events_and_not_many_more(app, tenant):
    with app.app_context():
        app.config["SSE_REPLAY_MAXLEN"] = 150
        try:
            for number in range(1000):
                live.publish(tenant.account_id, "handoff_updated", {"handoff": {"id": number}})
        finally:
            app.config["SSE_REPLAY_MAXLEN"] = 10000
        kept = get_redis().xrange(live.stream_key(tenant.account_id))
    numbers = [json.loads(fields[b"data"])["handoff"]["id"] for _, fields in kept]
    assert 150 <= len(numbers) <= 300
    assert numbers == list(range(1000 - len(numbers), 1000))


def test_replay_drops_events_older_than_the_max_age_and_expires_a_quiet_account(app, tenant):
    key = live.stream_key(tenant.account_id)
    now_ms = int(time.time() * 1000)
    day_ms = 86400 * 1000
    with app.app_context():
        r = get_redis()
        for number in range(300):  # two days old: whole stream nodes, trimmed as a block
            r.xadd(key, {"event": "handoff_updated", "data": "{}"},
                   id=f"{now_ms - 2 * day_ms}-{number + 1}")
        entry_id = live.publish(tenant.account_id, "handoff_updated", {"handoff": {"id": 1}})
        kept = [entry.decode() for entry, _ in r.xrange(key)]
        ttl_ms = r.pttl(key)
    assert kept[-1] == entry_id
    assert len(kept) < 100, "two-day-old entries outlived a one-day retention"
    assert day_ms - 60_000 < ttl_ms <= day_ms


def test_publish_never_raises_and_answers_none_when_redis_is_down(app_env):
    app = create_app(app_config(app_env, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))
    with app.app_context():
        started = time.monotonic()
        assert live.publish(1, "handoff_created", {"handoff": {"id": 1}}) is None
        assert time.monotonic() - started < 1
    assert live.publish(1, "handoff_created", {"handoff": {"id": 1}}) is None  # no app at all
