"""The account's settings: the PSA connection, the team chat channel and the escalation
policy; secrets (PSA credentials, the webhook URL) are never returned."""
from flask import current_app
from marshmallow import Schema, ValidationError, validates_schema

from webapp import auth
from webapp.api.bodies import Blueprint
from webapp.api.schemas import StrictBoolean, StrictSchema, fields, validate
from webapp.extensions import db
from webapp.integrations import outbound, psa
from webapp.integrations.psa.settings import Setting, required
from webapp.models import Account
from webapp.models.accounts import CHAT_PROVIDERS
from webapp.services import chat, psa_settings, reminders

bp = Blueprint("account", __name__, description="Account settings")


def required_text(max_len: int = 500):
    return fields.String(required=True, validate=validate.Length(min=1, max=max_len))


def optional_text(max_len: int = 500):
    return fields.String(load_default=None, allow_none=True, validate=validate.Length(max=max_len))


def _setting_field(setting: Setting, required: bool = False) -> fields.Field:
    """The body field of one declared PSA setting; whether it is required depends on the
    provider, so the loading schema's validator checks that (`required` is for the
    document's per-provider shapes)."""
    if setting.url:
        return fields.Url(require_tld=False, schemes=("http", "https"), required=required,
                          validate=validate.Length(max=setting.max_length), metadata={
                              "description": "https and a public address, unless the "
                                             "operator allows private addresses"})
    checks = [validate.Length(min=1, max=setting.max_length)]
    if setting.pattern:
        checks.append(validate.Regexp(setting.pattern))
    return fields.String(validate=checks, required=required)


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
    "push_parks": StrictBoolean(load_default=None, allow_none=True),
    **{name: _setting_field(setting) for name, setting in psa.ALL_SETTINGS.items()},
    "fields_of_the_provider": validates_schema(_fields_of_the_provider),
})


class PsaViewSchema(Schema):
    provider = fields.String(required=True, validate=validate.OneOf(tuple(psa.SETTINGS)))
    settings = fields.Dict(required=True)
    configured = fields.Boolean(required=True)
    push_parks = fields.Boolean(required=True)
    problem = fields.String()


def _provider_shape(provider: str) -> type[StrictSchema]:
    """One provider's body as the OpenAPI document shows it: its own settings, the required
    ones required, nothing else."""
    return type(StrictSchema)(f"Psa{provider.title()}SettingsSchema", (StrictSchema,), {
        "provider": fields.String(required=True, validate=validate.OneOf((provider,))),
        "push_parks": StrictBoolean(allow_none=True),
        **{setting.name: _setting_field(setting, setting.required)
           for setting in psa.SETTINGS[provider]},
    })


PSA_BODY_DOC = {"required": True, "content": {"application/json": {"schema": {
    "oneOf": [_provider_shape(provider) for provider in psa.SETTINGS]}}}}


def _account() -> Account:
    return db.session.get(Account, auth.current_user().account_id)


@bp.get("/account/psa")
@bp.response(200, PsaViewSchema)
def get_psa():
    return psa_settings.public_view(_account())


@bp.put("/account/psa")
@auth.require_admin
@bp.arguments(PsaSettingsSchema)
@bp.doc(requestBody=PSA_BODY_DOC)
@bp.response(200, PsaViewSchema)
def put_psa(body):
    account = _account()
    psa_settings.save(account, body["provider"], body, body.get("push_parks"))
    db.session.commit()
    return psa_settings.public_view(account)


class ChatSettingsSchema(StrictSchema):
    """`{provider: "teams" | "slack", webhook_url}` or `{provider: "none"}`."""
    provider = fields.String(required=True, validate=validate.OneOf(CHAT_PROVIDERS))
    webhook_url = fields.String(load_default=None, allow_none=True,
                                validate=validate.Length(min=1, max=2000))

    @validates_schema
    def url_when_a_provider(self, data, **_kwargs):
        if data["provider"] != "none" and not data.get("webhook_url"):
            raise ValidationError({"webhook_url": ["Missing data for required field."]})
        if data["provider"] == "none" and data.get("webhook_url"):
            raise ValidationError({"webhook_url": ["Not a setting of provider none."]})


class ChatWebhookSchema(StrictSchema):
    """The document's shape of a Teams or Slack channel."""
    provider = fields.String(required=True, validate=validate.OneOf(
        tuple(name for name in CHAT_PROVIDERS if name != "none")))
    webhook_url = fields.String(required=True, validate=validate.Length(min=1, max=2000),
                                metadata={"format": "url", "description": (
                                    "the incoming webhook; https and a public address, "
                                    "unless the operator allows private addresses")})


class ChatOffSchema(StrictSchema):
    """The document's shape of no chat channel."""
    provider = fields.String(required=True, validate=validate.OneOf(("none",)))


CHAT_BODY_DOC = {"required": True, "content": {"application/json": {"schema": {
    "oneOf": [ChatWebhookSchema, ChatOffSchema]}}}}


class ChatViewSchema(Schema):
    provider = fields.String(required=True, validate=validate.OneOf(CHAT_PROVIDERS))
    configured = fields.Boolean(required=True)
    webhook_url_set = fields.Boolean(required=True)


@bp.get("/account/chat")
@bp.response(200, ChatViewSchema)
def get_chat():
    return chat.public_view(_account())


@bp.put("/account/chat")
@auth.require_admin
@bp.arguments(ChatSettingsSchema)
@bp.doc(requestBody=CHAT_BODY_DOC)
@bp.response(200, ChatViewSchema)
def put_chat(body):
    account = _account()
    chat.save(account, body["provider"], body.get("webhook_url"))
    db.session.commit()
    return chat.public_view(account)


class EscalationPolicySchema(StrictSchema):
    remind_after_minutes = fields.Integer(required=True, strict=True,
                                          validate=validate.Range(min=0, max=1440))
    remind_roles = fields.List(fields.String(validate=validate.OneOf(
        ("owner", "admin", "engineer"))), load_default=None, validate=validate.Length(min=1))


class EscalationPolicyViewSchema(Schema):
    remind_after_minutes = fields.Integer(required=True)
    remind_roles = fields.List(fields.String(), required=True)


@bp.get("/account/escalation-policy")
@bp.response(200, EscalationPolicyViewSchema)
def get_escalation_policy():
    return reminders.policy_view(_account())


@bp.put("/account/escalation-policy")
@auth.require_admin
@bp.arguments(EscalationPolicySchema)
@bp.response(200, EscalationPolicyViewSchema)
def put_escalation_policy(body):
    account = _account()
    reminders.save_policy(account, body["remind_after_minutes"], body["remind_roles"])
    db.session.commit()
    return reminders.policy_view(account)
