"""Creating an escalation under load, against the real web and worker processes, compared with
bare single-row INSERT+COMMITs on the same Postgres at the same concurrency, in one run.

    .venv/bin/python bench/create_bench.py --rate 20   # 50 clients, 2,000 escalations

1. Bare inserts: 50 threads, one psycopg2 connection each, INSERT one row into a small table
   and COMMIT, a fixed count after a warm-up (before the servers start, and again after they
   stop; the ratio uses the better of the two).
2. Escalations: one `gunicorn -c webapp/gunicorn_conf.py wsgi:app` (gevent, one worker), one
   Celery worker (`--pool=threads -c 4`) fanning out to a real SMTP server (aiosmtpd, a
   process of its own), one account with 5 seniors and enough sessions (seeded in SQL); 50
   client threads, each with its own keep-alive httpx client, POST
   /api/v1/ai-sessions/{id}/handoff {"intent": "escalate", ...} on distinct sessions:
   - with --rate, first a paced phase (the clients post on a fixed schedule of that many a
     second in all: latency below saturation), then a wait until the worker is idle;
   - then the closed loop the targets are about (each client posts again as soon as it has
     its answer), a fixed count after a warm-up; throughput, latency percentiles, errors,
     CPU per process, and how far the worker's fan-out fell behind.

Targets (DESIGN.md, "Performance targets"): escalation throughput >= 1/10 of bare inserts,
p99 < 50 ms. (In a closed loop the mean latency is clients / throughput: a 50 ms mean at 50
clients takes 1,000 escalations a second.) Uses a fresh database (dropped at the end) and
Redis logical db 13 (or another free one). Prints the figures and writes
bench/results/<--name, default create>.json. Not run by CI.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import httpx
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    FAST_KDF,
    ROOT,
    CpuMeter,
    Profiler,
    SmtpSink,
    base_urls,
    children_of,
    delivery_counts,
    fresh_database,
    machine,
    redis_db,
    seed_account,
    start_gunicorn,
    start_worker,
    summary_ms,
    write_results,
)

NOTE = ("Tried re-keying and matching the phase 2 proposals; tunnel still drops hourly. "
        "Need someone who knows the branch firewall.")


# ---- 1. bare inserts --------------------------------------------------------------------------

def bare_inserts(database_url: str, threads: int, total: int, warmup: int) -> dict:
    """`threads` connections, each INSERTing one row and COMMITting, total/threads times each
    after warmup/threads untimed ones; throughput over the timed part."""
    dsn = database_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_insert (id bigserial PRIMARY KEY,"
                    " note text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
    conn.close()
    per_thread, warm_per_thread = total // threads, max(1, warmup // threads)
    barrier = threading.Barrier(threads + 1, timeout=120)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    finished = [0.0] * threads
    errors: list[str] = []

    def run(index: int) -> None:
        try:
            conn = psycopg2.connect(dsn)
            cur = conn.cursor()
            for _ in range(warm_per_thread):
                cur.execute("INSERT INTO bench_insert (note) VALUES (%s)", ("warm-up",))
                conn.commit()
        except (psycopg2.Error, OSError) as error:  # reported, never hangs the barrier
            errors.append(repr(error))
            barrier.abort()
            return
        barrier.wait()
        mine = latencies[index]
        for _ in range(per_thread):
            started = time.perf_counter()
            cur.execute("INSERT INTO bench_insert (note) VALUES (%s)", ("a small row",))
            conn.commit()
            mine.append(time.perf_counter() - started)
        finished[index] = time.perf_counter()
        conn.close()

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join(300)
    if errors:
        raise RuntimeError(f"bare inserts failed: {errors[:3]}")
    elapsed = max(finished) - began
    done = sum(len(values) for values in latencies)
    return {"threads": threads, "inserts": done, "elapsed_s": round(elapsed, 3),
            "throughput_per_s": round(done / elapsed, 1),
            "latency_ms": summary_ms([v for values in latencies for v in values])}


# ---- 2. escalations ---------------------------------------------------------------------------

def escalate_under_load(base_url: str, account: dict, clients: int, total: int, warmup: int,
                        meter: CpuMeter, profile: Profiler | None = None,
                        rate: float | None = None) -> dict:
    """Closed loop (each client posts again as soon as its answer is in) or, with `rate`, the
    same clients posting on a fixed schedule of `rate` escalations a second in all."""
    users = account["users"]
    per_client, warm_per_client = total // clients, math.ceil(warmup / clients)
    # each client gets its own sessions, owned by the senior it posts as
    plans: list[tuple[dict, list[int]]] = []
    taken = {user["id"]: 0 for user in users}
    for index in range(clients):
        user = users[index % len(users)]
        need = per_client + warm_per_client
        start = taken[user["id"]]
        plans.append((user, user["sessions"][start:start + need]))
        taken[user["id"]] += need
        if len(plans[-1][1]) < need:
            raise RuntimeError("not enough sessions seeded")
    for user in users:  # a later phase takes fresh sessions
        user["sessions"] = user["sessions"][taken[user["id"]]:]

    barrier = threading.Barrier(clients + 1, timeout=300)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    statuses: list[dict[str, int]] = [{} for _ in range(clients)]
    samples: list[str] = []
    finished = [0.0] * clients

    def post(http: httpx.Client, user: dict, session_id: int) -> tuple[float, str]:
        started = time.perf_counter()
        try:
            response = http.post(f"{base_url}/api/v1/ai-sessions/{session_id}/handoff",
                                 headers=user["headers"],
                                 json={"intent": "escalate", "note": NOTE})
            outcome = str(response.status_code)
            if response.status_code != 201 and len(samples) < 5:
                samples.append(f"{response.status_code} {response.text[:200]}")
        except httpx.HTTPError as error:
            outcome = error.__class__.__name__
            if len(samples) < 5:
                samples.append(repr(error))
        return time.perf_counter() - started, outcome

    def run(index: int) -> None:
        user, sessions = plans[index]
        with httpx.Client(timeout=httpx.Timeout(10.0),
                          limits=httpx.Limits(max_connections=1,
                                              max_keepalive_connections=1)) as http:
            if not rate:  # closed loop: warm up flat out, then wait for the others
                for session_id in sessions[:warm_per_client]:
                    post(http, user, session_id)
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                return
            mine, counts = latencies[index], statuses[index]
            # paced: the warm-up keeps to the schedule too, so the measured part starts from
            # a process already settled at that rate (not from a burst)
            first = 0 if rate else warm_per_client
            for number, session_id in enumerate(sessions[first:]):
                if rate:
                    wait = began[0] + (number * clients + index) / rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                elapsed, outcome = post(http, user, session_id)
                if rate and number < warm_per_client:
                    continue
                mine.append(elapsed)
                counts[outcome] = counts.get(outcome, 0) + 1
            finished[index] = time.perf_counter()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    if profile:
        profile.start()
    began = [0.0]
    barrier.wait()
    began[0] = time.perf_counter()
    measured_from = began[0] + (warm_per_client * clients / rate if rate else 0.0)
    time.sleep(max(0.0, measured_from - time.perf_counter()))
    meter.start()
    for thread in threads:
        thread.join(600)
    cpu = meter.stop()
    if profile:
        profile.stop()
    elapsed = max(finished) - measured_from
    outcomes: dict[str, int] = {}
    for counts in statuses:
        for outcome, count in counts.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
    done = sum(outcomes.values())
    return {"clients": clients, "offered_rate_per_s": rate, "requests": done,
            "warmup_requests": warm_per_client * clients,
            "elapsed_s": round(elapsed, 3), "throughput_per_s": round(done / elapsed, 1),
            "latency_ms": summary_ms([v for values in latencies for v in values]),
            "outcomes": outcomes, "errors": done - outcomes.get("201", 0),
            "error_samples": samples, "cpu": cpu}


def wait_until_idle(database_url: str, timeout: float) -> float:
    """Until the worker has no pending or in-flight delivery rows (at most `timeout`)."""
    from sqlalchemy import create_engine, text

    from webapp.config import psycopg2_url
    engine = create_engine(psycopg2_url(database_url))
    began = time.monotonic()
    try:
        with engine.connect() as conn:
            while time.monotonic() - began < timeout:
                busy = conn.execute(text("SELECT count(*) FROM deliveries WHERE status IN"
                                         " ('pending', 'sending')")).scalar()
                conn.rollback()
                if not busy:
                    break
                time.sleep(0.5)
    finally:
        engine.dispose()
    return round(time.monotonic() - began, 1)


def drain(database_url: str, sink: SmtpSink, expected_emails: int, timeout: float) -> dict:
    """After the load: how long the worker takes to send what is left (bounded)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout and sink.count() < expected_emails:
        time.sleep(0.5)
    return {"emails_expected": expected_emails, "emails_accepted": sink.count(),
            "drained_in_s": round(time.monotonic() - began, 1),
            "drained": sink.count() >= expected_emails}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--total", type=int, default=2000, help="timed escalations")
    parser.add_argument("--warmup", type=int, default=200, help="untimed escalations first")
    parser.add_argument("--seniors", type=int, default=5)
    parser.add_argument("--inserts", type=int, default=10000, help="timed bare inserts")
    parser.add_argument("--insert-warmup", type=int, default=1000)
    parser.add_argument("--worker-concurrency", type=int, default=4)
    parser.add_argument("--no-worker", action="store_true",
                        help="diagnostic: the web process alone (the dispatch messages wait in "
                             "the bench's Redis db), to tell its cost from the worker's")
    parser.add_argument("--mail", choices=("smtp", "suppress"), default="smtp",
                        help="a real SMTP server (default), or MAIL_SUPPRESS_SEND=true")
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="after the load, wait this long at most for the emails")
    parser.add_argument("--rate", type=float, default=None,
                        help="first run a paced phase: the same clients posting --paced-total "
                             "escalations at this many a second in all (latency below "
                             "saturation)")
    parser.add_argument("--paced-total", type=int, default=600)
    parser.add_argument("--paced-warmup", type=int, default=250,
                        help="unmeasured escalations at the same pace first")
    parser.add_argument("--name", default="create", help="results file name")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="record py-spy profiles (raw, collapsed stacks) of the web and "
                             "worker processes during the timed load into DIR")
    args = parser.parse_args()

    database_base, redis_base = base_urls()
    results: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "machine": machine(), "argv": sys.argv[1:]}
    with redis_db(redis_base) as redis_url, fresh_database(database_base) as database_url:
        insert_before = bare_inserts(database_url, args.clients, args.inserts,
                                     args.insert_warmup)
        print("bare inserts (before):", json.dumps(insert_before), flush=True)

        sink = SmtpSink() if args.mail == "smtp" and not args.no_worker else None
        env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url,
               "CELERY_BROKER_URL": redis_url, "SECRET_KEY": "bench-secret",
               "PUBLIC_BASE_URL": "http://127.0.0.1", **FAST_KDF}
        if sink:
            env.update({"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(sink.port)})
        else:
            env["MAIL_SUPPRESS_SEND"] = "true"
        web = worker = None
        try:
            per_client = (args.total + (args.paced_total if args.rate else 0)) \
                // args.clients + math.ceil(args.warmup / args.clients) \
                + math.ceil(args.paced_warmup / args.clients) + 1
            sessions_per_senior = math.ceil(args.clients / args.seniors) * per_client
            account = seed_account(env, args.seniors, sessions_per_senior)
            web, base_url = start_gunicorn(env)
            worker = None if args.no_worker else start_worker(env, redis_url,
                                                              args.worker_concurrency)
            web_workers = children_of(web.pid)
            groups = {"bench clients": [os.getpid()], "gunicorn worker": web_workers}
            if worker:
                groups["celery worker"] = [worker.pid]
            if sink:
                groups["smtp sink"] = [sink.process.pid]
            meter = CpuMeter(groups)
            targets = {"gunicorn-worker": web_workers[0]}
            if worker:
                targets["celery-worker"] = worker.pid
            profile = Profiler(args.profile, targets) if args.profile else None
            paced = None
            if args.rate:  # first, while the worker has no backlog
                paced = escalate_under_load(base_url, account, args.clients, args.paced_total,
                                            args.paced_warmup, CpuMeter(groups),
                                            rate=args.rate)
                print("paced escalations:", json.dumps(paced), flush=True)
                if worker:
                    paced["worker_idle_after_s"] = wait_until_idle(database_url,
                                                                   args.drain_timeout)
            load = escalate_under_load(base_url, account, args.clients, args.total,
                                       args.warmup, meter, profile)
            print("escalations:", json.dumps(load), flush=True)
            # Little's law: with every client always waiting on one request, the mean latency
            # is clients / throughput, whatever the server does
            load["littles_law_mean_latency_ms"] = round(
                1000 * args.clients / load["throughput_per_s"], 1)
            load["throughput_a_50_ms_mean_needs_per_s"] = round(args.clients / 0.050)
            if paced:
                load["paced"] = paced
            load["deliveries_when_load_ended"] = delivery_counts(database_url)
            if sink:
                posted = load["requests"] + load["warmup_requests"] + (
                    paced["requests"] + paced["warmup_requests"] if paced else 0)
                load["emails_when_load_ended"] = sink.count()
                load["drain"] = drain(database_url, sink, posted * (args.seniors - 1),
                                      args.drain_timeout)
        finally:
            if web:
                web.stop()
            if worker:
                worker.stop()
            if sink:
                sink.stop()
        insert_after = bare_inserts(database_url, args.clients, args.inserts,
                                    args.insert_warmup)
        print("bare inserts (after):", json.dumps(insert_after), flush=True)

    reference = max(insert_before["throughput_per_s"], insert_after["throughput_per_s"])
    ratio = load["throughput_per_s"] / reference
    results.update({
        "server": "gunicorn -c webapp/gunicorn_conf.py wsgi:app (gevent, 1 worker); " + (
            "no worker" if args.no_worker else
            f"celery worker --pool=threads -c {args.worker_concurrency}; mail: {args.mail}"),
        "bare_inserts_before": insert_before, "bare_inserts_after": insert_after,
        "escalations": load,
        "ratio_to_bare_inserts": round(ratio, 3),
        "targets": {
            "throughput_at_least_a_tenth_of_bare_inserts": ratio >= 0.1,
            "p99_under_50_ms": load["latency_ms"]["p99"] < 50,
            "no_errors": load["errors"] == 0,
        },
    })
    path = write_results(args.name, results)
    print(json.dumps({k: results[k] for k in ("ratio_to_bare_inserts", "targets")}, indent=2))
    print(f"escalations: {load['throughput_per_s']}/s, latency {load['latency_ms']}, "
          f"errors {load['errors']}; bare inserts {reference}/s")
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
