"""Metrics scraped by a real Prometheus, measured usage, usage reports, deploy files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProc, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prometheus(server: ServerProc, tmp_path: Path) -> Any:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed (scripts/test.sh installs Debian's package)")
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    target = server.url.removeprefix("http://")
    cfg.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: kran\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(20)


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5)
    return list(r.json()["data"]["result"])


def test_prometheus_scrapes_the_expected_series(server: ServerProc, prometheus: str) -> None:
    with server.api() as c:
        ids = c.post(
            "/api/v1/jobs/batch", json={"jobs": [{"command": ["true"]}, {"command": ["false"]}, {"command": ["true"]}]}
        ).json()["ids"]
    for i in ids:
        server.wait_state(i, {"succeeded", "failed"})
    wanted = {
        'kran_job_completions_total{state="succeeded"}': 2,
        'kran_job_completions_total{state="failed"}': 1,
        "kran_job_submissions_total": 3,
        "kran_job_starts_total": 3,
        'kran_jobs{state="succeeded"}': 2,
        'kran_queue_length{priority_class="normal"}': 0,
        'kran_node_cpus{kind="total"}': 4,
        "kran_dispatch_latency_seconds_count": 3,
        'sum(kran_api_request_seconds_count{route="/api/v1/jobs/batch",status="201"})': 1,
    }
    deadline = time.monotonic() + 60
    missing: dict[str, Any] = dict(wanted)
    while missing and time.monotonic() < deadline:
        for expr, value in list(missing.items()):
            result = query(prometheus, expr)
            if result and float(result[0]["value"][1]) == value:
                del missing[expr]
        time.sleep(0.5)
    assert missing == {}


def test_metric_labels_stay_bounded(make_server: Any) -> None:
    server = make_server()
    with server.api() as c:
        job = c.post("/api/v1/jobs", json={"command": ["true"]}).json()["id"]
        server.wait_state(job, {"succeeded"})
        c.get(f"/api/v1/jobs/{job}")
        text = c.get("/metrics").text
    assert f'"{job}"' not in text and 'user="' not in text
    assert 'route="/api/v1/jobs/{job_id}"' in text
    per_user = make_server(KRAN_METRICS_PER_USER="true")
    with per_user.api() as c:
        c.post("/api/v1/jobs", json={"command": ["true"]})
        assert 'kran_user_job_submissions_total{user="admin"} 1.0' in c.get("/metrics").text


# spins for 2-3 s of wall time, then prints the shell's own cpu times (`times`: the shell's
# user and system, then its children's)
BURN = "end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do :; done; times"


def _own_cpu_seconds(times_output: str) -> float:
    return sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m\s*([\d.]+)s", times_output))


@pytest.mark.parametrize("image", [None, "kran-test/busybox:latest"])
def test_cpu_seconds_of_a_busy_job(server: ServerProc, image: str | None, test_image: str) -> None:
    with server.api() as c:
        body: dict[str, Any] = {"sh": BURN, "cpus": "1", "mem": "256"}
        if image:
            body["image"] = image
        job = server.wait_state(c.post("/api/v1/jobs", json=body).json()["id"], {"succeeded"}, timeout=30)
        own = _own_cpu_seconds(c.get(f"/api/v1/jobs/{job['id']}/logs").text)
    u = job["attempts"][0]["usage"]
    # kran's figure is what the job itself counted (a loaded machine gives the loop less than
    # its wall time, so the wall time is no baseline); one cpu bounds it by the wall time
    assert own >= 0.5 and abs(u["cpu_seconds"] - own) <= 0.1 * own + 0.2, (u, own)
    assert u["cpu_seconds"] <= 1.1 * u["wall_seconds"], u
    assert u["wall_seconds"] >= 1.9 and job["usage"]["cpu_seconds"] == u["cpu_seconds"]


@pytest.mark.parametrize("image", [None, "kran-test/busybox:latest"])
def test_peak_memory_of_a_200_mb_job(server: ServerProc, image: str | None, test_image: str) -> None:
    with server.api() as c:
        if image:  # dd holds one 200 MiB buffer
            body: dict[str, Any] = {
                "image": image,
                "command": ["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"],
                "mem": "1024",
            }
        else:
            body = {
                "command": ["python3", "-c", "b = b'x' * (200 * 1024 * 1024); import time; time.sleep(0.2)"],
                "mem": "1024",
            }
        job = server.wait_state(c.post("/api/v1/jobs", json=body).json()["id"], {"succeeded"}, timeout=30)
    peak_mb = job["attempts"][0]["usage"]["peak_memory_bytes"] / 1048576
    assert 200 <= peak_mb <= 260, peak_mb


def test_process_jobs_get_a_memory_limit(server: ServerProc) -> None:
    with server.api() as c:
        body = {"command": ["python3", "-c", "b = b'x' * (300 * 1024 * 1024)"], "mem": "100"}
        job = server.wait_state(c.post("/api/v1/jobs", json=body).json()["id"], {"failed"}, timeout=30)
    assert job["exit_code"] != 0


def test_usage_report_and_hints(kran: Any, server: ServerProc) -> None:
    server.add_user("ann")
    server.add_user("bob")
    with server.api() as c:
        a = [
            c.post(
                "/api/v1/jobs",
                json={
                    "sh": "sleep 0.3",
                    "mem": m,
                    "on_behalf_of": "ann",
                },
            ).json()["id"]
            for m in ("512", "1024")
        ]
        b = c.post("/api/v1/jobs", json={"sh": "exit 1", "mem": "256", "gpus": "0", "on_behalf_of": "bob"}).json()["id"]
    jobs = {j: server.wait_state(j, {"succeeded", "failed"}) for j in [*a, b]}
    rows = {r["key"]: r for r in json.loads(kran("usage", "-o", "json").stdout)}
    ann = rows["ann"]
    assert ann["jobs"] == {"succeeded": 2}
    wall = {j: jobs[j]["attempts"][0]["usage"]["wall_seconds"] for j in jobs}
    mem = {j: jobs[j]["allocation"]["mem_mb"] for j in jobs}
    assert ann["wall_hours"] == pytest.approx(sum(wall[j] for j in a) / 3600, abs=1e-6)
    assert ann["mem_gb_hours"] == pytest.approx(sum(mem[j] / 1024 * wall[j] / 3600 for j in a), abs=1e-6)
    assert rows["bob"]["jobs"] == {"failed": 1}
    only_bob = json.loads(kran("usage", "--user", "bob", "-o", "json").stdout)
    assert [r["key"] for r in only_bob] == ["bob"]
    csv_out = kran("usage", "--by", "day", "-o", "csv").stdout.splitlines()
    assert csv_out[0].startswith("day,") and len(csv_out) == 2
    assert kran("usage", "--since", "yesterday").exit_code == 1
    assert kran("usage", "--since", "2099-01-01", "-o", "json").stdout.strip() == "[]"
    hint = kran("job", str(a[1]))
    assert "hint" in hint.stdout and "of its 1024 MiB memory" in hint.stdout


def test_deploy_files_work(server: ServerProc) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package"
    r = subprocess.run(
        [promtool, "check", "config", str(ROOT / "deploy/prometheus.yml")], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    with server.api() as c:
        server.wait_state(c.post("/api/v1/jobs", json={"command": ["true"]}).json()["id"], {"succeeded"})
        exported = set(
            re.findall(r"^(kran_[a-z_]+?)(?:_bucket|_count|_sum|_total|_created)?[{ ]", c.get("/metrics").text, re.M)
        )
    dashboard = json.loads((ROOT / "deploy/grafana/kran.json").read_text())
    used = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"kran_[a-z_]+", t["expr"])}
    base = {re.sub(r"_(bucket|count|sum|total)$", "", m) for m in used}
    assert base - exported == set()
