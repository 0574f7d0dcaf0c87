"""The one delivery state machine: every allowed move works, every other one is refused,
both in the table and on a real row."""
from datetime import timedelta

import pytest

from tests.factories import undispatched_handoff
from tests.helpers import email_row_id, get_delivery, set_delivery
from webapp.models.base import utcnow
from webapp.models.handoffs import DELIVERY_STATUSES
from webapp.services import deliveries
from webapp.services.deliveries import TRANSITIONS, DeliveryStatus, ForbiddenMove

ALL = list(DeliveryStatus)
MOVES = [(source, target) for source in ALL for target in ALL]


def test_the_statuses_are_the_ones_the_database_allows():
    assert {str(status) for status in DeliveryStatus} == set(DELIVERY_STATUSES)
    assert set(TRANSITIONS) == set(DeliveryStatus)


@pytest.mark.parametrize(("source", "target"), MOVES, ids=[f"{a}->{b}" for a, b in MOVES])
def test_every_move_is_allowed_or_refused_as_the_table_says(app, app_env, tenant, source,
                                                           target):
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    later = utcnow() + timedelta(minutes=5)
    set_delivery(app, row_id, status=str(source), next_attempt_at=later)
    allowed = target in TRANSITIONS[source]
    if not allowed:
        with pytest.raises(ForbiddenMove):
            deliveries.sources_of(target, source)
    with app.app_context():
        moved = deliveries.move(row_id, target, next_attempt_at=later)
    assert moved == allowed, (source, target)
    assert get_delivery(app, row_id).status == (target if allowed else source)


def test_failed_needs_a_scheduled_retry_in_the_code_and_in_the_database(app, app_env,
                                                                         tenant):
    from sqlalchemy.exc import IntegrityError
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    with app.app_context(), pytest.raises(ForbiddenMove):
        deliveries.move(row_id, DeliveryStatus.FAILED, next_attempt_at=None)
    with pytest.raises(IntegrityError):
        set_delivery(app, row_id, status="failed", next_attempt_at=None)


def test_a_permanent_error_ends_dead_with_its_reason_and_no_next_attempt(app, app_env,
                                                                         tenant):
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))

    def refused(row):
        raise deliveries.Permanent("550 no such mailbox")

    with app.app_context():
        deliveries.run(row_id, refused, deliveries.RetryPolicy())
    row = get_delivery(app, row_id)
    assert (row.status, row.last_error, row.next_attempt_at) == (
        "dead", "550 no such mailbox", None)
