"""A side effect done while the database goes away: its outcome is recorded once the
database is back, while the lease holds, so the row is not retaken and sent again."""
from sqlalchemy.exc import OperationalError

from tests.factories import undispatched_handoff
from tests.helpers import email_row_id, get_delivery
from webapp.extensions import db
from webapp.services import deliveries


def test_an_outcome_the_database_refused_is_recorded_when_it_answers_again(
        app, app_env, tenant, monkeypatch):
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    sent: list[int] = []
    commit = db.session.commit
    refusals = iter([True, True, False])   # the first two commits after the send fail

    def side_effect(row):
        sent.append(row.id)
        monkeypatch.setattr(db.session, "commit", flaky_commit)
        return "message-id"

    def flaky_commit():
        if next(refusals, False):
            raise OperationalError("UPDATE deliveries", {}, Exception("server closed the "
                                                                       "connection"))
        commit()

    with app.app_context():
        deliveries.run(row_id, side_effect, deliveries.RetryPolicy())
        monkeypatch.undo()
        # another task delivered twice finds the row done and sends nothing
        deliveries.run(row_id, side_effect, deliveries.RetryPolicy())
        monkeypatch.undo()
    row = get_delivery(app, row_id)
    assert (row.status, row.external_id, row.lease_expires_at) == ("sent", "message-id", None)
    assert sent == [row_id]
