"""How a handoff reads, in answers and live events: its summary (the queue, the events), the
whole of it (the handoff-context screen), and the workers' announcement of a change."""
from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy import and_, bindparam, func
from sqlalchemy.dialects.postgresql import JSONB

from webapp import live
from webapp.extensions import db
from webapp.models import AiSession, Delivery, Handoff, User
from webapp.services import deliveries
from webapp.services.statements import Prepared


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


# ---- the workers' announcement ------------------------------------------------------------

def announce(handoff_id: int) -> None:
    """Tell the team's queues an escalation changed: handoff_updated with its summary. The
    handoff, its session, escalator, claimer and assessment and PSA rows are read in one Core
    statement, the snapshot without its transcript: loading them as ORM objects (six, with
    the whole snapshot) cost the worker more than the rest of the announcement."""
    found = _ANNOUNCED.run({"id": handoff_id}).first()
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
# the escalator and the claimer of a handoff, joined to it by statements that read their names
CREATOR, CLAIMER = User.__table__.alias("creator"), User.__table__.alias("claimer")
_ASSESSMENT_ROW, _PSA_ROW = Delivery.__table__.alias("assessment"), Delivery.__table__.alias("psa")
_ANNOUNCED = Prepared(db.select(
    *(_H.c[name] for name in _HANDOFF_COLUMNS),
    _H.c.snapshot.op("-", return_type=JSONB)("messages").label("snapshot"),
    func.jsonb_array_length(_H.c.snapshot["messages"]).label("message_total"),
    CREATOR.c.name.label("creator_name"), CLAIMER.c.name.label("claimer_name"),
    _S.c.title.label("session_title"), _S.c.client_name.label("session_client_name"),
    _S.c.psa_ticket_id.label("session_psa_ticket_id"),
    _ASSESSMENT_ROW.c.status.label("assessment_status"),
    _ASSESSMENT_ROW.c.last_error.label("assessment_error"),
    _PSA_ROW.c.status.label("psa_status"), _PSA_ROW.c.external_id.label("psa_note_id"),
    _PSA_ROW.c.attempts.label("psa_attempts"), _PSA_ROW.c.last_error.label("psa_error"),
).select_from(
    _H.join(_S, _S.c.id == _H.c.session_id).join(CREATOR, CREATOR.c.id == _H.c.created_by)
    .outerjoin(CLAIMER, CLAIMER.c.id == _H.c.claimed_by)
    .outerjoin(_ASSESSMENT_ROW, and_(_ASSESSMENT_ROW.c.handoff_id == _H.c.id,
                                     _ASSESSMENT_ROW.c.channel == "assessment"))
    .outerjoin(_PSA_ROW, and_(_PSA_ROW.c.handoff_id == _H.c.id, _PSA_ROW.c.channel == "psa"))
).where(_H.c.id == bindparam("id")))
