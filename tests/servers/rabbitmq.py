"""RabbitMQ for the tests' second broker (TEST_BROKER=rabbitmq): a virtual host per run, made
and deleted with rabbitmqctl, so parallel runs (and a developer's own queues) don't meet."""
from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import warnings
from collections.abc import Iterable, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672//"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def with_vhost(url: str, vhost: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def check_reachable(url: str, timeout: float = 3.0) -> None:
    """Connect and log in (AMQP handshake), or raise RuntimeError saying why not."""
    from kombu import Connection
    connection = Connection(url, connect_timeout=timeout)
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
    except Exception as error:
        raise RuntimeError(f"TEST_BROKER=rabbitmq, but RabbitMQ at "
                           f"{urlsplit(url).hostname}:{urlsplit(url).port or 5672} "
                           f"cannot be used: {error!r}") from error
    finally:
        connection.release()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextlib.contextmanager
def run_vhost(base_url: str = DEFAULT_URL) -> Iterator[str]:
    """The broker URL of a virtual host of this run's own, deleted at the end. Without a local
    rabbitmqctl that may add one (not installed, not allowed, a remote server), the base URL's
    own virtual host is used, with a warning: parallel runs would then share its queues."""
    check_reachable(base_url)
    host = urlsplit(base_url).hostname or "127.0.0.1"
    user = urlsplit(base_url).username or "guest"
    vhost = f"esc_test_{secrets.token_hex(4)}"
    made = False
    if host in LOOPBACK and shutil.which("rabbitmqctl"):
        try:
            _rabbitmqctl("add_vhost", vhost)
            made = True
            _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        except (subprocess.SubprocessError, OSError) as error:
            detail = getattr(error, "stderr", b"") or b""
            warnings.warn(f"rabbitmqctl could not set up vhost {vhost}: {error} "
                          f"{detail.decode(errors='replace').strip()}", stacklevel=2)
    if not made:
        warnings.warn(f"no vhost of this run's own on RabbitMQ at {host}: using the URL's; "
                      "parallel test runs would share its queues", stacklevel=2)
        yield base_url
        return
    url = with_vhost(base_url, vhost)
    try:
        check_reachable(url)
        yield url
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _rabbitmqctl("delete_vhost", vhost)


def purge(url: str, queues: Iterable[str]) -> None:
    """Empty these queues (ready messages; those a worker holds stay with it). A queue not
    declared yet is fine."""
    from amqp.exceptions import NotFound
    from kombu import Connection
    with Connection(url, connect_timeout=3) as connection:
        channel = connection.channel()
        for queue in queues:
            try:
                channel.queue_purge(queue)
            except NotFound:     # the broker closed the channel: open another
                channel = connection.channel()
        channel.close()
