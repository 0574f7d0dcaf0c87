"""The one message the API sends per handoff, fanned out here into per-row tasks (in groups
of rows per task where the channel sends in groups)."""
from celery import shared_task

from webapp.extensions import db
from webapp.models import Delivery
from webapp.services.channels import REGISTRY
from webapp.services.deliveries import DeliveryStatus
from webapp.services.queue import enqueue


@shared_task(name="handoffs.dispatch", acks_late=True)
def dispatch_handoff(handoff_id: int) -> int:
    """Enqueue the tasks of the handoff's pending delivery rows, channel by channel in the
    registry's order; returns how many rows."""
    rows = db.session.execute(db.select(Delivery.id, Delivery.channel).where(
        Delivery.handoff_id == handoff_id, Delivery.status == DeliveryStatus.PENDING)
        .order_by(Delivery.id)).all()
    for channel in REGISTRY.values():
        ids = [row.id for row in rows if row.channel == channel.name]
        if channel.group_task:
            for first in range(0, len(ids), channel.group_size):
                enqueue(channel.group_task, ids[first:first + channel.group_size])
        else:
            for row_id in ids:
                enqueue(channel.task, row_id)
    return len(rows)
