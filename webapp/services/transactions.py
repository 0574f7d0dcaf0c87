"""Committing without reading back what the transaction just wrote."""
from __future__ import annotations

from webapp.extensions import db


def commit_keeping_loaded() -> None:
    """Commit, leaving the session's loaded objects as they are instead of expiring them.

    By default a commit expires every loaded object, so the next attribute read is a SELECT
    per object. Where the caller goes on to read only what this transaction itself wrote (or
    read under its locks), those reads would just return the same values at a round trip
    each: on the hot paths (creating a handoff, claiming a delivery row) they were a third of
    the statements."""
    session = db.session()
    expire = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = expire
