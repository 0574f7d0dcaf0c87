"""The body of one live stream: `ready`, a replay of the Redis Stream after its start, then
live messages (dropping any already sent), so it sees every event once and in order; and its
place among the user's and the account's open streams."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator

from flask_sse import Message
from redis import Redis, RedisError

from webapp import metrics
from webapp.errors import ApiError
from webapp.live.hub import CLOSING, RECHECK, RESYNC, LiveHub, Subscription
from webapp.live.publish import (
    _ORIGIN,
    KEEPALIVE,
    KEEPALIVES_PER_INTERVAL,
    RECHECK_EVERY_KEEPALIVES,
    RECHECK_FAILURES_TO_END,
    REPLAY_BATCH,
    LiveMessage,
    _text,
    event_position,
    stream_key,
)
from webapp.redis_client import key

log = logging.getLogger(__name__)


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
        self.held = False   # counted in the open streams gauge (webapp/metrics.py)

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
        self.held = True
        metrics.stream_opened()

    def renew_if_due(self) -> None:
        if time.monotonic() < self.renew_at:
            return
        self.renew_at = time.monotonic() + RENEW_SLOT_SECONDS
        pipe = self.redis.pipeline(transaction=False)
        for name in self.keys:
            pipe.zadd(name, {self.holder: time.time() + STREAM_SLOT_SECONDS}, xx=True)
        pipe.execute()

    def release(self) -> None:
        if self.held:
            self.held = False
            metrics.stream_closed()
        try:
            pipe = self.redis.pipeline(transaction=False)
            for name in self.keys:
                pipe.zrem(name, self.holder)
            pipe.execute()
        except RedisError:   # its hold runs out by itself
            log.debug("could not release a stream slot", exc_info=True)


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
                    if item is CLOSING:
                        log.info("live stream of account %s ended: the web process is stopping",
                                 self.account_id)
                        return
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


