"""Statements compiled once and sent as driver SQL (webapp/services/statements.py) read and
write what SQLAlchemy's own execution does, and fail as it does."""
from datetime import UTC, datetime

import pytest
from sqlalchemy import Integer, bindparam, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError, OperationalError

from tests.factories import undispatched_handoff
from tests.helpers import kill_backend
from webapp.extensions import db
from webapp.models import Handoff, User
from webapp.services.statements import Prepared

_H = Handoff.__table__
READ = db.select(_H.c.id, _H.c.snapshot, _H.c.created_at, _H.c.assessment,
                 _H.c.snapshot["messages"].label("messages"),
                 func.jsonb_array_length(_H.c.snapshot["messages"]).label("message_total"),
                 ).where(_H.c.id == bindparam("id"), _H.c.status == "open")
STORE = db.update(_H).where(_H.c.id == bindparam("handoff_id")).values(
    assessment=bindparam("stored", type_=JSONB)).returning(_H.c.id)


def test_rows_read_as_a_core_statement_reads_them(app, app_env, tenant):
    handoff_id = undispatched_handoff(app_env, tenant)
    with app.app_context():
        expected = db.session.execute(READ, {"id": handoff_id}).one()
        db.session.rollback()
        found = Prepared(READ).run({"id": handoff_id}).one()
        assert found._asdict() == expected._asdict()
        assert isinstance(found.snapshot, dict) and found.messages == found.snapshot["messages"]
        assert found.created_at.tzinfo is not None


def test_a_json_parameter_is_written_as_the_orm_writes_it(app, app_env, tenant):
    # (no worker may store its own assessment meanwhile)
    handoff_id = undispatched_handoff(app_env, tenant)
    stored = {"summary": "disk full", "likely_causes": ["logs"], "confidence": 0.5,
              "when": datetime(2026, 12, 3, tzinfo=UTC).isoformat(), "none": None}
    with app.app_context():
        assert Prepared(STORE).run({"handoff_id": handoff_id, "stored": stored}).all() == [
            (handoff_id,)]
        db.session.commit()
        assert db.session.get(Handoff, handoff_id).assessment == stored


def test_an_in_over_a_parameter_list_is_refused(app):
    statement = Prepared(db.select(User.id).where(User.id.in_(bindparam("ids", expanding=True))))
    with app.app_context(), pytest.raises(ValueError, match="ANY"):
        statement.run({"ids": [1, 2]})


def test_errors_are_sqlalchemy_errors_and_a_dropped_connection_is_replaced(
        app, app_env, database_url, tenant):
    handoff_id = undispatched_handoff(app_env, tenant)
    backend = Prepared(db.select(func.pg_backend_pid()))
    duplicate = Prepared(_H.insert().from_select(
        [column.name for column in _H.c],
        db.select(*_H.c).where(_H.c.id == bindparam("id", type_=Integer))))
    with app.app_context():
        with pytest.raises(IntegrityError):   # the same primary key
            duplicate.run({"id": handoff_id})
        db.session.rollback()
        dead = backend.run({}).scalar()
        db.session.rollback()
        kill_backend(database_url, dead)
        with pytest.raises(OperationalError):
            backend.run({})
        db.session.rollback()
        assert backend.run({}).scalar() != dead
        assert db.session.execute(text("SELECT 1")).scalar() == 1
