"""Every CLI command, end to end: real CLI -> real `kran serve` -> real engines."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc


def submit(kran: Any, *args: str) -> int:
    r = kran("submit", *args)
    assert r.exit_code == 0, r.output
    return int(r.stdout.strip())


def test_run_streams_output_and_returns_exit_code(kran: Any) -> None:
    r = kran("run", "--sh", "echo to-out; echo to-err >&2; exit 3")
    assert r.exit_code == 3
    assert r.stdout == "to-out\n"
    assert "to-err" in r.stderr and "failed: exit code 3" in r.stderr


def test_run_tells_its_own_failure_from_the_jobs(kran: Any) -> None:
    """kran's own failure (here a refusal; a server gone takes the same path, after the
    submit's retries) is 125, as `docker run`, not a job's exit 1."""
    r = kran("run", "--mem", "900000G", "--sh", "true")
    assert r.exit_code == 125 and "Error:" in r.stderr, (r.exit_code, r.output)


def test_run_in_a_container_gets_granted_resources(kran: Any, test_image: str) -> None:
    r = kran(
        "run",
        "--image",
        test_image,
        "--cpus",
        "0.5-1",
        "--mem",
        "64-128",
        "--env",
        "T=$KRAN_CPUS threads",
        "--",
        "sh",
        "-c",
        'echo "$T $KRAN_MEM_MB"; cat /sys/fs/cgroup/memory/memory.limit_in_bytes',
    )
    assert r.exit_code == 0, r.output
    threads, limit = r.stdout.splitlines()
    assert threads == "1 threads 128"
    assert int(limit) == 128 * 1024 * 1024


def test_container_has_no_network_unless_asked(kran: Any, test_image: str) -> None:
    r = kran("run", "--image", test_image, "--", "sh", "-c", "ls /sys/class/net")
    assert r.stdout.split() == ["lo"]


def test_submit_job_and_json_record(kran: Any, server: ServerProc) -> None:
    job_id = submit(
        kran,
        "--name",
        "greet",
        "--label",
        "team=nlp",
        "--priority",
        "5",
        "--retries",
        "1",
        "--timeout",
        "5m",
        "--",
        "echo",
        "hi",
    )
    job = server.wait_state(job_id, {"succeeded"})
    r = kran("job", str(job_id), "-o", "json")
    rec = json.loads(r.stdout)
    assert rec["id"] == job_id and rec["name"] == "greet" and rec["labels"] == {"team": "nlp"}
    assert rec["priority"] == 5 and rec["retries"] == 1 and rec["timeout_s"] == 300
    assert rec["exit_code"] == 0 and rec["node"]["id"] == "local" and rec["allocation"]["cpus"] == 1
    assert rec["attempts"][0]["state"] == "succeeded" and rec["started_at"] and rec["finished_at"]
    assert job["state"] == "succeeded"
    human = kran("job", str(job_id))
    assert "greet" in human.stdout and "succeeded" in human.stdout


def test_jobs_filters(kran: Any, server: ServerProc) -> None:
    a = submit(kran, "--label", "k=a", "--", "true")
    b = submit(kran, "--label", "k=b", "--", "false")
    server.wait_state(a, {"succeeded"})
    server.wait_state(b, {"failed"})
    ids = lambda *args: [j["id"] for j in json.loads(kran("jobs", "-o", "json", *args).stdout)]  # noqa: E731
    assert ids("--label", "k=a") == [a]
    assert ids("--state", "failed") == [b]
    assert ids("--state", "succeeded,failed") == [b, a]
    server.add_user("someone-else")
    with server.api() as c:  # another user's job, submitted for them by the admin
        other = c.post("/api/v1/jobs", json={"command": ["true"], "on_behalf_of": "someone-else"}).json()
    assert ids("--mine") == [b, a]
    assert ids("--all") == [other["id"], b, a]
    assert ids("--all", "--limit", "1") == [other["id"]]
    table = kran("jobs")
    assert table.exit_code == 0 and "succeeded" in table.stdout
    bad = kran("jobs", "--state", "runing")
    assert bad.exit_code == 1 and "unknown state 'runing'" in bad.stderr


def test_logs_tail_stderr_and_follow(kran: Any, server: ServerProc) -> None:
    job_id = submit(kran, "--sh", "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2")
    server.wait_state(job_id, {"succeeded"})
    assert kran("logs", str(job_id)).stdout == "line1\nline2\nline3\nline4\nline5\n"
    assert kran("logs", str(job_id), "--tail", "2").stdout == "line4\nline5\n"
    assert kran("logs", str(job_id), "--stderr").stdout == "oops\n"
    live = submit(kran, "--sh", "echo a; sleep 1; echo b")
    assert kran("logs", "-f", str(live)).stdout == "a\nb\n"
    assert kran("logs", "999999").exit_code == 1


def test_files_and_get(kran: Any, server: ServerProc, tmp_path: Path) -> None:
    job_id = submit(kran, "--sh", "mkdir sub; printf 0123456789 > sub/data.bin; echo x > top.txt")
    server.wait_state(job_id, {"succeeded"})
    listing = json.loads(kran("files", str(job_id), "-o", "json").stdout)
    assert {e["name"]: e["type"] for e in listing["entries"]} == {"sub": "dir", "top.txt": "file"}
    sub = json.loads(kran("files", str(job_id), "sub", "-o", "json").stdout)
    assert sub["entries"][0]["size"] == 10
    out = tmp_path / "d.bin"
    r = kran("get", str(job_id), "sub/data.bin", "-o", str(out))
    assert r.exit_code == 0 and out.read_bytes() == b"0123456789"
    with server.api() as c:
        part = c.get(f"/api/v1/jobs/{job_id}/files/sub/data.bin", headers={"Range": "bytes=2-4"})
        assert part.status_code == 206 and part.content == b"234"
    assert kran("get", str(job_id), "nope.txt", "-o", str(out)).exit_code == 1
    assert kran("files", str(job_id), "../..").exit_code == 1


def test_kill_queued_and_running(kran: Any, server: ServerProc) -> None:
    running = submit(kran, "--cpus", "4", "--", "sleep", "60")
    server.wait_state(running, {"running"})
    queued = submit(kran, "--cpus", "4", "--", "true")
    job = json.loads(kran("job", str(queued), "-o", "json").stdout)
    assert job["state"] == "queued" and job["queue_position"] == 1
    assert job["waiting_because"] == "needs 4 cpus, node has 0 free"
    r = kran("kill", str(queued), str(running))
    assert r.exit_code == 0 and f"{queued}: killed" in r.stdout
    assert server.wait_state(running, {"killed"})["reason"] == "killed on request"
    again = kran("kill", str(running), "424242")
    assert again.exit_code == 1 and "not found" in again.stderr


def test_events_and_status(kran: Any, server: ServerProc) -> None:
    job_id = submit(kran, "--", "true")
    server.wait_state(job_id, {"succeeded"})
    ev = [json.loads(line) for line in kran("events", "--job", str(job_id), "-o", "json").stdout.splitlines()]
    assert [e["to"] for e in ev] == ["queued", "starting", "running", "succeeded"]
    st = json.loads(kran("status", "-o", "json").stdout)
    assert st["ready"] and st["capacity"]["total"]["cpus"] == 4 and st["engines"]["docker"] == "ok"


def test_events_stream_sse(server: ServerProc, kran: Any) -> None:
    import threading

    seen: list[dict[str, Any]] = []

    def listen() -> None:
        with server.api() as c, c.stream("GET", "/api/v1/events/stream", timeout=20) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["to"] == "succeeded":
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    import time

    time.sleep(0.5)
    job_id = submit(kran, "--", "true")
    t.join(20)
    assert [e["to"] for e in seen if e["job_id"] == job_id] == ["queued", "starting", "running", "succeeded"]


def test_batch_submit_all_or_nothing(kran: Any, server: ServerProc, tmp_path: Path) -> None:
    good = tmp_path / "jobs.txt"
    good.write_text("# comment\n--name a -- echo 1\n\n--sh 'echo 2 | cat' --label x=y\n")
    r = kran("submit", "--file", str(good))
    ids = [int(x) for x in r.stdout.split()]
    assert len(ids) == 2
    assert server.wait_state(ids[1], {"succeeded"})["labels"] == {"x": "y"}
    bad = tmp_path / "bad.txt"
    bad.write_text("-- echo ok\n--cpus abc -- echo no\n")
    before = len(json.loads(kran("jobs", "-o", "json").stdout))
    r = kran("submit", "--file", str(bad))
    assert r.exit_code == 1 and "jobs[1].cpus" in r.stderr
    assert len(json.loads(kran("jobs", "-o", "json").stdout)) == before
    bad.write_text("--bogus x -- echo\n")
    r = kran("submit", "--file", str(bad))
    assert r.exit_code == 2 and "line 1" in r.stderr


def test_config_shows_sources(kran: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "kran.toml"
    cfg.write_text("[server]\nport = 9999\n[queue]\nmax = 10\n")
    monkeypatch.setenv("KRAN_QUEUE_MAX", "20")
    rows = {
        r["key"]: r for r in json.loads(kran("config", "--config", str(cfg), "--host", "0.0.0.0", "-o", "json").stdout)
    }
    assert rows["server.port"]["value"] == 9999 and rows["server.port"]["source"].startswith("file")
    assert rows["queue.max"]["value"] == 20 and rows["queue.max"]["source"] == "env KRAN_QUEUE_MAX"
    assert rows["server.host"]["value"] == "0.0.0.0" and rows["server.host"]["source"] == "flag"
    cfg.write_text("[server]\nprot = 1\n")
    r = kran("config", "--config", str(cfg))
    assert r.exit_code == 2 and "unknown setting server.prot" in r.stderr


def test_logs_follow_a_container_and_events_follow(kran: Any, server: ServerProc, test_image: str) -> None:
    import subprocess
    import sys

    env = {**server.env, "KRAN_URL": server.url}  # the admin's client config is in the server's HOME
    events = subprocess.Popen(
        [sys.executable, "-m", "kran.cli.main", "events", "-f", "-o", "json"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)  # the stream starts at the newest event once the CLI has connected
        job_id = submit(kran, "--image", test_image, "--sh", "for i in 1 2 3; do echo c$i; sleep 0.4; done")
        assert kran("logs", "-f", str(job_id)).stdout == "c1\nc2\nc3\n"
        seen = []
        assert events.stdout is not None
        while not seen or seen[-1]["to"] != "succeeded":
            e = json.loads(events.stdout.readline())
            if e["job_id"] == job_id:
                seen.append(e)
        assert [e["to"] for e in seen] == ["queued", "starting", "running", "succeeded"]
    finally:
        events.kill()
        events.wait()
        if events.stdout:
            events.stdout.close()


PEAK_RSS = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(proc.returncode, proc.stdout.strip(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, proc.stderr[-500:])
"""


def test_submit_streams_an_input_file_instead_of_reading_it_whole(server: ServerProc, tmp_path: Path) -> None:
    """`kran submit --input` of a 300 MB file had the CLI at 649 MB RSS."""
    import os
    import subprocess
    import sys

    big = tmp_path / "big.bin"
    size = 200 << 20
    with big.open("wb") as f:
        f.truncate(size)  # zeros, without writing them here
    cli = [sys.executable, "-m", "kran.cli.main", "submit", "--input", str(big), "--sh", "wc -c < big.bin"]
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *cli],
        env={**os.environ, **server.client_env()},
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    rc, job_id, peak_kb, err = out.split(" ", 3)
    assert rc == "0", out
    assert int(peak_kb) < 120 * 1024, f"the CLI peaked at {int(peak_kb) >> 10} MiB for a {size >> 20} MiB file"
    assert server.wait_state(int(job_id), {"succeeded"}, timeout=120)["state"] == "succeeded"
    with server.api() as c:
        assert c.get(f"/api/v1/jobs/{job_id}/logs").text.strip() == str(size)
