"""The escalation note on the client's PSA ticket, written exactly once."""
from __future__ import annotations

import contextlib
import logging
import random
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta

from flask import current_app
from redis import RedisError
from sqlalchemy import bindparam, func
from sqlalchemy.orm import joinedload

from webapp.extensions import db
from webapp.integrations import outbound
from webapp.integrations.psa import (
    PsaBusy,
    PsaPermanent,
    PsaRetryable,
    build_adapter,
    note_marker,
    write_note_once,
)
from webapp.models import Account, Delivery, Handoff
from webapp.models.base import utcnow
from webapp.redis_client import get_redis, key
from webapp.services import deliveries, psa_settings
from webapp.services.deliveries import Defer, Permanent, Retryable, Skip

log = logging.getLogger(__name__)

EXTERNAL_ID_LENGTH = Delivery.__table__.c.external_id.type.length

ASSESSMENT_POLL_SECONDS = 5.0
# a push makes a few requests (a lookup, a search, the write), each within PSA_TIMEOUT
REQUESTS_PER_PUSH = 5

# Take one of an account's PSA slots: a sorted set of holders scored by when their hold
# runs out, so a killed worker's slot frees itself. KEYS[1] the set; ARGV: now, cap,
# expiry, holder.
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(ARGV[3] - ARGV[1]) + 1)
return 1
"""


@contextlib.contextmanager
def account_slot(account_id: int) -> Iterator[bool]:
    """One of the account's PSA_MAX_CONCURRENT_PER_ACCOUNT push slots, across every worker,
    or False when all are taken: one tenant's slow PSA holds at most that many of the PSA
    workers' threads. With Redis down, pushes go ahead (the deadline still bounds them)."""
    cap = current_app.config["PSA_MAX_CONCURRENT_PER_ACCOUNT"]
    hold = current_app.config["PSA_TIMEOUT"] * REQUESTS_PER_PUSH + 10
    slots, holder = key("psa", "slots", account_id), secrets.token_hex(8)
    redis = get_redis()
    now = time.time()
    try:
        taken = bool(redis.eval(_TAKE_SLOT, 1, slots, now, cap, now + hold, holder))
    except (RedisError, OSError):  # Redis is away: better an unbounded push than none
        log.warning("PSA slots unavailable for account %s; pushing without one", account_id)
        yield True
        return
    try:
        yield taken
    finally:
        if taken:
            with contextlib.suppress(RedisError, OSError):
                redis.zrem(slots, holder)
BUSY_SPREAD_SECONDS = 2.0
BUSY_DELAY_CAP_SECONDS = 900.0


def compose_note(handoff: Handoff) -> str:
    """Plain text a senior can read in the PSA; the marker lets a lost answer be reconciled.
    A park (pushed when the account asks for it) reads as one: set aside, nothing to claim."""
    snapshot = handoff.snapshot
    when = f"{handoff.created_at:%Y-%m-%d %H:%M} UTC"
    escalated = handoff.intent == "escalate"
    if escalated:
        headline = (f"ESCALATED by {handoff.creator.name} on {when}"
                    f"{' (URGENT)' if handoff.urgency == 'high' else ''}")
    else:
        headline = f"PARKED by {handoff.creator.name} on {when} for later"
    lines = [
        headline,
        f"Session: {snapshot.get('title')}",
        "",
        "Escalation note:" if escalated else "Park note:",
        handoff.note,
        "",
        "Problem:",
        (snapshot.get("problem") or "(not described)").strip()[:2000],
    ]
    messages = snapshot.get("messages") or []
    if messages:
        lines += ["", f"Transcript (last {min(len(messages), 6)} of {len(messages)} messages):"]
        lines += [f"- {m['role']}: {m['content'][:300]}" for m in messages[-6:]]
    assessment = handoff.assessment
    if assessment:
        lines += ["", f"AI assessment ({assessment.get('provider')}, confidence "
                      f"{round(100 * float(assessment.get('confidence') or 0))}%):",
                  assessment.get("summary") or ""]
        lines += ["Likely causes:"] + [f"- {c}" for c in assessment.get("likely_causes", [])]
        lines += ["Next steps:"] + [f"- {s}" for s in assessment.get("next_steps", [])]
    else:
        lines += ["", "AI assessment: not available yet."]
    lines.append("")
    if escalated:   # a park is in nobody's queue: there is nothing to open or claim
        link = f"{current_app.config['PUBLIC_BASE_URL'].rstrip('/')}/queue#handoff-{handoff.id}"
        lines.append(f"Open in Escalations: {link}")
    lines.append(note_marker(handoff.id, handoff.marker_nonce))
    return "\n".join(lines)


def _assessment_settled(handoff: Handoff) -> bool:
    """True once no assessment is coming: done, skipped, given up, or failed for good. A
    failure that will be retried (next_attempt_at set) is still on its way."""
    status = db.session.scalar(db.select(Delivery.status).where(
        Delivery.handoff_id == handoff.id, Delivery.channel == "assessment"))
    return status is None or deliveries.is_settled(status)


def _busy_delay(account_id: int, retry_after: float | None) -> float:
    """When a push turned away by the PSA's budget comes back. Each push set aside before it
    needs about BUSY_SPREAD_SECONDS of the budget, so the delay grows with their number:
    a burst drains in one pass instead of coming back together every few seconds."""
    waiting = _deferred_pushes(account_id)
    spread = random.uniform(0.5, 1.0) * (waiting + 1) * BUSY_SPREAD_SECONDS
    return min(max(retry_after or 0.0, spread), BUSY_DELAY_CAP_SECONDS)


def _slot_delay(account_id: int) -> float:
    """When a push that found all of its account's slots taken comes back: each slot frees
    within about a PSA_TIMEOUT, so the pushes set aside before it need about that long per
    slot's worth of them."""
    config = current_app.config
    waiting = _deferred_pushes(account_id)
    turns = waiting // max(config["PSA_MAX_CONCURRENT_PER_ACCOUNT"], 1) + 1
    spread = random.uniform(0.5, 1.0) * turns * config["PSA_TIMEOUT"]
    return min(max(spread, 1.0), BUSY_DELAY_CAP_SECONDS)


def _deferred_pushes(account_id: int) -> int:
    return db.session.scalar(db.select(func.count(Delivery.id)).where(
        Delivery.account_id == account_id, Delivery.channel == "psa",
        Delivery.status == deliveries.DeliveryStatus.PENDING,
        Delivery.next_attempt_at > utcnow()))


def _may_have_posted(row: Delivery) -> bool:
    """An earlier attempt (before a retry, or before an admin's re-queue, which resets the
    count but keeps the last error) may have written the note: look for it first."""
    return row.attempts > 1 or row.last_error is not None


# the handoff with the escalator its note names, and its account with its PSA settings: one
# statement, built once, where there were three
_NOTE_HANDOFF = db.select(Handoff, Account).join(Account, Account.id == Handoff.account_id) \
    .options(joinedload(Handoff.creator)).where(Handoff.id == bindparam("id"))


def push_note(row: Delivery) -> str:
    """Side effect of the PSA row: one note on the session's ticket, carrying the marker."""
    handoff, account = db.session.execute(_NOTE_HANDOFF, {"id": row.handoff_id}).one()
    if handoff.status == "cancelled":
        raise Skip("escalation cancelled")
    ticket_id = handoff.snapshot.get("psa_ticket_id")
    if not ticket_id:
        raise Skip("the session has no PSA ticket")
    try:
        config = psa_settings.of_account(account)
    except psa_settings.UnreadableSecrets as error:
        raise Permanent(str(error)) from error
    if config is None:
        raise Skip("no PSA configured for the account")
    wait = timedelta(seconds=current_app.config["PSA_WAIT_FOR_ASSESSMENT_SECONDS"])
    if handoff.assessment is None:
        if not _assessment_settled(handoff) and utcnow() - handoff.created_at < wait:
            raise Defer(ASSESSMENT_POLL_SECONDS, "waiting for the AI assessment")
        db.session.refresh(handoff)   # it may have landed since the handoff was read
    provider, settings = config
    with account_slot(handoff.account_id) as slot:
        if not slot:   # the account's other pushes hold every slot: wait, spending nothing
            raise Defer(_slot_delay(handoff.account_id),
                        "waiting for the account's other PSA pushes to finish")
        return _push(handoff, row, provider, settings)


def _push(handoff: Handoff, row: Delivery, provider: str, settings: dict) -> str:
    note_id = _write(handoff, row, provider, settings)
    if len(note_id) > EXTERNAL_ID_LENGTH:   # written, but its id does not fit the audit row
        raise Permanent(f"the PSA answered a note id of {len(note_id)} characters, longer "
                        f"than the {EXTERNAL_ID_LENGTH} that can be recorded; the note may "
                        "be on the ticket")
    return note_id


def _write(handoff: Handoff, row: Delivery, provider: str, settings: dict) -> str:
    try:
        with outbound.client(current_app.config["ALLOW_PRIVATE_ADDRESSES"]) as http, \
                build_adapter(provider, settings, http=http, redis=get_redis(),
                              timeout=current_app.config["PSA_TIMEOUT"]) as adapter:
            return write_note_once(adapter, str(handoff.snapshot["psa_ticket_id"]),
                                   note_marker(handoff.id, handoff.marker_nonce),
                                   compose_note(handoff), check_first=_may_have_posted(row))
    except PsaBusy as busy:   # nothing was sent: come back when the PSA has a turn
        raise Defer(_busy_delay(handoff.account_id, busy.retry_after), busy.reason) from busy
    except PsaRetryable as error:
        raise Retryable(error.reason, error.retry_after) from error
    except PsaPermanent as error:
        raise Permanent(error.reason) from error
