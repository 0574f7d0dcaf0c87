"""Blueprints, one module per area, registered by the factory."""
from flask import Flask
from flask_smorest import Api


def register_blueprints(app: Flask, api: Api) -> None:
    from webapp.api import account, auth, handoffs, health, sessions, stream, users

    app.register_blueprint(health.bp)
    for module in (auth, users, sessions, handoffs, account):
        api.register_blueprint(module.bp, url_prefix="/api/v1")
    stream.register(app, api)
