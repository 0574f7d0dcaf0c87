"""Operator commands on `flask --app wsgi`."""
from __future__ import annotations

import json

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
