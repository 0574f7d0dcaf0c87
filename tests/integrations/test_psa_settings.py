"""Each PSA provider declares its settings once; the API body, storage and validation follow."""
import pytest

from webapp.integrations import psa
from webapp.integrations.psa.settings import Setting, names, required, union


def test_a_name_shared_by_two_providers_must_mean_the_same_thing():
    with pytest.raises(TypeError, match="client_id"):
        union({"a": (Setting("client_id"),), "b": (Setting("client_id", secret=True),)})
    assert set(union({"a": (Setting("x", required=True),), "b": (Setting("x"),)})) == {"x"}


def test_the_api_body_documents_every_declared_setting(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    body = spec["paths"]["/api/v1/account/psa"]["put"]["requestBody"]["content"][
        "application/json"]["schema"]
    shapes = [spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
              for ref in body["oneOf"]]
    assert [shape["properties"]["provider"]["enum"] for shape in shapes] == [
        [provider] for provider in psa.SETTINGS]
    for shape, (provider, declared) in zip(shapes, psa.SETTINGS.items(), strict=True):
        assert set(shape["properties"]) == {"provider", "push_parks",
                                            *(setting.name for setting in declared)}, provider
        assert set(shape["required"]) == {"provider", *required(declared)}, provider
        assert shape["additionalProperties"] is False
        for setting in declared:
            if setting.url:
                assert shape["properties"][setting.name]["format"] == "url"


def test_storage_encrypts_exactly_the_declared_secrets(app):
    from webapp.extensions import db
    from webapp.models import Account
    from webapp.secrets_at_rest import decrypt_json
    from webapp.services import psa_settings
    with app.app_context():
        for provider, declared in psa.SETTINGS.items():
            if provider == "none":
                continue
            values = {setting.name: f"https://{setting.name}.example.com" if setting.url
                      else "v-" + setting.name for setting in declared}
            account = Account(name=f"decl-{provider}")
            psa_settings.save(account, provider, values)
            assert set(account.psa_settings) == set(names(declared, secret=False))
            assert set(decrypt_json(account.psa_secrets)) == set(names(declared, secret=True))
            for secret in names(declared, secret=True):
                assert values[secret] not in str(account.psa_settings)
            view = psa_settings.public_view(account)
            assert all(view["settings"][f"{s}_set"] for s in names(declared, secret=True))
            db.session.rollback()
