"""Schedules end to end: real server, short intervals (seconds)."""

from __future__ import annotations

import collections
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.conftest import ServerProc


def show(kran: Any, name: str) -> dict[str, Any]:
    r = kran("schedule", "show", name, "-o", "json", "--limit", "1000")
    assert r.exit_code == 0, r.output
    return dict(json.loads(r.stdout))


def wait_runs(kran: Any, name: str, n: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s = show(kran, name)
        if len(s["runs"]) >= n:
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.2)


def test_every_with_repeat_runs_exactly_n_times_with_env(kran: Any, server: ServerProc) -> None:
    r = kran("schedule", "add", "tick", "--every", "R3/PT1S", "--sh", "echo $KRAN_SCHEDULE $KRAN_FIRE_TIME")
    assert r.exit_code == 0, r.output
    s = wait_runs(kran, "tick", 3)
    time.sleep(2.5)
    s = show(kran, "tick")
    assert len(s["runs"]) == 3 and s["next_fire_time"] is None and s["fired"] == 3
    for run in s["runs"]:
        job = server.wait_state(run["job_id"], {"succeeded"})
        with server.api() as c:
            out = c.get(f"/api/v1/jobs/{job['id']}/logs").text.split()
        assert out == ["tick", run["fire_time"]]
        assert job["labels"] == {"kran.schedule": "tick"}
    fire_times = [r["fire_time"] for r in s["runs"]]
    assert len(set(fire_times)) == 3


def test_overlap_forbid_skips_with_reason(kran: Any, server: ServerProc) -> None:
    kran("schedule", "add", "slow", "--every", "PT1S", "--overlap", "forbid", "--", "sleep", "2.5")
    s = wait_runs(kran, "slow", 4)
    kran("schedule", "disable", "slow")
    skipped = [r for r in s["runs"] if r["run"] == "skipped"]
    assert skipped and all("overlap forbidden" in r["reason"] for r in skipped)
    started = [r for r in s["runs"] if r["run"] == "started"]
    assert len(started) >= 1


def test_overlap_replace_kills_the_previous_run(kran: Any, server: ServerProc) -> None:
    kran("schedule", "add", "repl", "--every", "PT1S", "--overlap", "replace", "--", "sleep", "30")
    s = wait_runs(kran, "repl", 2)
    kran("schedule", "disable", "repl")
    oldest = min(s["runs"], key=lambda r: r["fire_time"])
    assert server.wait_state(oldest["job_id"], {"killed"})
    for r in s["runs"]:
        kran("kill", str(r["job_id"]))


def test_server_down_longer_than_max_lateness_records_skips(kran: Any, server: ServerProc) -> None:
    kran("schedule", "add", "late", "--every", "PT1S", "--max-lateness", "2s", "--catch-up", "all", "--", "true")
    wait_runs(kran, "late", 1)
    server.stop()
    time.sleep(5)
    server.start()
    time.sleep(1.5)
    kran("schedule", "disable", "late")
    s = show(kran, "late")
    reasons = [r["reason"] or "" for r in s["runs"]]
    assert any(x.startswith("missed:") and "max lateness 2s" in x for x in reasons), reasons
    started = [r for r in s["runs"] if r["run"] == "started"]
    assert len(started) >= 2  # before the stop, and the ones within 2 s after it


def test_catch_up_last_runs_once_after_downtime(kran: Any, server: ServerProc) -> None:
    kran("schedule", "add", "cu", "--every", "PT1S", "--catch-up", "last", "--", "true")
    wait_runs(kran, "cu", 1)
    server.stop()
    time.sleep(4)
    before = time.time()
    server.start()
    time.sleep(0.8)
    kran("schedule", "disable", "cu")
    s = show(kran, "cu")
    after_restart = [
        r for r in s["runs"] if datetime.fromisoformat(r["fire_time"]).timestamp() < before and r["run"] == "skipped"
    ]
    assert len(after_restart) >= 2 and all("catch-up last" in r["reason"] for r in after_restart)


def test_no_duplicate_runs_across_kill9(kran: Any, server: ServerProc) -> None:
    kran("schedule", "add", "dup", "--every", "PT1S", "--catch-up", "all", "--", "true")
    for _ in range(3):
        time.sleep(1.3)
        server.kill9()
        server.start()
    time.sleep(1)
    kran("schedule", "disable", "dup")
    s = show(kran, "dup")
    counts = collections.Counter(r["fire_time"] for r in s["runs"])
    assert counts and set(counts.values()) == {1}
    with server.api() as c:
        jobs = c.get("/api/v1/jobs", params={"label": "kran.schedule=dup", "limit": 1000}).json()["jobs"]
    assert sorted(j["id"] for j in jobs) == sorted(r["job_id"] for r in s["runs"] if r["job_id"])


def test_after_parent_success_and_failure(kran: Any, server: ServerProc, shared_dir: Path) -> None:
    # the first run succeeds (and leaves a flag beside the job dirs), the second fails
    flag = f"{shared_dir}/flag-$KRAN_SCHEDULE"
    start = datetime.fromtimestamp(time.time() + 2, UTC).isoformat()  # the child exists before the first run
    kran(
        "schedule",
        "add",
        "parent",
        "--every",
        "R2/PT1S",
        "--start",
        start,
        "--sh",
        f"test -e {flag} && exit 1; touch {flag}",
    )
    kran("schedule", "add", "child", "--after", "parent", "--", "echo", "child ran")
    s = wait_runs(kran, "child", 2)
    states = sorted((r["run"], r["reason"] or "") for r in s["runs"])
    assert states[0][0] == "skipped" and states[0][1].startswith("parent failed: parent run of job")
    assert states[1][0] == "started"


def test_run_now_next_enable_disable_delete(kran: Any, server: ServerProc) -> None:
    assert (
        kran("schedule", "add", "nightly", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--", "true").exit_code == 0
    )
    nxt = kran("schedule", "next", "nightly", "-n", "3").stdout.split()
    assert len(nxt) == 3 and all(t.endswith(("01:30:00+00:00", "00:30:00+00:00")) for t in nxt)
    assert json.loads(kran("schedule", "next", "nightly", "-n", "2", "-o", "json").stdout) == nxt[:2]
    job_id = int(kran("schedule", "run-now", "nightly").stdout)
    assert server.wait_state(job_id, {"succeeded"})
    assert kran("schedule", "disable", "nightly").exit_code == 0
    assert show(kran, "nightly")["enabled"] is False
    assert kran("schedule", "enable", "nightly").exit_code == 0
    listing = json.loads(kran("schedule", "list", "-o", "json").stdout)
    assert [s["name"] for s in listing] == ["nightly"]
    assert kran("schedule", "delete", "nightly").exit_code == 0
    assert kran("schedule", "show", "nightly").exit_code == 1


def test_schedule_bad_input(kran: Any, server: ServerProc) -> None:
    cases = [
        (["--cron", "61 * * * *"], "cron"),
        (["--cron", "* * * * *", "--tz", "Mars/Base"], "time zone"),
        (["--every", "PT1H", "--cron", "* * * * *"], "exactly one"),
        ([], "exactly one"),
        (["--every", "soon"], "ISO 8601"),
        (["--after", "nope"], "unknown schedule"),
        (["--every", "PT1H", "--max-lateness", "x"], "max_lateness"),
        (["--every", "PT1H", "--start", "tomorrow"], "ISO 8601 date-time"),
    ]
    for args, fragment in cases:
        r = kran("schedule", "add", "bad", *args, "--", "true")
        assert r.exit_code == 1 and fragment in r.stderr, (args, r.stderr)
    assert kran("schedule", "add", "ok", "--every", "PT1H", "--", "true").exit_code == 0
    r = kran("schedule", "add", "ok", "--every", "PT1H", "--", "true")
    assert r.exit_code == 1 and "exists already" in r.stderr
    assert kran("schedule", "add", "x", "--every", "PT1H", "--overlap", "sometimes", "--", "true").exit_code == 2


def test_run_that_cannot_start_within_max_lateness_is_skipped(kran: Any, server: ServerProc) -> None:
    blocker = int(kran("submit", "--cpus", "4", "--", "sleep", "30").stdout)
    server.wait_state(blocker, {"running"})
    kran("schedule", "add", "starved", "--every", "R1/PT1H", "--cpus", "4", "--max-lateness", "1s", "--", "true")
    s = wait_runs(kran, "starved", 1)
    job_id = s["runs"][0]["job_id"]
    assert server.wait_state(job_id, {"killed"}, timeout=10)
    deadline = time.monotonic() + 5
    while (run := show(kran, "starved")["runs"][0])["run"] != "skipped" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run["reason"] == "not started within max lateness (no capacity)"
    kran("kill", str(blocker))
