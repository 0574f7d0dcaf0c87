"""Celery tasks by domain: assessment, psa, notifications, maintenance (beat jobs)."""
