"""Live events: each event is appended to the account's Redis Stream (for Last-Event-ID
replay) and published on the account's channel with the same id, atomically."""
from __future__ import annotations

import json
import logging

from flask import current_app
from redis import RedisError

from webapp.redis_client import get_redis, key

log = logging.getLogger(__name__)

EVENT_TYPES = ("handoff_created", "handoff_updated", "handoff_claimed", "handoff_cancelled")

# XADD then PUBLISH with the entry id, in one script so no subscriber sees one without the other
_PUBLISH_SCRIPT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[2],
                      'data', ARGV[3])
redis.call('PUBLISH', KEYS[2], cjson.encode({id = id, event = ARGV[2], data = ARGV[3]}))
return id
"""


def stream_key(account_id: int) -> str:
    return key("events", account_id)


def channel_name(account_id: int) -> str:
    return key("live", account_id)


def publish(account_id: int, event_type: str, payload: dict) -> str | None:
    """Publish an event to the account's live channel; returns its id, or None if Redis is down.

    Never raises: a live event is a courtesy on top of the durable rows.
    """
    data = json.dumps({"type": event_type, **payload}, separators=(",", ":"), default=str)
    try:
        redis = get_redis()
        script = current_app.extensions.setdefault(
            "live_publish_script", redis.register_script(_PUBLISH_SCRIPT))
        entry_id = script(keys=[stream_key(account_id), channel_name(account_id)],
                          args=[current_app.config["SSE_REPLAY_MAXLEN"], event_type, data])
        return entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    except RedisError as error:
        log.warning("live event %s for account %s not published: %s", event_type, account_id,
                    error)
        return None
