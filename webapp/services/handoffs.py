"""Handoffs: create (park or escalate), claim, resume, cancel, and how they read."""
from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from types import SimpleNamespace

from flask import current_app
from sqlalchemy import DateTime, Integer, String, and_, bindparam, func, literal, or_, true
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from webapp import live, logs, metrics
from webapp.extensions import db
from webapp.models import Account, AiSession, Delivery, Handoff, SessionMessage, User
from webapp.models.base import utcnow
from webapp.models.handoffs import new_marker_nonce
from webapp.services import chat, deliveries
from webapp.services.errors import Conflict, Forbidden, Invalid, NotFound
from webapp.services.handoff_views import summary
from webapp.services.queue import enqueue
from webapp.services.recipients import RECIPIENTS
from webapp.services.statements import Prepared
from webapp.services.transactions import commit_keeping_loaded

log = logging.getLogger(__name__)
DISPATCH_TASK = "handoffs.dispatch"
SESSION_STATUS_FOR_INTENT = {"park": "parked", "escalate": "escalated"}


# ---- creating -------------------------------------------------------------------------------

def take_snapshot(session) -> dict:
    """What a senior needs to take over: the problem and the transcript, as of now. A long
    transcript is copied from its newest end, within SNAPSHOT_MAX_MESSAGES and
    SNAPSHOT_MAX_CHARACTERS; `message_count` counts them all. `session` is an AiSession or a
    row with its id, title, client_name, psa_ticket_id and problem."""
    config = current_app.config
    # the newest messages and the count of them all: one statement (the window counts
    # every row the WHERE keeps, before the LIMIT)
    newest = _NEWEST_MESSAGES.run({
        "session_id": session.id, "limit": config["SNAPSHOT_MAX_MESSAGES"]}).all()
    total = newest[0].total if newest else 0
    messages, characters = [], 0
    for m in newest:
        characters += len(m.content)
        if characters > config["SNAPSHOT_MAX_CHARACTERS"] and messages:
            break
        messages.append({"id": m.id, "role": m.role, "content": m.content,
                         "created_at": m.created_at.isoformat()})
    messages.reverse()
    return {
        "title": session.title,
        "client_name": session.client_name,
        "psa_ticket_id": session.psa_ticket_id,
        "problem": session.problem,
        "messages": messages,
        "message_count": total,
        "messages_omitted": total - len(messages),
        "captured_at": utcnow().isoformat(),
    }


def _open_handoff_id(session_id: int) -> int | None:
    return db.session.scalar(db.select(Handoff.id).where(
        Handoff.session_id == session_id, Handoff.status == "open"))


def create_handoff(user: User, session_id: int, intent: str, note: str,
                   urgency: str = "normal") -> SimpleNamespace:
    """Write the handoff, its snapshot, the session's status and every delivery row in one
    transaction; then publish and enqueue, neither of which may fail the call. Returns the
    handoff as written, as `summary` and `full` read it."""
    # the session, locked, with the id of its open handoff if it has one: one statement
    session = _SESSION_TO_HAND_OFF.run({
        "session_id": session_id, "account_id": user.account_id}).one_or_none()
    if session is None:
        raise NotFound("session")
    if user.role == "viewer" or (session.owner_id != user.id and not user.is_admin):
        raise Forbidden("only the session's owner or an admin may hand it off")
    if session.status == "closed":
        raise Conflict("session_closed", "the session is closed")
    if session.open_handoff_id is not None:
        raise Conflict("open_handoff_exists", "the session already has an open handoff",
                       {"handoff_id": session.open_handoff_id})

    now, snapshot = utcnow(), take_snapshot(session)
    channels = delivery_channels(intent, psa_push_parks=session.psa_push_parks,
                                 chat_set=chat.is_configured(session.chat_provider,
                                                             session.chat_secret_set))
    try:
        # the handoff, the session's status and the delivery rows: one statement, as the
        # ORM's unit of work cost more than the three writes themselves
        written = _WRITE_HANDOFF.run({
            "account": user.account_id, "session_id": session_id, "intent": intent,
            "note": note, "urgency": urgency, "snapshot": snapshot, "escalator_id": user.id,
            "now": now, "marker_nonce": new_marker_nonce(), "channels": channels,
            "session_status": SESSION_STATUS_FOR_INTENT[intent]}).one()
        # the caller, as loaded, is read below: without this its next read would be a SELECT
        commit_keeping_loaded()
    except IntegrityError:
        # a handoff committed while this one waited for the session's lock (the check
        # above saw the session as it was when the statement began)
        db.session.rollback()
        existing = _open_handoff_id(session_id)
        raise Conflict("open_handoff_exists", "the session already has an open handoff",
                       {"handoff_id": existing} if existing is not None else None) from None
    logs.bind(handoff_id=written.id)
    handoff = SimpleNamespace(
        id=written.id, session_id=session_id, account_id=user.account_id, intent=intent,
        status="open", note=note, urgency=urgency, created_by=user.id, created_at=now,
        claimed_by=None, claimed_at=None, reminded_at=None, assessment=None,
        snapshot=snapshot, creator=SimpleNamespace(id=user.id, name=user.name), claimer=None,
        session=SimpleNamespace(id=session_id, title=session.title,
                                client_name=session.client_name,
                                psa_ticket_id=session.psa_ticket_id),
        # the assessment and PSA rows as written, so the answer and the event need not
        # read them (a worker may since have taken one: `sending` reads as pending all
        # the same)
        written_channel_rows={
            (written.id, channel): SimpleNamespace(
                status=str(deliveries.DeliveryStatus.PENDING), external_id=None, attempts=0,
                last_error=None)
            for channel in channels if channel in ("assessment", "psa")})

    metrics.handoff_created(intent)
    log.info("handoff created: %s with %d delivery rows", intent, written.rows)
    if intent == "escalate":
        live.publish(handoff.account_id, "handoff_created", {"handoff": summary(handoff)})
    enqueue(DISPATCH_TASK, handoff.id)
    return handoff


def delivery_channels(intent: str, *, psa_push_parks: bool, chat_set: bool) -> list[str]:
    """The delivery rows a new handoff gets, in their order: the assessment, the PSA note,
    one email per recipient (`email` stands for them all), the team chat message."""
    channels = ["assessment"]
    if intent == "escalate" or psa_push_parks:
        channels.append("psa")
    if intent == "escalate":
        channels.append("email")
        if chat_set:
            channels.append("chat")
    return channels


# the statements every escalation runs, built once: building one anew cost more than running it
_H, _S, _A, _D = Handoff.__table__, AiSession.__table__, Account.__table__, Delivery.__table__
_NEWEST_MESSAGES = Prepared(db.select(
    SessionMessage.id, SessionMessage.role, SessionMessage.content, SessionMessage.created_at,
    func.count().over().label("total"),
).where(SessionMessage.session_id == bindparam("session_id")).order_by(
    SessionMessage.id.desc()).limit(bindparam("limit", type_=Integer)))
# the session, locked, with what creating a handoff reads of its account, and the id of its
# open handoff if it has one
_SESSION_TO_HAND_OFF = Prepared(db.select(
    _S.c.id, _S.c.owner_id, _S.c.status, _S.c.title, _S.c.client_name, _S.c.psa_ticket_id,
    _S.c.problem, _A.c.psa_push_parks, _A.c.chat_provider,
    _A.c.chat_secret.is_not(None).label("chat_secret_set"),
    db.select(_H.c.id).where(_H.c.session_id == _S.c.id, _H.c.status == "open").limit(1)
    .scalar_subquery().label("open_handoff_id"),
).join(_A, _A.c.id == _S.c.account_id).where(
    _S.c.id == bindparam("session_id"), _S.c.account_id == bindparam("account_id"),
).with_for_update(of=_S))
_NOW = bindparam("now", type_=DateTime(timezone=True))
_NEW_HANDOFF = db.insert(_H).values(
    account_id=bindparam("account"), session_id=bindparam("session_id"),
    intent=bindparam("intent"), status="open", note=bindparam("note"),
    urgency=bindparam("urgency"), snapshot=bindparam("snapshot", type_=JSONB),
    created_by=bindparam("escalator_id"), created_at=_NOW,
    marker_nonce=bindparam("marker_nonce")).returning(_H.c.id).cte("handoff")
# (an UPDATE takes an execution parameter named as one of its columns for a SET clause: none
# of this statement's parameters is)
_SESSION_STATUS = db.update(_S).where(_S.c.id == bindparam("session_id")).values(
    status=bindparam("session_status"), updated_at=_NOW).cte("session_status")
# `channels` in order; its `email` is one row per recipient, in the order of their ids
_CHANNELS = func.unnest(bindparam("channels", type_=ARRAY(String))).table_valued(
    "channel", with_ordinality="position").render_derived("channels")
_RECIPIENT = RECIPIENTS.subquery("recipient")   # its own binds: account, escalator_id
_DELIVERY_ROWS = db.insert(_D).from_select(
    ["handoff_id", "account_id", "channel", "recipient", "recipient_user_id", "status",
     "attempts", "next_attempt_at", "created_at", "updated_at"],
    db.select(_NEW_HANDOFF.c.id, bindparam("account"), _CHANNELS.c.channel,
              func.coalesce(func.lower(_RECIPIENT.c.email), _CHANNELS.c.channel),
              _RECIPIENT.c.id, literal(str(deliveries.DeliveryStatus.PENDING)), literal(0),
              _NOW, _NOW, _NOW)
    .select_from(_NEW_HANDOFF).join(_CHANNELS, true())
    .outerjoin(_RECIPIENT, _CHANNELS.c.channel == "email")
    .where(or_(_CHANNELS.c.channel != "email", _RECIPIENT.c.id.is_not(None)))
    .order_by(_CHANNELS.c.position, _RECIPIENT.c.id),
    include_defaults=False,   # the Python-side ones are not run for a statement in a CTE
).returning(_D.c.id).cte("delivery_rows")
_WRITE_HANDOFF = Prepared(db.select(
    _NEW_HANDOFF.c.id,
    db.select(func.count()).select_from(_DELIVERY_ROWS).scalar_subquery().label("rows"),
).add_cte(_SESSION_STATUS))


# ---- reading --------------------------------------------------------------------------------

def visible_handoffs(user: User):
    """Escalations of the caller's account, and the caller's own parks."""
    return db.select(Handoff).where(
        Handoff.account_id == user.account_id,
        or_(Handoff.intent == "escalate", Handoff.created_by == user.id))


def get_visible(user: User, handoff_id: int, *, for_update: bool = False) -> Handoff:
    query = visible_handoffs(user).where(Handoff.id == handoff_id)
    if for_update:
        query = query.with_for_update()
    handoff = db.session.scalars(query).one_or_none()
    if handoff is None:
        raise NotFound("handoff")
    return handoff


def encode_cursor(handoff: Handoff) -> str:
    raw = json.dumps([handoff.created_at.isoformat(), handoff.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, handoff_id = json.loads(raw)
        created_at = datetime.fromisoformat(created_at).astimezone(UTC)
        handoff_id = int(handoff_id)
        if created_at.year < 2000 or not 0 < handoff_id < 2**31:
            raise ValueError("cursor out of range")
        return created_at, handoff_id
    except (ValueError, TypeError, OverflowError) as error:
        raise Invalid("cursor: not a valid cursor",
                       {"cursor": ["Not a valid cursor."]}) from error


def escalation_queue(user: User, status: str, limit: int, cursor: str | None):
    """The team's escalations, newest first, one page; returns (handoffs, next_cursor)."""
    query = db.select(Handoff).where(Handoff.account_id == user.account_id,
                                     Handoff.intent == "escalate")
    if status != "all":
        query = query.where(Handoff.status == status)
    if cursor:
        created_at, handoff_id = decode_cursor(cursor)
        query = query.where(or_(Handoff.created_at < created_at,
                                and_(Handoff.created_at == created_at, Handoff.id < handoff_id)))
    page = list(db.session.scalars(query.options(
        selectinload(Handoff.session), selectinload(Handoff.creator),
        selectinload(Handoff.claimer),
    ).order_by(Handoff.created_at.desc(), Handoff.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(page[limit - 1]) if len(page) > limit else None
    return page[:limit], next_cursor


# ---- claiming, resuming, cancelling --------------------------------------------------------

def claim(user: User, handoff_id: int) -> Handoff:
    """One conditional UPDATE: of any number of concurrent claims exactly one wins."""
    won = db.session.execute(
        db.update(Handoff).where(Handoff.id == handoff_id,
                                 Handoff.account_id == user.account_id,
                                 Handoff.intent == "escalate", Handoff.status == "open")
        .values(status="claimed", claimed_by=user.id, claimed_at=utcnow(), closed_at=utcnow())
        .returning(Handoff.session_id)).first()
    if won is None:
        db.session.rollback()
        handoff = get_visible(user, handoff_id)
        if handoff.intent != "escalate":
            raise Conflict("not_an_escalation", "only escalations can be claimed")
        if handoff.status == "claimed":
            claimer = db.session.get(User, handoff.claimed_by)
            raise Conflict("already_claimed", "the escalation is already claimed",
                           {"claimed_by": {"id": claimer.id, "name": claimer.name}})
        raise Conflict("handoff_closed", f"the escalation was {handoff.status}")
    db.session.execute(db.update(AiSession).where(AiSession.id == won.session_id)
                       .values(status="active", owner_id=user.id, updated_at=utcnow()))
    # emails and chat messages (the escalation's, and any reminder) not yet out: nobody needs
    # them now; the PSA note stays, it is the ticket's record
    deliveries.skip_waiting(handoff_id, ("email", "chat"), f"already claimed by {user.name}")
    db.session.commit()
    handoff = get_visible(user, handoff_id)
    live.publish(handoff.account_id, "handoff_claimed", {"handoff": summary(handoff)})
    return handoff


def resume(user: User, handoff_id: int) -> Handoff:
    """The parker picks their parked session back up."""
    handoff = get_visible(user, handoff_id, for_update=True)
    if handoff.intent != "park":
        raise Conflict("not_a_park", "only a parked session can be resumed")
    if handoff.created_by != user.id:
        raise Forbidden("only the user who parked it may resume it")
    if handoff.status != "open":
        raise Conflict("handoff_closed", f"the handoff was {handoff.status}")
    handoff.status, handoff.closed_at = "resumed", utcnow()
    handoff.session.status = "active"
    skip_unsent(handoff, "handoff resumed")
    db.session.commit()
    return handoff


def cancel(user: User, handoff_id: int) -> Handoff:
    """The escalator (or an admin) withdraws an escalation nobody has claimed."""
    handoff = get_visible(user, handoff_id, for_update=True)
    if handoff.intent != "escalate":
        raise Conflict("not_an_escalation", "only escalations can be cancelled")
    if handoff.created_by != user.id and not user.is_admin:
        raise Forbidden("only the escalator or an admin may cancel it")
    if handoff.status == "claimed":
        raise Conflict("already_claimed", "the escalation is already claimed",
                       {"claimed_by": {"id": handoff.claimer.id, "name": handoff.claimer.name}})
    if handoff.status != "open":
        raise Conflict("handoff_closed", f"the escalation was {handoff.status}")
    handoff.status, handoff.closed_at = "cancelled", utcnow()
    handoff.session.status = "active"
    skip_unsent(handoff, "escalation cancelled")
    db.session.commit()
    live.publish(handoff.account_id, "handoff_cancelled", {"handoff": summary(handoff)})
    return handoff


def skip_unsent(handoff: Handoff, reason: str) -> None:
    """Emails, chat messages and PSA notes not yet sent are no longer wanted."""
    deliveries.skip_waiting(handoff.id, ("email", "chat", "psa"), reason)
