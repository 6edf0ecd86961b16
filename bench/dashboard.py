"""The web dashboard under load (issue 22).

    .venv/bin/python bench/dashboard.py [--stored 100000] [--browsers 50] [--jobs 300]

1. A default server (SQLite) holding --stored jobs (one cpu held by a blocker, the rest
   queued): server time of the jobs page's first screen (`GET /ui/jobs`, signed in, 50 rows
   rendered) and of its other views (a state filter, a far page, a name search, a sort by
   name), beside the API's own first page (`GET /api/v1/jobs?limit=50`) in the same run.
2. A server running --jobs short host jobs (8 at a time) while N "browsers" follow live
   updates: N clients on the dashboard's `/ui/events` (one server-side reader fans out to
   them all), against the same run with none, and with N clients on the API's
   `/api/v1/events/stream` (one database poll per client). The server's CPU seconds and
   peak RSS over the run are read from /proc, and each client counts the events it got.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.dispatch import admin_client, start_server, wait_all_final  # noqa: E402
from bench.scale import cpu_s, fill, rss_mb, timed  # noqa: E402
from kran.services.live import PER_USER  # noqa: E402


def signed_in(url: str, key_id: str, secret: str) -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=120)
    pre = re.search(r'name="pre" value="([^"]+)"', c.get("/ui/login").text)
    assert pre
    r = c.post("/ui/login", data={"key_id": key_id, "secret": secret, "pre": pre[1]})
    assert r.status_code == 303, r.text
    return c


def first_screen(stored: int) -> None:
    server = start_server(cpus=1, KRAN_QUEUE_MAX=str(stored + 10))
    try:
        with admin_client(server, timeout=600) as api:
            api.post("/api/v1/jobs", json={"command": ["sleep", "3600"], "cpus": "1"}).raise_for_status()
            t = time.perf_counter()
            fill(api, stored - 1, 0)
            print(f"{stored} jobs stored in {time.perf_counter() - t:.0f} s", flush=True)
            creds = server.credentials
            web = signed_in(server.url, creds["key_id"], creds["secret"])
            try:
                rows = [
                    ("API first page, GET /api/v1/jobs?limit=50 (baseline)", api, "/api/v1/jobs?limit=50"),
                    ("dashboard first screen, GET /ui/jobs", web, "/ui/jobs"),
                    ("  state filter (queued)", web, "/ui/jobs?state=queued"),
                    ("  state filter (succeeded: none)", web, "/ui/jobs?state=succeeded"),
                    ("  page 200 (rows 9,951-10,000)", web, "/ui/jobs?page=200"),
                    ("  name search", web, "/ui/jobs?name=nothing-like-it"),
                    ("  sorted by name", web, "/ui/jobs?sort=name&dir=asc"),
                    ("  one job's page", web, f"/ui/jobs/{stored // 2}"),
                ]
                base = None
                for label, client, path in rows:
                    ms = timed(client, path)
                    base = base or ms
                    print(f"{label:58} {ms:7.1f} ms  ({ms / base:4.1f} x the API's page)", flush=True)
            finally:
                web.close()
    finally:
        server.stop()


def follower(
    url: str, path: str, headers: dict[str, str], cookies: Any, counts: list[int], i: int, stop: threading.Event
) -> None:
    with httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=None), headers=headers, cookies=cookies) as c:
        try:
            with c.stream("GET", path) as r:
                for line in r.iter_lines():
                    if line.startswith("event: job"):
                        counts[i] += 1
                    if stop.is_set():
                        return
        except httpx.HTTPError:  # the server stopped at the end of the run
            return


def live_run(jobs: int, browsers: int, kind: str) -> dict[str, float]:
    server = start_server(cpus=8)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    counts = [0] * browsers
    try:
        assert server.proc is not None
        pid = server.proc.pid
        creds = server.credentials
        with admin_client(server) as api:
            if kind != "none":
                # a user may hold PER_USER live streams: the followers are admins enough to hold them all
                keys = [(creds["key_id"], creds["secret"])]
                keys += [server.add_user(f"watcher{k}", "admin") for k in range(1, -(-browsers // PER_USER))]
                webs = [signed_in(server.url, *key) for key in keys]
                for i in range(browsers):
                    key_id, secret = keys[i // PER_USER]
                    if kind == "ui":
                        args = ("/ui/events", {}, webs[i // PER_USER].cookies)
                    else:
                        args = ("/api/v1/events/stream", {"Authorization": f"Bearer {key_id}.{secret}"}, None)
                    t = threading.Thread(target=follower, args=(server.url, *args, counts, i, stop), daemon=True)
                    t.start()
                    threads.append(t)
                time.sleep(2)
            cpu0, t0, peak = cpu_s(pid), time.perf_counter(), rss_mb(pid)
            batch = [{"command": ["true"], "cpus": "1", "mem": "16"}] * jobs
            api.post("/api/v1/jobs/batch", json={"jobs": batch}).raise_for_status()
            while True:
                peak = max(peak, rss_mb(pid))
                done = sum(
                    v
                    for k, v in api.get("/status").json()["jobs_by_state"].items()
                    if k not in ("queued", "starting", "running")
                )
                if done >= jobs:
                    break
                time.sleep(0.2)
            time.sleep(1.5)  # the last events reach the followers
            took = time.perf_counter() - t0
            cpu = cpu_s(pid) - cpu0
            wait_all_final(api, jobs)
        return {"took": took, "cpu": cpu, "peak": peak, "events_min": min(counts) if counts else 0}
    finally:
        stop.set()
        server.stop()


def live(jobs: int, browsers: int) -> None:
    print(f"\n{jobs} host jobs (`true`), 8 at a time, {browsers} followers:", flush=True)
    base = None
    for kind, label in (
        ("none", "no browser"),
        ("ui", f"{browsers} on /ui/events"),
        ("api", f"{browsers} on /api/v1/events/stream"),
    ):
        r = live_run(jobs, browsers, kind)
        base = base or r
        print(
            f"{label:34} run {r['took']:5.1f} s; server CPU {r['cpu']:5.1f} s ({r['cpu'] / base['cpu']:4.2f} x none); "
            f"peak RSS {r['peak']:5.0f} MB; fewest events a follower got: {r['events_min']:.0f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stored", type=int, default=100_000)
    ap.add_argument("--browsers", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--skip-first-screen", action="store_true")
    args = ap.parse_args()
    if not args.skip_first_screen:
        first_screen(args.stored)
    live(args.jobs, args.browsers)


if __name__ == "__main__":
    main()
