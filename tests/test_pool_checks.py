"""A pooled connection is pinged before use when it sat idle in the pool, and replaced if the
ping fails; one back from use a moment ago is used as it is (webapp/pool_checks.py)."""
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.conftest import app_config
from tests.helpers import kill_backend
from webapp import create_app
from webapp.extensions import db
from webapp.pool_checks import ping_when_idle

BACKEND = text("SELECT pg_backend_pid()")


@pytest.fixture
def engine(database_url):
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def pooled_backend(engine) -> int:
    """The server process of the pool's one connection, which goes back to the pool."""
    with engine.connect() as conn:
        return conn.execute(BACKEND).scalar()


def test_an_idle_connection_that_died_is_replaced_before_use(engine, database_url):
    ping_when_idle(engine, idle_seconds=0)   # every connection back in the pool is "idle"
    dead = pooled_backend(engine)
    kill_backend(database_url, dead)
    with engine.connect() as conn:   # the ping fails: the pool connects anew, unseen
        assert conn.execute(BACKEND).scalar() != dead


def test_a_connection_back_from_use_a_moment_ago_is_not_pinged(engine, database_url):
    ping_when_idle(engine, idle_seconds=3600)
    dead = pooled_backend(engine)
    kill_backend(database_url, dead)
    # not pinged: the statement finds the connection gone (as a statement would without
    # any ping) ...
    with pytest.raises(OperationalError), engine.connect() as conn:
        conn.execute(BACKEND)
    # ... and the pool, told of the disconnect, connects anew for the next caller
    with engine.connect() as conn:
        assert conn.execute(BACKEND).scalar() != dead


def test_the_app_pings_idle_connections_instead_of_every_checkout(app_env, database_url):
    app = create_app(app_config(app_env, DB_PING_AFTER_IDLE_SECONDS=0.0))
    with app.app_context():
        assert db.engine.pool._pre_ping is False   # no SELECT 1 on every checkout
        dead = db.session.execute(BACKEND).scalar()
        db.session.remove()
        kill_backend(database_url, dead)
        assert db.session.execute(BACKEND).scalar() != dead
        db.session.remove()
        db.engine.dispose()
