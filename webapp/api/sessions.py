"""AI troubleshooting sessions: create, read, and append to the transcript."""
from marshmallow import Schema

from webapp import auth
from webapp.api.bodies import Blueprint
from webapp.api.schemas import NotBlank, StrictSchema, fields, validate
from webapp.models.sessions import MESSAGE_ROLES
from webapp.services import sessions

bp = Blueprint("ai_sessions", __name__, description="AI troubleshooting sessions")


class SessionCreateSchema(StrictSchema):
    title = fields.String(required=True, validate=[validate.Length(min=1, max=200), NotBlank()])
    problem = fields.String(load_default="", validate=validate.Length(max=20000))
    psa_ticket_id = fields.String(load_default=None, allow_none=True,
                                  validate=validate.Regexp(r"^[A-Za-z0-9_.\-]{1,64}$"))
    client_name = fields.String(load_default=None, allow_none=True,
                                validate=validate.Length(max=200))


class SessionSchema(Schema):
    id = fields.Integer()
    account_id = fields.Integer()
    owner_id = fields.Integer()
    title = fields.String()
    problem = fields.String()
    status = fields.String()
    psa_ticket_id = fields.String(allow_none=True)
    client_name = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class MessageCreateSchema(StrictSchema):
    role = fields.String(required=True, validate=validate.OneOf(MESSAGE_ROLES))
    content = fields.String(required=True,
                            validate=[validate.Length(min=1, max=20000), NotBlank()])


class MessageSchema(Schema):
    id = fields.Integer()
    session_id = fields.Integer()
    role = fields.String()
    content = fields.String()
    created_at = fields.DateTime()


@bp.post("/ai-sessions")
@bp.arguments(SessionCreateSchema)
@bp.response(201, SessionSchema)
def create_session(body):
    return sessions.start(auth.current_user(), body["title"], body["problem"],
                          body["psa_ticket_id"], body["client_name"])


@bp.get("/ai-sessions/<int:session_id>")
@bp.response(200, SessionSchema)
def get_session(session_id: int):
    return sessions.of_account(auth.current_user().account_id, session_id)


@bp.post("/ai-sessions/<int:session_id>/messages")
@bp.arguments(MessageCreateSchema)
@bp.response(201, MessageSchema)
def add_message(body, session_id: int):
    return sessions.add_message(auth.current_user(), session_id, body["role"], body["content"])
