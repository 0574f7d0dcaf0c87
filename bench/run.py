"""Every performance target in one command: runs the benches one after another, writes each
one's bench/results/<name>.json, then bench/results/summary.json (each target, its baseline in
the same run, the figure, met or not), the plot bench/results/bench.png, and the table between
the markers in bench/README.md.

    python3 bench/run.py            # the full run (about 10 minutes on 2 cores)
    python3 bench/run.py --quick    # smaller counts, to check the benches run (about 4 minutes)
    python3 bench/run.py --only pipeline,fanout

Not run by CI. Loopback only. Sets up .venv first (bin/dev.py) when run with another Python.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
START, END = "<!-- bench/run.py table: start -->", "<!-- bench/run.py table: end -->"
STEPS = ("create", "paced", "pipeline", "fanout", "sse")


def ensure_venv() -> None:
    """Run inside the project's virtualenv, with the bench extra installed."""
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        return
    subprocess.run([sys.executable, str(ROOT / "bin" / "dev.py"), "test", "--co", "-q",
                    "tests/test_config.py"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])


def bench(script: str, *args: str) -> None:
    print(f"\n== {script} {' '.join(args)}", flush=True)
    began = time.monotonic()
    subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], check=True, cwd=ROOT)
    print(f"== {script}: {time.monotonic() - began:.0f} s", flush=True)


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_all(quick: bool, only: set[str], profile: str | None) -> None:
    inserts = ["--inserts", "2000" if quick else "5000", "--insert-warmup", "500"]
    if "create" in only:   # the web process alone, 50 closed-loop clients: its maximum rate
        bench("create_bench.py", "--no-worker", "--total", "500" if quick else "2000",
              "--warmup", "100" if quick else "200", *inserts, "--name", "run_create",
              *(["--profile", f"{profile}/create"] if profile else []))
    if "paced" in only:    # latency against offered rate, at shares of that maximum
        maximum = (load("run_create") or {}).get("escalations", {}).get("throughput_per_s")
        if not maximum:
            raise SystemExit("the paced runs need run_create.json: run --only create first")
        for share in ((0.5,) if quick else (0.25, 0.5, 0.75)):
            bench("create_bench.py", "--no-worker", "--rate", f"{maximum * share:.1f}",
                  "--paced-total", "300" if quick else "600", "--paced-warmup", "100",
                  "--total", "100", "--warmup", "50", "--inserts", "1000",
                  "--insert-warmup", "200", "--name", f"run_paced_{int(share * 100)}")
    if "pipeline" in only:
        bench("pipeline_bench.py", "--rate", "100", "--seconds", "15" if quick else "60",
              "--name", "run_pipeline",
              *(["--profile", f"{profile}/pipeline"] if profile else []))
    if "fanout" in only:
        bench("email_fanout_bench.py", "--rounds", "3" if quick else "5", "--name",
              "run_fanout")
    if "sse" in only:
        bench("sse_bench.py", "--posts", "200", "--subscribers", "2000" if quick else "10000",
              "--accounts", "10", "--storm", "2000")


def row(target: str, baseline: str, figure: str, met: bool | None) -> dict:
    return {"target": target, "baseline": baseline, "figure": figure,
            "met": "yes" if met else "not measured" if met is None else "**no**"}


def summarise() -> list[dict]:
    rows = []
    create = load("run_create")
    if create:
        e = create["escalations"]
        bare = max(create["bare_inserts_before"]["throughput_per_s"],
                   create["bare_inserts_after"]["throughput_per_s"])
        ratio = e["throughput_per_s"] / bare
        cpu = create["escalations"]["cpu"]["cpu_s"]["gunicorn worker"] / e["requests"]
        rows.append(row("create, web alone, 50 clients: >= 0.10 of bare INSERT+COMMIT",
                        f"bare inserts {bare:,.0f}/s", f"{e['throughput_per_s']}/s = "
                        f"{ratio:.3f} ({1000 * cpu:.1f} ms web CPU per POST)", ratio >= 0.10))
        rows.append(row("create, closed loop: p99 < 100 ms", "-",
                        f"p99 {e['latency_ms']['p99']:.0f} ms", e["latency_ms"]["p99"] < 100))
        rows.append(row("create: no non-2xx", "-", f"{e['errors']} of {e['requests']}",
                        e["errors"] == 0))
        paced = load("run_paced_50")
        if paced:
            p = paced["escalations"]["paced"]
            rows.append(row("create, paced at 50% of the maximum: p99 < 20 ms",
                            f"maximum {e['throughput_per_s']}/s",
                            f"{p['offered_rate_per_s']}/s offered, p99 "
                            f"{p['latency_ms']['p99']:.1f} ms", p["latency_ms"]["p99"] < 20))
    pipe = load("run_pipeline")
    if pipe:
        posts, t = pipe["posts"], pipe["targets"]
        rows.append(row("pipeline: >= 100 escalations/s for 60 s, no non-2xx",
                        f"{pipe['setup']['rate_offered_per_s']:.0f}/s offered for "
                        f"{pipe['setup']['seconds']:.0f} s",
                        f"{posts['answered_per_s']}/s answered, {posts['non_2xx']} non-2xx; "
                        f"{pipe['escalations_complete_per_s']}/s delivered end to end",
                        t["sustained_100_per_s"]))
        rows.append(row("pipeline: every email and note within 10 s of its POST", "-",
                        f"{100 * pipe['share_all_emails_within_10_s']:.1f}% of escalations; "
                        f"last email p50/p99 {pipe['post_to_last_email_ms'].get('p50', 0):.0f}"
                        f"/{pipe['post_to_last_email_ms'].get('p99', 0):.0f} ms; note p99 "
                        f"{pipe['notes']['post_to_note_ms'].get('p99', 0):.0f} ms",
                        t["all_within_10_s"]))
        rows.append(row("pipeline: none lost, none doubled", "-",
                        f"emails {pipe['emails']['accepted_distinct']}/"
                        f"{pipe['emails']['expected']} (doubled {pipe['emails']['doubled']}), "
                        f"notes {pipe['notes']['written_distinct']}/{pipe['notes']['expected']}"
                        f" (doubled {pipe['notes']['doubled']})",
                        t["none_lost"] and t["none_doubled"]))
        rows.append(row("pipeline: <= 8 ms worker CPU per escalation", "-",
                        f"{pipe['worker_cpu_ms_per_escalation']} ms",
                        t["worker_cpu_at_most_8_ms"]))
    fan = load("run_fanout")
    if fan:
        rounds = [r["last_after_post_s"] for r in fan["rounds"]]
        rows.append(row("fan-out to 100 teammates: all within 0.5 s, one worker", "-",
                        "rounds " + ", ".join(f"{r:.2f}" for r in rounds) + " s",
                        max(rounds) <= 0.5))
    sse = load("sse")
    if sse:
        idle = sse["idle_subscribers"]
        asked = idle.get("asked", idle["subscribers"])
        refused = sum((idle.get("not_ready") or {}).values())
        rows.append(row(f"idle subscribers: {asked:,} under 30 KB each, one "
                        "event to all within 1 s", "10,000 wanted",
                        f"{idle['subscribers']:,} got `ready`"
                        + (f" ({refused:,} did not)" if refused else "") + ", "
                        f"{idle['rss_kib_per_subscriber']} KiB each, "
                        f"{idle['received_within_1s_of_post_start']:,} within 1 s",
                        idle["subscribers"] >= 10000 and idle["rss_kib_per_subscriber"] < 30
                        and idle["received_within_1s_of_post_start"] == idle["subscribers"]))
        arrival = sse["post_to_arrival"]["arrival_after_post_returned_ms"]["p99"]
        rows.append(row("POST-to-arrival p99 < 20 ms", "-", f"{arrival} ms", arrival < 20))
        storm = sse.get("reconnect_storm")
        if storm:
            met = (storm["clients"] >= 2000 and storm["ready_within_10_s"] == storm["clients"]
                   and storm["answered_503"] == 0)
            slowest = (storm["time_to_ready_ms"] or {}).get("max", 0) / 1000
            rows.append(row("reconnect storm: 2,000 opens, all `ready` within 10 s, no 503",
                            f"{storm['clients']:,} clients, each its own user",
                            f"{storm['ready_within_10_s']:,} ready within 10 s (slowest "
                            f"{slowest:.1f} s), {storm['answered_503']} answered 503", met))
    if not sse or not sse.get("reconnect_storm"):
        rows.append(row("reconnect storm: 2,000 opens, all `ready` within 10 s, no 503", "-",
                        "not measured in this run", None))
    return rows


def plot(path: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    points = []
    for name in ("run_paced_25", "run_paced_50", "run_paced_75"):
        found = load(name)
        if found:
            paced = found["escalations"]["paced"]
            points.append((paced["offered_rate_per_s"], paced["latency_ms"]))
    create = load("run_create")
    if create:
        points.append((create["escalations"]["throughput_per_s"],
                       create["escalations"]["latency_ms"]))
    for key in ("p50", "p95", "p99"):
        left.plot([rate for rate, _ in points], [lat[key] for _, lat in points], "o-",
                  label=key)
    left.set(xlabel="offered rate (escalations/s); last point: closed loop, 50 clients",
             ylabel="POST latency (ms)", yscale="log", title="create, web process alone")
    left.legend()
    pipe = load("run_pipeline")
    if pipe:
        line = pipe["timeline"]
        for key in ("posts", "emails", "notes"):
            right.plot(range(len(line[key])), line[key], label=f"{key} per second")
        right.set(xlabel="seconds since the first POST", ylabel="per second",
                  title=f"pipeline at {pipe['setup']['rate_offered_per_s']:.0f}/s offered, "
                        f"{pipe['setup']['recipients_per_escalation']} emails + 1 note each")
        right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    return True


def table(rows: list[dict]) -> str:
    lines = ["| target | baseline (same run) | figure | met |", "|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['baseline']} | {r['figure']} | {r['met']} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ensure_venv()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(STEPS),
                        help=f"comma-separated steps of {', '.join(STEPS)}")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="py-spy profiles of the web and worker during the create and "
                             "pipeline runs, into DIR/create and DIR/pipeline")
    parser.add_argument("--summary-only", action="store_true",
                        help="rebuild the summary, plot and table from the results on disk")
    args = parser.parse_args()
    if not args.summary_only:
        run_all(args.quick, set(args.only.split(",")), args.profile)
    rows = summarise()
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (RESULTS / "summary.json").write_text(json.dumps({"when": when, "rows": rows}, indent=2)
                                          + "\n")
    plot(RESULTS / "bench.png")
    readme = ROOT / "bench" / "README.md"
    text = readme.read_text()
    block = f"{START}\n{table(rows)}\n\n(`bench/run.py`, {when})\n{END}"
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text += f"\n## The targets, from `bench/run.py`\n\n{block}\n"
    readme.write_text(text)
    print("\n" + table(rows))
    print("\nwritten: bench/results/summary.json, bench/results/bench.png, bench/README.md")


if __name__ == "__main__":
    main()
