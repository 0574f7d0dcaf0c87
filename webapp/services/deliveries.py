"""Delivery rows: the audit trail of each side effect, and how a task drives one."""
from __future__ import annotations

from webapp.errors import ApiError, not_found
from webapp.extensions import db
from webapp.models import Delivery, Handoff
from webapp.models.base import utcnow
from webapp.services.queue import enqueue

TASK_FOR_CHANNEL = {
    "assessment": "assessment.assess_handoff",
    "psa": "psa.push_handoff",
    "email": "notifications.send_email",
}


def to_dict(row: Delivery) -> dict:
    return {"id": row.id, "channel": row.channel, "recipient": row.recipient,
            "status": row.status, "attempts": row.attempts, "last_error": row.last_error,
            "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
            "sent_at": row.sent_at.isoformat() if row.sent_at else None}


def for_handoff(handoff: Handoff) -> list[Delivery]:
    return list(db.session.scalars(db.select(Delivery).where(
        Delivery.handoff_id == handoff.id).order_by(Delivery.id)))


def retry(handoff: Handoff, delivery_id: int) -> Delivery:
    """An admin re-queues a failed or dead delivery with a fresh attempt budget."""
    row = db.session.scalars(db.select(Delivery).where(
        Delivery.id == delivery_id, Delivery.handoff_id == handoff.id,
        Delivery.account_id == handoff.account_id).with_for_update()).one_or_none()
    if row is None:
        raise not_found("delivery")
    if row.status not in ("failed", "dead"):
        raise ApiError(409, "not_retryable",
                       f"only failed or dead deliveries can be retried; this one is {row.status}")
    row.status, row.attempts, row.next_attempt_at = "pending", 0, utcnow()
    row.lease_expires_at = None
    db.session.commit()
    enqueue(TASK_FOR_CHANNEL[row.channel], row.id)
    return row
