"""Screenshots of every dashboard page into docs/ui/ (run by hand: not part of the tests).

    .venv/bin/python scripts/ui-screenshots.py [--out docs/ui]

Starts a `kran serve` of its own (a temp data dir), makes sample work (users, finished,
failed, running and queued jobs, a schedule, a small CWL workflow run with the test
busybox image `kran-test/busybox`, which the test suite builds), then drives Debian's
headless Chromium over every page at 1280 px, and the jobs page at phone width.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.dispatch import admin_client, start_server  # noqa: E402
from tests.browser import sign_in, start_browser, wait_for  # noqa: E402

IMAGE = "kran-test/busybox:latest"
TOOL = """cwlVersion: v1.2
class: CommandLineTool
requirements: {DockerRequirement: {dockerPull: "%s"}}
baseCommand: [sh, -c]
arguments: ["sleep 1; echo $0", $(inputs.word)]
inputs: {word: string}
stdout: said.txt
outputs: {out: {type: stdout}}
"""
CAT = """cwlVersion: v1.2
class: CommandLineTool
requirements: {DockerRequirement: {dockerPull: "%s"}}
baseCommand: cat
inputs: {files: {type: "File[]", inputBinding: {position: 1}}}
stdout: all.txt
outputs: {out: {type: stdout}}
"""
FLOW = """cwlVersion: v1.2
class: Workflow
requirements: {ScatterFeatureRequirement: {}, MultipleInputFeatureRequirement: {}}
inputs: {words: "string[]"}
outputs: {all: {type: File, outputSource: gather/out}}
steps:
  first: {run: echo.cwl, in: {word: {default: start}}, out: [out]}
  say: {run: echo.cwl, scatter: word, in: {word: words}, out: [out]}
  gather: {run: cat.cwl, in: {files: {source: [first/out, say/out], linkMerge: merge_flattened}}, out: [out]}
"""


def sample_work(server) -> dict[str, int]:  # type: ignore[no-untyped-def]
    ids: dict[str, int] = {}
    server.add_user("alice")
    server.add_user("bob")
    with admin_client(server) as api:
        for user in ("alice", "bob"):
            api.post("/api/v1/accounts", json={"name": f"lab-{user}", "shares": 2 if user == "alice" else 1})
            api.post(f"/api/v1/accounts/lab-{user}/users", json={"user": user})
        ids["done"] = api.post(
            "/api/v1/jobs",
            json={
                "sh": "for i in 1 2 3; do echo step $i; done; echo 42 > result.txt; mkdir plots",
                "name": "align-sample",
                "labels": {"project": "demo"},
            },
        ).json()["id"]
        api.post("/api/v1/jobs", json={"sh": "echo oops >&2; exit 3", "name": "broken-step", "retries": 1})
        api.post("/api/v1/jobs", json={"image": IMAGE, "command": ["echo", "from a container"], "name": "container"})
        ids["busy"] = api.post(
            "/api/v1/jobs",
            json={
                "sh": "i=0; while :; do i=$((i+1)); echo tick $i; x=$(seq 1 20000 | tail -1); sleep 0.2; done",
                "name": "busy-loop",
                "cpus": "1-2",
                "mem": "256",
            },
        ).json()["id"]
        for n in range(3):
            api.post("/api/v1/jobs", json={"command": ["sleep", "600"], "cpus": "2", "name": f"waits-{n}"})
        api.post(
            "/api/v1/schedules",
            json={
                "name": "nightly-index",
                "cron": "30 2 * * *",
                "tz": "Europe/Berlin",
                "job": {"sh": "echo reindex", "name": "reindex"},
            },
        )
    for user in ("alice", "bob"):
        with server.api(user) as api:
            for n in range(4 if user == "alice" else 2):
                api.post("/api/v1/jobs", json={"sh": f"echo {user} {n}", "name": f"{user}-analysis-{n}", "cpus": "0.5"})
    return ids


def workflow(server) -> int:  # type: ignore[no-untyped-def]
    files = [
        ("file", ("flow.cwl", FLOW.encode())),
        ("file", ("echo.cwl", (TOOL % IMAGE).encode())),
        ("file", ("cat.cwl", (CAT % IMAGE).encode())),
    ]
    run = {"workflow": "flow.cwl", "inputs": {"words": ["kran", "runs", "workflows"]}, "name": "example"}
    with admin_client(server) as api:
        r = api.post("/api/v1/workflows", data={"run": json.dumps(run)}, files=files)
        r.raise_for_status()
        return int(r.json()["id"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "ui"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = start_server(cpus=4)
    tmp = Path(tempfile.mkdtemp())
    browser = start_browser(tmp)
    try:
        ids = sample_work(server)
        run = workflow(server)
        time.sleep(20)  # some samples of the busy job; the workflow's steps run
        creds = server.credentials
        browser.get(f"{server.url}/ui/login")
        browser.save_screenshot(str(out / "login.png"))
        sign_in(browser, server.url, creds["key_id"], creds["secret"])
        pages = {
            "jobs": "/ui/jobs",
            "job": f"/ui/jobs/{ids['busy']}",
            "job-done": f"/ui/jobs/{ids['done']}",
            "submit": f"/ui/submit?from={ids['done']}",
            "nodes": "/ui/nodes",
            "images": "/ui/images",
            "schedules": "/ui/schedules",
            "workflows": "/ui/workflows",
            "usage": "/ui/usage?by=user",
            "admin": "/ui/admin",
        }
        pages["workflow"] = f"/ui/workflows/{run}"
        for name, path in pages.items():
            browser.get(server.url + path)
            wait_for(lambda: browser.execute_script("return document.readyState") == "complete", 10, path)
            time.sleep(1.0)  # charts drawn, the log streamed
            height = browser.execute_script("return document.documentElement.scrollHeight")
            browser.set_window_size(1280, min(max(height, 700), 2400))
            browser.save_screenshot(str(out / f"{name}.png"))
            browser.set_window_size(1280, 900)
            print("wrote", out / f"{name}.png")
        browser.set_window_size(390, 844)
        browser.get(server.url + "/ui/jobs")
        time.sleep(0.5)
        browser.save_screenshot(str(out / "jobs-phone.png"))
        print("wrote", out / "jobs-phone.png")
    finally:
        browser.quit()
        server.stop()


if __name__ == "__main__":
    main()
