"""The escalation note on the client's PSA ticket."""
from celery import shared_task

from webapp.services import deliveries, psa_push
from webapp.services.handoffs import announce_update

RETRY = deliveries.RetryPolicy(base=5.0, cap=600.0, max_attempts=8)


@shared_task(name="psa.push_handoff", acks_late=True)
def push_handoff(delivery_id: int) -> None:
    """Write the escalation note onto the session's PSA ticket, once."""
    deliveries.drive(push_handoff.name, delivery_id, psa_push.push_note, RETRY,
                     on_settled=announce_update)
