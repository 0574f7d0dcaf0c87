"""One Redis subscription per web process serves every open stream in it: a hub thread (outside
gevent) owns that connection, subscribes an account's channel while someone in the process
streams it, and hands each message to the streams of that account."""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque

from flask import current_app
from redis import ConnectionPool, Redis, RedisError

from webapp.live.publish import (
    ACCESS_CHANGED,
    HUB_POLL_SECONDS,
    MAX_PENDING_PER_STREAM,
    SUBSCRIBE_TIMEOUT_SECONDS,
    LiveMessage,
    LiveUnavailable,
    _text,
)
from webapp.redis_client import get_redis

log = logging.getLogger(__name__)


# ---- one subscription per process -----------------------------------------------------------

RESYNC = object()  # "you may have missed messages: replay from your last position"
RECHECK = object()  # "check that your token still allows you to stream"
CLOSING = object()  # "this process is shutting down: end now, the client reconnects elsewhere"
_hubs: list = []    # every hub of this process (one per app), for end_all_streams


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
    return Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class,
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
        self.closing = False
        _hubs.append(self)

    def subscribe(self, channel: str, timeout: float = SUBSCRIBE_TIMEOUT_SECONDS) -> Subscription:
        """A subscription that receives every message published on the channel from now on."""
        subscription = Subscription(channel)
        with self._lock:
            if self.closing:
                raise LiveUnavailable("this process is shutting down")
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

    def end_streams(self) -> int:
        """Tell every open stream of this hub to end now, and take no new ones; returns how
        many were told."""
        with self._lock:
            self.closing = True
            subscriptions = [s for state in self._channels.values() for s in state.subscriptions]
        for subscription in subscriptions:
            subscription.push(CLOSING)
        return len(subscriptions)

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


def end_all_streams() -> int:
    """A web process stopping: its streams end at once (their clients reconnect with
    Last-Event-ID to a process that is not), so it exits well within its graceful timeout."""
    pid = os.getpid()
    return sum(hub.end_streams() for hub in list(_hubs) if hub.pid == pid)


def get_hub() -> LiveHub:
    """The current process's hub (a forked process gets a hub of its own)."""
    extensions = current_app.extensions
    with _hub_lock:
        hub = extensions.get("live_hub")
        if hub is None or hub.pid != os.getpid():
            hub = extensions["live_hub"] = LiveHub(get_redis())
        return hub


