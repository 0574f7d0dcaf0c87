"""Entry point for gunicorn, the Celery worker and beat, and the Flask CLI."""
from webapp import create_app

app = create_app()
celery_app = app.extensions["celery"]
