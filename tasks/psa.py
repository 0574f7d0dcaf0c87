"""The escalation note on the client's PSA ticket."""
from celery import shared_task

from webapp.services import channels


@shared_task(name="psa.push_handoff", acks_late=True)
def push_handoff(delivery_id: int) -> None:
    """Write the escalation note onto the session's PSA ticket, once."""
    channels.drive("psa", delivery_id)
