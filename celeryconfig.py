"""Celery settings (lowercase names), read from the environment."""
import os

from celery.schedules import crontab  # noqa: F401  (kept for operators adding schedules)

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
broker_transport_options = {
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600")),
    "socket_timeout": 2,
    "socket_connect_timeout": 1,
}
# Retry countdowns stay under the visibility timeout, or a task would run twice.
task_default_retry_delay = 5
worker_hijack_root_logger = False
worker_send_task_events = False
task_send_sent_event = False
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
