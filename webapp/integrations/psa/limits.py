"""Rate budgets the PSAs impose, shared by every worker through Redis when it is given."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import redis as redis_lib

from .base import PsaBusy

KEY_PREFIX = "psa:limit:"
# The longest a request waits in its worker thread for a turn. Past it the attempt ends with
# PsaBusy and is tried again later, so one tenant's burst cannot hold every worker thread.
MAX_WAIT = 2.0

# Holders live in a sorted set scored by when their lease ends, so a worker
# that dies while holding a slot frees it when the lease runs out.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease)
  return 1
end
return 0
"""

# The key holds the first free moment (microseconds, Redis clock); each caller
# takes that slot and moves it one interval on, so callers queue up in order.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, free)
local wait = slot - now
if wait > tonumber(ARGV[2]) then
  return {0, string.format('%d', wait)}
end
local interval = tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', slot + interval),
           'PX', math.floor((wait + interval) / 1000) + 1000)
return {1, string.format('%d', wait)}
"""

_local_lock = threading.Lock()
_local_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_local_next_free: dict[str, float] = {}


def budget_key(provider: str, *parts: str) -> str:
    """The Redis key of one rate budget."""
    return KEY_PREFIX + ":".join((provider, *parts))


class ConcurrencyLimit:
    """At most `limit` requests in flight per key, across processes when Redis is given."""

    def __init__(
        self,
        key: str,
        limit: int,
        *,
        redis: redis_lib.Redis | None = None,
        max_wait: float = MAX_WAIT,
        lease: float = 120.0,
        label: str = "PSA",
    ) -> None:
        self.key = key
        self.limit = limit
        self.max_wait = max_wait
        self.lease = lease
        self.label = label
        self._redis = redis
        self._script = redis.register_script(_ACQUIRE) if redis is not None else None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold one slot for the duration of the block; PsaBusy if none frees in max_wait."""
        release = self._acquire()
        try:
            yield
        finally:
            release()

    def _exhausted(self) -> PsaBusy:
        # When a slot frees is not known; spread the retries so they do not come back together.
        return PsaBusy(
            f"{self.label}: rate budget exhausted ({self.limit} concurrent requests)",
            retry_after=round(random.uniform(1.0, 3.0), 3),
        )

    def _acquire(self) -> Callable[[], None]:
        if self._redis is not None:
            try:
                return self._acquire_shared()
            except redis_lib.RedisError:
                pass  # Redis down: the in-process limit still bounds this worker.
        with _local_lock:
            semaphore = _local_semaphores.setdefault(
                (self.key, self.limit), threading.BoundedSemaphore(self.limit)
            )
        if not semaphore.acquire(timeout=self.max_wait):
            raise self._exhausted()
        return semaphore.release

    def _acquire_shared(self) -> Callable[[], None]:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.max_wait
        pause = 0.005
        while not self._script(keys=[self.key], args=[token, self.limit, int(self.lease * 1000)]):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._exhausted()
            time.sleep(min(pause * (0.5 + random.random()), remaining))
            pause = min(pause * 2, 0.05)

        def release() -> None:
            with contextlib.suppress(redis_lib.RedisError):  # the lease frees it anyway
                self._redis.zrem(self.key, token)

        return release


class RequestSpacing:
    """Requests per key at least `interval` seconds apart, across processes when Redis is given."""

    def __init__(
        self,
        key: str,
        interval: float,
        *,
        redis: redis_lib.Redis | None = None,
        max_wait: float = MAX_WAIT,
        label: str = "PSA",
    ) -> None:
        self.key = key
        self.interval = interval
        self.max_wait = max_wait
        self.label = label
        self._redis = redis
        self._script = redis.register_script(_RESERVE) if redis is not None else None

    def wait(self) -> None:
        """Block until this caller's turn; PsaBusy, without taking the turn, if it is more
        than max_wait away."""
        if self.interval <= 0:
            return
        delay = self._reserve()
        if delay > 0:
            time.sleep(delay)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Wait for a turn, then run the block (the same shape as ConcurrencyLimit)."""
        self.wait()
        yield

    def _exhausted(self, wait: float) -> PsaBusy:
        return PsaBusy(f"{self.label}: rate budget exhausted", retry_after=round(wait, 3))

    def _reserve(self) -> float:
        if self._redis is not None:
            try:
                return self._reserve_shared()
            except redis_lib.RedisError:
                pass  # Redis down: keep spacing this worker's own requests.
        with _local_lock:
            now = time.monotonic()
            slot = max(now, _local_next_free.get(self.key, 0.0))
            wait = slot - now
            if wait > self.max_wait:
                raise self._exhausted(wait)
            _local_next_free[self.key] = slot + self.interval
        return wait

    def _reserve_shared(self) -> float:
        granted, wait_us = self._script(
            keys=[self.key], args=[int(self.interval * 1_000_000), int(self.max_wait * 1_000_000)]
        )
        wait = int(wait_us) / 1_000_000
        if not int(granted):
            raise self._exhausted(wait)
        return wait
