"""The one message the API sends per handoff, fanned out here into per-row tasks (in groups
of rows per task where the channel sends in groups)."""
import logging

from celery import shared_task
from sqlalchemy import bindparam

from webapp import logs
from webapp.extensions import db
from webapp.models import Delivery
from webapp.services import channels
from webapp.services.deliveries import DeliveryStatus

log = logging.getLogger(__name__)

_PENDING_ROWS = db.select(Delivery.id, Delivery.channel).where(
    Delivery.handoff_id == bindparam("handoff_id"),
    Delivery.status == DeliveryStatus.PENDING).order_by(Delivery.id)


@shared_task(name="handoffs.dispatch", acks_late=True)
def dispatch_handoff(handoff_id: int) -> int:
    """Enqueue the tasks of the handoff's pending rows, channel by channel in the registry's
    order, in groups where the channel sends in groups; but run its first group of emails
    and its local rows (the heuristic assessment) here, as one group: the team hears at once,
    and the commonest escalation (a handful of seniors) costs two tasks, two claims and two
    outcome writes fewer. A row whose task reads what the local rows write (the PSA note) is
    enqueued once they are recorded. Returns how many rows."""
    logs.bind(handoff_id=handoff_id)
    rows = [(row.id, row.channel) for row in db.session.execute(
        _PENDING_ROWS, {"handoff_id": handoff_id})]
    local = [row for row in rows if channels.runs_locally(row[1])]
    later = [row for row in rows if row not in local]
    waiting = [row for row in later if channels.channel(row[1]).waits_for_local] \
        if local else []
    emails = channels.enqueue_rows([row for row in later if row not in waiting], keep="email")
    # emails first: the team hears before the assessment is made, and a failed email (whose
    # outcome rolls the session back) cannot discard the assessment written after it
    here = [(row_id, "email") for row_id in emails] + local
    if here:
        try:
            channels.drive_together(here)
        except Exception:  # e.g. the database went away: beat hands the rows back
            log.exception("deliveries %s not driven; left for redelivery",
                          [row_id for row_id, _ in here])
            db.session.remove()
    channels.enqueue_rows(waiting)
    return len(rows)
