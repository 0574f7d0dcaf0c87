"""Every error, including Flask's own, answers in the one error shape."""
from tests.helpers import assert_error_shape


def test_unknown_path_is_404_in_shape(client, tenant):
    assert_error_shape(client.get("/api/v1/nothing-here", headers=tenant.headers()), 404,
                       "not_found")
    assert_error_shape(client.get("/no-such-page"), 404, "not_found")


def test_wrong_method_is_405_in_shape(client, tenant):
    assert_error_shape(client.delete("/api/v1/me", headers=tenant.headers()), 405,
                       "method_not_allowed")


def test_malformed_json_is_400_bad_request(client, tenant):
    response = client.post("/api/v1/ai-sessions", data="{not json",
                           headers={**tenant.headers(), "Content-Type": "application/json"})
    assert_error_shape(response, 400, "bad_request")


def test_the_details_of_a_body_that_is_not_json_are_an_object_naming_the_body(client):
    # they were a bare list, which the document's error shape (details: object) does not allow
    response = client.post("/api/v1/auth/login", data="\x00",
                           headers={"Content-Type": "application/json"})
    assert_error_shape(response, 400, "bad_request")
    assert response.get_json()["error"]["details"] == {"body": ["Invalid JSON body."]}


def test_unknown_fields_are_422(client, tenant):
    response = client.post("/api/v1/auth/login",
                           json={"email": "a@b.example", "password": "x", "admin": True})
    assert_error_shape(response, 422, "validation_error")
    assert "admin" in response.get_json()["error"]["details"]


def test_wrong_type_is_422(client):
    response = client.post("/api/v1/auth/login", json={"email": ["a"], "password": 5})
    assert_error_shape(response, 422, "validation_error")
    assert set(response.get_json()["error"]["details"]) == {"email", "password"}


def test_openapi_document_is_public_and_lists_the_paths(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")
    for path in ("/api/v1/auth/login", "/api/v1/users", "/api/v1/ai-sessions",
                 "/api/v1/ai-sessions/{session_id}/messages"):
        assert path in spec["paths"], path
