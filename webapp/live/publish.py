"""Publishing live events: each is appended to the account's Redis Stream (for
Last-Event-ID replay) and published on the account's channel with the same id, atomically.
This is what services call."""
from __future__ import annotations

import json
import logging
import re

from flask import Flask, current_app
from flask_sse import Message
from redis import RedisError

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


