"""The account's PSA connection: provider, settings, and secrets that are never returned."""
from flask import current_app
from marshmallow import Schema, ValidationError, validates_schema

from webapp import auth
from webapp.api.bodies import Blueprint
from webapp.api.schemas import StrictSchema, fields, validate
from webapp.extensions import db
from webapp.integrations import outbound
from webapp.models import Account
from webapp.services import psa_settings

bp = Blueprint("account", __name__, description="Account settings")


def required_text(max_len: int = 500):
    return fields.String(required=True, validate=validate.Length(min=1, max=max_len))


def optional_text(max_len: int = 500):
    return fields.String(load_default=None, allow_none=True, validate=validate.Length(max=max_len))


URL_FIELDS = ("site_url", "zone_url", "zone_lookup_url", "base_url")


class PsaSettingsSchema(StrictSchema):
    """One of the provider shapes of API.md, chosen by `provider`."""
    provider = fields.String(required=True, validate=validate.OneOf(
        ("connectwise", "autotask", "halopsa", "none")))
    push_parks = fields.Boolean(load_default=None, allow_none=True)
    # ConnectWise Manage
    site_url = fields.Url(require_tld=False, schemes=("http", "https"))
    company_id = fields.String(validate=validate.Length(min=1, max=100))
    public_key = fields.String(validate=validate.Length(min=1, max=200))
    private_key = fields.String(validate=validate.Length(min=1, max=200))
    client_id = fields.String(validate=validate.Length(min=1, max=200))
    codebase = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.\-]+/$"))
    # Autotask
    username = fields.String(validate=validate.Length(min=1, max=320))
    secret = fields.String(validate=validate.Length(min=1, max=500))
    integration_code = fields.String(validate=validate.Length(min=1, max=200))
    zone_url = fields.Url(require_tld=False, schemes=("http", "https"))
    zone_lookup_url = fields.Url(require_tld=False, schemes=("http", "https"))
    # HaloPSA
    base_url = fields.Url(require_tld=False, schemes=("http", "https"))
    client_secret = fields.String(validate=validate.Length(min=1, max=500))
    tenant = fields.String(validate=validate.Length(min=1, max=200))
    note_outcome = fields.String(validate=validate.Length(min=1, max=100))

    REQUIRED = {
        "connectwise": ("site_url", "company_id", "public_key", "private_key", "client_id"),
        "autotask": ("username", "secret", "integration_code"),
        "halopsa": ("base_url", "client_id", "client_secret"),
        "none": (),
    }

    @validates_schema
    def fields_of_the_provider(self, data, **_kwargs):
        provider = data.get("provider")
        if provider not in self.REQUIRED:
            return
        allowed = set(psa_settings.FIELDS[provider]["plain"]) | set(
            psa_settings.FIELDS[provider]["secret"]) | {"provider", "push_parks"}
        errors = {name: ["Missing data for required field."]
                  for name in self.REQUIRED[provider] if not data.get(name)}
        errors.update({name: [f"Not a {provider} setting."]
                       for name in data if name not in allowed})
        if not current_app.config["ALLOW_PRIVATE_ADDRESSES"]:
            for name in URL_FIELDS:
                reason = data.get(name) and outbound.refusal_for_url(data[name])
                if reason and name not in errors:
                    errors[name] = [f"Must be a public address: {reason}."]
        if errors:
            raise ValidationError(errors)


class PsaViewSchema(Schema):
    provider = fields.String()
    settings = fields.Dict()
    configured = fields.Boolean()
    push_parks = fields.Boolean()
    problem = fields.String()


def _account() -> Account:
    return db.session.get(Account, auth.current_user().account_id)


@bp.get("/account/psa")
@bp.response(200, PsaViewSchema)
def get_psa():
    return psa_settings.public_view(_account())


@bp.put("/account/psa")
@auth.require_admin
@bp.arguments(PsaSettingsSchema)
@bp.response(200, PsaViewSchema)
def put_psa(body):
    account = _account()
    psa_settings.save(account, body["provider"], body, body.get("push_parks"))
    db.session.commit()
    return psa_settings.public_view(account)
