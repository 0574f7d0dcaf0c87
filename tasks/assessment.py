"""The AI diagnostic assessment of a handoff."""
from celery import shared_task

from webapp.services import assessments, deliveries
from webapp.services.handoffs import announce_update

# a few quick tries: the team is waiting, and a senior can work without it
RETRY = deliveries.RetryPolicy(base=2.0, cap=60.0, max_attempts=3)


@shared_task(name="assessment.assess_handoff", acks_late=True)
def assess_handoff(delivery_id: int) -> None:
    """Assess the handoff's snapshot, store it on the handoff, publish handoff_updated."""
    deliveries.drive(assess_handoff.name, delivery_id, assessments.assess, RETRY,
                     on_settled=announce_update)
