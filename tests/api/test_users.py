"""Users of an account: role checks, tenant scoping, soft delete."""
import pytest

NEW_USER = {"email": "new.person@acme.example", "name": "New Person", "role": "engineer",
            "password": "long-enough-pass"}


def test_list_users_shows_only_the_callers_account(client, tenant, other_tenant):
    items = client.get("/api/v1/users", headers=tenant.headers("viewer")).get_json()["items"]
    assert {u["email"] for u in items} == {u["email"] for u in tenant.users.values()}
    assert all(u["account_id"] == tenant.account_id for u in items)
    assert all("password_hash" not in u for u in items)


@pytest.mark.parametrize("role,status", [("owner", 201), ("admin", 201), ("engineer", 403),
                                         ("viewer", 403)])
def test_only_admins_and_owners_create_users(client, tenant, role, status):
    response = client.post("/api/v1/users", json=NEW_USER, headers=tenant.headers(role))
    assert response.status_code == status
    if status == 403:
        assert response.get_json()["error"]["code"] == "forbidden"
    else:
        assert response.get_json()["account_id"] == tenant.account_id


def test_duplicate_email_is_409_email_taken(client, tenant):
    assert client.post("/api/v1/users", json=NEW_USER, headers=tenant.headers()).status_code == 201
    again = client.post("/api/v1/users", json=NEW_USER, headers=tenant.headers())
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "email_taken"


def test_create_user_validation_errors_name_the_fields(client, tenant):
    response = client.post("/api/v1/users", headers=tenant.headers(),
                           json={**NEW_USER, "role": "superuser", "email": "not-an-email"})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert set(error["details"]) == {"role", "email"}


@pytest.mark.parametrize("role,status", [("engineer", 403), ("viewer", 403), ("admin", 204)])
def test_only_admins_and_owners_delete_users(client, tenant, role, status):
    target = tenant.users["engineer"]["id"] if role != "engineer" else tenant.users["viewer"]["id"]
    response = client.delete(f"/api/v1/users/{target}", headers=tenant.headers(role))
    assert response.status_code == status


def test_deleting_another_tenants_user_is_404(client, tenant, other_tenant):
    target = other_tenant.users["engineer"]["id"]
    response = client.delete(f"/api/v1/users/{target}", headers=tenant.headers("owner"))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    still = client.get("/api/v1/users", headers=other_tenant.headers()).get_json()["items"]
    assert target in {u["id"] for u in still}


def test_soft_deleted_user_leaves_the_list(client, tenant):
    target = tenant.users["viewer"]["id"]
    client.delete(f"/api/v1/users/{target}", headers=tenant.headers())
    items = client.get("/api/v1/users", headers=tenant.headers()).get_json()["items"]
    assert target not in {u["id"] for u in items}
