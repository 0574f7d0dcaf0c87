"""Handoffs: create (park or escalate), claim, resume, cancel, and how they read."""
from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from types import SimpleNamespace

from flask import current_app
from sqlalchemy import Integer, and_, bindparam, func, or_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from webapp import live, logs, metrics
from webapp.extensions import db
from webapp.models import Account, AiSession, Delivery, Handoff, SessionMessage, User
from webapp.models.base import utcnow
from webapp.services import chat, deliveries
from webapp.services.errors import Conflict, Forbidden, Invalid, NotFound
from webapp.services.queue import enqueue
from webapp.services.recipients import escalation_recipients
from webapp.services.transactions import commit_keeping_loaded

log = logging.getLogger(__name__)
DISPATCH_TASK = "handoffs.dispatch"
SESSION_STATUS_FOR_INTENT = {"park": "parked", "escalate": "escalated"}


# ---- creating -------------------------------------------------------------------------------

def take_snapshot(session: AiSession) -> dict:
    """What a senior needs to take over: the problem and the transcript, as of now. A long
    transcript is copied from its newest end, within SNAPSHOT_MAX_MESSAGES and
    SNAPSHOT_MAX_CHARACTERS; `message_count` counts them all."""
    config = current_app.config
    # the newest messages and the count of them all: one statement (the window counts
    # every row the WHERE keeps, before the LIMIT)
    newest = db.session.execute(_NEWEST_MESSAGES, {
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


# the statements every escalation runs, built once: building one anew cost more than running it
_NEWEST_MESSAGES = db.select(
    SessionMessage.id, SessionMessage.role, SessionMessage.content, SessionMessage.created_at,
    func.count().over().label("total"),
).where(SessionMessage.session_id == bindparam("session_id")).order_by(
    SessionMessage.id.desc()).limit(bindparam("limit", type_=Integer))
# the session, locked, with its account and the id of its open handoff if it has one
_SESSION_TO_HAND_OFF = db.select(AiSession, Account, db.select(Handoff.id).where(
    Handoff.session_id == AiSession.id, Handoff.status == "open").limit(1).scalar_subquery()
).join(Account, Account.id == AiSession.account_id).where(
    AiSession.id == bindparam("session_id"), AiSession.account_id == bindparam("account_id"),
).with_for_update(of=AiSession)


def _open_handoff_id(session_id: int) -> int | None:
    return db.session.scalar(db.select(Handoff.id).where(
        Handoff.session_id == session_id, Handoff.status == "open"))


def create_handoff(user: User, session_id: int, intent: str, note: str,
                   urgency: str = "normal") -> Handoff:
    """Write the handoff, its snapshot, the session's status and every delivery row in one
    transaction; then publish and enqueue, neither of which may fail the call."""
    # the session, locked, with the id of its open handoff if it has one: one statement
    found = db.session.execute(_SESSION_TO_HAND_OFF, {
        "session_id": session_id, "account_id": user.account_id}).one_or_none()
    if found is None:
        raise NotFound("session")
    session, account, open_handoff_id = found
    if user.role == "viewer" or (session.owner_id != user.id and not user.is_admin):
        raise Forbidden("only the session's owner or an admin may hand it off")
    if session.status == "closed":
        raise Conflict("session_closed", "the session is closed")
    if open_handoff_id is not None:
        raise Conflict("open_handoff_exists", "the session already has an open handoff",
                       {"handoff_id": open_handoff_id})

    handoff = Handoff(account_id=user.account_id, session=session, intent=intent,
                      status="open", note=note, urgency=urgency,
                      snapshot=take_snapshot(session), creator=user)
    db.session.add(handoff)
    session.status = SESSION_STATUS_FOR_INTENT[intent]
    try:
        db.session.flush()
        logs.bind(handoff_id=handoff.id)
        values = delivery_values(handoff, user, account)
        db.session.execute(db.insert(Delivery.__table__), values)  # one statement, no RETURNING
        # nothing read below needs reading back: it is what this transaction wrote
        commit_keeping_loaded()
    except IntegrityError:
        # a handoff committed while this one waited for the session's lock (the check
        # above saw the session as it was when the statement began)
        db.session.rollback()
        existing = _open_handoff_id(session_id)
        raise Conflict("open_handoff_exists", "the session already has an open handoff",
                       {"handoff_id": existing} if existing is not None else None) from None
    # the assessment and PSA rows as written, so the answer and the event need not read them
    handoff.written_channel_rows = {
        (handoff.id, value["channel"]): Delivery(**value)
        for value in values if value["channel"] in ("assessment", "psa")}

    metrics.handoff_created(intent)
    log.info("handoff created: %s with %d delivery rows", intent, len(values))
    if intent == "escalate":
        live.publish(handoff.account_id, "handoff_created", {"handoff": summary(handoff)})
    enqueue(DISPATCH_TASK, handoff.id)
    return handoff


def delivery_values(handoff: Handoff, escalator: User, account: Account) -> list[dict]:
    """One row per side effect: the assessment, the PSA note, one email per recipient, the
    team chat message."""
    now = utcnow()

    def row(channel: str, recipient: str, user_id: int | None = None) -> dict:
        return {"handoff_id": handoff.id, "account_id": handoff.account_id, "channel": channel,
                "recipient": recipient, "recipient_user_id": user_id,
                "status": str(deliveries.DeliveryStatus.PENDING),
                "attempts": 0, "next_attempt_at": now}

    rows = [row("assessment", "assessment")]
    if handoff.intent == "escalate" or account.psa_push_parks:
        rows.append(row("psa", "psa"))
    if handoff.intent == "escalate":
        rows += [row("email", user.email.lower(), user.id)
                 for user in escalation_recipients(handoff.account_id, escalator.id)]
        if chat.is_set(account):
            rows.append(row("chat", "chat"))
    return rows


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


def announce(handoff_id: int) -> None:
    """Tell the team's queues an escalation changed: handoff_updated with its summary. The
    handoff, its session, escalator, claimer and assessment and PSA rows are read in one Core
    statement, the snapshot without its transcript: loading them as ORM objects (six, with
    the whole snapshot) cost the worker more than the rest of the announcement."""
    found = db.session.execute(_ANNOUNCED, {"id": handoff_id}).first()
    if found is None or found.intent != "escalate":
        return
    live.publish(found.account_id, "handoff_updated", {"handoff": summary(*_as_read(found))})


def _as_read(found) -> tuple[SimpleNamespace, dict]:
    """An _ANNOUNCED row as the (handoff, rows) that `summary` reads."""
    snapshot = dict(found.snapshot)
    snapshot.setdefault("message_count", found.message_total or 0)
    handoff = SimpleNamespace(
        **{name: getattr(found, name) for name in _HANDOFF_COLUMNS}, snapshot=snapshot,
        creator=SimpleNamespace(id=found.created_by, name=found.creator_name),
        claimer=SimpleNamespace(id=found.claimed_by, name=found.claimer_name)
        if found.claimed_by is not None else None,
        session=SimpleNamespace(id=found.session_id, title=found.session_title,
                                client_name=found.session_client_name,
                                psa_ticket_id=found.session_psa_ticket_id))
    rows = {}
    if found.assessment_status is not None:
        rows[(found.id, "assessment")] = SimpleNamespace(status=found.assessment_status,
                                                         last_error=found.assessment_error)
    if found.psa_status is not None:
        rows[(found.id, "psa")] = SimpleNamespace(
            status=found.psa_status, external_id=found.psa_note_id,
            attempts=found.psa_attempts, last_error=found.psa_error)
    return handoff, rows


# the workers' statements, built once: building one anew (its options, its cache key) cost
# more than running it
_HANDOFF_COLUMNS = ("id", "session_id", "account_id", "intent", "status", "note", "urgency",
                    "created_by", "created_at", "claimed_by", "claimed_at", "reminded_at",
                    "assessment")
_H, _S = Handoff.__table__, AiSession.__table__
_CREATOR, _CLAIMER = User.__table__.alias("creator"), User.__table__.alias("claimer")
_ASSESSMENT_ROW, _PSA_ROW = Delivery.__table__.alias("assessment"), Delivery.__table__.alias("psa")
_ANNOUNCED = db.select(
    *(_H.c[name] for name in _HANDOFF_COLUMNS),
    _H.c.snapshot.op("-", return_type=JSONB)("messages").label("snapshot"),
    func.jsonb_array_length(_H.c.snapshot["messages"]).label("message_total"),
    _CREATOR.c.name.label("creator_name"), _CLAIMER.c.name.label("claimer_name"),
    _S.c.title.label("session_title"), _S.c.client_name.label("session_client_name"),
    _S.c.psa_ticket_id.label("session_psa_ticket_id"),
    _ASSESSMENT_ROW.c.status.label("assessment_status"),
    _ASSESSMENT_ROW.c.last_error.label("assessment_error"),
    _PSA_ROW.c.status.label("psa_status"), _PSA_ROW.c.external_id.label("psa_note_id"),
    _PSA_ROW.c.attempts.label("psa_attempts"), _PSA_ROW.c.last_error.label("psa_error"),
).select_from(
    _H.join(_S, _S.c.id == _H.c.session_id).join(_CREATOR, _CREATOR.c.id == _H.c.created_by)
    .outerjoin(_CLAIMER, _CLAIMER.c.id == _H.c.claimed_by)
    .outerjoin(_ASSESSMENT_ROW, and_(_ASSESSMENT_ROW.c.handoff_id == _H.c.id,
                                     _ASSESSMENT_ROW.c.channel == "assessment"))
    .outerjoin(_PSA_ROW, and_(_PSA_ROW.c.handoff_id == _H.c.id, _PSA_ROW.c.channel == "psa"))
).where(_H.c.id == bindparam("id"))


def skip_unsent(handoff: Handoff, reason: str) -> None:
    """Emails, chat messages and PSA notes not yet sent are no longer wanted."""
    deliveries.skip_waiting(handoff.id, ("email", "chat", "psa"), reason)


# ---- how a handoff reads --------------------------------------------------------------------

def _user_ref(user: User | None) -> dict | None:
    return {"id": user.id, "name": user.name} if user else None


# built once, as every queue page and summary asks it
_CHANNEL_ROWS = db.select(Delivery).where(
    Delivery.handoff_id.in_(bindparam("ids", expanding=True)),
    Delivery.channel.in_(("assessment", "psa")))


def channel_rows(handoff_ids: list[int]) -> dict[tuple[int, str], Delivery]:
    """The assessment and PSA rows of these handoffs, keyed by (handoff id, channel)."""
    if not handoff_ids:
        return {}
    rows = db.session.scalars(_CHANNEL_ROWS, {"ids": list(handoff_ids)})
    return {(row.handoff_id, row.channel): row for row in rows}


def assessment_view(handoff: Handoff, row: Delivery | None) -> dict:
    data = handoff.assessment or {}
    status = deliveries.assessment_status(row.status if row is not None else None,
                                          ready=bool(handoff.assessment))
    return {"status": status, "summary": data.get("summary"),
            "likely_causes": data.get("likely_causes", []),
            "next_steps": data.get("next_steps", []), "confidence": data.get("confidence"),
            "provider": data.get("provider"), "model": data.get("model"),
            "last_error": row.last_error if row is not None and not handoff.assessment else None}


def psa_view(handoff: Handoff, row: Delivery | None) -> dict:
    if row is None:
        return {"status": deliveries.psa_status(None),
                "ticket_id": handoff.snapshot.get("psa_ticket_id"),
                "note_id": None, "attempts": 0, "last_error": None}
    return {"status": deliveries.psa_status(row.status),
            "ticket_id": handoff.snapshot.get("psa_ticket_id"),
            "note_id": row.external_id, "attempts": row.attempts, "last_error": row.last_error}


def summary(handoff: Handoff, rows: dict | None = None) -> dict:
    """The handoff without its snapshot: what the queue and live events carry."""
    if rows is None:
        # a handoff created in this request carries its rows as written (a worker may since
        # have taken one: `sending` reads as pending all the same)
        rows = getattr(handoff, "written_channel_rows", None) or channel_rows([handoff.id])
    session = handoff.session
    return {
        "id": handoff.id, "session_id": handoff.session_id, "account_id": handoff.account_id,
        "intent": handoff.intent, "status": handoff.status, "note": handoff.note,
        "urgency": handoff.urgency, "created_by": handoff.created_by,
        "created_by_user": _user_ref(handoff.creator),
        "created_at": handoff.created_at.isoformat(), "claimed_by": handoff.claimed_by,
        "claimed_by_user": _user_ref(handoff.claimer),
        "claimed_at": handoff.claimed_at.isoformat() if handoff.claimed_at else None,
        "reminded_at": handoff.reminded_at.isoformat() if handoff.reminded_at else None,
        "session": {"id": session.id, "title": session.title,
                    "client_name": session.client_name, "psa_ticket_id": session.psa_ticket_id},
        "assessment": assessment_view(handoff, rows.get((handoff.id, "assessment"))),
        "psa": psa_view(handoff, rows.get((handoff.id, "psa"))),
        "snapshot": snapshot_summary(handoff.snapshot),
    }


def snapshot_summary(snapshot: dict) -> dict:
    """The snapshot without its messages: the queue list and live events stay small however
    long the transcript; only the handoff-context screen reads the messages."""
    messages = snapshot.get("messages", [])
    return {"problem": snapshot.get("problem", ""), "captured_at": snapshot.get("captured_at"),
            "message_count": snapshot.get("message_count", len(messages))}


def full(handoff: Handoff, rows: dict | None = None) -> dict:
    """The handoff with its snapshot: the handoff-context screen."""
    view = summary(handoff, rows)
    view["snapshot"] = {**view["snapshot"], "messages": handoff.snapshot.get("messages", []),
                        "messages_omitted": handoff.snapshot.get("messages_omitted", 0)}
    return view


def many(handoffs: list[Handoff]) -> list[dict]:
    """The queue list: summaries."""
    rows = channel_rows([h.id for h in handoffs])
    return [summary(h, rows) for h in handoffs]
