"""What the fault drills share: a rig of real processes (web, workers, beats) on a queue of the
drill's own, a live-queue listener that reconnects with Last-Event-ID as the page does, and
the drill's counts, computed and formatted once.

Every drill counts only its own: its account's escalations, the emails its SMTP server
received about them, the notes on its own tickets, the chat messages naming its escalations,
the live events of its account."""
from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import pytest
import redis as redis_lib

from tests.conftest import (
    WorkerProcess,
    _wait_worker_ready,
    app_config,
    artifacts_dir,
    purge_queues,
)
from tests.servers.beat import BeatProcess
from tests.servers.redis_server import RedisServer
from tests.servers.smtp import SmtpServer
from tests.servers.web import WebProcess
from webapp import create_app
from webapp.extensions import db
from webapp.live import stream_key
from webapp.models import AiSession, Delivery, Handoff

STREAM = "/api/v1/ai-sessions/escalations/stream"
FINISHED = ("sent", "skipped")
_HANDOFF_LINK = re.compile(r"handoff-(\d+)")

# What every drill's processes run with, over the run's app_env: quick redelivery by beat, so
# a drill ends in seconds rather than minutes, and plain-text logs to read when one fails.
DRILL_ENV = {
    "DELIVERY_PENDING_GRACE_SECONDS": "3",   # a lost enqueue is found within seconds
    "BEAT_REDELIVER_SECONDS": "2",
    "BEAT_REMIND_SECONDS": "1",
    "SSE_KEEPALIVE_SECONDS": "4",
    "ALLOW_PRIVATE_ADDRESSES": "true",       # the drills' PSA and webhook are on loopback
    "LOG_FORMAT": "text",
}


# ---- the processes --------------------------------------------------------------------------

class Rig:
    """Web processes, workers and beats of one drill, all on the drill's own queue and with
    the same environment (the run's, DRILL_ENV, then the drill's own); stopped at the end."""

    def __init__(self, name: str, env: dict[str, str]):
        self.name, self.queue = name, f"drill-{name}"
        self.env = {**env, **DRILL_ENV, "CELERY_QUEUE": self.queue}
        self.webs: list[WebProcess] = []
        self.workers: list[WorkerProcess] = []
        self.beats: list[BeatProcess] = []
        self._app = None

    def configure(self, **env: str) -> None:
        """Settings for every process started from now on (and for `app`)."""
        self.env.update(env)
        self._app = None

    @property
    def app(self):
        """A Flask app with the processes' settings: to read rows, and to enqueue to them."""
        if self._app is None:
            self._app = create_app(app_config(self.env))
        return self._app

    def log(self, kind: str, number: int) -> Path:
        path = artifacts_dir() / f"drill-{self.name}-{kind}-{number}.log"
        path.write_text("")
        return path

    def web(self) -> WebProcess:
        web = WebProcess(dict(self.env), self.log("web", len(self.webs)))
        self.webs.append(web)
        return web.start()

    def worker(self, wait: bool = True, concurrency: int = 4) -> WorkerProcess:
        worker = WorkerProcess(dict(self.env), self.log("worker", len(self.workers)),
                               concurrency=concurrency, queue=self.queue)
        self.workers.append(worker)
        worker.start()
        if wait:
            _wait_worker_ready(self.app)
        return worker

    def beat(self) -> BeatProcess:
        beat = BeatProcess({**os.environ, **self.env}, f"drill-{self.name}-{len(self.beats)}")
        beat.schedule.unlink(missing_ok=True)
        self.beats.append(beat)
        beat.start()
        return beat

    def stop(self) -> None:
        for beat in self.beats:
            beat.stop()
        for worker in self.workers:
            worker.stop()
        for web in self.webs:
            web.stop()
        if self.workers:
            # the drill's own broker may be gone with it
            with contextlib.suppress(redis_lib.RedisError, OSError):
                purge_queues(self.env["CELERY_BROKER_URL"], self.workers[0].queues)


@pytest.fixture
def rig(request, app_env):
    """Start a drill's processes: `rig(name, **env)`; all are stopped at the end."""
    made: list[Rig] = []

    def make(name: str, **env: str) -> Rig:
        made.append(Rig(name, {**app_env, **env}))
        return made[-1]

    yield make
    for each in made:
        each.stop()


@pytest.fixture
def drill_redis(tmp_path):
    """A Redis server of the drill's own, which it may stop and start (request it before
    `rig`, so the processes are stopped while it still answers)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def drill_postgres(tmp_path):
    """A PostgreSQL cluster of the drill's own, which it may stop and start (request it
    before `rig`, so the processes are stopped while it still answers)."""
    from tests.servers.postgres_server import PostgresServer
    server = PostgresServer(tmp_path / "postgres")
    yield server
    server.remove()


@pytest.fixture
def drill_smtp():
    """An SMTP server of the drill's own, on its own port."""
    server = SmtpServer().start()
    yield server
    server.stop()


# ---- a stream of escalations -----------------------------------------------------------------

class Escalator:
    """Escalates one new session after another through a web process, each on a PSA ticket
    of its own, recording every answer: the API's side of a drill."""

    def __init__(self, base_url: str, tenant, psa=None, first_ticket: int = 3001):
        self.base_url, self.tenant, self.psa = base_url, tenant, psa
        self.tickets = iter(range(first_ticket, first_ticket + 100_000))
        self.answers: list[tuple[str, int]] = []      # (what, status) of every POST
        self.created: list[int] = []                  # handoffs answered 201
        self.refused_sessions: list[int] = []         # sessions whose handoff was not 201
        self.prepared: list[int] = []                 # sessions made ahead, to hand off
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def prepare(self, count: int) -> None:
        """Make `count` sessions now, so that `one` only POSTs their handoffs later."""
        with httpx.Client(base_url=self.base_url, timeout=15) as http:
            for _ in range(count):
                session_id = self._session(http)
                assert session_id is not None, self.answers[-1]
                self.prepared.append(session_id)
        self.answers.clear()

    def one(self, http: httpx.Client) -> int | None:
        """One escalation: session, a message (or a prepared session), handoff; the
        handoff's id if it was 201."""
        session_id = self.prepared.pop(0) if self.prepared else self._session(http)
        if session_id is None:
            return None
        handoff = self._post(http, "handoff", f"/api/v1/ai-sessions/{session_id}/handoff",
                             self.tenant.headers("engineer"),
                             {"intent": "escalate", "note": "Need Exchange rights"})
        if handoff is None:
            self.refused_sessions.append(session_id)
            return None
        self.created.append(handoff["id"])
        return handoff["id"]

    def _session(self, http: httpx.Client) -> int | None:
        ticket = str(next(self.tickets))
        if self.psa is not None:
            self.psa.add_ticket(ticket)
        headers = self.tenant.headers("engineer")
        session = self._post(http, "session", "/api/v1/ai-sessions", headers, {
            "title": f"Drill ticket {ticket}", "problem": "Outbound mail queued since 9am",
            "client_name": "Contoso", "psa_ticket_id": ticket})
        if session is None:
            return None
        session_id = session["id"]
        if self._post(http, "message", f"/api/v1/ai-sessions/{session_id}/messages", headers,
                      {"role": "engineer", "content": "Restarted the transport service"}) is None:
            return None
        return session_id

    def _post(self, http: httpx.Client, what: str, path: str, headers: dict,
              body: dict) -> dict | None:
        try:
            answer = http.post(path, json=body, headers=headers)
        except httpx.HTTPError as error:
            self.answers.append((what, type(error).__name__))
            return None
        self.answers.append((what, answer.status_code))
        if answer.status_code != 201:
            self.answers[-1] = (what, answer.status_code, answer.text[:300])
            return None
        return answer.json()

    def statuses(self) -> dict:
        """{what: {status: how many}} of every POST so far."""
        found: dict = {}
        for what, status, *_ in list(self.answers):
            found.setdefault(what, Counter())[status] += 1
        return {what: dict(counter) for what, counter in sorted(found.items())}

    def start(self, interval: float) -> Escalator:
        """Escalate every `interval` seconds in a thread of its own, until `stop`."""
        def run():
            with httpx.Client(base_url=self.base_url, timeout=15) as http:
                while not self._stop.is_set():
                    started = time.monotonic()
                    self.one(http)
                    self._stop.wait(max(0.0, interval - (time.monotonic() - started)))
        self._thread = threading.Thread(target=run, name="escalator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


# ---- a live queue ----------------------------------------------------------------------------

class LiveListener:
    """A senior's queue page: reads the account's live stream and, whenever it ends or is
    refused, connects again with Last-Event-ID (the last id it saw, as EventSource keeps it)."""

    def __init__(self, name: str, base_url: str, headers: dict[str, str]):
        self.name, self.base_url, self.headers = name, base_url, headers
        self.events: list[tuple[str, str, int]] = []   # (id, event, handoff id)
        self.last_id: str | None = None
        self.connections = 0                           # streams that answered 200
        self.refusals: Counter = Counter()             # status of each refused (re)connect
        self.repeated_on_one_connection = 0
        self.ready = threading.Event()
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, name=f"listener-{name}", daemon=True)

    def start(self, timeout: float = 15.0) -> LiveListener:
        self._thread.start()
        assert self.ready.wait(timeout), f"{self.name}: no `ready` within {timeout}s"
        return self

    def drop(self) -> None:
        """Cut the connection, as a network blip would; it reconnects by itself."""
        with self._lock:
            response = self._response
        if response is not None:
            response.close()

    def stop(self) -> None:
        self._stop.set()
        self.drop()
        self._thread.join(10)

    def ids(self) -> list[str]:
        with self._lock:
            return [event_id for event_id, _, _ in self.events]

    def _run(self) -> None:
        while not self._stop.is_set():
            headers = dict(self.headers)
            if self.last_id:
                headers["Last-Event-ID"] = self.last_id
            try:
                with httpx.Client(base_url=self.base_url,
                                  timeout=httpx.Timeout(5.0, read=30.0)) as http, \
                        http.stream("GET", STREAM, headers=headers) as response:
                    if response.status_code != 200:
                        response.read()
                        self.refusals[response.status_code] += 1
                    else:
                        with self._lock:
                            self._response = response
                        self.connections += 1
                        self._read(response)
            except (httpx.HTTPError, OSError, RuntimeError, ValueError):
                pass   # the connection went: connect again
            finally:
                with self._lock:
                    self._response = None
            self._stop.wait(0.2)   # EventSource's reconnection delay

    def _read(self, response: httpx.Response) -> None:
        seen: set[str] = set()
        event_id = event = None
        data: list[str] = []
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            if line == "":
                if event is not None or data:
                    self._dispatch(event_id, event or "message", "\n".join(data), seen)
                event_id = event = None
                data = []
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "id":
                    event_id = value
                elif field == "event":
                    event = value
                elif field == "data":
                    data.append(value)

    def _dispatch(self, event_id: str | None, event: str, data: str, seen: set[str]) -> None:
        if event_id:
            self.last_id = event_id
        if event == "ready":
            self.ready.set()
            return
        if event_id in seen:
            self.repeated_on_one_connection += 1
        seen.add(event_id)
        with self._lock:
            self.events.append((event_id, event, json.loads(data)["handoff"]["id"]))


@pytest.fixture
def listeners():
    """Start live listeners: `listeners(name, base_url, headers)`; stopped at the end."""
    started: list[LiveListener] = []

    def start(name: str, base_url: str, headers: dict[str, str]) -> LiveListener:
        started.append(LiveListener(name, base_url, headers).start())
        return started[-1]

    yield start
    for listener in started:
        listener.stop()


# ---- the counts ------------------------------------------------------------------------------

def published_ids(redis_url: str, account_id: int) -> list[str]:
    """The ids of the account's events that were published: those its replay stream holds."""
    client = redis_lib.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=1)
    try:
        return [entry_id.decode() for entry_id, _ in client.xrange(stream_key(account_id))]
    finally:
        client.close()


def _histogram(counts: Iterable[int]) -> dict[int, int]:
    """{times: how many had it that many times}: {1: 40} is forty, each once."""
    return dict(sorted(Counter(counts).items()))


def drill_counts(app, account_id: int, *, smtp: SmtpServer, recipients: Iterable[str],
                 psa=None, chat=None, listeners: Iterable[LiveListener] = (),
                 redis_url: str | None = None,
                 reminder_recipients: Iterable[str] = ()) -> dict:
    """What a drill left behind, for its account:
    - escalations: created (in the database);
    - emails_per_recipient: escalation emails each recipient got; emails_repeated: copies past
      the first of one (escalation, recipient); emails_missing: pairs that got none;
    - notes_per_ticket: {notes: tickets} over the escalations' tickets;
    - chat_messages: {messages: escalations} (with a chat server);
    - live_events: what was published, and per listener what it received, missed, got twice;
    - unfinished: delivery rows neither sent nor skipped;
    - reminders_per_recipient and reminders_repeated (with reminder_recipients): reminder
      emails, and the reminded escalations."""
    with app.app_context():
        rows = db.session.execute(
            db.select(Handoff.id, AiSession.psa_ticket_id, Handoff.reminded_at)
            .join(AiSession, AiSession.id == Handoff.session_id)
            .where(Handoff.account_id == account_id, Handoff.intent == "escalate")
            .order_by(Handoff.id)).all()
        unfinished = db.session.scalar(db.select(db.func.count()).select_from(Delivery).where(
            Delivery.account_id == account_id, Delivery.status.notin_(FINISHED)))
        db.session.remove()
    handoff_ids = [row.id for row in rows]
    recipients = sorted(address.lower() for address in recipients)
    pairs: Counter = Counter()
    reminders: Counter = Counter()
    for handoff_id in handoff_ids:
        for message in smtp.about(handoff_id):
            target = reminders if message.message["X-Escalation-Reminder"] else pairs
            for address in message.rcpt_tos:
                target[(handoff_id, address.lower())] += 1
    counts: dict = {
        "escalations": len(handoff_ids),
        "emails_per_recipient": dict(sorted(Counter(
            address for (_, address), times in pairs.items() for _ in range(times)).items())),
        "emails_repeated": sum(times - 1 for times in pairs.values()),
        "emails_missing": sum(1 for handoff_id in handoff_ids for address in recipients
                              if not pairs[(handoff_id, address)]),
        "unfinished": unfinished,
    }
    if psa is not None:
        counts["notes_per_ticket"] = _histogram(
            len(psa.notes(row.psa_ticket_id)) for row in rows)
    if chat is not None:
        per_handoff: Counter = Counter()
        for message in chat.messages:
            text = json.dumps(message.json)
            if "still unclaimed" in text.lower():
                continue
            for found in set(_HANDOFF_LINK.findall(text)):
                per_handoff[int(found)] += 1
        counts["chat_messages"] = _histogram(per_handoff[handoff_id] for handoff_id in handoff_ids)
    listeners = list(listeners)
    if listeners:
        published = published_ids(redis_url or app.config["REDIS_URL"], account_id)
        live: dict = {"published": len(published)}
        for listener in listeners:
            received = listener.ids()
            live[listener.name] = {
                "received": len(received),
                "missed": len(set(published) - set(received)),
                "repeated": len(received) - len(set(received)),
                "in_order": [i for i in received if i in set(published)] == published}
        counts["live_events"] = live
    reminder_recipients = sorted(address.lower() for address in reminder_recipients)
    if reminder_recipients:
        counts["reminded_escalations"] = sum(1 for row in rows if row.reminded_at)
        counts["reminders_per_recipient"] = dict(sorted(Counter(
            address for (_, address), times in reminders.items() for _ in range(times)).items()))
        counts["reminders_repeated"] = sum(times - 1 for times in reminders.values())
    return counts


def expected_counts(escalations: int, recipients: Iterable[str], *, notes: bool = False,
                    chat: bool = False, listeners: Iterable[LiveListener] = (),
                    published: int = 0, reminded: int = 0,
                    reminder_recipients: Iterable[str] = ()) -> dict:
    """The counts of a drill that lost nothing and doubled nothing (see drill_counts)."""
    expected: dict = {
        "escalations": escalations,
        "emails_per_recipient": {address.lower(): escalations
                                 for address in sorted(recipients)} if escalations else {},
        "emails_repeated": 0,
        "emails_missing": 0,
        "unfinished": 0,
    }
    if notes:
        expected["notes_per_ticket"] = {1: escalations} if escalations else {}
    if chat:
        expected["chat_messages"] = {1: escalations} if escalations else {}
    listeners = list(listeners)
    if listeners:
        expected["live_events"] = {"published": published, **{
            listener.name: {"received": published, "missed": 0, "repeated": 0,
                            "in_order": True} for listener in listeners}}
    reminder_recipients = list(reminder_recipients)
    if reminder_recipients:
        expected["reminded_escalations"] = reminded
        expected["reminders_per_recipient"] = {address.lower(): reminded for address in sorted(
            reminder_recipients)} if reminded else {}
        expected["reminders_repeated"] = 0
    return expected


def format_counts(counts: dict) -> str:
    """One line of JSON; also printed, so a passing run shows its counts (pytest -rP)."""
    line = json.dumps(counts, sort_keys=True, default=str)
    print(f"drill counts: {line}")
    return line


def settle(counts: Callable[[], dict], expected: Callable[[dict], dict],
           timeout: float) -> tuple[dict, dict]:
    """Read the counts until they are what is expected (of them: `expected(counts)`) or
    `timeout` has passed: (counts, expected) as last read either way (the drill's assertion
    says which)."""
    deadline = time.monotonic() + timeout
    while True:
        found = counts()
        wanted = expected(found)
        if found == wanted or time.monotonic() > deadline:
            return found, wanted
        time.sleep(0.25)
