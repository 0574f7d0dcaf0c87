"""The escalation backend's Flask application factory."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask.sessions import NullSession, SessionInterface

from webapp.config import Config


class NoCookieSessions(SessionInterface):
    """No request has a cookie session: the API authenticates by bearer token, and the queue
    page keeps its token in the browser. Flask's default would parse (and sign-check) a
    session cookie on every request for nothing; any write to this one fails loudly."""

    def open_session(self, app: Flask, request) -> NullSession:
        return self.make_null_session(app)

    def save_session(self, app: Flask, session, response) -> None:
        return None


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.session_interface = NoCookieSessions()
    app.config.update(Config.from_env(overrides=config))
    if not app.config.get("SECRET_KEY"):
        # no default: a published one would key every API token hash, and the PSA secrets at
        # rest when ENCRYPTION_KEY is not set
        raise RuntimeError(
            "SECRET_KEY is not set. Set it to a long random string, the same for every process "
            "(web, worker, beat), e.g. the output of: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'")
    from webapp import auth, cli, errors, logs, web
    from webapp.api import register_blueprints
    from webapp.celery_app import celery_init_app
    from webapp.extensions import api, db, mail, migrate
    from webapp.redis_client import init_redis

    db.init_app(app)
    from webapp.pool_checks import ping_when_idle
    with app.app_context():
        ping_when_idle(db.engine, app.config["DB_PING_AFTER_IDLE_SECONDS"])
    migrate.init_app(app, db, directory=app.config.get("MIGRATIONS_DIR", _migrations_dir()))
    mail.init_app(app)
    api.init_app(app)
    init_redis(app)
    celery_init_app(app)
    errors.register_error_handlers(app)
    logs.init_app(app)   # first of the request hooks: every answer carries its request id
    from webapp.api.bodies import guard_request
    app.before_request(guard_request)
    app.before_request(auth.authenticate_request)
    register_blueprints(app, api)
    app.register_blueprint(web.bp)
    from webapp import metrics
    metrics.init_app(app)   # request counts and GET /metrics
    cli.register(app)
    if app.config["TRUSTED_PROXIES"] > 0:
        # the client's address (login budgets) as the operator's proxies report it
        from werkzeug.middleware.proxy_fix import ProxyFix
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    return app


def _migrations_dir() -> str:
    import os
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "migrations")
