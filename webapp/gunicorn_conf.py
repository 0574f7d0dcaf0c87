"""gunicorn settings for the web role: gevent workers, so streams don't hold a thread each."""
import os

# all interfaces by default, as a Procfile platform routes to PORT; the run command, the tests
# and the benches set HOST=127.0.0.1
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_connections = int(os.environ.get("WEB_WORKER_CONNECTIONS", "4000"))
timeout = 60
graceful_timeout = 10
keepalive = 5
# query strings are the app's to judge (422 past MAX_QUERY_STRING_BYTES), not gunicorn's 414
limit_request_line = 8190
accesslog = os.environ.get("ACCESS_LOG") or None
# gunicorn 27 puts every master's control socket at one path per user; several web
# processes on one host would remove each other's
control_socket_disable = True


def post_fork(server, worker):
    # psycopg2 blocks the whole gevent hub unless it yields on I/O
    from psycogreen.gevent import patch_psycopg
    patch_psycopg()
