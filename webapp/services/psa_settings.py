"""An account's PSA connection: plain settings in a JSON column, secrets encrypted."""
from __future__ import annotations

from webapp.extensions import db
from webapp.integrations.psa import SETTINGS
from webapp.integrations.psa.settings import names
from webapp.models import Account
from webapp.secrets_at_rest import decrypt_json, encrypt_json

UNREADABLE = ("the stored PSA credentials cannot be decrypted with the current "
              "ENCRYPTION_KEY; save the PSA settings again")


class UnreadableSecrets(Exception):
    """The account's PSA secrets were encrypted with a key this process does not have."""


def save(account: Account, provider: str, values: dict, push_parks: bool | None = None) -> None:
    declared = SETTINGS[provider]
    account.psa_provider = provider
    account.psa_settings = {k: values[k] for k in names(declared, secret=False)
                            if values.get(k) is not None}
    secrets = {k: values[k] for k in names(declared, secret=True) if values.get(k) is not None}
    account.psa_secrets = encrypt_json(secrets) if secrets else None
    if push_parks is not None:
        account.psa_push_parks = push_parks


def public_view(account: Account) -> dict:
    """What GET /account/psa shows: settings, which secrets are set, never their values."""
    provider = account.psa_provider
    settings = dict(account.psa_settings or {})
    view = {"provider": provider, "settings": settings, "configured": provider != "none",
            "push_parks": account.psa_push_parks}
    try:
        stored = set(decrypt_json(account.psa_secrets)) if account.psa_secrets else set()
    except ValueError:
        stored = set()
        view["problem"] = UNREADABLE
    for name in names(SETTINGS[provider], secret=True):
        settings[f"{name}_set"] = name in stored
    return view


def load(account_id: int) -> tuple[str, dict] | None:
    """(provider, settings with secrets decrypted) for the adapter, or None if not set up."""
    return of_account(db.session.get(Account, account_id))


def of_account(account: Account | None) -> tuple[str, dict] | None:
    """`load` for an account already read."""
    if account is None or account.psa_provider == "none":
        return None
    settings = dict(account.psa_settings or {})
    if account.psa_secrets:
        try:
            settings.update(decrypt_json(account.psa_secrets))
        except ValueError:
            raise UnreadableSecrets(UNREADABLE) from None
    return account.psa_provider, settings


def rotate_all() -> dict[str, int]:
    """Re-encrypt every account's stored secrets (PSA credentials, chat webhook) under the
    first ENCRYPTION_KEY, one account at a time under its row lock; counts rotated and
    unreadable accounts."""
    from webapp.secrets_at_rest import rotate
    counts = {"rotated": 0, "unreadable": 0}
    ids = db.session.scalars(db.select(Account.id).where(
        Account.psa_secrets.is_not(None) | Account.chat_secret.is_not(None))
        .order_by(Account.id)).all()
    for account_id in ids:
        account = db.session.scalars(db.select(Account).where(Account.id == account_id)
                                     .with_for_update()).one()
        try:
            if account.psa_secrets:
                account.psa_secrets = rotate(account.psa_secrets)
            if account.chat_secret:
                account.chat_secret = rotate(account.chat_secret)
            counts["rotated"] += 1
        except ValueError:
            db.session.rollback()
            counts["unreadable"] += 1
            continue
        db.session.commit()
    return counts
