"""`live.publish`: one id for the replay entry and the live message, bounded retention, and
never an exception."""
import itertools
import json
import time

from devtools.embedded import free_port
from tests.conftest import app_config
from webapp import create_app, live
from webapp.live import hub as live_hub
from webapp.live.publish import KEEPALIVE
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


def test_deployments_on_other_databases_of_one_redis_never_see_each_others_events(
        app, app_env, tenant):
    """Pub/sub channels span the whole server: the channel must name the database."""
    from redis import Redis
    base = Redis.from_url(app_env["REDIS_URL"]).connection_pool.connection_kwargs.get("db", 0)
    neighbour_url = app_env["REDIS_URL"].rsplit("/", 1)[0] + f"/{15 if base != 15 else 14}"
    neighbour = create_app(app_config(app_env, REDIS_URL=neighbour_url,
                                      CELERY_BROKER_URL=neighbour_url))
    with app.app_context():
        pubsub = get_redis().pubsub()
        pubsub.subscribe(live.channel_name(tenant.account_id))
    try:
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
        with neighbour.app_context():   # the same account id, in the other deployment
            assert live.publish(tenant.account_id, "handoff_created", {"handoff": {"id": 1}})
            get_redis().delete(live.stream_key(tenant.account_id))
        assert pubsub.get_message(timeout=1) is None
        with app.app_context():
            live.publish(tenant.account_id, "handoff_created", {"handoff": {"id": 2}})
        message = pubsub.get_message(timeout=2)
    finally:
        pubsub.close()
    assert json.loads(json.loads(message["data"])["data"])["handoff"] == {"id": 2}


def test_a_broker_that_failed_moments_ago_does_not_silence_live_events(app, tenant):
    from webapp.redis_client import breaker
    with app.app_context():
        url = app.config["REDIS_URL"]
        assert app.config["CELERY_BROKER_URL"] == url     # one Redis for both, the default
        breaker(url, "broker").trip()
        try:
            assert live.publish(tenant.account_id, "handoff_created", {"handoff": {"id": 3}})
        finally:
            breaker(url, "broker").open_until = 0.0


def token_check_answering(*answers):
    """A stream's token check that gives these answers in turn (True, False, or None: could
    not tell), and the moments it was called."""
    calls, pending = [], iter(answers)

    def still_allowed():
        calls.append(time.monotonic())
        return next(pending)
    return calls, still_allowed


def test_a_stream_whose_token_cannot_be_checked_ends_after_a_few_tries(app, tenant):
    """Postgres down for long: the stream ends (fail closed) instead of streaming forever
    to a token nobody can check; a single failed check does not end it."""
    from webapp.api.stream import bp as stream_bp
    calls, still_allowed = token_check_answering(None, True, None, None, None)

    with app.app_context():
        stream = stream_bp.messages(tenant.account_id, None, keepalive_seconds=0.1,
                                    still_allowed=still_allowed)
        try:
            frames = list(itertools.islice(stream, 200))
        finally:
            stream.close()
    assert len(calls) == 5            # ended at the third failure in a row, not the first
    assert frames[0].startswith("event:ready") and len(frames) < 200


def test_an_access_change_makes_open_streams_check_at_once(app, tenant):
    from webapp.api.stream import bp as stream_bp
    calls, still_allowed = token_check_answering(False)

    with app.app_context():
        # on its own schedule the stream would check after 3 keepalive intervals: 6 s
        stream = stream_bp.messages(tenant.account_id, None, keepalive_seconds=2,
                                    still_allowed=still_allowed)
        frames = iter(stream)
        try:
            assert next(frames).startswith("event:ready")
            started = time.monotonic()
            live.announce_access_change(tenant.account_id)
            rest = list(frames)          # ends once the check says no
        finally:
            stream.close()
    assert len(calls) == 1 and calls[0] - started < 3, calls
    assert "access" not in "".join(rest)     # the notice never reaches the client


def test_the_hubs_subscription_connection_has_tcp_keepalive(app):
    import socket
    with app.app_context():
        client = live_hub._hub_client(get_redis())
        pubsub = client.pubsub()
        try:
            pubsub.subscribe("keepalive-probe")
            assert pubsub.get_message(timeout=2)["type"] == "subscribe"
            sock = pubsub.connection._sock
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
        finally:
            pubsub.close()
            client.close()


def test_checks_asked_for_by_logouts_do_not_count_towards_ending_a_stream(app, tenant):
    """A burst of logouts while Postgres hiccups must not end every stream of the account."""
    from webapp.api.stream import bp as stream_bp
    calls, still_allowed = token_check_answering(*[None] * 10)   # the database cannot say

    with app.app_context():
        # on its own schedule the stream would check only after 9 s; a keepalive every 1.5 s
        stream = stream_bp.messages(tenant.account_id, None, keepalive_seconds=3,
                                    still_allowed=still_allowed)
        frames = iter(stream)
        try:
            assert next(frames).startswith("event:ready")
            for told in range(1, 5):
                live.announce_access_change(tenant.account_id)
                for _ in range(3):                      # the notice may take a tick to come
                    assert next(frames) == KEEPALIVE   # still streaming
                    if len(calls) == told:
                        break
                assert len(calls) == told
        finally:
            stream.close()
