"""AI troubleshooting sessions: create, read, and append to the transcript."""
from flask import current_app
from marshmallow import Schema
from sqlalchemy import func

from webapp import auth
from webapp.api.bodies import Blueprint
from webapp.api.schemas import NotBlank, StrictSchema, fields, validate
from webapp.errors import ApiError, not_found
from webapp.extensions import db
from webapp.models import AiSession, SessionMessage
from webapp.models.sessions import MESSAGE_ROLES

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


def get_account_session(session_id: int, *, for_update: bool = False) -> AiSession:
    """The caller's account's session, or 404 (another tenant's session does not exist)."""
    query = db.select(AiSession).where(AiSession.id == session_id,
                                       AiSession.account_id == auth.current_user().account_id)
    if for_update:
        query = query.with_for_update()
    session = db.session.scalars(query).one_or_none()
    if session is None:
        raise not_found("session")
    return session


@bp.post("/ai-sessions")
@bp.arguments(SessionCreateSchema)
@bp.response(201, SessionSchema)
def create_session(body):
    user = auth.current_user()
    session = AiSession(account_id=user.account_id, owner_id=user.id, status="active",
                        title=body["title"].strip(), problem=body["problem"],
                        psa_ticket_id=body["psa_ticket_id"], client_name=body["client_name"])
    db.session.add(session)
    db.session.commit()
    return session


@bp.get("/ai-sessions/<int:session_id>")
@bp.response(200, SessionSchema)
def get_session(session_id: int):
    return get_account_session(session_id)


def _check_room(session: AiSession, content: str) -> None:
    """A transcript is bounded in messages and characters: 409 `session_full` past either.
    The session row is locked first, so concurrent appends cannot both squeeze in."""
    config = current_app.config
    db.session.execute(db.select(AiSession.id).where(AiSession.id == session.id)
                       .with_for_update())
    characters = func.coalesce(func.sum(func.length(SessionMessage.content)), 0)
    count, characters = db.session.execute(db.select(func.count(SessionMessage.id), characters)
                                           .where(SessionMessage.session_id == session.id)).one()
    if count + 1 > config["SESSION_MAX_MESSAGES"] or \
            characters + len(content) > config["SESSION_MAX_CHARACTERS"]:
        raise ApiError(409, "session_full",
                       "the session's transcript is full; escalate it or start a new session",
                       {"max_messages": config["SESSION_MAX_MESSAGES"],
                        "max_characters": config["SESSION_MAX_CHARACTERS"],
                        "messages": count, "characters": int(characters)})


@bp.post("/ai-sessions/<int:session_id>/messages")
@bp.arguments(MessageCreateSchema)
@bp.response(201, MessageSchema)
def add_message(body, session_id: int):
    session = get_account_session(session_id)
    user = auth.current_user()
    if session.owner_id != user.id and not user.is_admin:
        raise ApiError(403, "forbidden", "only the session's owner may add to its transcript")
    _check_room(session, body["content"])
    message = SessionMessage(session_id=session.id, role=body["role"], content=body["content"])
    db.session.add(message)
    db.session.commit()
    return message
