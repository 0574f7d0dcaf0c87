"""The account's PSA connection: provider, settings, and secrets that are never returned."""
from flask import current_app
from marshmallow import Schema, ValidationError, validates_schema

from webapp import auth
from webapp.api.bodies import Blueprint
from webapp.api.schemas import StrictSchema, fields, validate
from webapp.extensions import db
from webapp.integrations import outbound, psa
from webapp.integrations.psa.settings import Setting, required
from webapp.models import Account
from webapp.services import psa_settings

bp = Blueprint("account", __name__, description="Account settings")


def required_text(max_len: int = 500):
    return fields.String(required=True, validate=validate.Length(min=1, max=max_len))


def optional_text(max_len: int = 500):
    return fields.String(load_default=None, allow_none=True, validate=validate.Length(max=max_len))


def _setting_field(setting: Setting) -> fields.Field:
    """The body field of one declared PSA setting; whether it is required depends on the
    provider, so the schema's validator checks that."""
    if setting.url:
        return fields.Url(require_tld=False, schemes=("http", "https"),
                          validate=validate.Length(max=setting.max_length))
    checks = [validate.Length(min=1, max=setting.max_length)]
    if setting.pattern:
        checks.append(validate.Regexp(setting.pattern))
    return fields.String(validate=checks)


def _fields_of_the_provider(self, data, **_kwargs):
    provider = data.get("provider")
    if provider not in psa.SETTINGS:
        return
    declared = psa.SETTINGS[provider]
    allowed = {setting.name for setting in declared} | {"provider", "push_parks"}
    errors = {name: ["Missing data for required field."]
              for name in required(declared) if not data.get(name)}
    errors.update({name: [f"Not a {provider} setting."]
                   for name in data if name not in allowed})
    if not current_app.config["ALLOW_PRIVATE_ADDRESSES"]:
        for setting in declared:
            reason = setting.url and data.get(setting.name) and outbound.refusal_for_url(
                data[setting.name])
            if reason and setting.name not in errors:
                errors[setting.name] = [f"Must be a public address: {reason}."]
    if errors:
        raise ValidationError(errors)


# One of the provider shapes of API.md, chosen by `provider`: every provider's declared
# settings (webapp/integrations/psa/settings.py), checked against the chosen one's.
PsaSettingsSchema = type(StrictSchema)("PsaSettingsSchema", (StrictSchema,), {
    "__doc__": "One of the provider shapes of API.md, chosen by `provider`.",
    "provider": fields.String(required=True, validate=validate.OneOf(tuple(psa.SETTINGS))),
    "push_parks": fields.Boolean(load_default=None, allow_none=True),
    **{name: _setting_field(setting) for name, setting in psa.ALL_SETTINGS.items()},
    "fields_of_the_provider": validates_schema(_fields_of_the_provider),
})


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
