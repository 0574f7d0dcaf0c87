"""The one message the API sends per handoff, fanned out here into per-row tasks (emails in
small groups of rows per task)."""
from celery import shared_task

from webapp.extensions import db
from webapp.models import Delivery
from webapp.services.deliveries import TASK_FOR_CHANNEL, DeliveryStatus
from webapp.services.queue import enqueue

EMAIL_GROUP_TASK = "notifications.send_emails"

# assessment first: the PSA note waits a little for it; emails don't
CHANNEL_ORDER = ("assessment", "email", "psa")
# Emails go out in groups of rows per task: receiving, running and acknowledging a task (and
# publishing it here) cost the worker more than sending one email does, so a fan-out to 100
# teammates as 100 tasks spent about half its time in Celery. Groups this small still give
# each of the worker's threads a share, each sending on its own SMTP connection.
EMAILS_PER_TASK = 8


@shared_task(name="handoffs.dispatch", acks_late=True)
def dispatch_handoff(handoff_id: int) -> int:
    """Enqueue the tasks of the handoff's pending delivery rows: one per assessment or PSA
    row, one per group of email rows; returns how many rows."""
    rows = db.session.execute(db.select(Delivery.id, Delivery.channel).where(
        Delivery.handoff_id == handoff_id, Delivery.status == DeliveryStatus.PENDING)
        .order_by(Delivery.id)).all()
    for channel in CHANNEL_ORDER:
        ids = [row.id for row in rows if row.channel == channel]
        if channel == "email":
            for first in range(0, len(ids), EMAILS_PER_TASK):
                enqueue(EMAIL_GROUP_TASK, ids[first:first + EMAILS_PER_TASK])
        else:
            for row_id in ids:
                enqueue(TASK_FOR_CHANNEL[channel], row_id)
    return len(rows)
