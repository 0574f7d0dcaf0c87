"""Park and escalate, the team's escalation queue, claiming and the delivery records."""
from marshmallow import Schema

from webapp import auth
from webapp.api.bodies import Blueprint
from webapp.api.schemas import StrictSchema, fields, not_blank_text, validate
from webapp.models.handoffs import (
    CHANNELS,
    DELIVERY_STATUSES,
    HANDOFF_STATUSES,
    INTENTS,
    PURPOSES,
    URGENCIES,
)
from webapp.services import channels, deliveries
from webapp.services import handoff_views as views
from webapp.services import handoffs as service

bp = Blueprint("handoffs", __name__, description="Handoffs: park, escalate, claim")


class HandoffCreateSchema(StrictSchema):
    intent = fields.String(required=True, validate=validate.OneOf(("park", "escalate")))
    note = not_blank_text(1, 4000, required=True)
    urgency = fields.String(load_default="normal", validate=validate.OneOf(("normal", "high")))


class QueueQuerySchema(StrictSchema):
    status = fields.String(load_default="open", validate=validate.OneOf(("open", "claimed", "all")))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))


# what the state machine shows of a handoff's assessment and PSA rows (`sending` reads as
# pending), in its order
ASSESSMENT_STATUSES = tuple(dict.fromkeys(
    deliveries.assessment_status(status) for status in deliveries.DeliveryStatus))
PSA_STATUSES = tuple(dict.fromkeys(
    deliveries.psa_status(status) for status in deliveries.DeliveryStatus))


class UserRefSchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)


class AssessmentSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(ASSESSMENT_STATUSES))
    summary = fields.String(required=True, allow_none=True)
    likely_causes = fields.List(fields.String(), required=True)
    next_steps = fields.List(fields.String(), required=True)
    confidence = fields.Float(required=True, allow_none=True)
    provider = fields.String(required=True, allow_none=True)
    model = fields.String(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True)


class PsaStateSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(PSA_STATUSES))
    ticket_id = fields.String(required=True, allow_none=True)
    note_id = fields.String(required=True, allow_none=True)
    attempts = fields.Integer(required=True)
    last_error = fields.String(required=True, allow_none=True)


class SessionRefSchema(Schema):
    id = fields.Integer(required=True)
    title = fields.String(required=True)
    client_name = fields.String(required=True, allow_none=True)
    psa_ticket_id = fields.String(required=True, allow_none=True)


class SnapshotSchema(Schema):
    """In the queue list and live events: problem, captured_at and message_count; the
    handoff-context screen (GET /handoffs/{id}) adds the messages."""
    problem = fields.String(required=True)
    messages = fields.List(fields.Dict())
    message_count = fields.Integer(required=True)
    messages_omitted = fields.Integer()
    captured_at = fields.String(required=True, allow_none=True)


class HandoffSchema(Schema):
    id = fields.Integer(required=True)
    session_id = fields.Integer(required=True)
    account_id = fields.Integer(required=True)
    intent = fields.String(required=True, validate=validate.OneOf(INTENTS))
    status = fields.String(required=True, validate=validate.OneOf(HANDOFF_STATUSES))
    note = fields.String(required=True)
    urgency = fields.String(required=True, validate=validate.OneOf(URGENCIES))
    created_by = fields.Integer(required=True)
    created_by_user = fields.Nested(UserRefSchema, required=True, allow_none=True)
    created_at = fields.String(required=True)
    claimed_by = fields.Integer(required=True, allow_none=True)
    claimed_by_user = fields.Nested(UserRefSchema, required=True, allow_none=True)
    claimed_at = fields.String(required=True, allow_none=True)
    reminded_at = fields.String(required=True, allow_none=True)
    session = fields.Nested(SessionRefSchema, required=True)
    snapshot = fields.Nested(SnapshotSchema, required=True)
    assessment = fields.Nested(AssessmentSchema, required=True)
    psa = fields.Nested(PsaStateSchema, required=True)


class HandoffPageSchema(Schema):
    items = fields.List(fields.Nested(HandoffSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class DeliverySchema(Schema):
    id = fields.Integer(required=True)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    recipient = fields.String(required=True)
    # "escalation", or "reminder" for the still-unclaimed reminder
    purpose = fields.String(required=True, validate=validate.OneOf(PURPOSES))
    status = fields.String(required=True, validate=validate.OneOf(DELIVERY_STATUSES))
    attempts = fields.Integer(required=True)
    last_error = fields.String(required=True, allow_none=True)
    next_attempt_at = fields.String(required=True, allow_none=True)
    sent_at = fields.String(required=True, allow_none=True)


class DeliveryListSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema), required=True)


@bp.post("/ai-sessions/<int:session_id>/handoff")
@bp.arguments(HandoffCreateSchema)
@bp.response(201, HandoffSchema)
@bp.refuses(403, "`forbidden`: only the session's owner or an admin may hand it off")
@bp.refuses(409, "`open_handoff_exists` (the session already has one; `details` names it) "
                 "or `session_closed`")
def create_handoff(body, session_id: int):
    handoff = service.create_handoff(auth.current_user(), session_id, body["intent"],
                                     body["note"], body["urgency"])
    return views.full(handoff)


@bp.get("/ai-sessions/escalations")
@bp.arguments(QueueQuerySchema, location="query")
@bp.response(200, HandoffPageSchema)
def escalation_queue(query):
    page, next_cursor = service.escalation_queue(auth.current_user(), query["status"],
                                                 query["limit"], query["cursor"])
    return {"items": views.many(page), "next_cursor": next_cursor}


@bp.get("/handoffs/<int:handoff_id>")
@bp.response(200, HandoffSchema)
def get_handoff(handoff_id: int):
    return views.full(service.get_visible(auth.current_user(), handoff_id))


@bp.post("/handoffs/<int:handoff_id>/claim")
@auth.require_senior
@bp.response(200, HandoffSchema)
@bp.refuses(409, "`already_claimed` (`details.claimed_by`), `not_an_escalation` or "
                 "`handoff_closed`")
def claim(handoff_id: int):
    return views.full(service.claim(auth.current_user(), handoff_id))


@bp.post("/handoffs/<int:handoff_id>/resume")
@bp.response(200, HandoffSchema)
@bp.refuses(403, "`forbidden`: only the user who parked it may resume it")
@bp.refuses(409, "`not_a_park` or `handoff_closed`")
def resume(handoff_id: int):
    return views.full(service.resume(auth.current_user(), handoff_id))


@bp.post("/handoffs/<int:handoff_id>/cancel")
@bp.response(200, HandoffSchema)
@bp.refuses(403, "`forbidden`: only the escalator or an admin may cancel it")
@bp.refuses(409, "`already_claimed`, `not_an_escalation` or `handoff_closed`")
def cancel(handoff_id: int):
    return views.full(service.cancel(auth.current_user(), handoff_id))


@bp.get("/handoffs/<int:handoff_id>/deliveries")
@bp.response(200, DeliveryListSchema)
def list_deliveries(handoff_id: int):
    handoff = service.get_visible(auth.current_user(), handoff_id)
    # the assessment's own row is internal: its state is the handoff's `assessment.status`
    return {"items": [deliveries.to_dict(row) for row in deliveries.for_handoff(handoff)
                      if row.channel != "assessment"]}


@bp.post("/handoffs/<int:handoff_id>/deliveries/<int:delivery_id>/retry")
@auth.require_admin
@bp.response(202, DeliverySchema)
@bp.refuses(409, "`not_retryable`: only failed or dead deliveries can be retried")
def retry_delivery(handoff_id: int, delivery_id: int):
    handoff = service.get_visible(auth.current_user(), handoff_id)
    return deliveries.to_dict(channels.retry(handoff, delivery_id))
