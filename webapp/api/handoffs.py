"""Park and escalate, the team's escalation queue, claiming and the delivery records."""
from marshmallow import Schema

from webapp import auth
from webapp.api.bodies import Blueprint
from webapp.api.schemas import NotBlank, StrictSchema, fields, validate
from webapp.services import channels, deliveries
from webapp.services import handoffs as service

bp = Blueprint("handoffs", __name__, description="Handoffs: park, escalate, claim")


class HandoffCreateSchema(StrictSchema):
    intent = fields.String(required=True, validate=validate.OneOf(("park", "escalate")))
    note = fields.String(required=True, validate=[validate.Length(min=1, max=4000), NotBlank()])
    urgency = fields.String(load_default="normal", validate=validate.OneOf(("normal", "high")))


class QueueQuerySchema(StrictSchema):
    status = fields.String(load_default="open", validate=validate.OneOf(("open", "claimed", "all")))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))


class UserRefSchema(Schema):
    id = fields.Integer()
    name = fields.String()


class AssessmentSchema(Schema):
    status = fields.String()
    summary = fields.String(allow_none=True)
    likely_causes = fields.List(fields.String())
    next_steps = fields.List(fields.String())
    confidence = fields.Float(allow_none=True)
    provider = fields.String(allow_none=True)
    model = fields.String(allow_none=True)
    last_error = fields.String(allow_none=True)


class PsaStateSchema(Schema):
    status = fields.String()
    ticket_id = fields.String(allow_none=True)
    note_id = fields.String(allow_none=True)
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)


class SessionRefSchema(Schema):
    id = fields.Integer()
    title = fields.String()
    client_name = fields.String(allow_none=True)
    psa_ticket_id = fields.String(allow_none=True)


class SnapshotSchema(Schema):
    """In the queue list and live events: problem, captured_at and message_count; the
    handoff-context screen (GET /handoffs/{id}) adds the messages."""
    problem = fields.String()
    messages = fields.List(fields.Dict())
    message_count = fields.Integer()
    messages_omitted = fields.Integer()
    captured_at = fields.String()


class HandoffSchema(Schema):
    id = fields.Integer()
    session_id = fields.Integer()
    account_id = fields.Integer()
    intent = fields.String()
    status = fields.String()
    note = fields.String()
    urgency = fields.String()
    created_by = fields.Integer()
    created_by_user = fields.Nested(UserRefSchema, allow_none=True)
    created_at = fields.String()
    claimed_by = fields.Integer(allow_none=True)
    claimed_by_user = fields.Nested(UserRefSchema, allow_none=True)
    claimed_at = fields.String(allow_none=True)
    reminded_at = fields.String(allow_none=True)
    session = fields.Nested(SessionRefSchema)
    snapshot = fields.Nested(SnapshotSchema)
    assessment = fields.Nested(AssessmentSchema)
    psa = fields.Nested(PsaStateSchema)


class HandoffPageSchema(Schema):
    items = fields.List(fields.Nested(HandoffSchema))
    next_cursor = fields.String(allow_none=True)


class DeliverySchema(Schema):
    id = fields.Integer()
    channel = fields.String()
    recipient = fields.String()
    purpose = fields.String()   # "escalation", or "reminder" for the still-unclaimed reminder
    status = fields.String()
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    next_attempt_at = fields.String(allow_none=True)
    sent_at = fields.String(allow_none=True)


class DeliveryListSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema))


@bp.post("/ai-sessions/<int:session_id>/handoff")
@bp.arguments(HandoffCreateSchema)
@bp.response(201, HandoffSchema)
def create_handoff(body, session_id: int):
    handoff = service.create_handoff(auth.current_user(), session_id, body["intent"],
                                     body["note"], body["urgency"])
    return service.full(handoff)


@bp.get("/ai-sessions/escalations")
@bp.arguments(QueueQuerySchema, location="query")
@bp.response(200, HandoffPageSchema)
def escalation_queue(query):
    page, next_cursor = service.escalation_queue(auth.current_user(), query["status"],
                                                 query["limit"], query["cursor"])
    return {"items": service.many(page), "next_cursor": next_cursor}


@bp.get("/handoffs/<int:handoff_id>")
@bp.response(200, HandoffSchema)
def get_handoff(handoff_id: int):
    return service.full(service.get_visible(auth.current_user(), handoff_id))


@bp.post("/handoffs/<int:handoff_id>/claim")
@auth.require_senior
@bp.response(200, HandoffSchema)
def claim(handoff_id: int):
    return service.full(service.claim(auth.current_user(), handoff_id))


@bp.post("/handoffs/<int:handoff_id>/resume")
@bp.response(200, HandoffSchema)
def resume(handoff_id: int):
    return service.full(service.resume(auth.current_user(), handoff_id))


@bp.post("/handoffs/<int:handoff_id>/cancel")
@bp.response(200, HandoffSchema)
def cancel(handoff_id: int):
    return service.full(service.cancel(auth.current_user(), handoff_id))


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
def retry_delivery(handoff_id: int, delivery_id: int):
    handoff = service.get_visible(auth.current_user(), handoff_id)
    return deliveries.to_dict(channels.retry(handoff, delivery_id))
