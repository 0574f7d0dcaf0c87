"""The live escalation queue: server-sent events of the caller's account (see webapp.live).

flask-sse's blueprint does four things this product cannot use as they are: a new Redis
client per publish and per stream, no keepalive, no Last-Event-ID, and the channel taken from
`?channel=` (anyone reads any channel). LiveEventsBlueprint keeps its blueprint, its Message
wire format and its `publish(data, type, id, channel)` entry point, and replaces those four:
one Redis pool and one subscription per process (webapp.live.hub), keepalives and replay
(webapp.live.stream), and the channel from the token."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable

from flask import Flask, current_app, request
from flask_smorest import Api
from flask_sse import Message, ServerSentEventsBlueprint
from redis import Redis, RedisError

from webapp import auth, token_lookups
from webapp.auth import bearer_token, current_user, token_digest
from webapp.errors import ApiError
from webapp.extensions import db
from webapp.live.hub import get_hub
from webapp.live.publish import EVENT_TYPES, LiveUnavailable, channel_name, event_position, publish
from webapp.live.stream import EventStream, StreamSlot, latest_position
from webapp.redis_client import get_redis

log = logging.getLogger(__name__)


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
    """Whether the stream's token still lets a senior of the account stream; checked together
    with the other streams' checks of the moment (webapp.token_lookups). None when it cannot
    tell (Postgres down): a short outage does not end streams, a long one does."""
    with app.app_context():
        digest = token_digest(token)

    def still_allowed() -> bool | None:
        try:
            found = token_lookups.lookups(app).caller(digest)
        except token_lookups.Unavailable as error:
            log.warning("could not recheck a live stream's token: %s", error)
            return None
        return found is not None and found.is_senior and found.account_id == account_id
    return still_allowed


PATH = "/ai-sessions/escalations/stream"

bp = LiveEventsBlueprint("stream", __name__)
bp.add_url_rule(PATH, endpoint="escalations", view_func=auth.require_senior(bp.stream),
                methods=["GET"])


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


OPERATION = {
    "tags": ["handoffs"],
    "summary": "Live events of the caller's account (Server-Sent Events)",
    "description": (
        "Seniors only. First `event: ready` with `data: {account_id, user_id}` (its `id` is "
        "where the stream starts), then " + ", ".join(f"`{name}`" for name in EVENT_TYPES)
        + " events, each with an `id` and `data: {type, handoff}`; a `: keepalive` comment at "
        "least every SSE_KEEPALIVE_SECONDS. Reconnecting with `Last-Event-ID` replays every "
        "event after it, in order, then live ones, none twice. The channel is the token's "
        "account; a `channel` query parameter is ignored."),
    "parameters": [{"name": "Last-Event-ID", "in": "header", "required": False,
                    "schema": {"type": "string"}}],
    "responses": {
        "200": {"description": "An endless event stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        "401": _error("No token, or a bad one"),
        "403": _error("Viewers may not stream"),
        "429": _error("Too many open streams for the user or the account"),
        "503": _error("Redis is down"),
    },
}


def register(app: Flask, api: Api) -> None:
    """A flask-sse blueprint, not a flask-smorest one: registered on the app, documented by
    hand in the OpenAPI document."""
    app.register_blueprint(bp, url_prefix="/api/v1")
    rule = next(rule for rule in app.url_map.iter_rules() if rule.endpoint == "stream.escalations")
    api.spec.path(rule=rule, operations={"get": OPERATION})
