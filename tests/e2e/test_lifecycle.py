"""Queue and lifecycle: retries, timeouts, priorities, queue bound, refusals."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from tests.conftest import ServerProc
from tests.web.webclient import WebClient


def post(server: ServerProc, body: dict[str, Any], path: str = "/api/v1/jobs") -> Any:
    with server.api() as c:
        return c.post(path, json=body)


def test_retries_keep_each_attempt(server: ServerProc) -> None:
    r = post(server, {"sh": 'echo "attempt $KRAN_ATTEMPT"; [ "$KRAN_ATTEMPT" = 3 ]', "retries": 3})
    job = server.wait_state(r.json()["id"], {"succeeded", "failed"})
    assert job["state"] == "succeeded"
    assert [(a["number"], a["state"], a["exit_code"]) for a in job["attempts"]] == [
        (1, "failed", 1),
        (2, "failed", 1),
        (3, "succeeded", 0),
    ]
    # backoff: 0.2 s then 0.4 s between attempts
    a1, a2, a3 = job["attempts"]
    from datetime import datetime

    def gap(before: dict[str, Any], after: dict[str, Any]) -> float:
        delta = datetime.fromisoformat(after["created_at"]) - datetime.fromisoformat(before["finished_at"])
        return delta.total_seconds()

    assert gap(a1, a2) >= 0.2 and gap(a2, a3) >= 0.4
    with server.api() as c:
        out = c.get(f"/api/v1/jobs/{job['id']}/logs").content
    assert out == b"attempt 3\n"


def test_retries_exhausted_ends_failed(server: ServerProc) -> None:
    r = post(server, {"sh": "exit 5", "retries": 1})
    job = server.wait_state(r.json()["id"], {"failed"})
    assert len(job["attempts"]) == 2 and job["exit_code"] == 5 and job["reason"] == "exit code 5"


def test_timeout_kills_and_records_timed_out(server: ServerProc) -> None:
    t0 = time.monotonic()
    r = post(server, {"command": ["sleep", "60"], "timeout": "1s", "retries": 2})
    job = server.wait_state(r.json()["id"], {"timed_out"}, timeout=20)
    assert time.monotonic() - t0 < 15
    assert job["reason"] == "timed out after 1s" and len(job["attempts"]) == 1


def test_a_killed_host_job_has_its_grace_to_clean_up(server: ServerProc) -> None:
    """A kill's SIGTERM reached the root shell wrapper too, which died of it at once: the
    attempt ended there, and its collect SIGKILLed the job in the middle of its clean-up,
    long before the grace was over. The attempt now ends when the job does."""
    sh = "trap 'sleep 1; echo cleaned up; exit 0' TERM; echo started; while true; do sleep 0.1; done"
    job_id = post(server, {"sh": sh, "grace": "20s"}).json()["id"]
    server.wait_state(job_id, {"running"})
    with server.api() as c:
        deadline = time.monotonic() + 10
        while b"started" not in c.get(f"/api/v1/jobs/{job_id}/logs").content and time.monotonic() < deadline:
            time.sleep(0.05)
        c.post(f"/api/v1/jobs/{job_id}/kill").raise_for_status()
        job = server.wait_state(job_id, {"killed"})
        assert c.get(f"/api/v1/jobs/{job_id}/logs").content == b"started\ncleaned up\n"
    assert job["attempts"][-1]["exit_code"] == 0


def test_a_host_job_with_a_one_megabyte_limit_runs(server: ServerProc) -> None:
    """What kran does to start a job (a forked Python in its cgroup) is not charged to the
    job's memory: the smallest limit still runs a small command, and its usage is its own."""
    job_id = post(server, {"command": ["true"], "mem": "1"}).json()["id"]
    job = server.wait_state(job_id, {"succeeded", "failed"})
    assert job["state"] == "succeeded", job["reason"]


def test_docker_timeout(server: ServerProc, test_image: str) -> None:
    r = post(server, {"image": test_image, "command": ["sleep", "60"], "timeout": 1})
    job = server.wait_state(r.json()["id"], {"timed_out"}, timeout=30)
    assert job["attempts"][0]["state"] == "timed_out"


def test_priority_order_and_ranges(server: ServerProc) -> None:
    blocker = post(server, {"command": ["sleep", "1"], "cpus": "4"}).json()["id"]
    server.wait_state(blocker, {"running"})
    low = post(server, {"sh": "echo $KRAN_CPUS", "cpus": "4", "priority": 1}).json()["id"]
    high = post(server, {"sh": "echo $KRAN_CPUS", "cpus": "1-", "priority": 10}).json()["id"]
    jl = server.wait_state(low, {"succeeded"})
    jh = server.wait_state(high, {"succeeded"})
    assert jh["started_at"] <= jl["started_at"]
    assert jh["allocation"]["cpus"] == 4  # "1-": everything free when it started


def test_small_job_is_not_blocked_by_big_one(server: ServerProc) -> None:
    blocker = post(server, {"command": ["sleep", "3"], "cpus": "3"}).json()["id"]
    server.wait_state(blocker, {"running"})
    big = post(server, {"command": ["true"], "cpus": "4"}).json()["id"]
    small = post(server, {"command": ["true"], "cpus": "1"}).json()["id"]
    server.wait_state(small, {"succeeded"}, timeout=2.5)
    with server.api() as c:
        assert c.get(f"/api/v1/jobs/{big}").json()["state"] == "queued"
    server.wait_state(big, {"succeeded"})


def test_queue_full_is_429_and_stores_nothing(make_server: Any) -> None:
    server = make_server(KRAN_QUEUE_MAX="3", KRAN_CAPACITY_CPUS="1")
    with server.api() as c:
        r = c.post("/api/v1/jobs/batch", json={"jobs": [{"command": ["sleep", "30"]}] * 4})
        assert r.status_code == 429  # 4 > 3 at once: refused whole
        first = c.post("/api/v1/jobs", json={"command": ["sleep", "30"]}).json()["id"]
        server.wait_state(first, {"running"})
        ids = [first] + c.post("/api/v1/jobs/batch", json={"jobs": [{"command": ["sleep", "30"]}] * 3}).json()["ids"]
        r = c.post("/api/v1/jobs", json={"command": ["true"]})
        assert r.status_code == 429 and "queue is full" in r.json()["error"]
        r = c.post("/api/v1/jobs/batch", json={"jobs": [{"command": ["true"]}] * 2})
        assert r.status_code == 429
        assert len(c.get("/api/v1/jobs").json()["jobs"]) == 4
        for i in ids:
            c.post(f"/api/v1/jobs/{i}/kill")


def test_image_jobs_wait_without_docker(make_server: Any) -> None:
    """No Docker Engine: image jobs are taken and wait, saying why (issue 26; before, a 503);
    host jobs run."""
    server = make_server(KRAN_LOCAL_DOCKER_HOST="unix:///nonexistent/docker.sock")
    with server.api() as c:
        r = c.post("/api/v1/jobs", json={"image": "x", "command": ["true"]})
        assert r.status_code == 201, r.text
        waiting = c.get(f"/api/v1/jobs/{r.json()['id']}").json()
        assert waiting["state"] == "queued" and "docker engine unreachable since" in waiting["waiting_because"]
        st = c.get("/status")
        assert st.status_code == 200 and st.json()["engines"]["docker"].startswith("docker engine unreachable since")
        assert st.json()["state"] == "degraded"
        job = c.post("/api/v1/jobs", json={"command": ["true"]}).json()["id"]
        server.wait_state(job, {"succeeded"})
        assert c.get(f"/api/v1/jobs/{r.json()['id']}").json()["attempts"] == []  # nothing launched into the void


def test_host_processes_can_be_forbidden(make_server: Any) -> None:
    server = make_server(KRAN_LOCAL_ALLOW_HOST_PROCESSES="false")
    with server.api() as c:
        r = c.post("/api/v1/jobs", json={"command": ["true"]})
    assert r.status_code == 422 and "not allowed" in r.json()["error"]


def test_unknown_image_fails_the_attempt_with_reason(server: ServerProc, test_image: str) -> None:
    job = post(server, {"image": "127.0.0.1:1/missing:latest", "command": ["true"]}).json()["id"]
    rec = server.wait_state(job, {"failed"}, timeout=60)
    assert "launch failed" in rec["reason"] and "missing" in rec["reason"]


def test_one_server_per_data_dir(server: ServerProc) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "kran.cli.main", "serve", "--data-dir", str(server.data_dir), "--port", "1"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "another kran server is using" in r.stderr


def test_a_stop_ends_open_streams_itself(make_server: Any) -> None:
    """SIGTERM with clients on the event stream and on a followed log: the server ends them
    and on the dashboard's followed log (which held a stop for as long as its job ran): the
    server ends them (complete responses) and exits cleanly. It waited for them for ever,
    until the SIGKILL that skips the clean-up; then uvicorn cut them off after its grace,
    with an error in the log. `kran logs -f` does not take the stream's end for the job's."""
    import threading

    s: ServerProc = make_server()
    with s.api() as c:
        job = c.post("/api/v1/jobs", json={"sh": "echo started; sleep 60"}).json()["id"]
    s.wait_state(job, {"running"})
    ends: dict[str, str] = {}
    opened = threading.Barrier(4)
    web = WebClient(s)

    def follow(name: str, path: str) -> None:
        client = web.http if name == "dashboard log" else s.api()
        try:
            with client.stream("GET", path, timeout=None) as r:
                opened.wait(10)
                body = b"".join(r.iter_bytes())
            ends[name] = "complete" if name != "dashboard log" else body.decode()
        except Exception as e:  # noqa: BLE001 - cut off
            ends[name] = repr(e)
        finally:
            if client is not web.http:
                client.close()

    threads = [
        threading.Thread(target=follow, args=("events", "/api/v1/events/stream"), daemon=True),
        threading.Thread(target=follow, args=("log", f"/api/v1/jobs/{job}/logs?follow=true"), daemon=True),
        threading.Thread(target=follow, args=("dashboard log", f"/ui/jobs/{job}/log?follow=true"), daemon=True),
    ]
    for t in threads:
        t.start()
    opened.wait(10)
    cli = subprocess.Popen(
        [sys.executable, "-m", "kran.cli.main", "logs", "-f", str(job)],
        env=s.client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.0)  # (it has the first line)
    assert s.proc is not None
    s.proc.terminate()
    assert s.proc.wait(20) == 0
    for t in threads:
        t.join(10)
    web.close()
    assert ends == {
        "events": "complete",
        "log": "complete",
        "dashboard log": "started\n\n(kran: the server is stopping: reload the page to follow the log again)\n",
    }  # (the dashboard's held the stop as long as the job ran: it got no end)
    assert "timeout graceful shutdown exceeded" not in s.log.read_text()
    out, err = cli.communicate(timeout=30)
    assert out == "started\n" and cli.returncode != 0, (cli.returncode, out, err)
    assert f"the server ended the stream of the log before job {job}" in err, err


def test_openapi_and_unknown_routes(server: ServerProc) -> None:
    with server.api() as c:
        schema = c.get("/api/v1/openapi.json").json()
        assert "/api/v1/jobs" in schema["paths"] and "/api/v1/jobs/{job_id}/logs" in schema["paths"]
        r = c.get("/api/v1/nope")
        assert r.status_code == 404 and r.json() == {"error": "Not Found"}
        assert c.delete("/api/v1/jobs").status_code == 405


def test_chunked_body_over_the_limit_is_413(make_server: Any) -> None:
    server = make_server(KRAN_SERVER_MAX_BODY_MB="1")

    def body() -> Any:
        yield b'{"command": ["true"], "env": {"A": "'
        for _ in range(20):
            yield b"x" * 100_000
        yield b'"}}'

    with server.api() as c:
        r = c.post("/api/v1/jobs", content=body(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/api/v1/jobs").json()["jobs"] == []


def test_jobs_run_unprivileged_and_confined(server: ServerProc, test_image: str) -> None:
    with server.api() as c:
        host = c.post("/api/v1/jobs", json={"sh": "id -u; id -g; touch mine"}).json()["id"]
        box = c.post(
            "/api/v1/jobs",
            json={
                "image": test_image,
                "sh": "id -u; grep CapEff /proc/self/status; cat /sys/fs/cgroup/pids/pids.max; touch mine; "
                "grep -c NoNewPrivs:.*1 /proc/self/status",
            },
        ).json()["id"]
        for j in (host, box):
            server.wait_state(j, {"succeeded"})
        # the admin is user 1: its jobs run as the first uid of local.job_uids plus 1
        assert c.get(f"/api/v1/jobs/{host}/logs").text.split() == ["1100000001", "1100000001"]
        uid, _, caps, pids, nnp = c.get(f"/api/v1/jobs/{box}/logs").text.split()
        assert (uid, caps, pids, nnp) == ("1100000001", "0000000000000000", "4096", "1")
        assert c.get(f"/api/v1/jobs/{box}/files/mine").status_code == 200


def test_read_only_root_fs(make_server: Any, test_image: str) -> None:
    server = make_server(KRAN_LOCAL_READ_ONLY_ROOTFS="true")
    with server.api() as c:
        job = c.post(
            "/api/v1/jobs",
            json={
                "image": test_image,
                "sh": "touch /etc/x || echo refused; touch /tmp/ok; touch here && echo workdir-ok",
            },
        ).json()["id"]
        server.wait_state(job, {"succeeded"})
        assert c.get(f"/api/v1/jobs/{job}/logs").text.split() == ["refused", "workdir-ok"]


def test_an_end_is_seen_at_once_not_at_the_next_poll(make_server: Any, test_image: str) -> None:
    """A host process's end (the fork server reports it) and a container's (the daemon's
    `die` event) wake the monitor: with a 30 s poll interval both jobs still end in seconds."""
    server = make_server(KRAN_QUEUE_POLL_INTERVAL_S="30")
    started = time.monotonic()
    ids = [
        post(server, {"command": ["true"]}).json()["id"],
        post(server, {"image": test_image, "command": ["true"]}).json()["id"],
    ]
    for job_id in ids:
        assert server.wait_state(job_id, {"succeeded", "failed"}, timeout=60)["state"] == "succeeded"
    assert time.monotonic() - started < 20
