"""Token checks that many requests need at the same moment, answered together.

After a deploy every browser reopens its live stream at once. Checked one by one, each
opening stream waited for a pooled connection to ask about its own token; past the pool's
timeout the rest were turned away with 503. Here the callers that arrive while a check is
running queue up, and the next check answers all of them with one statement on one
connection: a storm of 2,000 opens is a handful of queries, and nobody waits on the pool.

The first caller to find no check running leads: it runs checks until the queue is empty,
then hands the lead on. Works alike on real threads and on gevent's patched ones."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from webapp.models import ADMIN_ROLES, SENIOR_ROLES, ApiToken, User
from webapp.models.base import utcnow

# a caller never waits longer than this for the check it joined (then: unavailable)
WAIT_SECONDS = 30.0
# how many tokens one statement asks about
BATCH_SIZE = 500
# the endpoints whose callers are checked this way (the caller is a Caller, not a User)
ENDPOINTS = frozenset({"stream.escalations"})


@dataclass(frozen=True)
class Caller:
    """Who a token stands for, as the stream needs it (not an ORM object: it is read on a
    connection of its own, for many callers at once)."""
    id: int
    account_id: int
    role: str

    @property
    def is_senior(self) -> bool:
        return self.role in SENIOR_ROLES

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES


class Unavailable(Exception):
    """The check could not be answered (the database is away, or too slow)."""


class _Waiting:
    __slots__ = ("digest", "done", "caller", "error")

    def __init__(self, digest: str):
        self.digest, self.done = digest, threading.Event()
        self.caller: Caller | None = None
        self.error: BaseException | None = None


class TokenLookups:
    """One per application: the queue of callers waiting for a check, and who leads."""

    def __init__(self, app: Flask):
        self.app = app
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._leading = False

    def caller(self, digest: str) -> Caller | None:
        """The active user the token digest stands for, or None (unknown, expired, revoked,
        or the user deleted). Raises Unavailable when no answer comes."""
        waiting = _Waiting(digest)
        with self._lock:
            self._queue.append(waiting)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        elif not waiting.done.wait(WAIT_SECONDS):
            raise Unavailable("no answer to the token check in time")
        if waiting.error is not None:
            raise Unavailable(f"token check failed: {type(waiting.error).__name__}") \
                from waiting.error
        return waiting.caller

    def _lead(self) -> None:
        batch: list[_Waiting] = []
        try:
            while True:
                with self._lock:
                    batch, self._queue = self._queue[:BATCH_SIZE], self._queue[BATCH_SIZE:]
                    if not batch:
                        self._leading = False
                        return
                try:
                    found = self._check({waiting.digest for waiting in batch})
                except SQLAlchemyError as error:   # every caller of the batch hears of it
                    for waiting in batch:
                        waiting.error = error
                else:
                    for waiting in batch:
                        waiting.caller = found.get(waiting.digest)
                for waiting in batch:
                    waiting.done.set()
        except BaseException as error:   # the leader itself was stopped: nobody is left hanging
            with self._lock:
                left, self._queue, self._leading = batch + self._queue, [], False
            for waiting in left:
                if not waiting.done.is_set():
                    waiting.error = error
                    waiting.done.set()
            raise

    def _check(self, digests: set[str]) -> dict[str, Caller]:
        from webapp.extensions import db
        with self.app.app_context(), db.engine.connect() as connection:
            rows = connection.execute(select(
                ApiToken.token_hash, User.id, User.account_id, User.role,
            ).join(User, User.id == ApiToken.user_id).where(
                ApiToken.token_hash.in_(digests), ApiToken.revoked_at.is_(None),
                ApiToken.expires_at > utcnow(), User.deleted_at.is_(None)))
            return {row.token_hash: Caller(row.id, row.account_id, row.role) for row in rows}


def lookups(app: Flask) -> TokenLookups:
    found = app.extensions.get("token_lookups")
    if found is None:
        found = app.extensions.setdefault("token_lookups", TokenLookups(app))
    return found
