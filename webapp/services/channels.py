"""The delivery channels: what each one sends, through which task, with which attempt budget
and backoff. Dispatch, beat, the retry endpoint and the attempt budgets all read this one
registry; a new channel is its side-effect module, its task, and one line here."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from webapp import logs
from webapp.models import Delivery, Handoff
from webapp.services import assessments, chat, deliveries, notifications, psa_push
from webapp.services.deliveries import RetryPolicy
from webapp.services.handoff_views import announce
from webapp.services.queue import enqueue


@dataclass(frozen=True)
class Channel:
    name: str
    task: str                                     # the Celery task driving one row
    policy: RetryPolicy
    side_effect: Callable[[Delivery], str | None]
    on_settled: Callable[[int], None] | None = None   # given the row's handoff id
    group_task: str | None = None                 # rows sent in groups by this task
    group_size: int = 1
    # a group's side effects: given the rows, reads what they need once (group_task only)
    group_side_effects: Callable[[list[Delivery]], Callable[[Delivery], str | None]] | None = None
    # whether dispatch runs the row itself: true while its side effect calls no other server
    # (a task of its own costs the worker more than the side effect; later rows wait on it)
    local: Callable[[], bool] | None = None
    # whether its task reads what the local rows write (the PSA note carries the
    # assessment): dispatch enqueues it once they are recorded, not before
    waits_for_local: bool = False


# in dispatch order: the assessment first (the PSA note waits a little for it; emails don't)
REGISTRY: dict[str, Channel] = {channel.name: channel for channel in (
    # a few quick tries: the team is waiting, and a senior can work without it
    # the heuristic is local: dispatch assesses before it enqueues the PSA note, which then
    # finds the assessment there instead of coming back for it
    Channel("assessment", "assessment.assess_handoff", RetryPolicy(2.0, 60.0, 3),
            assessments.assess, on_settled=announce, local=assessments.provider_is_local),
    # Emails go out in groups of rows per task: receiving, running and acknowledging a task,
    # claiming a row and recording its outcome cost the worker more than sending one email
    # does, so a group is claimed and settled in one statement each; groups this small still
    # give each of the worker's threads a share, each on its own SMTP connection.
    Channel("email", "notifications.send_email", RetryPolicy(5.0, 600.0, 8),
            notifications.send_escalation_email, group_task="notifications.send_emails",
            group_size=8, group_side_effects=notifications.escalation_emails),
    Channel("psa", "psa.push_handoff", RetryPolicy(5.0, 600.0, 8), psa_push.push_note,
            on_settled=announce, waits_for_local=True),
    # Slack allows about a message a second per webhook: a 429's Retry-After sets the wait
    Channel("chat", "chat.post_message", RetryPolicy(5.0, 600.0, 8), chat.post_message),
)}


def channel(name: str) -> Channel:
    return REGISTRY[name]


def drive(name: str, delivery_id: int) -> None:
    """Run one row of the channel: claim, side effect, outcome, next try."""
    found = REGISTRY[name]
    with logs.bound(delivery_id=delivery_id, channel=name):
        deliveries.drive(found.task, delivery_id, found.side_effect, found.policy,
                         on_settled=found.on_settled)


def drive_group(name: str, delivery_ids: list[int]) -> None:
    """Run a group of the channel's rows together: one claim, one lease, one outcome write."""
    found = REGISTRY[name]
    with logs.bound(channel=name):
        deliveries.drive_many(found.task, delivery_ids, found.group_side_effects, found.policy)


def drive_together(phases: list[list[tuple[int, str]]],
                   after_first: Callable[[], None] | None = None) -> None:
    """Run (delivery id, channel) rows of several channels as one group: one claim and one
    lease for them all, where each channel's rows on their own would cost one of each; then
    phase by phase their side effects in the order given and the phase's outcomes in one
    write, each channel's on_settled once per handoff and each row's next try through its own
    channel's task. `after_first` runs once: when the first phase's outcomes are recorded, or
    as the run stops if it stops before that."""
    names = {row_id: name for phase in phases for row_id, name in phase}
    still_to_run = [after_first] if after_first is not None else []

    def side_effects(claimed: list[Delivery]) -> Callable[[Delivery], str | None]:
        effects = {}
        for name in {names[row.id] for row in claimed}:
            found = REGISTRY[name]
            effects[name] = found.group_side_effects([
                row for row in claimed if names[row.id] == name]) \
                if found.group_side_effects else found.side_effect
        return lambda row: effects[names[row.id]](row)

    def settled(ran: list[deliveries.Ran]) -> None:
        for found in REGISTRY.values():
            mine = [each for each in ran if each.channel == found.name]
            deliveries.schedule(found.task, {each.row_id: each.outcome.retry_in
                                             for each in mine
                                             if each.outcome.retry_in is not None})
            if found.on_settled is not None:
                for handoff_id in dict.fromkeys(
                        each.handoff_id for each in mine
                        if each.outcome.status != deliveries.S.PENDING):
                    found.on_settled(handoff_id)
        while still_to_run:
            still_to_run.pop()()

    try:
        deliveries.run_group([[row_id for row_id, _ in phase] for phase in phases],
                             side_effects, lambda name: REGISTRY[name].policy, settled)
    finally:
        while still_to_run:
            still_to_run.pop()()


def runs_locally(name: str) -> bool:
    """Whether the channel's rows are run by dispatch itself, not a task of their own."""
    local = REGISTRY[name].local
    return local is not None and local()


def enqueue_rows(rows: list[tuple[int, str]], keep: str | None = None) -> list[int]:
    """Enqueue the tasks of these (delivery id, channel) rows, channel by channel in the
    registry's order, in groups where the channel sends in groups. With `keep` (a grouped
    channel), its first group is not enqueued but returned, for the caller to run itself."""
    kept: list[int] = []
    for found in REGISTRY.values():
        ids = [row_id for row_id, name in rows if name == found.name]
        if found.group_task:
            for first in range(0, len(ids), found.group_size):
                group = ids[first:first + found.group_size]
                if found.name == keep and not kept:
                    kept = group
                else:
                    enqueue(found.group_task, group)
        else:
            for row_id in ids:
                enqueue(found.task, row_id)
    return kept


def max_attempts() -> dict[str, int]:
    """Each channel's own attempt budget, which also bounds what dying workers may use up."""
    return {name: found.policy.max_attempts for name, found in REGISTRY.items()}


def retry(handoff: Handoff, delivery_id: int) -> Delivery:
    """An admin re-queues a failed or dead delivery with a fresh attempt budget."""
    row = deliveries.reset_for_retry(handoff, delivery_id)
    enqueue(REGISTRY[row.channel].task, row.id)
    return row
