"""The live stream served by a real gunicorn gevent process: who may stream, what arrives, in
what order, and what a reconnect with Last-Event-ID gets."""
import itertools
import json
import random
import threading
import time

from devtools.embedded import free_port
from tests.conftest import app_config
from tests.factories import escalate
from tests.live.conftest import KEEPALIVE_SECONDS, STREAM_PATH, handoff_ids
from webapp import create_app, live
from webapp.api import stream as stream_view
from webapp.redis_client import get_redis


def test_no_token_is_401_and_a_bad_one_too(web, streams):
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        stream = streams(web.base_url, headers)
        assert stream.status == 401
        assert json.loads(stream.body)["error"]["code"] == "unauthorized"


def test_viewer_gets_403_in_the_error_shape(web, streams, tenant):
    stream = streams(web.base_url, tenant.headers("viewer"))
    assert stream.status == 403
    assert json.loads(stream.body)["error"]["code"] == "forbidden"


def test_without_redis_the_stream_is_503_in_the_error_shape_at_once(app_env, tenant):
    no_redis = create_app(app_config(app_env, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))
    started = time.monotonic()
    response = no_redis.test_client().get(STREAM_PATH, headers=tenant.headers("engineer"))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "unavailable"
    assert time.monotonic() - started < 1


def test_ready_comes_first_with_the_callers_account_and_user(web, streams, tenant):
    for role in ("engineer", "admin", "owner"):
        stream = streams(web.base_url, tenant.headers(role))
        assert stream.status == 200
        assert stream.response_headers["content-type"].startswith("text/event-stream")
        assert stream.response_headers["cache-control"] == "no-cache"
        assert stream.response_headers["x-accel-buffering"] == "no"
        assert stream.ready.event == "ready"
        assert stream.ready.json() == {"account_id": tenant.account_id,
                                       "user_id": tenant.users[role]["id"]}


def test_subscriber_gets_its_accounts_events_and_none_of_anothers_whatever_channel_says(
        app, web, http, streams, tenant, other_tenant):
    theirs = live.channel_name(other_tenant.account_id, app)
    mine = [streams(web.base_url, tenant.headers("engineer"), params={"channel": channel})
            for channel in (theirs, str(other_tenant.account_id), "sse")]
    other = streams(web.base_url, other_tenant.headers("engineer"))

    foreign = escalate(http, other_tenant, base_url=web.base_url)
    own = escalate(http, tenant, base_url=web.base_url)

    assert handoff_ids(other.wait_events(1, kind="handoff_created")) == [foreign["id"]]
    for stream in mine:
        # one Redis connection carries both channels in publish order, so had the foreign
        # event reached this stream it would have come before our own
        assert handoff_ids(stream.wait_events(1, kind="handoff_created")) == [own["id"]]
    time.sleep(0.2)  # a worker's handoff_updated may follow, for the same accounts only
    for stream, account_id in [(s, tenant.account_id) for s in mine] + [
            (other, other_tenant.account_id)]:
        assert {e.json()["handoff"]["account_id"] for e in stream.events[1:]} == {account_id}


def test_events_carry_their_stream_id_type_and_handoff_summary(app, web, http, streams,
                                                               tenant):
    stream = streams(web.base_url, tenant.headers("admin"))
    created = escalate(http, tenant, base_url=web.base_url)
    claimed = http.post(f"{web.base_url}/api/v1/handoffs/{created['id']}/claim",
                        headers=tenant.headers("admin"))
    assert claimed.status_code == 200
    withdrawn = escalate(http, tenant, base_url=web.base_url)
    cancelled = http.post(f"{web.base_url}/api/v1/handoffs/{withdrawn['id']}/cancel",
                          headers=tenant.headers("engineer"))
    assert cancelled.status_code == 200

    # a worker's handoff_updated events may come in between; they are checked the same way
    stream.wait(lambda: len(lifecycle(stream.events)) >= 4, 10, "four lifecycle events")
    assert [(e.event, e.json()["handoff"]["id"]) for e in lifecycle(stream.events)] == [
        ("handoff_created", created["id"]), ("handoff_claimed", created["id"]),
        ("handoff_created", withdrawn["id"]), ("handoff_cancelled", withdrawn["id"])]
    events = stream.events[1:]
    with app.app_context():
        stored = {entry_id.decode(): fields for entry_id, fields in
                  get_redis().xrange(live.stream_key(tenant.account_id))}
    assert [e.id for e in events] == list(stored)[:len(events)]
    for event in events:
        body = event.json()
        assert set(body) == {"type", "handoff"} and body["type"] == event.event
        assert event.data == stored[event.id][b"data"].decode()
        # the summary snapshot (API.md): no messages, only their count
        assert "messages" not in body["handoff"]["snapshot"]
        assert isinstance(body["handoff"]["snapshot"]["message_count"], int)
    claimed_event, cancelled_event = lifecycle(events)[1], lifecycle(events)[3]
    assert claimed_event.json()["handoff"]["status"] == "claimed"
    assert claimed_event.json()["handoff"]["claimed_by"] == tenant.users["admin"]["id"]
    assert cancelled_event.json()["handoff"]["status"] == "cancelled"


def lifecycle(events):
    return [e for e in events if e.event in ("handoff_created", "handoff_claimed",
                                             "handoff_cancelled")]


def test_reconnect_with_last_event_id_gets_the_missed_events_then_live_ones_once(
        web, http, streams, tenant):
    first = streams(web.base_url, tenant.headers("engineer"))
    seen = escalate(http, tenant, base_url=web.base_url)
    last = first.wait_events(1, kind="handoff_created")[0]
    assert last.json()["handoff"]["id"] == seen["id"]
    first.close()

    missed = [escalate(http, tenant, base_url=web.base_url)["id"] for _ in range(3)]
    again = streams(web.base_url, tenant.headers("engineer"), last_event_id=last.id)
    assert handoff_ids(again.wait_events(3, kind="handoff_created")) == missed
    later = escalate(http, tenant, base_url=web.base_url)
    created = again.wait_events(4, kind="handoff_created")
    assert handoff_ids(created) == missed + [later["id"]]
    time.sleep(0.2)
    ids = [event.id for event in again.events[1:]]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert all(live.event_position(i) > live.event_position(last.id) for i in ids)
    assert ids == sorted(ids, key=live.event_position)


def test_ready_carries_the_start_so_a_reconnect_misses_nothing_even_before_any_event(
        web, http, streams, tenant):
    first = streams(web.base_url, tenant.headers("engineer"))
    start = first.ready.id
    first.close()
    missed = escalate(http, tenant, base_url=web.base_url)
    again = streams(web.base_url, tenant.headers("engineer"), last_event_id=start)
    assert handoff_ids(again.wait_events(1, kind="handoff_created")) == [missed["id"]]


def test_events_published_during_reconnects_arrive_once_in_order_without_gaps(
        app, web, streams, tenant):
    published: list[str] = []
    done = threading.Event()

    def publish():
        with app.app_context():
            for number in range(400):
                published.append(live.publish(tenant.account_id, "handoff_updated",
                                              {"handoff": {"id": number}}))
                time.sleep(0.002)
        done.set()

    stream = streams(web.base_url, tenant.headers("engineer"))
    start = stream.ready.id
    publisher = threading.Thread(target=publish)
    publisher.start()
    received, reconnects = [], 0
    while True:
        stream.wait_events(min(random.randint(10, 60), 400 - len(received)), 10)
        stream.close()
        received += stream.events[1:]
        if done.is_set() and len(received) >= 400:
            break
        stream = streams(web.base_url, tenant.headers("engineer"),
                         last_event_id=received[-1].id if received else start)
        reconnects += 1
    publisher.join()
    assert reconnects >= 3
    assert None not in published
    assert [event.id for event in received] == published
    assert handoff_ids(received) == list(range(400))


def test_unusable_last_event_ids_start_the_stream_from_now(app, web, http, streams, tenant):
    with app.app_context():
        newest = live.publish(tenant.account_id, "handoff_updated", {"handoff": {"id": 0}})
    for last_event_id in ("garbage", "9999999999999-0", "1" * 5000 + "-0", "1-" + "9" * 5000):
        stream = streams(web.base_url, tenant.headers("engineer"), last_event_id=last_event_id)
        assert stream.ready.id == newest
    created = escalate(http, tenant, base_url=web.base_url)
    assert handoff_ids(stream.wait_events(1, kind="handoff_created")) == [created["id"]]


def test_keepalives_arrive_at_least_every_interval_while_idle(web, streams, tenant):
    stream = streams(web.base_url, tenant.headers("engineer"))
    opened = time.monotonic()
    stream.wait(lambda: len(stream.keepalives) >= 4, 4 * KEEPALIVE_SECONDS + 2, "keepalives")
    moments = [opened] + stream.keepalives[:4]
    gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
    assert max(gaps) <= KEEPALIVE_SECONDS + 0.25, gaps
    assert len(stream.events) == 1


def test_a_stream_ends_soon_after_its_token_is_revoked_or_its_user_deleted(
        web, http, streams, make_tenant):
    tenant = make_tenant("Acme", extra_engineers=1)
    logged_out = streams(web.base_url, tenant.headers("engineer"))
    deleted = streams(web.base_url, tenant.headers("engineer2"))
    staying = streams(web.base_url, tenant.headers("admin"))
    assert http.post(web.base_url + "/api/v1/auth/logout",
                     headers=tenant.headers("engineer")).status_code == 204
    assert http.delete(f"{web.base_url}/api/v1/users/{tenant.users['engineer2']['id']}",
                       headers=tenant.headers("owner")).status_code == 204

    within = 2.0   # told at once, not on the streams' own schedule (3 keepalive intervals)
    for stream in (logged_out, deleted):
        stream.wait(lambda stream=stream: stream.ended, within, "the stream to end")
        assert stream.error is None
    assert not staying.ended
    assert streams(web.base_url, tenant.headers("engineer")).status == 401


def open_in_process(app, headers, last_event_id=None):
    """A stream served by this process's app: the answer is decided before the first byte."""
    if last_event_id is not None:
        headers = {**headers, "Last-Event-ID": last_event_id}
    return app.test_client().get(STREAM_PATH, headers=headers, buffered=False)


def held_streams(app, *names):
    from webapp.redis_client import get_redis
    with app.app_context():
        r = get_redis()
        return [r.zcard(name) for name in names]


def test_open_streams_are_capped_per_user_and_per_account_with_429(app_env, tenant):
    from webapp.redis_client import key
    capped = create_app(app_config(app_env, SSE_MAX_STREAMS_PER_USER=2,
                                   SSE_MAX_STREAMS_PER_ACCOUNT=3))
    engineer, admin, owner = (tenant.headers(role) for role in ("engineer", "admin", "owner"))
    opened = [open_in_process(capped, engineer) for _ in range(2)]
    assert [r.status_code for r in opened] == [200, 200]
    third = open_in_process(capped, engineer)
    assert third.status_code == 429 and third.headers["Retry-After"]
    assert third.get_json()["error"]["code"] == "rate_limited"
    opened.append(open_in_process(capped, admin))       # the account's third
    assert opened[-1].status_code == 200
    over = open_in_process(capped, owner)
    assert over.status_code == 429 and "account" in over.get_json()["error"]["message"]
    user_key = key("streams", "user", tenant.users["engineer"]["id"])
    account_key = key("streams", "account", tenant.account_id)
    assert held_streams(capped, user_key, account_key) == [2, 3]
    for response in opened:     # closing a stream gives its place back
        response.close()
    assert held_streams(capped, user_key, account_key) == [0, 0]
    again = open_in_process(capped, engineer)
    assert again.status_code == 200
    again.close()


def test_a_stream_that_fails_on_the_way_gives_back_its_subscription_and_slot(
        app_env, tenant, monkeypatch):
    """An error after subscribing (here, building the ready event) leaves no subscription
    or stream slot behind."""
    from webapp.redis_client import key
    failing = create_app(app_config(app_env))
    hub_counts = []

    def broken_message(*args, **kwargs):
        with failing.app_context():
            hub_counts.append(live.get_hub().subscriber_count())
        raise RuntimeError("boom")

    monkeypatch.setattr(stream_view, "Message", broken_message)
    response = open_in_process(failing, tenant.headers("engineer"))
    assert response.status_code == 500
    assert hub_counts == [1]           # it had subscribed
    with failing.app_context():
        assert live.get_hub().subscriber_count() == 0
    assert held_streams(failing, key("streams", "user", tenant.users["engineer"]["id"])) == [0]
