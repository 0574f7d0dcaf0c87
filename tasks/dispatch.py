"""The one message the API sends per handoff, fanned out here into per-row tasks."""
from celery import shared_task

from webapp.extensions import db
from webapp.models import Delivery
from webapp.services.deliveries import TASK_FOR_CHANNEL
from webapp.services.queue import enqueue

# assessment first: the PSA note waits a little for it; emails don't
CHANNEL_ORDER = {"assessment": 0, "email": 1, "psa": 2}


@shared_task(name="handoffs.dispatch", acks_late=True)
def dispatch_handoff(handoff_id: int) -> int:
    """Enqueue one task per pending delivery row of the handoff; returns how many."""
    rows = db.session.execute(db.select(Delivery.id, Delivery.channel).where(
        Delivery.handoff_id == handoff_id, Delivery.status == "pending")).all()
    rows.sort(key=lambda row: (CHANNEL_ORDER[row.channel], row.id))
    for row in rows:
        enqueue(TASK_FOR_CHANNEL[row.channel], row.id)
    return len(rows)
