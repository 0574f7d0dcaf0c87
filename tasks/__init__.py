"""Celery tasks by domain: assessment, psa, notifications, chat, maintenance (beat jobs)."""
