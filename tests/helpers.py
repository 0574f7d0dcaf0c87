"""Looking into what the app wrote, shared by test modules: delivery rows and the error
shape; and ending a pooled connection's server process. (Waiting is tests/conftest.py's
wait_for; builders are in tests/factories.py.)"""
from __future__ import annotations

from sqlalchemy import create_engine, text

from webapp.extensions import db
from webapp.models import Delivery


def email_rows(app, handoff_id: int) -> list:
    """The handoff's email delivery rows, oldest first."""
    with app.app_context():
        return list(db.session.scalars(db.select(Delivery).where(
            Delivery.handoff_id == handoff_id, Delivery.channel == "email")
            .order_by(Delivery.id)))


def email_row_id(app, handoff_id: int) -> int:
    """The id of one of the handoff's email delivery rows."""
    with app.app_context():
        return db.session.scalar(db.select(Delivery.id).where(
            Delivery.handoff_id == handoff_id, Delivery.channel == "email").limit(1))


def psa_row(app, handoff_id: int):
    """The handoff's one PSA delivery row."""
    with app.app_context():
        return db.session.scalars(db.select(Delivery).where(
            Delivery.handoff_id == handoff_id, Delivery.channel == "psa")).one()


def get_delivery(app, row_id: int):
    """A delivery row as it is now."""
    with app.app_context():
        return db.session.get(Delivery, row_id)


def set_delivery(app, row_id: int, **values) -> None:
    """Write columns of a delivery row directly (to put it in the state a test starts from)."""
    with app.app_context():
        db.session.execute(db.update(Delivery).where(Delivery.id == row_id).values(**values))
        db.session.commit()


def assert_error_shape(response, status: int, code: str) -> None:
    """The answer is the one error shape: this status, this code, a message, no traceback."""
    assert response.status_code == status
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.get_data(as_text=True)


def kill_backend(database_url: str, pid: int) -> None:
    """End the server process of a pooled connection, as a Postgres restart would, and wait
    until it is gone."""
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=None)
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}).scalar()
    admin.dispose()
