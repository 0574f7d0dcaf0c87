"""Configuration the app refuses to run without."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT, app_config
from webapp import create_app


@pytest.mark.parametrize("secret", [None, ""])
def test_the_app_refuses_to_start_without_a_secret_key(app_env, secret):
    with pytest.raises(RuntimeError, match="SECRET_KEY is not set"):
        create_app(app_config(app_env, SECRET_KEY=secret))


def test_the_web_and_worker_entry_point_fails_with_the_reason(app_env):
    env = {k: v for k, v in app_env.items() if k != "SECRET_KEY"}
    result = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_no_request_opens_a_cookie_session(app):
    """Requests carry bearer tokens; a cookie session is neither read nor writable."""
    from flask import session
    from flask.sessions import NullSession
    with app.test_request_context("/", headers={"Cookie": "session=forged"}):
        assert isinstance(session._get_current_object(), NullSession)
        with pytest.raises(RuntimeError):
            session["user"] = 1
