"""AI troubleshooting sessions: create, read, and append to the transcript."""
from marshmallow import Schema

from webapp import auth
from webapp.api.bodies import Blueprint
from webapp.api.schemas import StrictSchema, fields, not_blank_text, validate
from webapp.models.sessions import MESSAGE_ROLES, SESSION_STATUSES
from webapp.services import sessions

bp = Blueprint("ai_sessions", __name__, description="AI troubleshooting sessions")


class SessionCreateSchema(StrictSchema):
    title = not_blank_text(1, 200, required=True)
    problem = fields.String(load_default="", validate=validate.Length(max=20000))
    psa_ticket_id = fields.String(load_default=None, allow_none=True,
                                  validate=validate.Regexp(r"^[A-Za-z0-9_.\-]{1,64}$"))
    client_name = fields.String(load_default=None, allow_none=True,
                                validate=validate.Length(max=200))


class SessionSchema(Schema):
    id = fields.Integer(required=True)
    account_id = fields.Integer(required=True)
    owner_id = fields.Integer(required=True)
    title = fields.String(required=True)
    problem = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(SESSION_STATUSES))
    psa_ticket_id = fields.String(required=True, allow_none=True)
    client_name = fields.String(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class MessageCreateSchema(StrictSchema):
    role = fields.String(required=True, validate=validate.OneOf(MESSAGE_ROLES))
    content = not_blank_text(1, 20000, required=True)


class MessageSchema(Schema):
    id = fields.Integer(required=True)
    session_id = fields.Integer(required=True)
    role = fields.String(required=True, validate=validate.OneOf(MESSAGE_ROLES))
    content = fields.String(required=True)
    created_at = fields.DateTime(required=True)


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
@bp.refuses(403, "`forbidden`: only the session's owner may add to its transcript")
@bp.refuses(409, "`session_full`: the transcript is at SESSION_MAX_MESSAGES or "
                 "SESSION_MAX_CHARACTERS")
def add_message(body, session_id: int):
    return sessions.add_message(auth.current_user(), session_id, body["role"], body["content"])
