"""Celery settings (lowercase names), read from the environment."""
import os

from celery.schedules import crontab  # noqa: F401  (kept for operators adding schedules)

from webapp.config import broker_is_amqp

broker_url = os.environ.get("CELERY_BROKER_URL") or os.environ.get(
    "REDIS_URL", "redis://127.0.0.1:6379/0")

# A task survives a killed worker: acked only when done, requeued when the worker dies.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

# No result backend: a Redis result backend can stall a publish for ~20 s when Redis is down.
task_ignore_result = True
result_backend = None

# The API must answer quickly even with the broker down; beat re-enqueues what was lost.
task_publish_retry = True
task_publish_retry_policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1,
                             "interval_max": 0.2}
broker_connection_retry_on_startup = True
broker_connection_timeout = 1
# The broker's transport options: webapp/celery_app.py picks one set by the broker URL's scheme.
# Redis: an unacked task (acks_late, or waiting out a countdown) is redelivered after this.
redis_transport_options = {
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600")),
    "socket_timeout": 2,
    "socket_connect_timeout": 1,
}
# RabbitMQ (amqp://, py-amqp): publisher confirms, so a send that returns has reached the broker
# (one that is refused raises). No visibility timeout: an unacked task goes back to its queue
# only when the worker's connection drops. broker_connection_timeout bounds the TCP connect and
# the AMQP handshake; webapp/services/queue.py bounds the wait for the confirm.
amqp_transport_options = {"confirm_publish": True}
broker_transport_options = (amqp_transport_options if broker_is_amqp(broker_url)
                            else redis_transport_options)
# A lost broker connection does not cancel the tasks it gave (the Celery 6 default would):
# RabbitMQ redelivers them, and the delivery row's lease makes that copy a no-op, while a send
# killed half way could go out twice.
worker_cancel_long_running_tasks_on_connection_loss = False
# Retry countdowns stay under the visibility timeout, or a task would run twice.
task_default_retry_delay = 5
worker_hijack_root_logger = False
# task events cost the worker a message per task state; Flower shows workers and queues
# without them, and each task's progress with CELERY_TASK_EVENTS=true
worker_send_task_events = os.environ.get("CELERY_TASK_EVENTS", "").lower() in ("1", "true", "yes")
task_send_sent_event = worker_send_task_events
enable_utc = True
timezone = "UTC"

imports = ("tasks.dispatch", "tasks.assessment", "tasks.notifications", "tasks.psa",
           "tasks.chat", "tasks.maintenance")

beat_schedule = {
    "redeliver-due-deliveries": {
        "task": "maintenance.redeliver_due",
        "schedule": float(os.environ.get("BEAT_REDELIVER_SECONDS", "60")),
    },
    # an escalation is reminded within a minute of falling due
    "remind-unclaimed-escalations": {
        "task": "maintenance.remind_unclaimed",
        "schedule": float(os.environ.get("BEAT_REMIND_SECONDS", "30")),
    },
    "purge-old-tokens": {
        "task": "maintenance.purge_tokens",
        "schedule": 3600.0,
    },
    "worker-heartbeat": {
        "task": "maintenance.heartbeat",
        "schedule": 60.0,
    },
}
