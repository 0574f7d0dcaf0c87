"""Live events on flask-sse: `publish` (what services call), `hub` (one Redis subscription
per web process) and `stream` (the body of one stream, with Last-Event-ID replay). The view
is in webapp/api/stream.py."""
from webapp.live.hub import HUB_CLIENT_NAME, LiveHub, get_hub
from webapp.live.publish import (
    EVENT_TYPES,
    announce_access_change,
    channel_name,
    event_position,
    publish,
    stream_key,
)

__all__ = ["EVENT_TYPES", "HUB_CLIENT_NAME", "LiveHub", "announce_access_change",
           "channel_name", "event_position", "get_hub", "publish", "stream_key"]
