"""`flask --app wsgi deliveries`: an operator lists failed and dead delivery rows of every
account and retries them, through the same service as the API's retry."""
import json
from datetime import timedelta

import pytest

from tests.factories import app_without_broker, undispatched_handoff
from tests.helpers import get_delivery, set_delivery
from webapp.extensions import db
from webapp.models import Delivery
from webapp.models.base import utcnow
from webapp.services import channels
from webapp.services.deliveries import DeliveryStatus

FAILED, DEAD, PENDING = (str(DeliveryStatus.FAILED), str(DeliveryStatus.DEAD),
                         str(DeliveryStatus.PENDING))


def rows_of(app, handoff_id: int) -> dict[str, list[int]]:
    """The handoff's delivery row ids by channel, oldest first."""
    with app.app_context():
        found: dict[str, list[int]] = {}
        for row in db.session.scalars(db.select(Delivery).where(
                Delivery.handoff_id == handoff_id).order_by(Delivery.id)):
            found.setdefault(row.channel, []).append(row.id)
        return found


def make_failed(app, row_id: int, **values) -> None:
    set_delivery(app, row_id, status=FAILED, attempts=3, last_error="SMTP answered 451",
                 next_attempt_at=utcnow() + timedelta(hours=1), **values)


def make_dead(app, row_id: int, **values) -> None:
    set_delivery(app, row_id, status=DEAD, attempts=8, last_error="PSA answered 503",
                 next_attempt_at=None, **values)


@pytest.fixture
def problems(app, app_env, tenant, other_tenant):
    """Two handoffs of two accounts (each: assessment, psa and two email rows, none
    dispatched): the tenant's psa row dead two hours ago, one of its emails failed; the other
    tenant's psa row dead just now. The other rows stay pending."""
    mine = rows_of(app, undispatched_handoff(app_env, tenant))
    theirs = rows_of(app, undispatched_handoff(app_env, other_tenant))
    make_dead(app, mine["psa"][0], updated_at=utcnow() - timedelta(hours=2))
    make_failed(app, mine["email"][0])
    make_dead(app, theirs["psa"][0])
    return {"dead_psa": mine["psa"][0], "failed_email": mine["email"][0],
            "pending_email": mine["email"][1], "pending_assessment": mine["assessment"][0],
            "other_dead_psa": theirs["psa"][0]}


@pytest.fixture
def enqueued(monkeypatch):
    """The tasks the retries enqueue, recorded instead of sent (no worker takes them)."""
    sent = []
    monkeypatch.setattr(channels, "enqueue", lambda task, *args, **kw: sent.append((task, *args)))
    return sent


def run(app, *args, input=None):
    return app.test_cli_runner().invoke(args=["deliveries", *args], input=input)


def listed(app, *args) -> dict:
    result = run(app, "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_shows_only_failed_and_dead_rows_of_every_account_with_counts(app, tenant,
                                                                           other_tenant,
                                                                           problems):
    document = listed(app)
    items = {item["id"]: item for item in document["items"]}
    assert set(items) == {problems["dead_psa"], problems["failed_email"],
                          problems["other_dead_psa"]}
    assert [item["id"] for item in document["items"]][0] == problems["dead_psa"]  # oldest
    email = items[problems["failed_email"]]
    assert email["status"] == FAILED and email["attempts"] == 3
    assert email["account_id"] == tenant.account_id and email["handoff_id"] > 0
    assert email["recipient"].endswith(".example") and email["last_error"] == "SMTP answered 451"
    assert email["next_attempt_at"] is not None and email["updated_at"]
    assert items[problems["other_dead_psa"]]["account_id"] == other_tenant.account_id
    assert document["counts"] == {
        "total": 3, "by_status": {FAILED: 1, DEAD: 2},
        "by_channel": {"email": 1, "psa": 2, "assessment": 0, "chat": 0}}

    human = run(app, "list")
    assert human.exit_code == 0, human.output
    lines = human.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "ACCOUNT", "HANDOFF"]
    assert len(lines) == 1 + 3 + 1     # header, rows, counts
    assert "PSA answered 503" in human.stdout
    assert lines[-1] == f"total 3: {FAILED} 1, {DEAD} 2; by channel: email 1, psa 2"
    assert str(problems["pending_email"]) not in {line.split()[0] for line in lines[1:-1]}


def test_list_filters_by_status_account_channel_and_age(app, tenant, other_tenant, problems):
    def ids(*args):
        return {item["id"] for item in listed(app, *args)["items"]}

    assert ids("--status", DEAD) == {problems["dead_psa"], problems["other_dead_psa"]}
    assert ids("--status", FAILED) == {problems["failed_email"]}
    assert ids("--account", str(other_tenant.account_id)) == {problems["other_dead_psa"]}
    assert ids("--account", str(tenant.account_id), "--channel", "psa") == {
        problems["dead_psa"]}
    assert ids("--channel", "email") == {problems["failed_email"]}
    assert ids("--channel", "chat") == set()
    assert ids("--older-than", "1h") == {problems["dead_psa"]}      # unchanged for 2h
    assert ids("--older-than", "90m", "--status", FAILED) == set()
    assert ids("--older-than", "1d") == set()
    counts = listed(app, "--status", DEAD, "--channel", "psa")["counts"]
    assert counts["total"] == 2 and counts["by_status"] == {DEAD: 2}

    limited = listed(app, "--limit", "1")
    assert [item["id"] for item in limited["items"]] == [problems["dead_psa"]]
    assert limited["counts"]["total"] == 3          # the counts cover every match
    assert "showing the oldest 1" in run(app, "list", "--limit", "1").stdout


def test_list_says_so_when_nothing_matches_and_refuses_a_bad_age(app, problems):
    empty = run(app, "list", "--account", "999999999")
    assert empty.exit_code == 0
    assert "no failed or dead deliveries match" in empty.stdout
    assert f"total 0: {FAILED} 0, {DEAD} 0" in empty.stdout
    bad = run(app, "list", "--older-than", "soon")
    assert bad.exit_code == 2 and "not an age like 30m, 2h or 1d" in bad.output


def test_retry_one_moves_a_dead_row_to_pending_with_a_fresh_budget_and_enqueues(
        app, problems, enqueued):
    result = run(app, "retry", str(problems["dead_psa"]), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["counts"] == {"matched": 1, "retried": 1, "refused": 0}
    [item] = document["retried"]
    assert item["id"] == problems["dead_psa"] and item["status"] == PENDING
    assert item["attempts"] == 0
    row = get_delivery(app, problems["dead_psa"])
    assert row.status == PENDING and row.attempts == 0 and row.lease_expires_at is None
    assert enqueued == [(channels.channel("psa").task, problems["dead_psa"])]
    # a failed row too, in words
    human = run(app, "retry", str(problems["failed_email"]))
    assert human.exit_code == 0, human.output
    assert f"retried delivery {problems['failed_email']} (email to " in human.stdout
    assert f"{FAILED} -> {PENDING}" in human.stdout and "retried 1, refused 0" in human.stdout
    assert get_delivery(app, problems["failed_email"]).status == PENDING
    assert get_delivery(app, problems["other_dead_psa"]).status == DEAD   # untouched


def test_retry_with_the_broker_down_still_resets_the_row_for_beat(app, app_env, problems):
    result = run(app_without_broker(app_env), "retry", str(problems["other_dead_psa"]))
    assert result.exit_code == 0, result.output
    row = get_delivery(app, problems["other_dead_psa"])
    assert row.status == PENDING and row.attempts == 0


def test_retry_refuses_an_unknown_id_and_a_row_that_is_not_failed_or_dead(app, problems,
                                                                          enqueued):
    unknown = run(app, "retry", "999999999")
    assert unknown.exit_code == 1
    assert "delivery 999999999 not found" in unknown.output
    pending = run(app, "retry", str(problems["pending_email"]))
    assert pending.exit_code == 1
    assert "only failed or dead deliveries can be retried" in pending.output
    assert f"is {PENDING}" in pending.output
    assert "Traceback" not in unknown.output + pending.output
    assert get_delivery(app, problems["pending_email"]).status == PENDING
    assert enqueued == []


def test_retry_wants_one_id_or_all_and_filters_only_with_all(app, problems, enqueued):
    neither = run(app, "retry")
    assert neither.exit_code == 2 and "give one delivery ID, or --all" in neither.output
    both = run(app, "retry", str(problems["dead_psa"]), "--all")
    assert both.exit_code == 2
    filtered = run(app, "retry", str(problems["dead_psa"]), "--channel", "psa")
    assert filtered.exit_code == 2 and "go with --all" in filtered.output
    assert enqueued == []


def test_retry_all_touches_only_the_rows_the_filters_match(app, tenant, problems, enqueued):
    result = run(app, "retry", "--all", "--channel", "psa", "--account",
                 str(tenant.account_id), "--json")
    assert result.exit_code == 0, result.output     # one row: no confirmation asked
    document = json.loads(result.stdout)
    assert [item["id"] for item in document["retried"]] == [problems["dead_psa"]]
    assert get_delivery(app, problems["dead_psa"]).status == PENDING
    assert get_delivery(app, problems["other_dead_psa"]).status == DEAD
    assert get_delivery(app, problems["failed_email"]).status == FAILED

    result = run(app, "retry", "--all", "--status", DEAD, "--yes")
    assert result.exit_code == 0, result.output
    assert "retried 1, refused 0" in result.stdout     # the tenant's is pending already
    assert get_delivery(app, problems["other_dead_psa"]).status == PENDING
    assert get_delivery(app, problems["failed_email"]).status == FAILED
    assert [args[1] for args in enqueued] == [problems["dead_psa"], problems["other_dead_psa"]]


def test_retry_all_dry_run_changes_nothing_and_several_rows_need_a_yes(app, problems,
                                                                       enqueued):
    dry = run(app, "retry", "--all", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    document = json.loads(dry.stdout)
    assert document["dry_run"] is True and document["counts"]["would_retry"] == 3
    assert {item["id"] for item in document["would_retry"]} == {
        problems["dead_psa"], problems["failed_email"], problems["other_dead_psa"]}
    words = run(app, "retry", "--all", "--dry-run", "--older-than", "1h")
    assert f"would retry delivery {problems['dead_psa']} (psa to psa" in words.stdout
    assert "would retry 1 (dry run: nothing changed)" in words.stdout
    assert get_delivery(app, problems["dead_psa"]).status == DEAD and enqueued == []

    refused = run(app, "retry", "--all", input="n\n")
    assert refused.exit_code == 1 and "Retry 3 deliveries?" in refused.output
    assert get_delivery(app, problems["dead_psa"]).status == DEAD and enqueued == []

    confirmed = run(app, "retry", "--all", input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "retried 3, refused 0" in confirmed.stdout
    assert {get_delivery(app, problems[name]).status
            for name in ("dead_psa", "failed_email", "other_dead_psa")} == {PENDING}
    assert len(enqueued) == 3
    assert listed(app)["counts"]["total"] == 0


def test_retry_all_refuses_a_row_that_changed_since_it_was_listed(app, problems, enqueued,
                                                                   monkeypatch):
    """Beat hands a due failed row back to pending while the operator's command runs: the
    retry reads the row again under its lock, leaves it alone and says so."""
    from webapp.services import delivery_problems
    listing = delivery_problems.problems

    def then_beat_takes_the_failed_row(*args):
        found = listing(*args)
        set_delivery(app, problems["failed_email"], status=PENDING)
        return found

    monkeypatch.setattr(delivery_problems, "problems", then_beat_takes_the_failed_row)
    result = run(app, "retry", "--all", "--yes", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["counts"] == {"matched": 3, "retried": 2, "refused": 1}
    [refused] = document["refused"]
    assert refused["id"] == problems["failed_email"] and f"is {PENDING}" in refused["reason"]
    assert {args[1] for args in enqueued} == {problems["dead_psa"], problems["other_dead_psa"]}
