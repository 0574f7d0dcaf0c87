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
from webapp.services.statements import Prepared

log = logging.getLogger(__name__)

_PENDING_ROWS = Prepared(db.select(Delivery.id, Delivery.channel).where(
    Delivery.handoff_id == bindparam("handoff_id"),
    Delivery.status == DeliveryStatus.PENDING).order_by(Delivery.id))


@shared_task(name="handoffs.dispatch", acks_late=True)
def dispatch_handoff(handoff_id: int) -> int:
    """Enqueue the tasks of the handoff's pending rows, channel by channel in the registry's
    order, in groups where the channel sends in groups; but run its local rows (the heuristic
    assessment) and then its first group of emails here, claimed together: the team hears at
    once, and the commonest escalation (a handful of seniors) costs two tasks and a claim
    fewer. A row whose task reads what the local rows write (the PSA note, which carries the
    assessment) is enqueued once they are recorded, before the emails go out. Returns how
    many rows."""
    logs.bind(handoff_id=handoff_id)
    rows = [(row.id, row.channel) for row in _PENDING_ROWS.run({"handoff_id": handoff_id})]
    local = [row for row in rows if channels.runs_locally(row[1])]
    later = [row for row in rows if row not in local]
    waiting = [row for row in later if channels.channel(row[1]).waits_for_local] \
        if local else []
    emails = channels.enqueue_rows([row for row in later if row not in waiting], keep="email")
    # (rows wait only when there are local rows, so a phase always runs them)
    phases = [phase for phase in (local, [(row_id, "email") for row_id in emails]) if phase]
    try:
        if phases:
            channels.drive_together(phases, after_first=lambda: channels.enqueue_rows(waiting))
    except Exception:  # e.g. the database went away: beat hands the rows back
        log.exception("deliveries %s not driven; left for redelivery",
                      [row_id for phase in phases for row_id, _ in phase])
        db.session.remove()
    return len(rows)
