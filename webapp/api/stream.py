"""The live escalation queue: server-sent events of the caller's account (see webapp.live)."""
from flask import Flask
from flask_smorest import Api

from webapp import auth
from webapp.live import EVENT_TYPES, LiveEventsBlueprint

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
