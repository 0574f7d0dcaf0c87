"""AI troubleshooting sessions: the writes behind the sessions API."""
from __future__ import annotations

from flask import current_app
from sqlalchemy import func

from webapp.extensions import db
from webapp.models import AiSession, SessionMessage, User
from webapp.services.errors import Conflict, Forbidden, NotFound


def of_account(account_id: int, session_id: int, *, for_update: bool = False) -> AiSession:
    """The account's session, or NotFound (another tenant's session does not exist)."""
    query = db.select(AiSession).where(AiSession.id == session_id,
                                       AiSession.account_id == account_id)
    if for_update:
        query = query.with_for_update()
    session = db.session.scalars(query).one_or_none()
    if session is None:
        raise NotFound("session")
    return session


def start(owner: User, title: str, problem: str, psa_ticket_id: str | None,
          client_name: str | None) -> AiSession:
    session = AiSession(account_id=owner.account_id, owner_id=owner.id, status="active",
                        title=title.strip(), problem=problem, psa_ticket_id=psa_ticket_id,
                        client_name=client_name)
    db.session.add(session)
    db.session.commit()
    return session


def _check_room(session: AiSession, content: str) -> None:
    """A transcript is bounded in messages and characters: `session_full` past either.
    The session row is locked first, so concurrent appends cannot both squeeze in."""
    config = current_app.config
    db.session.execute(db.select(AiSession.id).where(AiSession.id == session.id)
                       .with_for_update())
    characters = func.coalesce(func.sum(func.length(SessionMessage.content)), 0)
    count, characters = db.session.execute(db.select(func.count(SessionMessage.id), characters)
                                           .where(SessionMessage.session_id == session.id)).one()
    if count + 1 > config["SESSION_MAX_MESSAGES"] or \
            characters + len(content) > config["SESSION_MAX_CHARACTERS"]:
        raise Conflict("session_full",
                       "the session's transcript is full; escalate it or start a new session",
                       {"max_messages": config["SESSION_MAX_MESSAGES"],
                        "max_characters": config["SESSION_MAX_CHARACTERS"],
                        "messages": count, "characters": int(characters)})


def add_message(author: User, session_id: int, role: str, content: str) -> SessionMessage:
    """Append to the transcript: the session's owner, or an admin of its account."""
    session = of_account(author.account_id, session_id)
    if session.owner_id != author.id and not author.is_admin:
        raise Forbidden("only the session's owner may add to its transcript")
    _check_room(session, content)
    message = SessionMessage(session_id=session.id, role=role, content=content)
    db.session.add(message)
    db.session.commit()
    return message
