"""Operator commands on `flask --app wsgi`."""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import click
from flask import Flask


def register(app: Flask) -> None:
    @app.cli.command("create-account")
    @click.option("--name", required=True)
    @click.option("--owner-email", required=True)
    @click.option("--owner-name", required=True)
    @click.option("--owner-password", required=True)
    def create_account_command(name, owner_email, owner_name, owner_password):
        """Create an account (tenant) with its owner; prints one JSON line."""
        from sqlalchemy.exc import IntegrityError

        from webapp.services.accounts import create_account
        if len(owner_password) < 8:
            raise click.BadParameter("must be at least 8 characters", param_hint="--owner-password")
        try:
            account, owner = create_account(name, owner_email, owner_name, owner_password)
        except IntegrityError:
            raise click.ClickException(f"a user with email {owner_email} already exists") from None
        click.echo(json.dumps({"account_id": account.id, "owner_id": owner.id}))

    @app.cli.command("rotate-secrets")
    def rotate_secrets_command():
        """Re-encrypt every stored secret under the first ENCRYPTION_KEY; prints one JSON
        line of counts. Afterwards the other keys can be dropped from ENCRYPTION_KEY."""
        from webapp.services.psa_settings import rotate_all
        counts = rotate_all()
        click.echo(json.dumps(counts))
        if counts["unreadable"]:
            raise click.ClickException(
                f"{counts['unreadable']} account(s) hold secrets no key in ENCRYPTION_KEY "
                "opens; keep the old key until they are saved again")

    @app.cli.command("seed-demo")
    @click.option("--password", default="demo-password", show_default=True)
    def seed_demo_command(password):
        """Create the demo tenant (idempotent); prints its logins as JSON."""
        from webapp.demo import seed_demo
        click.echo(json.dumps(seed_demo(password)))

    register_deliveries(app)


# ---- flask --app wsgi deliveries: failed and dead delivery rows, and their retry ----------

ALL_PROBLEMS = "all-problems"
AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class Age(click.ParamType):
    """An age like 90s, 30m, 2h or 1d, as a timedelta."""

    name = "age"

    def convert(self, value, param, ctx):
        if isinstance(value, timedelta):
            return value
        found = re.fullmatch(r"(\d+)([smhd])", str(value).strip().lower())
        if found is None:
            self.fail(f"{value!r} is not an age like 30m, 2h or 1d", param, ctx)
        return timedelta(**{AGE_UNITS[found[2]]: int(found[1])})


def register_deliveries(app: Flask) -> None:
    from webapp.models import CHANNELS
    from webapp.services.deliveries import DeliveryStatus

    filter_options = (
        click.option("--status", type=click.Choice(
            [str(DeliveryStatus.FAILED), str(DeliveryStatus.DEAD), ALL_PROBLEMS]),
            default=ALL_PROBLEMS, show_default=True, help="Failed rows, dead rows, or both."),
        click.option("--account", "account_id", type=int, help="Only this account's rows."),
        click.option("--channel", type=click.Choice(CHANNELS), help="Only this channel's rows."),
        click.option("--older-than", type=Age(), help="Only rows unchanged for this long "
                     "(since updated_at: a dead row's death, a failed row's last attempt), "
                     "e.g. 30m, 2h, 1d."),
    )

    def with_filters(command):
        for option in reversed(filter_options):
            command = option(command)
        return command

    @app.cli.group("deliveries")
    def deliveries_group():
        """Failed and dead delivery rows of every account: list them, retry them."""

    @deliveries_group.command("list")
    @with_filters
    @click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
                  help="Show at most this many rows, oldest first (the counts cover all).")
    @click.option("--json", "as_json", is_flag=True,
                  help='One JSON document: {"items": [...], "counts": {...}}.')
    def list_command(status, account_id, channel, older_than, limit, as_json):
        """List failed and dead deliveries, oldest first, with their counts."""
        rows, counts = problem_rows(status, account_id, channel, older_than, limit)
        items = [delivery_item(row) for row in rows]
        if as_json:
            click.echo(json.dumps({"items": items, "counts": counts}))
            return
        click.echo(delivery_table(rows) if rows else "no failed or dead deliveries match")
        shown = f" (showing the oldest {len(rows)})" if len(rows) < counts["total"] else ""
        click.echo(counts_line(counts) + shown)

    @deliveries_group.command("retry")
    @click.argument("delivery_id", type=int, required=False)
    @click.option("--all", "retry_all", is_flag=True,
                  help="Retry every failed or dead row the filters match.")
    @with_filters
    @click.option("--limit", type=click.IntRange(min=1),
                  help="With --all: at most this many rows, oldest first.")
    @click.option("--yes", "-y", is_flag=True, help="Retry several rows without asking.")
    @click.option("--dry-run", is_flag=True, help="Show what would be retried; change nothing.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON document.")
    @click.pass_context
    def retry_command(ctx, delivery_id, retry_all, status, account_id, channel, older_than,
                      limit, yes, dry_run, as_json):
        """Retry one delivery (ID) or all that match (--all): back to pending with a fresh
        attempt budget, and its task enqueued, as the API's retry does."""
        from webapp.extensions import db
        from webapp.services import channels, delivery_problems
        from webapp.services.errors import DomainError
        if (delivery_id is None) != retry_all:
            raise click.UsageError("give one delivery ID, or --all")
        filters = ("status", "account_id", "channel", "older_than", "limit")
        if delivery_id is not None and any(
                ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
                for name in filters):
            raise click.UsageError(
                "--status, --account, --channel, --older-than and --limit go with --all")
        if retry_all:
            rows, _ = problem_rows(status, account_id, channel, older_than, limit)
        else:
            with domain_errors():
                rows = [delivery_problems.retryable(delivery_id)]
        if dry_run:
            items = [delivery_item(row) for row in rows]
            if as_json:
                click.echo(json.dumps({"dry_run": True, "would_retry": items, "counts": {
                    "matched": len(rows), "would_retry": len(rows)}}))
                return
            for row in rows:
                click.echo(f"would retry {describe(row)}")
            click.echo(f"would retry {len(rows)} (dry run: nothing changed)")
            return
        if len(rows) > 1 and not yes:
            click.confirm(f"Retry {len(rows)} deliveries?", abort=True, err=True)
        retried, refused = [], []
        for row in rows:
            row_id, handoff, before, what = row.id, row.handoff, row.status, describe(row)
            db.session.expire(row)   # reset_for_retry reads it again, under its lock
            try:
                after = channels.retry(handoff, row_id)
            except DomainError as error:   # it changed since it was listed
                if not retry_all:
                    raise click.ClickException(error.message) from None
                refused.append({"id": row_id, "reason": error.message})
                if not as_json:
                    click.echo(f"refused {what}: {error.message}")
                continue
            retried.append(delivery_item(after))
            if not as_json:
                click.echo(f"retried {what}: {before} -> {after.status}")
        counts = {"matched": len(rows), "retried": len(retried), "refused": len(refused)}
        if as_json:
            click.echo(json.dumps({"dry_run": False, "retried": retried, "refused": refused,
                                   "counts": counts}))
        else:
            click.echo(f"retried {len(retried)}, refused {len(refused)}")


@contextmanager
def domain_errors():
    """A service's refusal (webapp/services/errors.py) as the CLI's: its message, exit 1."""
    from webapp.services.errors import DomainError
    try:
        yield
    except DomainError as error:
        raise click.ClickException(error.message) from None


def problem_rows(status, account_id, channel, older_than, limit):
    from webapp.services import delivery_problems
    with domain_errors():
        return delivery_problems.problems(None if status == ALL_PROBLEMS else status,
                                          account_id, channel, older_than, limit)


def delivery_item(row) -> dict:
    """A row as the API shows it, with where it belongs and when it last changed."""
    from webapp.services.deliveries import to_dict
    return {**to_dict(row), "handoff_id": row.handoff_id, "account_id": row.account_id,
            "updated_at": row.updated_at.isoformat()}


def describe(row) -> str:
    return (f"delivery {row.id} ({row.channel} to {row.recipient}, handoff {row.handoff_id}, "
            f"account {row.account_id})")


def age(since: datetime) -> str:
    seconds = max(int((datetime.now(UTC) - since).total_seconds()), 0)
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


def delivery_table(rows) -> str:
    header = ("ID", "ACCOUNT", "HANDOFF", "CHANNEL", "STATUS", "TRIES", "AGE", "RECIPIENT",
              "LAST ERROR")
    lines = [header, *((str(row.id), str(row.account_id), str(row.handoff_id), row.channel,
                        row.status, str(row.attempts), age(row.updated_at), row.recipient,
                        shorten(row.last_error or "", 60)) for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header) - 1)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width
                                  in zip(line[:-1], widths, strict=True)), line[-1]]).rstrip()
                      for line in lines)


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def counts_line(counts: dict) -> str:
    statuses = ", ".join(f"{name} {n}" for name, n in counts["by_status"].items())
    channels = ", ".join(f"{name} {n}" for name, n in counts["by_channel"].items() if n)
    return f"total {counts['total']}: {statuses}" + (f"; by channel: {channels}"
                                                      if channels else "")
