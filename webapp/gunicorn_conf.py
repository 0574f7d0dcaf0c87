"""gunicorn settings for the web role: gevent workers, so streams don't hold a thread each."""
import os
import resource

from webapp.logs import gunicorn_logconfig

# all interfaces by default, as a Procfile platform routes to PORT; the run command, the tests
# and the benches set HOST=127.0.0.1
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# each open live stream is one connection: 10,000 idle subscribers on one process, with room
# for their reconnects and the API's own requests
worker_connections = int(os.environ.get("WEB_WORKER_CONNECTIONS", "12000"))
# descriptors beyond the connections: the pools of Postgres and Redis, logs, the listener
OTHER_OPEN_FILES = 1000


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards `wanted` (a child inherits it),
    never past the hard limit: a default of 1,024 would refuse connections long before
    worker_connections. The soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):   # past what the kernel allows (fs.nr_open)
            pass
    return soft


def on_starting(server):
    wanted = worker_connections * workers + OTHER_OPEN_FILES
    limit = raise_open_files_limit(wanted)
    if limit != resource.RLIM_INFINITY and limit < wanted:
        server.log.warning("open files limited to %s (hard limit), below the %s that "
                           "WEB_WORKER_CONNECTIONS=%s needs: raise it (ulimit -Hn)", limit,
                           wanted, worker_connections)
timeout = 60
graceful_timeout = 10
keepalive = 5
# query strings are the app's to judge (422 past MAX_QUERY_STRING_BYTES), not gunicorn's 414
limit_request_line = 8190
accesslog = os.environ.get("ACCESS_LOG") or None
# gunicorn's own lines in the app's format (JSON unless LOG_FORMAT=text)
logconfig_dict = gunicorn_logconfig(os.environ.get("LOG_FORMAT", "json"),
                                    os.environ.get("LOG_LEVEL", "INFO").upper())
# gunicorn 27 puts every master's control socket at one path per user; several web
# processes on one host would remove each other's
control_socket_disable = True


def post_worker_init(worker):
    """On SIGTERM (or SIGINT/SIGQUIT) gunicorn stops accepting and waits graceful_timeout for
    open requests; a live stream would hold it all that time. A watcher ends every stream the
    moment the worker stops being alive, so clients reconnect elsewhere at once."""
    import gevent

    def end_streams_at_shutdown():
        while worker.alive:
            gevent.sleep(0.2)
        from webapp.live.hub import end_all_streams
        ended = end_all_streams()
        worker.log.info("ended %s live stream(s) for shutdown", ended)

    gevent.spawn(end_streams_at_shutdown)


def post_fork(server, worker):
    # psycopg2 blocks the whole gevent hub unless it yields on I/O
    from psycogreen.gevent import patch_psycopg
    patch_psycopg()


def child_exit(server, worker):
    # prometheus_client multiprocess mode (PROMETHEUS_MULTIPROC_DIR, webapp/metrics.py): an
    # exited worker's live gauges (open streams) stop counting; its counters stay in the sum
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(worker.pid)
