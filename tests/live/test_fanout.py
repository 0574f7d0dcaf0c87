"""Many streams in one gunicorn process: one Redis subscription serves them all, and is let go
once the last client of an account leaves."""
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from tests.conftest import wait_for
from tests.factories import escalate
from tests.live.conftest import KEEPALIVE_SECONDS, STREAM_PATH, handoff_ids
from webapp import live
from webapp.redis_client import get_redis

pytestmark = pytest.mark.pipeline


def numsub(app, account_id: int) -> int:
    channel = live.channel_name(account_id, app)
    return dict(get_redis(app).pubsub_numsub(channel))[channel.encode()]


def pubsub_connections(app) -> list[dict]:
    """This run's Redis pub/sub connections (other runs use other logical databases)."""
    r = get_redis(app)
    db = r.connection_pool.connection_kwargs.get("db", 0)
    return [client for client in r.client_list(_type="pubsub")
            if int(client["db"]) == db and client.get("name") == live.HUB_CLIENT_NAME]


def test_200_concurrent_subscribers_each_get_the_event_and_hold_no_database_connection(
        app, web, http, streams, tenant):
    # the pool holds 30 connections at most: streams that kept theirs would starve the POST
    with ThreadPoolExecutor(50) as pool:
        opened = list(pool.map(lambda _: streams(web.base_url, tenant.headers("engineer")),
                               range(200)))
    assert all(stream.status == 200 for stream in opened)
    assert numsub(app, tenant.account_id) == 1

    started = time.monotonic()
    created = escalate(http, tenant, base_url=web.base_url)
    assert time.monotonic() - started < 2
    for stream in opened:
        events = stream.wait_events(1, 10)
        assert (events[0].event, events[0].json()["handoff"]["id"]) == (
            "handoff_created", created["id"])


def test_the_subscription_is_released_within_a_keepalive_of_the_last_client_leaving(
        app, web, http, streams, tenant, other_tenant):
    ours = [streams(web.base_url, tenant.headers(role)) for role in ("engineer", "admin")]
    theirs = streams(web.base_url, other_tenant.headers("engineer"))
    vanishing = raw_stream_request(web.base_url, tenant.headers("owner"))
    assert numsub(app, tenant.account_id) == 1 and numsub(app, other_tenant.account_id) == 1
    vanishing.close()  # gone without a word

    ours[0].close()
    time.sleep(KEEPALIVE_SECONDS + 0.3)
    assert numsub(app, tenant.account_id) == 1, "one client of the account is still there"
    created = escalate(http, tenant, base_url=web.base_url)
    assert handoff_ids(ours[1].wait_events(1, kind="handoff_created")) == [created["id"]]

    ours[1].close()
    left = time.monotonic()
    wait_for(lambda: numsub(app, tenant.account_id) == 0, KEEPALIVE_SECONDS + 0.5,
             message="the account's channel to be unsubscribed")
    assert time.monotonic() - left <= KEEPALIVE_SECONDS + 0.5
    assert numsub(app, other_tenant.account_id) == 1
    theirs.close()
    wait_for(lambda: numsub(app, other_tenant.account_id) == 0, KEEPALIVE_SECONDS + 0.5,
             message="the other account's channel to be unsubscribed")


def test_one_redis_subscription_serves_every_stream_of_the_process(
        app, web, streams, tenant, other_tenant):
    for role in ("engineer", "admin", "owner"):
        for _ in range(5):
            streams(web.base_url, tenant.headers(role))
            streams(web.base_url, other_tenant.headers(role))
    connections = pubsub_connections(app)
    assert len(connections) == 1, connections
    assert numsub(app, tenant.account_id) == 1 and numsub(app, other_tenant.account_id) == 1


def test_a_lost_subscription_is_restored_and_what_it_missed_is_replayed(
        app, web, streams, tenant):
    stream = streams(web.base_url, tenant.headers("engineer"))
    published, missed_while_down = [], False
    with app.app_context():
        for _attempt in range(3):
            wait_for(lambda: numsub(app, tenant.account_id) == 1, 10,
                     message="the hub to subscribe")
            (connection,) = pubsub_connections(app)
            get_redis(app).client_kill_filter(_id=connection["id"])
            for _ in range(3):
                published.append(live.publish(tenant.account_id, "handoff_updated",
                                              {"handoff": {"id": len(published)}}))
            if numsub(app, tenant.account_id) == 0:
                missed_while_down = True  # nobody was subscribed when these went out
                break
    assert missed_while_down
    events = stream.wait_events(len(published), 10)
    assert [event.id for event in events] == published
    assert not stream.ended, "the client's stream itself was never interrupted"
    wait_for(lambda: numsub(app, tenant.account_id) == 1, 5, message="resubscription")
    with app.app_context():
        later = live.publish(tenant.account_id, "handoff_updated", {"handoff": {"id": -1}})
    assert stream.wait_events(len(published) + 1)[-1].id == later
    time.sleep(0.2)
    assert len(stream.events) == len(published) + 2


class raw_stream_request:
    """A client that sends the request and goes away: a bare socket."""

    def __init__(self, base_url: str, headers: dict[str, str]):
        url = urlsplit(base_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=5)
        lines = [f"GET {STREAM_PATH} HTTP/1.1", f"Host: {url.netloc}",
                 *(f"{name}: {value}" for name, value in headers.items()), "", ""]
        self.sock.sendall("\r\n".join(lines).encode())
        received = b""
        while b"event:ready" not in received:
            chunk = self.sock.recv(65536)
            assert chunk, received
            received += chunk

    def close(self) -> None:
        self.sock.close()
