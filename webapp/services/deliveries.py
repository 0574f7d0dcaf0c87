"""Delivery rows: the audit trail of each side effect, and how a task drives one."""
from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from flask import current_app
from sqlalchemy import (
    DateTime,
    Integer,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    column,
    func,
    or_,
)
from sqlalchemy.dialects.postgresql import ARRAY, array
from sqlalchemy.engine import Result, Row
from sqlalchemy.exc import OperationalError

from webapp import logs, metrics
from webapp.extensions import db
from webapp.models import Delivery, Handoff
from webapp.models.base import utcnow
from webapp.services.errors import Conflict, NotFound
from webapp.services.leases import LeaseKeeper
from webapp.services.queue import enqueue
from webapp.services.statements import Prepared
from webapp.services.transactions import commit_keeping_loaded

log = logging.getLogger(__name__)


class DeliveryStatus(StrEnum):
    """Where a delivery row stands. `failed` always has a retry scheduled (next_attempt_at);
    a row that will never be tried again by itself is `dead`, with its reason."""
    PENDING = "pending"     # waiting for its task
    SENDING = "sending"     # a worker holds it under a lease
    SENT = "sent"
    FAILED = "failed"       # will be retried at next_attempt_at
    DEAD = "dead"           # permanent error or attempts used up; only an admin retries it
    SKIPPED = "skipped"     # no longer wanted (claimed, cancelled, nothing to send to)


S = DeliveryStatus
_TABLE = Delivery.__table__
# Every status a row may move to from each status; every write below goes through `moving`.
TRANSITIONS: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    S.PENDING: frozenset({S.SENDING, S.PENDING, S.SKIPPED}),      # claim; beat; claim/cancel
    S.SENDING: frozenset({S.SENT, S.FAILED, S.DEAD, S.SKIPPED,    # the outcome
                          S.PENDING}),                            # deferred; lease ran out
    S.FAILED: frozenset({S.SENDING, S.PENDING, S.SKIPPED}),       # retry due; beat; skip
    S.DEAD: frozenset({S.PENDING}),                               # an admin's retry
    S.SENT: frozenset(),
    S.SKIPPED: frozenset(),
}
FINAL = frozenset({S.SENT, S.DEAD, S.SKIPPED})


class ForbiddenMove(ValueError):
    """A status write the state machine does not allow."""


def sources_of(target: DeliveryStatus, *sources: DeliveryStatus) -> list[str]:
    """The statuses a write to `target` may start from: `sources` (all allowed ones when
    none are named), each checked against TRANSITIONS."""
    allowed = [status for status, moves in TRANSITIONS.items() if target in moves]
    for source in sources:
        if target not in TRANSITIONS[source]:
            raise ForbiddenMove(f"a delivery cannot move from {source} to {target}")
    return [str(status) for status in (sources or allowed)]


def moving(target: DeliveryStatus, *sources: DeliveryStatus):
    """The WHERE condition of a status write to `target` from `sources`: the only way a
    status is written, so no write can skip the table."""
    return Delivery.status == any_(array(sources_of(target, *sources)))


def move(delivery_id: int, target: DeliveryStatus, **values) -> bool:
    """Move one row to `target` if the table allows it from where the row is; True if it
    moved. A `failed` row needs its next_attempt_at."""
    if target == S.FAILED and values.get("next_attempt_at") is None:
        raise ForbiddenMove("a failed delivery needs next_attempt_at: use dead instead")
    result = db.session.execute(db.update(Delivery).where(
        Delivery.id == delivery_id, moving(target)).values(
        status=str(target), updated_at=utcnow(), **values))
    db.session.commit()
    return result.rowcount == 1


def skip_waiting(handoff_id: int, channels: tuple[str, ...], reason: str) -> None:
    """The handoff's rows on these channels that have not gone out are no longer wanted;
    the caller commits."""
    db.session.execute(db.update(Delivery).where(
        Delivery.handoff_id == handoff_id, Delivery.channel.in_(channels),
        moving(S.SKIPPED, S.PENDING, S.FAILED)).values(
        status=str(S.SKIPPED), last_error=reason, next_attempt_at=None))


def is_settled(status: str) -> bool:
    """Nothing more will happen to the row by itself."""
    return status in FINAL


# How a handoff shows its assessment and PSA rows (API.md): the assessment reads `ready`
# once stored; a row in flight reads as pending.
_ASSESSMENT_STATUS = {S.PENDING: "pending", S.SENDING: "pending", S.SENT: "ready",
                      S.FAILED: "failed", S.DEAD: "failed", S.SKIPPED: "skipped"}


def assessment_status(status: str | None, ready: bool = False) -> str:
    if ready:
        return _ASSESSMENT_STATUS[S.SENT]
    return _ASSESSMENT_STATUS[S(status)] if status is not None else str(S.SKIPPED)


def psa_status(status: str | None) -> str:
    """psa.status on a handoff: a delivery status, with `sending` read as pending and no row
    at all as skipped."""
    if status is None:
        return str(S.SKIPPED)
    return str(S.PENDING) if status == S.SENDING else str(S(status))


def to_dict(row: Delivery) -> dict:
    return {"id": row.id, "channel": row.channel, "recipient": row.recipient,
            "purpose": row.purpose, "status": row.status, "attempts": row.attempts,
            "last_error": row.last_error,
            "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
            "sent_at": row.sent_at.isoformat() if row.sent_at else None}


def for_handoff(handoff: Handoff) -> list[Delivery]:
    return list(db.session.scalars(db.select(Delivery).where(
        Delivery.handoff_id == handoff.id).order_by(Delivery.id)))


def reset_for_retry(handoff: Handoff, delivery_id: int) -> Delivery:
    """An admin's retry: a failed or dead delivery back to `pending` with a fresh attempt
    budget (committed); NotFound / Conflict otherwise. The caller enqueues its task."""
    row = db.session.scalars(db.select(Delivery).where(
        Delivery.id == delivery_id, Delivery.handoff_id == handoff.id,
        Delivery.account_id == handoff.account_id).with_for_update()).one_or_none()
    if row is None:
        raise NotFound("delivery")
    if row.status not in (S.FAILED, S.DEAD):
        raise Conflict("not_retryable",
                       f"only failed or dead deliveries can be retried; this one is {row.status}")
    db.session.execute(db.update(Delivery).where(
        Delivery.id == row.id, moving(S.PENDING, S.FAILED, S.DEAD)).values(
        status=str(S.PENDING), attempts=0, next_attempt_at=utcnow(), lease_expires_at=None,
        updated_at=utcnow()))
    db.session.commit()
    db.session.refresh(row)
    return row


# ---- driving one row through claim -> side effect -> settled --------------------------------

class Retryable(Exception):
    """The side effect failed in a way that may pass; try again after a backoff."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class Permanent(Exception):
    """The side effect cannot succeed as things stand; the row ends `failed` with the reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Skip(Exception):
    """The side effect is no longer wanted; the row ends `skipped` with the reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Defer(Exception):
    """Not yet: put the row back to `pending` without counting an attempt."""

    def __init__(self, delay: float, reason: str):
        super().__init__(reason)
        self.delay, self.reason = delay, reason


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped, and a budget of attempts."""
    base: float = 5.0
    cap: float = 600.0
    max_attempts: int = 8

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(attempts - 1, 0))
        delay = random.uniform(ceiling / 2, ceiling)
        return max(delay, retry_after or 0.0)


def claim(delivery_id: int) -> Row | None:
    """Take the row for this worker with a lease: one conditional UPDATE, so a task delivered
    twice, or racing beat, does the side effect once. Only a pending row, or a failed one whose
    backoff is over, can be taken; a permanent failure waits for an admin's retry. None when
    done, taken or not yet due."""
    taken = claim_many([delivery_id])
    return taken[0] if taken else None


def claim_many(delivery_ids: list[int]) -> list[Row]:
    """`claim` for a group of rows in one statement, under one lease (the same expiry for
    all, renewed together); the rows taken, in id order, their columns as attributes."""
    now = utcnow()
    lease = timedelta(seconds=current_app.config["DELIVERY_LEASE_SECONDS"])
    rows = _CLAIM.run({
        "ids": delivery_ids, "due": now + timedelta(seconds=1), "lease_until": now + lease,
        "now": now}).all()
    commit_keeping_loaded()   # what the caller had loaded stays as it was
    return sorted(rows, key=lambda row: row.id)


# built once: building the statement anew for every claim cost more than running it; the
# rows it returns are plain rows of the delivery's columns, as the UPDATE left them
_CLAIM = Prepared(db.update(_TABLE).where(
    _TABLE.c.id == any_(bindparam("ids", type_=ARRAY(Integer))),
    moving(S.SENDING, S.PENDING, S.FAILED),
    or_(Delivery.status == S.PENDING,
        Delivery.next_attempt_at <= bindparam("due", type_=DateTime(timezone=True)))).values(
    status=str(S.SENDING), attempts=Delivery.attempts + 1,
    lease_expires_at=bindparam("lease_until", type_=DateTime(timezone=True)),
    updated_at=bindparam("now", type_=DateTime(timezone=True))).returning(*_TABLE.c))


class Heartbeat:
    """Renews a claim's lease every third of its length while the side effects run, on a
    connection of its own: a slow but live side effect is never taken for a dead worker's,
    and a killed worker's lease runs out soon. `lease` is the current lease, the claim's
    identity when the outcomes are recorded. One heartbeat holds one row, or a group claimed
    together (claim_many); rows settled meanwhile are no longer renewed. The renewals of every
    heartbeat of the process are made by one thread (leases.LeaseKeeper)."""

    def __init__(self, delivery_id: int | list[int], lease) -> None:
        self.ids = [delivery_id] if isinstance(delivery_id, int) else list(delivery_id)
        self.delivery_id, self.lease = self.ids[0], lease
        self._seconds = current_app.config["DELIVERY_LEASE_SECONDS"]
        self._engine = db.engine
        self._stopped = False
        self._lock = threading.Lock()
        self.due = time.monotonic() + self._seconds / 3   # when the next renewal is due

    def __enter__(self) -> Heartbeat:
        _KEEPER.hold(self)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self):
        """Stop renewing; returns the lease that holds the row now."""
        with self._lock:   # (waits for a renewal under way)
            self._stopped = True
            lease = self.lease
        _KEEPER.release(self)
        return lease

    @contextlib.contextmanager
    def holding(self):
        """The current lease, with no renewal until the block ends: an outcome written under
        the lease while later rows of the claim still run must not race its renewal."""
        with self._lock:
            yield self.lease

    def renew(self) -> bool:
        """Renew the lease once, unless stopped; False when there is nothing more to renew."""
        with self._lock:
            if self._stopped:
                return False
            renewed = utcnow() + timedelta(seconds=self._seconds)
            try:
                with self._engine.begin() as conn:
                    found = conn.execute(_RENEW, {"ids": self.ids, "lease": self.lease,
                                                  "renewed": renewed}).rowcount
            except Exception:  # the database is away: the lease may lapse, try again
                log.warning("could not renew the lease of delivery %s", self.delivery_id,
                            exc_info=True)
                found = -1
            if not found:   # settled, retaken or deleted: nothing more to renew
                return False
            if found > 0:
                self.lease = renewed
            self.due = time.monotonic() + self._seconds / 3
            return True


_RENEW = db.update(Delivery.__table__).where(
    Delivery.__table__.c.id.in_(bindparam("ids", expanding=True)),
    Delivery.__table__.c.status == S.SENDING,
    Delivery.__table__.c.lease_expires_at == bindparam("lease", type_=DateTime(timezone=True)),
).values(lease_expires_at=bindparam("renewed", type_=DateTime(timezone=True)))


_KEEPER = LeaseKeeper()


SETTLE_RETRY_SECONDS = 0.5


def _settle(delivery_id: int, lease, status: DeliveryStatus, **values) -> None:
    """Record the outcome, only if this claim (its `lease`) still holds the row: a worker that
    outlived its lease (beat handed the row to another) must not overwrite the newer
    outcome."""
    sources_of(status, S.SENDING)
    if status != S.PENDING:
        params = _record_params(lease, [(delivery_id, status, values)])
        recorded = _write_while_leased(lease, lambda: _RECORD.run(params))
    else:   # deferred: gives back its attempt
        recorded = _write_while_leased(lease, lambda: db.session.execute(
            db.update(_TABLE).where(
                _TABLE.c.id == delivery_id, _TABLE.c.status == S.SENDING,
                _TABLE.c.lease_expires_at == lease).values(
                status=str(status), lease_expires_at=None, updated_at=utcnow(), **values)
            .returning(_TABLE.c.id, _TABLE.c.channel)))
    _settled(status, values, recorded)


def _write_while_leased(lease, write: Callable[[], Result]) -> list:
    """Run an outcome's UPDATE ... RETURNING (`write`) and commit; the rows it returned."""
    while True:
        try:
            recorded = write().all()
            # the rows of a later phase of the group (run_group) stay as claimed: reading
            # them back would be a SELECT each, of what the claim returned
            commit_keeping_loaded()
            return recorded
        except OperationalError:
            # the side effect is done but the database went away: keep trying while the
            # lease is ours, or the row would be retaken and the email sent again (the
            # conditional UPDATE stays safe: a row retaken meanwhile is not overwritten)
            db.session.rollback()
            if utcnow() + timedelta(seconds=SETTLE_RETRY_SECONDS) >= lease:
                raise
            log.warning("could not record a delivery outcome yet: the database is away; "
                        "retrying while the lease holds")
            time.sleep(SETTLE_RETRY_SECONDS)


def _settled(status: DeliveryStatus, values: dict, recorded: list) -> None:
    """Count and log one row's outcome (`recorded`: what its UPDATE returned)."""
    for _, channel in recorded:
        metrics.delivery_settled(channel, status)
    if not recorded:
        log.warning("delivery outcome %s not recorded: the row was retaken meanwhile", status)
    elif status == S.PENDING:
        log.info("delivery deferred, not counted as an attempt")
    else:   # reasons never carry secrets: every one is written to be shown to the tenant
        log.info("delivery %s%s", status, f": {values['last_error']}"
                 if values.get("last_error") else "")


def run(delivery_id: int, side_effect: Callable[[Delivery], str | None], policy: RetryPolicy,
        on_settled: Callable[[int], None] | None = None) -> float | None:
    """Claim the row, do the side effect, record the outcome, then call `on_settled` with the
    row's handoff id (not for a deferred row). Returns the delay after which the task should
    run again, or None when the row needs nothing more from this task."""
    row = claim(delivery_id)
    if row is None:
        log.info("delivery not taken: done, held by another worker, or not yet due")
        return None
    handoff_id = row.handoff_id
    logs.bind(handoff_id=handoff_id)
    with Heartbeat(delivery_id, row.lease_expires_at) as heartbeat:
        outcome = _outcome(row, side_effect, policy)
        _settle(delivery_id, heartbeat.stop(), outcome.status, **outcome.values)
    if outcome.status == S.PENDING:
        return outcome.retry_in
    if on_settled is not None:
        on_settled(handoff_id)
    return outcome.retry_in


def run_many(delivery_ids: list[int], side_effects: Callable[[list[Delivery]],
             Callable[[Delivery], str | None]], policy: RetryPolicy) -> dict[int, float]:
    """`run` for a group of rows: claimed in one statement under one lease, each side effect
    done in turn, in id order (`side_effects(rows)` reads what they all need once, and gives
    the side effect of one row), the outcomes recorded in one statement. Returns {row id:
    delay} for the rows whose task should run again. A worker killed before the outcomes are
    recorded leaves the whole group to be retaken when its lease runs out, as `run` leaves
    its row."""
    return {ran.row_id: ran.outcome.retry_in for ran in run_group(
        [sorted(delivery_ids)], side_effects, lambda channel: policy)
        if ran.outcome.retry_in is not None}


@dataclass(frozen=True)
class Ran:
    """One row of a group as its run left it."""
    row_id: int
    handoff_id: int
    channel: str
    outcome: Outcome


def run_group(phases: list[list[int]], side_effects: Callable[[list[Delivery]],
              Callable[[Delivery], str | None]], policy_of: Callable[[str], RetryPolicy],
              after_phase: Callable[[list[Ran]], None] | None = None) -> list[Ran]:
    """`run_many` for rows that may be of several channels (`policy_of` gives a channel's
    retry policy), in phases: every row claimed in one statement under one lease, then phase
    by phase the side effects in the order given (`side_effects(rows of the phase)`) and the
    phase's outcomes recorded in one statement, then `after_phase(what the phase's rows came
    to)` (called for every phase, even one whose rows were not taken). A later phase's rows
    stay leased meanwhile. What each taken row came to, in order."""
    rows = {row.id: row for row in claim_many([row_id for phase in phases for row_id in phase])}
    wanted = sum(len(phase) for phase in phases)
    if len(rows) < wanted:
        log.info("%d of %d delivery rows not taken: done, held by another worker, or not "
                 "yet due", wanted - len(rows), wanted)
    # read before any side effect: a rollback (a failed one's) expires the rows, and reading
    # an expired row's columns is a SELECT
    taken = {row_id: (row.handoff_id, row.channel) for row_id, row in rows.items()}
    outcomes: list[Ran] = []
    heartbeat = Heartbeat(list(rows), next(iter(rows.values())).lease_expires_at) \
        if rows else None
    with heartbeat or contextlib.nullcontext():
        for number, phase in enumerate(phases):
            mine = [rows[row_id] for row_id in phase if row_id in rows]
            ran: list[Ran] = []
            if mine:
                side_effect = side_effects(mine)
                for row in mine:
                    handoff_id, channel = taken[row.id]
                    with logs.bound(delivery_id=row.id, handoff_id=handoff_id,
                                    channel=channel):
                        ran.append(Ran(row.id, handoff_id, channel,
                                       _outcome(row, side_effect, policy_of(channel))))
                if number == len(phases) - 1:
                    _settle_many(heartbeat.stop(), ran)
                else:
                    with heartbeat.holding() as lease:   # (no renewal while it is written)
                        _settle_many(lease, ran)
            outcomes += ran
            if after_phase is not None:
                after_phase(ran)
    return outcomes


@dataclass(frozen=True)
class Outcome:
    """What one side effect came to: the status to record, its columns, and when the task
    should run again (None: not by itself)."""
    status: DeliveryStatus
    values: dict
    retry_in: float | None = None


def _outcome(row: Delivery, side_effect: Callable[[Delivery], str | None],
             policy: RetryPolicy) -> Outcome:
    try:
        external_id = side_effect(row)
    except Defer as defer:
        db.session.rollback()
        return Outcome(S.PENDING, {"attempts": Delivery.attempts - 1, "next_attempt_at":
                                   utcnow() + timedelta(seconds=defer.delay)}, defer.delay)
    except Skip as skip:
        db.session.rollback()
        return Outcome(S.SKIPPED, {"last_error": skip.reason, "next_attempt_at": None})
    except Permanent as error:
        db.session.rollback()
        return Outcome(S.DEAD, {"last_error": error.reason, "next_attempt_at": None})
    except Retryable as error:
        db.session.rollback()
        return _failed(row.attempts, error.reason, error.retry_after, policy)
    except Exception as error:  # a bug or an unforeseen failure: recorded, retried, never lost
        log.exception("delivery %s failed unexpectedly", row.id)
        db.session.rollback()
        return _failed(row.attempts, f"unexpected error: {error.__class__.__name__}", None,
                       policy)
    return Outcome(S.SENT, {"external_id": external_id, "sent_at": utcnow(),
                            "last_error": None, "next_attempt_at": None})


def _failed(attempts: int, reason: str, retry_after: float | None,
            policy: RetryPolicy) -> Outcome:
    max_attempts = min(policy.max_attempts, current_app.config["DELIVERY_MAX_ATTEMPTS"])
    if attempts >= max_attempts:
        return Outcome(S.DEAD, {"last_error": f"gave up after {attempts} attempts: {reason}",
                                "next_attempt_at": None})
    delay = policy.delay(attempts, retry_after) * current_app.config["DELIVERY_BACKOFF_SCALE"]
    if retry_after:
        delay = max(delay, retry_after)
    return Outcome(S.FAILED, {"last_error": reason,
                              "next_attempt_at": utcnow() + timedelta(seconds=delay)}, delay)


# a group's outcomes as arrays, one element per row: one statement whatever the group's size,
# compiled once (a VALUES list of literal rows would be compiled anew for every group)
_GIVEN = func.unnest(
    cast(bindparam("ids"), ARRAY(Integer)), cast(bindparam("statuses"), ARRAY(Text)),
    cast(bindparam("external_ids"), ARRAY(Text)),
    cast(bindparam("sent_ats"), ARRAY(DateTime(timezone=True))),
    cast(bindparam("errors"), ARRAY(Text)),
    cast(bindparam("next_attempts"), ARRAY(DateTime(timezone=True))),
).table_valued(column("id", Integer), column("status", Text), column("external_id", Text),
               column("sent_at", DateTime(timezone=True)), column("last_error", Text),
               column("next_attempt_at", DateTime(timezone=True))).render_derived("outcome")

# each row's outcome, only where this claim (its lease) still holds the row; a failed row
# keeps what it had of a message id and a sent time. Built once, like _GIVEN.
_RECORD = Prepared(db.update(_TABLE).where(
    _TABLE.c.id == _GIVEN.c.id, _TABLE.c.status == S.SENDING,
    _TABLE.c.lease_expires_at == bindparam("lease", type_=DateTime(timezone=True))).values(
    status=_GIVEN.c.status, lease_expires_at=None,
    updated_at=bindparam("now", type_=DateTime(timezone=True)),
    external_id=func.coalesce(_GIVEN.c.external_id, _TABLE.c.external_id),
    sent_at=func.coalesce(_GIVEN.c.sent_at, _TABLE.c.sent_at),
    last_error=_GIVEN.c.last_error, next_attempt_at=_GIVEN.c.next_attempt_at,
).returning(_TABLE.c.id, _TABLE.c.channel))


def _record_params(lease, outcomes: list[tuple[int, DeliveryStatus, dict]]) -> dict:
    """_RECORD's parameters for (row id, status, columns) outcomes, one element each."""
    return {"lease": lease, "now": utcnow(),
            "ids": [row_id for row_id, _, _ in outcomes],
            "statuses": [str(status) for _, status, _ in outcomes],
            "external_ids": [values.get("external_id") for _, _, values in outcomes],
            "sent_ats": [values.get("sent_at") for _, _, values in outcomes],
            "errors": [values.get("last_error") for _, _, values in outcomes],
            "next_attempts": [values.get("next_attempt_at") for _, _, values in outcomes]}


def _settle_many(lease, outcomes: list[Ran]) -> None:
    """Record a group's outcomes in one UPDATE ... FROM unnest(...), each only where this
    claim (its `lease`) still holds the row (as `_settle` does for one). A deferred row,
    which gives back its attempt, is recorded on its own."""
    for ran in outcomes:
        sources_of(ran.outcome.status, S.SENDING)
        if ran.outcome.status == S.PENDING:
            with logs.bound(delivery_id=ran.row_id, handoff_id=ran.handoff_id,
                            channel=ran.channel):
                _settle(ran.row_id, lease, ran.outcome.status, **ran.outcome.values)
    final = [ran for ran in outcomes if ran.outcome.status != S.PENDING]
    if not final:
        return
    params = _record_params(
        lease, [(ran.row_id, ran.outcome.status, ran.outcome.values) for ran in final])
    recorded = _write_while_leased(lease, lambda: _RECORD.run(params))
    by_id = {row_id: [(row_id, channel)] for row_id, channel in recorded}
    for ran in final:
        with logs.bound(delivery_id=ran.row_id, handoff_id=ran.handoff_id, channel=ran.channel):
            _settled(ran.outcome.status, ran.outcome.values, by_id.get(ran.row_id, []))


def drive(task_name: str, delivery_id: int, side_effect: Callable[[Delivery], str | None],
          policy: RetryPolicy, on_settled: Callable[[int], None] | None = None) -> None:
    """`run`, then schedule the next try; waits the broker can't hold are left to beat."""
    retry_in = run(delivery_id, side_effect, policy, on_settled)
    schedule(task_name, {delivery_id: retry_in} if retry_in is not None else {})


def drive_many(task_name: str, delivery_ids: list[int],
               side_effects: Callable[[list[Delivery]], Callable[[Delivery], str | None]],
               policy: RetryPolicy) -> None:
    """`run_many`, then schedule each row's next try on its own (`task_name` drives one)."""
    schedule(task_name, run_many(delivery_ids, side_effects, policy))


def schedule(task_name: str, retries: dict[int, float]) -> None:
    """Enqueue the next tries of {row id: delay} through `task_name`; a wait longer than the
    broker can hold is left to beat."""
    longest = current_app.config["MAX_TASK_COUNTDOWN_SECONDS"]
    for delivery_id, retry_in in retries.items():
        if retry_in <= longest:
            enqueue(task_name, delivery_id, countdown=retry_in)


# a pending row handed back again and again (its messages wait in a long queue, or keep
# getting lost) is handed back less and less often: after as long again as it has waited
REHAND_PENDING_AT_MOST_EVERY = timedelta(hours=1)


def take_due(now, pending_grace: timedelta, limit: int = 1000) -> list[Delivery]:
    """Rows whose time has come: failed and due, pending and forgotten (lost enqueue), or
    sending with an expired lease (the worker died). Each is handed back as `pending`, so its
    task can take it; the next beat runs leave it alone for a grace period, and a row that
    was pending already for as long again as it has waited, so a backlog in the queue does
    not grow by a copy of every waiting row each run."""
    is_due = and_(moving(S.PENDING, S.FAILED, S.PENDING, S.SENDING), or_(
        and_(Delivery.status == S.FAILED, Delivery.next_attempt_at <= now),
        and_(Delivery.status == S.PENDING, Delivery.next_attempt_at <= now - pending_grace),
        and_(Delivery.status == S.SENDING, Delivery.lease_expires_at < now),
    ))
    # SKIP LOCKED: a row a worker is claiming right now is not waited for, and the outer
    # UPDATE repeats the conditions: should the row change before it is locked, Postgres
    # re-checks them on its new version (not the subquery's), so a row just claimed is left
    # to its worker instead of being handed out a second time
    due = db.select(Delivery.id).where(is_due).order_by(
        Delivery.next_attempt_at.nulls_first(), Delivery.id).limit(limit).with_for_update(
        skip_locked=True)
    next_attempt_at = case((Delivery.status == S.PENDING, func.least(
        now + (now - Delivery.created_at), now + REHAND_PENDING_AT_MOST_EVERY)), else_=now)
    taken = db.session.execute(db.update(Delivery).where(Delivery.id.in_(due.scalar_subquery()),
                                                         is_due)
                               .values(status=str(S.PENDING), next_attempt_at=next_attempt_at,
                                       lease_expires_at=None, updated_at=now)
                               .returning(Delivery.id, Delivery.channel)).all()
    db.session.commit()
    return taken


def bury_exhausted(now, max_attempts: dict[str, int] | None = None) -> int:
    """Rows whose worker died on every attempt are `dead`, visible in the deliveries API:
    after DELIVERY_MAX_ATTEMPTS, or fewer where a channel's own policy allows fewer."""
    cap = current_app.config["DELIVERY_MAX_ATTEMPTS"]
    exhausted = or_(Delivery.attempts >= cap, *(
        and_(Delivery.channel == channel, Delivery.attempts >= min(limit, cap))
        for channel, limit in (max_attempts or {}).items()))
    result = db.session.execute(db.update(Delivery).where(
        moving(S.DEAD, S.SENDING), Delivery.lease_expires_at < now, exhausted,
    ).values(status=str(S.DEAD), lease_expires_at=None, updated_at=now,
             last_error="gave up: the worker stopped during every attempt")
        .returning(Delivery.channel))
    buried = result.scalars().all()
    db.session.commit()
    metrics.deliveries_buried(buried)
    return len(buried)
