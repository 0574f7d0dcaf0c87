"""Live events under load, on loopback, against one real gunicorn gevent web process.

1. POST-to-arrival: one subscribed client; N escalations posted one after another; for each,
   the time from the POST returning (and from it starting) to `handoff_created` arriving.
2. Idle subscribers: M streams held open by the one web process (spread over A accounts);
   the worker process's RSS per subscriber; then one escalation per account, and how long
   each subscriber waits for it (target: all within 1 s).
3. A reconnect storm, as after a deploy: S clients, each its own user, open their streams at
   the same moment; how long each waits for `ready`, and what any that got none was answered
   (target: all `ready` within 10 s, none 503).

    .venv/bin/python bench/sse_bench.py --posts 200 --subscribers 2000 --accounts 10 --storm 2000

Uses DATABASE_URL / REDIS_URL when set (else embedded servers), a fresh database and a free
Redis logical database of its own; prints the figures and writes bench/results/sse.json.
Not run by CI.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import Profiler, children_of, fresh_database, redis_db  # noqa: E402  (bench/ is this script's path)

from devtools.embedded import ensure_services, free_port  # noqa: E402

STREAM_PATH = "/api/v1/ai-sessions/escalations/stream"
RESULTS = ROOT / "bench" / "results" / "sse.json"


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def summary_ms(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {"count": len(ms), "p50": round(percentile(ms, 0.50), 2),
            "p90": round(percentile(ms, 0.90), 2), "p99": round(percentile(ms, 0.99), 2),
            "max": round(max(ms), 2), "mean": round(statistics.fmean(ms), 2)}


# ---- the world: a database, a Redis db, accounts, one gunicorn --------------------------------


def make_accounts(env: dict[str, str], count: int, extra_users: int = 0) -> list[dict]:
    """Accounts each with an engineer (who posts and streams), in a migrated database; and
    `extra_users` more engineers spread over them, each with a token of their own (the
    storm's clients), in account["storm_headers"]."""
    from webapp import create_app
    from webapp.auth import hash_password, issue_token
    from webapp.config import Config
    from webapp.extensions import db
    from webapp.models import Account, User

    app = create_app(Config.from_env(env=env))
    accounts = []
    with app.app_context():
        password_hash = hash_password("bench-password")
        for number in range(count):
            account = Account(name=f"Bench MSP {number}")
            db.session.add(account)
            db.session.flush()
            user = User(account_id=account.id, email=f"engineer@{account.id}.bench",
                        name=f"Engineer {number}", role="engineer", password_hash=password_hash)
            db.session.add(user)
            db.session.flush()
            token, _ = issue_token(user)
            accounts.append({"account_id": account.id, "storm_headers": [],
                             "headers": {"Authorization": f"Bearer {token}"}})
        for number in range(extra_users):
            account = accounts[number % count]
            user = User(account_id=account["account_id"], name=f"Storm {number}",
                        email=f"storm-{number}@{account['account_id']}.bench",
                        role="engineer", password_hash=password_hash)
            db.session.add(user)
            db.session.flush()
            token, _ = issue_token(user)
            account["storm_headers"].append({"Authorization": f"Bearer {token}"})
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return accounts


class Gunicorn:
    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "webapp/gunicorn_conf.py", "wsgi:app"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **env, "HOST": "127.0.0.1", "PORT": str(self.port),
                 "WEB_CONCURRENCY": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base_url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not start")

    def worker_pid(self) -> int:
        workers = children_of(self.process.pid)
        if not workers:
            raise RuntimeError("no gunicorn worker process")
        return workers[0]

    def worker_rss_kib(self) -> int:
        status = Path(f"/proc/{self.worker_pid()}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("VmRSS:")))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def escalate(http: httpx.Client, base_url: str, headers: dict, number: int) -> tuple:
    """Create a session (untimed), then POST its escalation; returns (id, started, returned)."""
    session = http.post(base_url + "/api/v1/ai-sessions", headers=headers,
                        json={"title": f"Bench {number}", "problem": "VPN drops every hour"})
    session.raise_for_status()
    started = time.perf_counter()
    response = http.post(f"{base_url}/api/v1/ai-sessions/{session.json()['id']}/handoff",
                         headers=headers, json={"intent": "escalate", "note": "Need a hand"})
    returned = time.perf_counter()
    response.raise_for_status()
    return response.json()["id"], started, returned


# ---- 1. POST-to-arrival -----------------------------------------------------------------------

def post_to_arrival(server: Gunicorn, account: dict, posts: int, warmup: int = 10) -> dict:
    arrivals: dict[int, float] = {}
    arrived = threading.Condition()
    ready = threading.Event()
    stop = threading.Event()

    def listen():
        with httpx.Client(timeout=httpx.Timeout(10, read=60)) as client, \
                client.stream("GET", server.base_url + STREAM_PATH,
                              headers=account["headers"]) as response:
            event = None
            for line in response.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("event:"):
                    event = line[6:].strip()
                    if event == "ready":
                        ready.set()
                elif line.startswith("data:") and event == "handoff_created":
                    at = time.perf_counter()
                    handoff_id = json.loads(line[5:])["handoff"]["id"]
                    with arrived:
                        arrivals[handoff_id] = at
                        arrived.notify_all()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    if not ready.wait(10):
        raise RuntimeError("no ready event")
    from_return, from_start, early = [], [], 0
    with httpx.Client(timeout=10) as http:
        for number in range(warmup + posts):
            handoff_id, started, returned = escalate(http, server.base_url,
                                                     account["headers"], number)
            with arrived:
                if not arrived.wait_for(lambda wanted=handoff_id: wanted in arrivals, 5):
                    raise RuntimeError(f"handoff {handoff_id} never arrived")
            if number >= warmup:
                # the event is published before the response is written, so it may even win
                early += arrivals[handoff_id] < returned
                from_return.append(max(0.0, arrivals[handoff_id] - returned))
                from_start.append(arrivals[handoff_id] - started)
    stop.set()
    return {"posts": posts, "arrived_before_the_post_returned": early,
            "arrival_after_post_returned_ms": summary_ms(from_return),
            "arrival_after_post_started_ms": summary_ms(from_start)}


# ---- 2. idle subscribers ----------------------------------------------------------------------

async def hold_subscribers(server: Gunicorn, accounts: list[dict], count: int,
                           connect_concurrency: int = 100) -> dict:
    host, port = "127.0.0.1", server.port
    subscribers = []  # (account index, reader, writer)
    arrivals: dict[int, float] = {}
    limit = asyncio.Semaphore(connect_concurrency)
    failures: dict[str, int] = {}   # what the subscribers that got no `ready` got instead

    async def connect(number: int):
        try:
            await open_one(number)
        except (TimeoutError, OSError, RuntimeError) as error:
            reason = f"{type(error).__name__}: {str(error)[:80]}"
            failures[reason] = failures.get(reason, 0) + 1

    async def open_one(number: int):
        index = number % len(accounts)
        async with limit:
            reader, writer = await asyncio.open_connection(host, port)
            request = [f"GET {STREAM_PATH} HTTP/1.1", f"Host: {host}:{port}",
                       *(f"{k}: {v}" for k, v in accounts[index]["headers"].items()), "", ""]
            writer.write("\r\n".join(request).encode())
            buffer = b""
            while b"event:ready" not in buffer:
                chunk = await asyncio.wait_for(reader.read(65536), 30)
                if not chunk:
                    raise RuntimeError(f"stream closed before ready: {buffer[:200]!r}")
                buffer += chunk
            subscribers.append((index, reader, writer))

    started = time.perf_counter()
    await asyncio.gather(*(connect(number) for number in range(count)))
    connected_in = time.perf_counter() - started

    async def await_event(number: int, reader: asyncio.StreamReader):
        tail = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            tail = tail[-64:] + chunk
            if b"event:handoff_created" in tail:
                arrivals[number] = time.perf_counter()
                return

    waiting = [asyncio.create_task(await_event(number, reader))
               for number, (_, reader, _) in enumerate(subscribers)]
    await asyncio.sleep(3)  # settle: let the process reach its idle footprint
    rss_kib = server.worker_rss_kib()

    posted: dict[int, tuple[float, float]] = {}  # account index: (started, returned)
    with httpx.Client(timeout=10) as http:
        for index, account in enumerate(accounts):
            _, started, returned = await asyncio.to_thread(escalate, http, server.base_url,
                                                           account["headers"], index)
            posted[index] = (started, returned)
    await asyncio.wait(waiting, timeout=10)
    from_start = [arrivals[number] - posted[subscribers[number][0]][0] for number in arrivals]
    latencies = [max(0.0, arrivals[number] - posted[subscribers[number][0]][1])
                 for number in arrivals]
    for _, _, writer in subscribers:
        writer.close()
    return {"subscribers": len(subscribers), "asked": count, "not_ready": failures,
            "accounts": len(accounts),
            "connected_in_s": round(connected_in, 2), "worker_rss_kib_idle": rss_kib,
            "received": len(arrivals),
            "received_within_1s_of_post_start": sum(1 for value in from_start if value <= 1.0),
            "arrival_after_post_returned_ms": summary_ms(latencies) if latencies else None,
            "arrival_after_post_started_ms": summary_ms(from_start) if from_start else None}


# ---- 3. a reconnect storm ---------------------------------------------------------------------

async def reconnect_storm(server: Gunicorn, accounts: list[dict], wait_s: float = 30.0) -> dict:
    """Every storm client connects and sends its request at once (no client-side limit); each
    records its status line and when `ready` arrived, or what it got instead."""
    host, port = "127.0.0.1", server.port
    clients = [headers for account in accounts for headers in account["storm_headers"]]
    gate = asyncio.Event()
    outcomes: list[tuple[str, float | None]] = []   # (status or failure, seconds to ready)
    writers = []

    async def open_stream(headers: dict) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as error:
            outcomes.append((f"connect {type(error).__name__}", None))
            return
        writers.append(writer)
        request = [f"GET {STREAM_PATH} HTTP/1.1", f"Host: {host}:{port}",
                   *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        await gate.wait()
        started = time.perf_counter()
        writer.write("\r\n".join(request).encode())
        buffer = b""
        try:
            while b"event:ready" not in buffer:
                chunk = await asyncio.wait_for(reader.read(65536), wait_s)
                if not chunk:
                    break
                buffer += chunk
        except (TimeoutError, OSError) as error:
            outcomes.append((f"no ready: {type(error).__name__}", None))
            return
        if b"event:ready" in buffer:
            outcomes.append(("200", time.perf_counter() - started))
        else:
            status = buffer.split(b"\r\n", 1)[0].decode(errors="replace").split(" ")
            outcomes.append((status[1] if len(status) > 1 else "closed", None))

    tasks = [asyncio.create_task(open_stream(headers)) for headers in clients]
    await asyncio.sleep(0)
    while len(writers) + len(outcomes) < len(clients):   # every connection open first
        await asyncio.sleep(0.05)
    gate.set()
    began = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    for writer in writers:
        writer.close()
    ready = [seconds for status, seconds in outcomes if seconds is not None]
    statuses: dict[str, int] = {}
    for status, _ in outcomes:
        statuses[status] = statuses.get(status, 0) + 1
    return {"clients": len(clients), "distinct_users": len(clients),
            "accounts": len(accounts), "ready": len(ready),
            "ready_within_10_s": sum(1 for seconds in ready if seconds <= 10),
            "answered_503": statuses.get("503", 0), "outcomes": statuses,
            "all_ready_in_s": round(elapsed, 2),
            "time_to_ready_ms": summary_ms(ready) if ready else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--storm", type=int, default=2000,
                        help="clients (each its own user) opening their streams at once")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="py-spy the web process during the storm into DIR/storm-web.txt")
    args = parser.parse_args()

    fd_limit = raise_fd_limit(2 * max(args.subscribers, args.storm) + 1024)
    services = ensure_services(ROOT / ".local" / "bench-services")
    with fresh_database(services["DATABASE_URL"]) as database_url, \
            redis_db(services["REDIS_URL"]) as redis_url:
        env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url,
               "CELERY_BROKER_URL": redis_url, "SECRET_KEY": "bench-secret",
               "PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "8192",
               # thousands of idle streams of a few users: past the product's default caps
               # gunicorn serves at most this many connections at once (4,000 by default)
               "WEB_WORKER_CONNECTIONS": str(args.subscribers + args.storm + 100),
               "SSE_MAX_STREAMS_PER_USER": str(args.subscribers + 10),
               "SSE_MAX_STREAMS_PER_ACCOUNT": str(max(args.subscribers, args.storm) + 10)}
        accounts = make_accounts(env, args.accounts, args.storm)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        (ROOT / ".local").mkdir(exist_ok=True)
        server = Gunicorn(env, ROOT / ".local" / "bench-sse-gunicorn.log")
        try:
            latency = post_to_arrival(server, accounts[0], args.posts)
            time.sleep(1)
            rss_before = server.worker_rss_kib()
            idle = asyncio.run(hold_subscribers(server, accounts, args.subscribers))
        finally:
            server.stop()
        # a fresh web process, as after a deploy: every client reconnects at once
        server = Gunicorn(env, ROOT / ".local" / "bench-sse-storm-gunicorn.log")
        profile = Profiler(args.profile, {"storm-web": server.worker_pid()}) \
            if args.profile and args.storm else None
        try:
            if profile:
                profile.start()
            storm = asyncio.run(reconnect_storm(server, accounts)) if args.storm else None
        finally:
            if profile:
                profile.stop()
            server.stop()
        storm_log = (ROOT / ".local" / "bench-sse-storm-gunicorn.log").read_text(errors="replace")
        if storm:
            storm["web_log_database_unavailable"] = storm_log.count("database unavailable")
    idle["worker_rss_kib_before"] = rss_before
    idle["rss_kib_per_subscriber"] = round(
        (idle["worker_rss_kib_idle"] - rss_before) / max(idle["subscribers"], 1), 1)
    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "fd_limit": fd_limit},
        "server": "gunicorn -c webapp/gunicorn_conf.py wsgi:app (gevent, 1 worker), loopback",
        "post_to_arrival": latency,
        "idle_subscribers": idle,
        "reconnect_storm": storm,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
