"""The worker's commonest path, in this process, without Celery: CPU per run.

    .venv/bin/python bench/worker_paths.py [--escalations 300] [--profile]

Creates escalations (5 seniors, so 4 emails each) through the API on a fresh database with no
broker reachable, so nothing else touches their rows; then drives each escalation's emails and
its assessment row as dispatch does, claimed together (one claim; the heuristic, its outcome
and the announcement; 4 messages to a local SMTP server and their outcomes), and prints the
CPU and wall time per run. Writes bench/results/worker_paths.json. Loopback only; not run by CI."""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    FAST_KDF,
    SmtpSink,
    base_urls,
    fresh_database,
    machine,
    seed_account,
    write_results,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--escalations", type=int, default=300)
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the runs instead of timing them")
    args = parser.parse_args()
    database_base, redis_base = base_urls()
    results: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "machine": machine(), "argv": sys.argv[1:]}
    with fresh_database(database_base) as url:
        sink = SmtpSink()
        env = {"DATABASE_URL": url, "REDIS_URL": redis_base,
               "CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "SECRET_KEY": "bench-secret",
               "PUBLIC_BASE_URL": "http://127.0.0.1", "LOG_LEVEL": "ERROR",
               "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(sink.port), **FAST_KDF}
        seniors = 5
        per_senior = args.escalations // seniors + 1
        account = seed_account(env, seniors, per_senior)
        from webapp import create_app
        from webapp.config import Config
        from webapp.extensions import db
        from webapp.models import Delivery
        from webapp.services import channels
        app = create_app(Config.from_env(env=env))
        client, handoff_ids = app.test_client(), []
        for user in account["users"]:
            for session_id in user["sessions"][:per_senior]:
                answer = client.post(f"/api/v1/ai-sessions/{session_id}/handoff",
                                     headers=user["headers"], json={
                                         "intent": "escalate",
                                         "note": "DNS fails on DC01 since the update; tried "
                                                 "ipconfig /flushdns"})
                if answer.status_code != 201:
                    raise RuntimeError(f"POST answered {answer.status_code}: {answer.text}")
                handoff_ids.append(answer.get_json()["id"])
        with app.app_context():
            rows = db.session.execute(db.select(
                Delivery.id, Delivery.channel, Delivery.handoff_id).where(
                Delivery.handoff_id.in_(handoff_ids)).order_by(Delivery.id)).all()
            db.session.remove()
        groups: dict[int, list[tuple[int, str]]] = {}
        for row in rows:
            if row.channel in ("email", "assessment"):
                groups.setdefault(row.handoff_id, []).append((row.id, row.channel))
        # as dispatch runs them: the assessment, then the emails, claimed together
        items = [[[row for row in group if row[1] == channel]
                  for channel in ("assessment", "email")] for group in groups.values()]
        with app.app_context():
            channels.drive_together(items[0])   # warm: first connections, compiled statements
            db.session.remove()
            profile = cProfile.Profile() if args.profile else None
            cpu, wall = time.process_time(), time.perf_counter()
            if profile:
                profile.enable()
            for item in items[1:]:
                channels.drive_together(item)
                db.session.remove()
            if profile:
                profile.disable()
                pstats.Stats(profile).sort_stats("cumulative").print_stats(50)
            else:
                count = len(items) - 1
                results["dispatch"] = {
                    "runs": count, "emails_per_run": len(items[0][1]),
                    "cpu_ms_per_run": round(1000 * (time.process_time() - cpu) / count, 2),
                    "wall_ms_per_run": round(1000 * (time.perf_counter() - wall) / count, 2)}
                print(f"dispatch: {results['dispatch']}", flush=True)
        sink.stop()
    if not args.profile:
        print(f"written to {write_results('worker_paths', results)}")


if __name__ == "__main__":
    main()
