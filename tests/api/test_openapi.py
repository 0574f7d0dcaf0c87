"""The OpenAPI document lists every error status each operation can answer, with the one
error shape, and success bodies exactly (the fuzz test, tests/api/test_fuzz.py, holds the
app to it)."""
from __future__ import annotations

import re
import sys

import pytest

from webapp.api.schemas import NO_NUL, NOT_BLANK, NotBlank
from webapp.auth import PUBLIC_ENDPOINTS

METHODS = ("get", "put", "post", "delete", "patch")
ROLE_CHECKED = {  # API.md: admin/owner only, or senior roles only
    ("post", "/api/v1/users"), ("delete", "/api/v1/users/{user_id}"),
    ("post", "/api/v1/handoffs/{handoff_id}/claim"),
    ("post", "/api/v1/handoffs/{handoff_id}/deliveries/{delivery_id}/retry"),
    ("put", "/api/v1/account/psa"), ("put", "/api/v1/account/chat"),
    ("put", "/api/v1/account/escalation-policy"),
    ("get", "/api/v1/ai-sessions/escalations/stream"),
}
REFUSALS = {  # what only the services know, as API.md names it
    ("post", "/api/v1/auth/login"): {401, 429},
    ("post", "/api/v1/users"): {409, 429},
    ("delete", "/api/v1/users/{user_id}"): {409},
    ("post", "/api/v1/ai-sessions/{session_id}/messages"): {403, 409},
    ("post", "/api/v1/ai-sessions/{session_id}/handoff"): {403, 409},
    ("post", "/api/v1/handoffs/{handoff_id}/claim"): {409},
    ("post", "/api/v1/handoffs/{handoff_id}/resume"): {403, 409},
    ("post", "/api/v1/handoffs/{handoff_id}/cancel"): {403, 409},
    ("post", "/api/v1/handoffs/{handoff_id}/deliveries/{delivery_id}/retry"): {409},
    ("get", "/api/v1/ai-sessions/escalations/stream"): {429},
}


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        kind, name = node["$ref"].split("/")[-2:]
        node = spec["components"][kind][name]
    return node


def test_every_operation_documents_the_errors_its_route_can_answer(spec):
    seen = 0
    for method, path, operation in operations(spec):
        seen += 1
        label = f"{method.upper()} {path}"
        statuses = {int(status) for status in operation["responses"]}
        assert "default" not in operation["responses"], label
        assert {413, 422, 503} <= statuses, label
        if "requestBody" in operation:
            assert 400 in statuses, label
        if "{" in path:
            assert 404 in statuses, label
        if operation["security"]:
            assert 401 in statuses, label
        if (method, path) in ROLE_CHECKED:
            assert 403 in statuses, label
        assert REFUSALS.get((method, path), set()) <= statuses, label
    assert seen >= 24


def test_every_error_status_answers_the_one_error_shape(spec):
    for method, path, operation in operations(spec):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = resolve(spec, response)["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    error = spec["components"]["schemas"]["Error"]
    body = spec["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error"] and error["additionalProperties"] is False
    assert set(body["required"]) == {"code", "message"}
    assert body["properties"]["details"]["type"] == "object"


def test_only_login_and_the_document_itself_need_no_token(app, spec):
    public = {(method, path) for method, path, operation in operations(spec)
              if not operation["security"]}
    assert public == {("post", "/api/v1/auth/login")}
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http",
                                                              "scheme": "bearer"}
    assert {"auth.login", "api-docs.openapi_json"} == PUBLIC_ENDPOINTS


def test_a_role_check_on_a_view_documents_its_403(app, spec):
    """Derived from the views: each view behind require_senior / require_admin."""
    checked = set()
    for rule in app.url_map.iter_rules():
        if getattr(app.view_functions[rule.endpoint], "role_rule", None):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            checked |= {(method.lower(), path) for method in rule.methods
                        if method.lower() in METHODS}
    assert checked == ROLE_CHECKED


def test_success_bodies_are_exact(spec):
    """Every 2xx body schema names its required fields and allows no others."""
    checked = 0
    for method, path, operation in operations(spec):
        for status, response in operation["responses"].items():
            content = resolve(spec, response).get("content", {})
            if int(status) < 300 and "application/json" in content:
                reference = content["application/json"]["schema"]
                schema = resolve(spec, reference)
                assert schema["additionalProperties"] is False, (method, path)
                optional = set(schema["properties"]) - set(schema["required"])
                # PsaView.problem: only when the stored secrets cannot be read
                assert optional == ({"problem"} if reference["$ref"].endswith("/PsaView")
                                    else set()), (method, path)
                checked += 1
    assert checked >= 20
    handoff = spec["components"]["schemas"]["Handoff"]
    assert {"id", "session_id", "account_id", "intent", "status", "note", "urgency",
            "created_by", "created_at", "claimed_by", "claimed_at", "session", "snapshot",
            "assessment", "psa"} <= set(handoff["required"])
    assert handoff["properties"]["status"]["enum"] == ["open", "claimed", "resumed",
                                                       "cancelled"]


def test_the_documented_not_blank_pattern_refuses_exactly_what_the_server_refuses():
    # `\s` of the document's regex engines missed characters str.strip() strips ("\x1d"),
    # so a text the document allowed was refused
    pattern = re.compile(NOT_BLANK)
    for code in range(1, sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        text = chr(code)
        try:
            NotBlank()(text)
            refused = False
        except Exception:   # noqa: BLE001 - marshmallow's ValidationError
            refused = True
        assert bool(pattern.search(text)) != refused, hex(code)
    assert pattern.search("a\x00") is None


def test_text_in_request_bodies_documents_that_nul_is_refused(spec):
    bodies = 0
    for _method, _path, operation in operations(spec):
        if "requestBody" not in operation:
            continue
        schema = resolve(spec, operation["requestBody"]["content"]["application/json"][
            "schema"])
        for shape in [resolve(spec, branch) for branch in schema.get("oneOf", [schema])]:
            bodies += 1
            for name, field in shape["properties"].items():
                if field.get("type") == "string" and "enum" not in field:
                    assert "pattern" in field, name
                    assert re.search(field["pattern"], "ok\x00") is None, name
    assert bodies >= 10
    assert re.search(NO_NUL, "fine") and not re.search(NO_NUL, "\x00")
