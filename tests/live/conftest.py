"""Live-event fixtures: real gunicorn (gevent) web processes on loopback, and a streaming SSE
client that reads in a background thread."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.conftest import artifacts_dir
from tests.servers.web import WebProcess

KEEPALIVE_SECONDS = 1.0
STREAM_PATH = "/api/v1/ai-sessions/escalations/stream"


@pytest.fixture(scope="session")
def web_env(app, app_env) -> dict[str, str]:
    """The test app's environment (its database is migrated by `app`), short keepalives."""
    return {**app_env, "SSE_KEEPALIVE_SECONDS": str(KEEPALIVE_SECONDS),
            # the fan-out tests hold hundreds of streams of one user
            "SSE_MAX_STREAMS_PER_USER": "1000", "SSE_MAX_STREAMS_PER_ACCOUNT": "1000"}


@pytest.fixture(scope="session")
def web(web_env):
    """A gunicorn web process for the whole run."""
    server = WebProcess(web_env, artifacts_dir() / "gunicorn-web.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def second_web(web_env):
    """Another web process: what one publishes, subscribers on the other receive."""
    server = WebProcess(web_env, artifacts_dir() / "gunicorn-web-2.log").start()
    yield server
    server.stop()


@pytest.fixture
def http():
    """One HTTP client shared by every stream of a test (thread-safe, no connection limit)."""
    with httpx.Client(timeout=httpx.Timeout(10.0, read=5.0),
                      limits=httpx.Limits(max_connections=None,
                                          max_keepalive_connections=20)) as client:
        yield client


@pytest.fixture
def streams(http):
    """Open streams; all are closed at the end of the test."""
    opened: list[SseStream] = []

    def open_stream(base_url: str, headers: dict[str, str], **kwargs) -> SseStream:
        stream = SseStream(http, base_url, headers, **kwargs)
        opened.append(stream)
        return stream.open()

    yield open_stream
    for stream in opened:
        stream.stop()
    for stream in opened:
        stream.join()


@dataclass
class SseEvent:
    event: str | None
    data: str
    id: str | None

    def json(self):
        return json.loads(self.data)


def handoff_ids(events: list[SseEvent]) -> list[int]:
    """The ids of the handoffs the events are about, in their order."""
    return [event.json()["handoff"]["id"] for event in events]


@dataclass
class SseStream:
    """A streaming GET of the live endpoint, parsed as the SSE spec says, in a thread."""
    http: httpx.Client
    base_url: str
    headers: dict[str, str]
    params: dict[str, str] | None = None
    last_event_id: str | None = None
    status: int | None = None
    response_headers: httpx.Headers | None = None
    body: bytes = b""
    events: list[SseEvent] = field(default_factory=list)
    keepalives: list[float] = field(default_factory=list)
    error: BaseException | None = None
    ended: bool = False

    def __post_init__(self):
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def open(self, timeout: float = 10.0) -> SseStream:
        """Start reading; returns once the `ready` event (or an error answer) arrived."""
        self._thread.start()
        self.wait(lambda: self.events or self.ended, timeout, "the ready event")
        return self

    def _read(self) -> None:
        headers = dict(self.headers)
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        try:
            with self.http.stream("GET", self.base_url + STREAM_PATH, headers=headers,
                                  params=self.params) as response:
                self.status, self.response_headers = response.status_code, response.headers
                if response.status_code != 200:
                    self.body = response.read()
                    return
                fields: dict[str, list[str]] = {}
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    self._parse(line, fields)
        except BaseException as error:  # reported by the test, never swallowed silently
            if not self._stop.is_set():
                self.error = error
        finally:
            with self._changed:
                self.ended = True
                self._changed.notify_all()

    def _parse(self, line: str, fields: dict[str, list[str]]) -> None:
        if line == "":
            if "data" in fields:
                event = SseEvent((fields.get("event") or [None])[-1], "\n".join(fields["data"]),
                                 (fields.get("id") or [None])[-1])
                with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
            fields.clear()
        elif line.startswith(":"):
            if line[1:].strip() == "keepalive":
                with self._changed:
                    self.keepalives.append(time.monotonic())
                    self._changed.notify_all()
        else:
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)

    def wait(self, predicate, timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}; "
                                f"status={self.status} events={[e.event for e in self.events]} "
                                f"error={self.error!r}")
                self._changed.wait(remaining)

    def wait_events(self, count: int, timeout: float = 10.0, kind: str | None = None):
        """The first `count` events after `ready` (of `kind`, if given)."""
        def found():
            return [e for e in self.events[1:] if kind is None or e.event == kind]
        self.wait(lambda: len(found()) >= count, timeout, f"{count} {kind or ''} events")
        return found()

    @property
    def ready(self) -> SseEvent:
        return self.events[0]

    def stop(self) -> None:
        """Leave: the reader closes the connection at the next line (keepalives come often)."""
        self._stop.set()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "stream reader did not stop"

    def close(self) -> None:
        self.stop()
        self.join()
