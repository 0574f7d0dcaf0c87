"""Celery bound to Flask: every task runs inside the app context."""
from __future__ import annotations

from celery import Celery, Task
from celery.signals import task_postrun, worker_process_init
from flask import Flask

from webapp.config import broker_is_amqp


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object("celeryconfig")
    broker_url = app.config["CELERY_BROKER_URL"]
    celery.conf.update(broker_url=broker_url,
                       # RabbitMQ or Redis by the URL alone (celeryconfig.py has both sets)
                       broker_transport_options=dict(
                           celery.conf["amqp_transport_options"] if broker_is_amqp(broker_url)
                           else celery.conf["redis_transport_options"]),
                       task_default_queue=app.config["CELERY_QUEUE"],
                       # PSA notes and chat messages wait on tenants' servers: their queue
                       # is not the one emails and dispatch share
                       task_routes={"psa.*": {"queue": app.config["CELERY_PSA_QUEUE"]},
                                    "chat.*": {"queue": app.config["CELERY_PSA_QUEUE"]},
                                    "assessment.*": {"queue": app.config["CELERY_AI_QUEUE"]}})
    celery.set_default()
    app.extensions["celery"] = celery
    from webapp import logs
    logs.connect_celery()
    from webapp import metrics
    metrics.connect_celery(app)   # task run times; METRICS_PORT

    @worker_process_init.connect(weak=False)
    def _dispose_engine(**_kwargs):
        # a forked child must not reuse the parent's pooled connections
        from webapp.extensions import db
        with app.app_context():
            db.engine.dispose(close=False)

    @task_postrun.connect(weak=False)
    def _remove_session(**_kwargs):
        from webapp.extensions import db
        with app.app_context():
            db.session.remove()

    return celery
