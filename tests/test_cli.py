"""Operator commands."""
import json


def test_create_account_prints_ids_and_the_owner_can_log_in(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-account", "--name", "Initech", "--owner-email",
                                 "boss@initech.example", "--owner-name", "Bill",
                                 "--owner-password", "tps-reports-1"])
    assert result.exit_code == 0, result.output
    ids = json.loads(result.output.strip().splitlines()[-1])
    assert ids["account_id"] > 0 and ids["owner_id"] > 0
    login = client.post("/api/v1/auth/login",
                        json={"email": "boss@initech.example", "password": "tps-reports-1"})
    assert login.status_code == 200
    assert login.get_json()["user"]["role"] == "owner"


def test_create_account_refuses_a_taken_email(app):
    runner = app.test_cli_runner()
    args = ["create-account", "--name", "A", "--owner-email", "dup@x.example", "--owner-name",
            "A", "--owner-password", "password-1"]
    assert runner.invoke(args=args).exit_code == 0
    again = runner.invoke(args=args)
    assert again.exit_code != 0
    assert "already exists" in again.output
