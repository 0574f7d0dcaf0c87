"""Live events: each event is appended to the account's Redis Stream (for Last-Event-ID
replay) and published on the account's channel with the same id, atomically; web processes
stream them to the account's seniors as server-sent events (flask-sse's wire format).

One Redis subscription per web process serves every open stream in it: a hub greenlet (a
thread outside gevent) owns that connection, subscribes an account's channel while someone in
the process streams it, and hands each message to the streams of that account. A stream
subscribes first, then replays the Redis Stream after its start, then takes live messages,
dropping any it has already sent, so it sees every event once and in order."""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from flask import Flask, current_app, request
from flask_sse import Message, ServerSentEventsBlueprint
from redis import Redis, RedisError
from sqlalchemy.exc import SQLAlchemyError

from webapp.auth import bearer_token, current_user, user_for_token
from webapp.errors import ApiError
from webapp.extensions import db
from webapp.redis_client import breaker, get_redis, key, quick_client

log = logging.getLogger(__name__)

EVENT_TYPES = ("handoff_created", "handoff_updated", "handoff_claimed", "handoff_cancelled")

# XADD, trim by count and by age, then PUBLISH with the entry id, in one script so no
# subscriber sees one without the other. Both trims are approximate, so they keep at least
# the last ARGV[1] entries or at least ARGV[2] ms of them; the key expires once an account
# has been quiet for that long.
_PUBLISH_SCRIPT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[3],
                      'data', ARGV[4])
local max_age = tonumber(ARGV[2])
if max_age > 0 then
  local ms = tonumber(string.match(id, '^(%d+)'))
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', ms - max_age))
  redis.call('PEXPIRE', KEYS[1], max_age)
end
redis.call('PUBLISH', KEYS[2], cjson.encode({id = id, event = ARGV[3], data = ARGV[4]}))
return id
"""

KEEPALIVE = ": keepalive\n\n"
# A write to a client that has gone still succeeds once (the peer answers it with a reset);
# the next one fails. Two keepalives per interval notice a gone client within one interval.
KEEPALIVES_PER_INTERVAL = 2
# An open stream checks its token again this often (in keepalive intervals): a logout, a
# deleted user or a lost senior role ends it, and the reconnect is refused.
RECHECK_EVERY_KEEPALIVES = 3
# A logout or a deleted user tells the account's streams to check at once (ACCESS_CHANGED);
# a stream whose check keeps failing (Postgres down) ends after this many tries in a row.
RECHECK_FAILURES_TO_END = 3
ACCESS_CHANGED = "_access_changed"
SUBSCRIBE_TIMEOUT_SECONDS = 3.0
REPLAY_BATCH = 500
# A stream that falls this far behind drops its backlog and replays it from Redis instead.
MAX_PENDING_PER_STREAM = 1000
HUB_POLL_SECONDS = 0.05
_EVENT_ID = re.compile(r"^(\d+)-(\d+)$")
_ORIGIN = (0, 0)


def stream_key(account_id: int) -> str:
    return key("events", account_id)


def channel_name(account_id: int, app: Flask | None = None) -> str:
    """The account's pub/sub channel. Channels are server-wide whatever the logical database,
    so the name carries the database: deployments (or test runs) sharing a Redis server on
    different databases never see each other's events."""
    database = get_redis(app).connection_pool.connection_kwargs.get("db", 0)
    return key("live", database, account_id)


def publish(account_id: int, event_type: str, payload: dict) -> str | None:
    """Publish an event to the account's live channel; returns its id, or None if Redis is down.

    Never raises: a live event is a courtesy on top of the durable rows.
    """
    url = None
    try:
        url = current_app.config["REDIS_URL"]
        if not breaker(url, "live").allows():
            log.warning("live event %s for account %s not published: Redis was unavailable "
                        "moments ago", event_type, account_id)
            return None
        data = json.dumps({"type": event_type, **payload}, separators=(",", ":"), default=str)
        config = current_app.config
        entry_id = _publish_script()(
            keys=[stream_key(account_id), channel_name(account_id)],
            args=[config["SSE_REPLAY_MAXLEN"], int(config["SSE_REPLAY_MAX_AGE_SECONDS"] * 1000),
                  event_type, data])
        return entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    except Exception as error:  # a lost live event must never fail the caller
        if url is not None and isinstance(error, (RedisError, OSError)):
            breaker(url, "live").trip()
        log.warning("live event %s for account %s not published: %s", event_type, account_id,
                    error, exc_info=not isinstance(error, (RedisError, OSError)))
        return None


def announce_access_change(account_id: int) -> None:
    """Tell the account's open streams to check their tokens now (after a logout, a user
    deleted): on the live channel only, never stored for replay nor sent to a client.
    Never raises: without it, streams still check on their own schedule."""
    try:
        quick_client(current_app.config["REDIS_URL"]).publish(
            channel_name(account_id), json.dumps({"event": ACCESS_CHANGED}))
    except (RedisError, OSError) as error:
        log.warning("could not tell account %s's streams to recheck: %s", account_id, error)


def _publish_script():
    scripts = current_app.extensions
    if "live_publish_script" not in scripts:
        scripts["live_publish_script"] = quick_client(
            current_app.config["REDIS_URL"]).register_script(_PUBLISH_SCRIPT)
    return scripts["live_publish_script"]


MAX_EVENT_ID_LENGTH = 40


def event_position(event_id: str | None) -> tuple[int, int] | None:
    """A stream entry id ("ms-seq") as a comparable (ms, seq); None if it is not one (too
    long, malformed): a bad Last-Event-ID is treated as absent, never an error."""
    if not event_id or len(event_id) > MAX_EVENT_ID_LENGTH:
        return None
    match = _EVENT_ID.match(event_id.strip())
    return (int(match[1]), int(match[2])) if match else None


# Open streams, per user and per account: sorted sets of holders scored by when their hold
# runs out (renewed while the stream is open), so a web process that died frees its share.
# KEYS: the user's set, the account's; ARGV: now, user cap, account cap, expiry, holder, ttl.
_TAKE_STREAM_SLOT = """
for i = 1, 2 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[1]) end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 2 end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], ARGV[4], ARGV[5])
  redis.call('EXPIRE', KEYS[i], ARGV[6])
end
return 0
"""
STREAM_SLOT_SECONDS = 180.0
RENEW_SLOT_SECONDS = 60.0


class StreamSlot:
    """One open stream's place among its user's (SSE_MAX_STREAMS_PER_USER) and account's
    (SSE_MAX_STREAMS_PER_ACCOUNT); past either, the new stream is 429 `rate_limited`."""

    def __init__(self, redis: Redis, account_id: int, user_id: int):
        self.redis = redis
        self.keys = (key("streams", "user", user_id), key("streams", "account", account_id))
        self.holder = os.urandom(8).hex()
        self.renew_at = time.monotonic() + RENEW_SLOT_SECONDS

    def take(self, per_user: int, per_account: int) -> None:
        now = time.time()
        full = self.redis.eval(_TAKE_STREAM_SLOT, 2, *self.keys, now, per_user, per_account,
                               now + STREAM_SLOT_SECONDS, self.holder,
                               int(STREAM_SLOT_SECONDS) + 1)
        if full:
            whose = "your" if full == 1 else "your account's"
            error = ApiError(429, "rate_limited",
                             f"too many open live streams ({whose} limit); close one first",
                             {"retry_after": 10})
            error.headers = {"Retry-After": "10"}
            raise error

    def renew_if_due(self) -> None:
        if time.monotonic() < self.renew_at:
            return
        self.renew_at = time.monotonic() + RENEW_SLOT_SECONDS
        pipe = self.redis.pipeline(transaction=False)
        for name in self.keys:
            pipe.zadd(name, {self.holder: time.time() + STREAM_SLOT_SECONDS}, xx=True)
        pipe.execute()

    def release(self) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for name in self.keys:
                pipe.zrem(name, self.holder)
            pipe.execute()
        except RedisError:   # its hold runs out by itself
            log.debug("could not release a stream slot", exc_info=True)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LiveMessage(Message):
    """flask-sse's Message with its stream position; rendered once, however many streams
    in the process send it."""

    def __init__(self, data: str, type: str, id: str):
        super().__init__(data, type=type, id=id)
        self.position = event_position(id) or _ORIGIN
        self._wire = super().__str__()

    def __str__(self) -> str:
        return self._wire


class LiveUnavailable(Exception):
    """Redis did not confirm the subscription in time."""


# ---- one subscription per process -----------------------------------------------------------

RESYNC = object()  # "you may have missed messages: replay from your last position"
RECHECK = object()  # "check that your token still allows you to stream"


class Subscription:
    """What one open stream receives from the hub: live messages, or RESYNC."""

    __slots__ = ("channel", "_items", "_wakeup")

    def __init__(self, channel: str):
        self.channel = channel
        self._items: deque = deque()
        self._wakeup = threading.Event()

    def push(self, item: LiveMessage | object) -> None:
        if len(self._items) >= MAX_PENDING_PER_STREAM:
            self._items.clear()
            item = RESYNC
        self._items.append(item)
        self._wakeup.set()

    def pull(self, timeout: float) -> list:
        """What arrived, waiting up to timeout for something; [] when nothing did."""
        deadline = time.monotonic() + timeout
        while True:
            self._wakeup.clear()
            if self._items:
                items = []
                while self._items:
                    items.append(self._items.popleft())
                return items
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._wakeup.wait(remaining):
                return []


# The Redis side of a channel: not subscribed, SUBSCRIBE sent, confirmed, UNSUBSCRIBE sent
NONE, SUBSCRIBING, SUBSCRIBED, UNSUBSCRIBING = "none", "subscribing", "subscribed", "unsubscribing"


class _Channel:
    __slots__ = ("subscriptions", "state", "ready", "resync_on_confirm")

    def __init__(self) -> None:
        self.subscriptions: set[Subscription] = set()
        self.state = NONE
        self.ready = threading.Event()  # set while a new stream may rely on the subscription
        self.resync_on_confirm = False


HUB_CLIENT_NAME = "escalations-live-hub"


# A subscription is quiet between events; a connection silently dropped on the way (a NAT or
# a load balancer forgetting it) is noticed by TCP keepalive within about a minute, and the
# hub resubscribes and tells its streams to replay.
HUB_KEEPALIVE = {option: value for option, value in (
    (getattr(socket, "TCP_KEEPIDLE", None), 30), (getattr(socket, "TCP_KEEPINTVL", None), 10),
    (getattr(socket, "TCP_KEEPCNT", None), 3)) if option is not None}


def _hub_client(redis: Redis) -> Redis:
    """The app's Redis settings on a connection of the hub's own, named so operators (and
    tests) can tell the process's one subscription from other subscribers."""
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs, "client_name": HUB_CLIENT_NAME,
              "socket_keepalive": True, "socket_keepalive_options": HUB_KEEPALIVE}
    return Redis(connection_pool=pool.__class__(connection_class=pool.connection_class,
                                                max_connections=2, **kwargs))


class LiveHub:
    """The process's one Redis pub/sub connection, shared by all its streams.

    Only the hub's reader touches that connection: streams ask for a channel and wait until
    Redis confirms it; the reader subscribes channels someone streams and unsubscribes the
    others within HUB_POLL_SECONDS. When Redis confirms a channel again (the connection was
    lost and redis-py or the hub resubscribed), messages may have been missed, so the channel's
    streams are told to RESYNC from the Redis Stream.
    """

    def __init__(self, redis: Redis):
        self.redis = redis                       # replays and reads: the app's pool
        self.subscriber = _hub_client(redis)     # the one subscription: its own connection
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        self._dirty = False
        self._pubsub = None
        self._reader: threading.Thread | None = None

    def subscribe(self, channel: str, timeout: float = SUBSCRIBE_TIMEOUT_SECONDS) -> Subscription:
        """A subscription that receives every message published on the channel from now on."""
        subscription = Subscription(channel)
        with self._lock:
            if self._reader is None or not self._reader.is_alive():
                self._reader = threading.Thread(target=self._run, name="live-hub", daemon=True)
                self._reader.start()
            state = self._channels.setdefault(channel, _Channel())
            state.subscriptions.add(subscription)
            self._dirty = True
            ready = state.ready
        if not ready.wait(timeout):
            self.unsubscribe(subscription)
            raise LiveUnavailable(f"no confirmation of {channel} from Redis within {timeout}s")
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            state = self._channels.get(subscription.channel)
            if state is not None:
                state.subscriptions.discard(subscription)
                self._dirty = self._dirty or not state.subscriptions

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(state.subscriptions) for state in self._channels.values())

    # -- the reader --

    def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self._pubsub is None:
                    self._pubsub = self.subscriber.pubsub()
                self._reconcile()
                message = self._pubsub.get_message(timeout=HUB_POLL_SECONDS)
                if message is not None:
                    self._handle(message)
                failures = 0
            except Exception as error:  # the reader must outlive any Redis failure
                failures += 1
                log.warning("live hub lost its Redis subscription (%s); resubscribing", error,
                            exc_info=not isinstance(error, (RedisError, OSError)))
                self._restart()
                time.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))

    def _reconcile(self) -> None:
        """Subscribe channels someone streams, unsubscribe channels nobody does."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            wanted, unwanted = [], []
            for name, state in list(self._channels.items()):
                if state.subscriptions and state.state == NONE:
                    state.state = SUBSCRIBING
                    wanted.append(name)
                elif not state.subscriptions and state.state == SUBSCRIBED:
                    state.state = UNSUBSCRIBING
                    state.ready.clear()
                    unwanted.append(name)
                elif not state.subscriptions and state.state == NONE:
                    del self._channels[name]
        if wanted:
            self._pubsub.subscribe(*wanted)
        if unwanted:
            self._pubsub.unsubscribe(*unwanted)

    def _handle(self, message: dict) -> None:
        kind, name = message["type"], _text(message["channel"] or b"")
        if kind == "message":
            self._dispatch(name, message["data"])
        elif kind == "subscribe":
            with self._lock:
                state = self._channels.setdefault(name, _Channel())
                resync = state.state == SUBSCRIBED or state.resync_on_confirm
                state.state, state.resync_on_confirm = SUBSCRIBED, False
                if state.subscriptions:
                    state.ready.set()
                self._dirty = True
                to_resync = list(state.subscriptions) if resync else []
            for subscription in to_resync:
                subscription.push(RESYNC)
        elif kind == "unsubscribe":
            with self._lock:
                state = self._channels.get(name)
                if state is not None:
                    state.resync_on_confirm = state.resync_on_confirm or state.state == SUBSCRIBED
                    state.state = NONE
                    self._dirty = True

    def _dispatch(self, channel: str, raw: bytes) -> None:
        with self._lock:
            state = self._channels.get(channel)
            subscriptions = tuple(state.subscriptions) if state is not None else ()
        if not subscriptions:
            return
        try:
            fields = json.loads(raw)
            if not isinstance(fields, dict):
                raise TypeError("not an object")
            if fields.get("event") == ACCESS_CHANGED:
                for subscription in subscriptions:
                    subscription.push(RECHECK)
                return
            message = LiveMessage(fields["data"], type=fields["event"], id=fields["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed live message on %s: %r", channel, raw[:200])
            return
        for subscription in subscriptions:
            subscription.push(message)

    def _restart(self) -> None:
        """Start over on a fresh connection; streams that were live will RESYNC once Redis
        confirms their channel again."""
        with self._lock:
            for name, state in list(self._channels.items()):
                if not state.subscriptions:
                    del self._channels[name]
                    continue
                state.resync_on_confirm = state.resync_on_confirm or state.state == SUBSCRIBED
                state.state = NONE
            self._dirty = True
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # the connection is already broken; nothing to release
                log.debug("closing the broken pubsub failed", exc_info=True)


_hub_lock = threading.Lock()


def get_hub() -> LiveHub:
    """The current process's hub (a forked process gets a hub of its own)."""
    extensions = current_app.extensions
    with _hub_lock:
        hub = extensions.get("live_hub")
        if hub is None or hub.pid != os.getpid():
            hub = extensions["live_hub"] = LiveHub(get_redis())
        return hub


# ---- the stream -----------------------------------------------------------------------------

class EventStream:
    """The body of one stream: `ready`, the events after the start, then live events and
    keepalives. The server closes it when the client goes; that releases the subscription."""

    def __init__(self, hub: LiveHub, subscription: Subscription, account_id: int,
                 ready: Message, start: tuple[int, int], keepalive_seconds: float,
                 still_allowed: Callable[[], bool | None] | None = None,
                 slot: StreamSlot | None = None):
        self.hub, self.subscription, self.account_id = hub, subscription, account_id
        self.slot = slot
        self.ready, self.start = ready, start
        self.tick = keepalive_seconds / KEEPALIVES_PER_INTERVAL
        self.still_allowed = still_allowed
        self.recheck_seconds = keepalive_seconds * RECHECK_EVERY_KEEPALIVES
        self._body = self._generate()

    def __iter__(self) -> Iterator[str]:
        return self._body

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            self.hub.unsubscribe(self.subscription)
            if self.slot is not None:
                self.slot.release()

    def _generate(self) -> Iterator[str]:
        yield str(self.ready)
        last = self.start
        pending: list = [RESYNC]  # the first replay: what came after the start
        next_check = time.monotonic() + self.recheck_seconds
        failed_checks, told = 0, False
        try:
            while True:
                for item in pending:
                    if item is RECHECK:
                        next_check, told = 0.0, True
                    elif item is RESYNC:
                        for message in replay(self.hub.redis, self.account_id, last):
                            last = message.position
                            yield str(message)
                    elif item.position > last:
                        last = item.position
                        yield str(item)
                if self.still_allowed and time.monotonic() >= next_check:
                    allowed = self.still_allowed()
                    if allowed is False:
                        log.info("live stream of account %s ended: token no longer valid",
                                 self.account_id)
                        return
                    # only the stream's own schedule counts towards giving up: a burst of
                    # logouts during a database hiccup must not end every stream
                    if allowed:
                        failed_checks = 0
                    elif not told:
                        failed_checks += 1
                    told = False
                    if failed_checks >= RECHECK_FAILURES_TO_END:
                        log.warning("live stream of account %s ended: its token could not be "
                                    "checked %s times in a row", self.account_id, failed_checks)
                        return
                    next_check = time.monotonic() + self.recheck_seconds
                pending = self.subscription.pull(self.tick)
                if not pending:
                    yield KEEPALIVE
                if self.slot is not None:
                    self.slot.renew_if_due()
        except RedisError as error:
            # the client reconnects with Last-Event-ID and misses nothing
            log.warning("live stream of account %s ended: %s", self.account_id, error)


def replay(redis: Redis, account_id: int, after: tuple[int, int]) -> Iterator[LiveMessage]:
    """The account's stored events after a position, oldest first, in batches."""
    low = "-" if after == _ORIGIN else f"({after[0]}-{after[1]}"
    while True:
        entries = redis.xrange(stream_key(account_id), min=low, max="+", count=REPLAY_BATCH)
        for entry_id, fields in entries:
            yield LiveMessage(_text(fields[b"data"]), type=_text(fields[b"event"]),
                              id=_text(entry_id))
        if len(entries) < REPLAY_BATCH:
            return
        low = "(" + _text(entries[-1][0])


def latest_position(redis: Redis, account_id: int) -> tuple[int, int]:
    newest = redis.xrevrange(stream_key(account_id), max="+", min="-", count=1)
    return (event_position(_text(newest[0][0])) or _ORIGIN) if newest else _ORIGIN


class LiveEventsBlueprint(ServerSentEventsBlueprint):
    """flask-sse's blueprint, with its four problems fixed: one Redis pool per process (and
    one subscription), keepalives, Last-Event-ID replay, and the channel taken from the token,
    never from `?channel=`."""

    @property
    def redis(self) -> Redis:
        return get_redis()

    def publish(self, data: dict, type: str | None = None, id: str | None = None,
                retry: int | None = None, channel: int | None = None) -> str | None:
        """flask-sse's publish, where `channel` is the account id and the replay stream
        assigns the id."""
        return publish(int(channel), type, data)

    def messages(self, account_id: int, last_event_id: str | None = None,
                 keepalive_seconds: float = 20.0, user_id: int | None = None,
                 still_allowed: Callable[[], bool] | None = None,
                 slot: StreamSlot | None = None) -> EventStream:
        """The account's events after Last-Event-ID (or from now), then live ones. Whatever
        fails on the way gives back the subscription and the slot."""
        asked = event_position(last_event_id)   # checked before anything is taken
        hub = get_hub()
        # read before subscribing (fails fast when Redis is down); the first replay, after
        # subscribing, covers whatever is published in between
        newest = latest_position(hub.redis, account_id)
        subscription = hub.subscribe(channel_name(account_id))
        try:
            # a position Redis never reached (data lost, a foreign id) must not hide new events
            start = min(asked, newest) if asked is not None else newest
            ready = Message(json.dumps({"account_id": account_id, "user_id": user_id}),
                            type="ready", id=f"{start[0]}-{start[1]}")
            return EventStream(hub, subscription, account_id, ready, start,
                               keepalive_seconds, still_allowed, slot)
        except BaseException:
            hub.unsubscribe(subscription)
            raise

    def stream(self):
        """The view: the caller's account's events. Holds no database connection."""
        user = current_user()
        account_id, user_id = user.account_id, user.id
        still_allowed = _token_check(current_app._get_current_object(), bearer_token(),
                                     account_id)
        db.session.remove()
        config = current_app.config
        slot = StreamSlot(get_redis(), account_id, user_id)
        try:
            slot.take(config["SSE_MAX_STREAMS_PER_USER"], config["SSE_MAX_STREAMS_PER_ACCOUNT"])
        except RedisError as error:
            log.warning("live stream for account %s unavailable: %s", account_id, error)
            raise ApiError(503, "unavailable", "live events unavailable") from None
        try:
            body = self.messages(account_id, request.headers.get("Last-Event-ID"),
                                 config["SSE_KEEPALIVE_SECONDS"], user_id, still_allowed, slot)
        except (LiveUnavailable, RedisError) as error:
            slot.release()
            log.warning("live stream for account %s unavailable: %s", account_id, error)
            raise ApiError(503, "unavailable", "live events unavailable") from None
        except BaseException:
            slot.release()
            raise
        return current_app.response_class(
            body, mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _token_check(app, token: str, account_id: int) -> Callable[[], bool | None]:
    """Whether the stream's token still lets a senior of the account stream; a short query
    that returns its connection at once. None when it cannot tell (Postgres down): a short
    outage does not end streams, a long one does."""
    def still_allowed() -> bool | None:
        with app.app_context():
            try:
                found = user_for_token(token)
                return (found is not None and found[0].is_senior
                        and found[0].account_id == account_id)
            except SQLAlchemyError as error:
                log.warning("could not recheck a live stream's token: %s", error)
                return None
            finally:
                db.session.remove()
    return still_allowed
