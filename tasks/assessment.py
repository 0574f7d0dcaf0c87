"""The AI diagnostic assessment of a handoff."""
from celery import shared_task

from webapp.services import channels


@shared_task(name="assessment.assess_handoff", acks_late=True)
def assess_handoff(delivery_id: int) -> None:
    """Assess the handoff's snapshot, store it on the handoff, publish handoff_updated."""
    channels.drive("assessment", delivery_id)
