"""Health and readiness answer what operators need to know."""
from webapp import create_app


def test_healthz_is_200(client):
    assert client.get("/healthz").status_code == 200


def test_readyz_is_200_when_postgres_and_redis_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["postgres"] == "ok"


def test_readyz_names_redis_when_it_is_down(app):
    down = create_app({**app.config, "REDIS_URL": "redis://127.0.0.1:1/0"})
    response = down.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["error"]["details"]["down"] == ["redis"]
    assert "redis" in response.get_json()["error"]["message"]


def test_readyz_names_postgres_when_it_is_down(app):
    down = create_app({**app.config,
                       "SQLALCHEMY_DATABASE_URI": "postgresql://postgres@127.0.0.1:1/x"})
    response = down.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["error"]["details"]["down"] == ["postgres"]


def test_api_answers_503_unavailable_when_postgres_is_down(app, tenant):
    down = create_app({**app.config,
                       "SQLALCHEMY_DATABASE_URI": "postgresql://postgres@127.0.0.1:1/x"})
    response = down.test_client().get("/api/v1/me", headers=tenant.headers())
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "unavailable"
