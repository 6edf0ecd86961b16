"""Idempotent submits (issue 18.9): a batch could be stored while the client got no answer
(a kill -9 at the wrong moment), and a retry stored it twice."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import httpx
from click.testing import CliRunner

from kran.cli.main import cli
from tests.conftest import ServerProc
from tests.relay import Relay


def test_the_same_key_stores_once(server: ServerProc) -> None:
    with server.api() as c:
        key = {"Idempotency-Key": "k-1"}
        a = c.post("/api/v1/jobs", json={"command": ["true"]}, headers=key)
        b = c.post("/api/v1/jobs", json={"command": ["true"]}, headers=key)
        assert a.status_code == b.status_code == 201 and a.json() == b.json()
        other = c.post("/api/v1/jobs", json={"command": ["false"]}, headers=key)
        assert other.status_code == 422 and "Idempotency-Key" in other.json()["error"]
        batch = {"jobs": [{"command": ["true"]}] * 3}
        x = c.post("/api/v1/jobs/batch", json=batch, headers={"Idempotency-Key": "k-2"}).json()
        y = c.post("/api/v1/jobs/batch", json=batch, headers={"Idempotency-Key": "k-2"}).json()
        assert x == y and len(x["ids"]) == 3
        assert len(c.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]) == 4
        assert (
            c.post("/api/v1/jobs", json={"command": ["true"]}, headers={"Idempotency-Key": "x" * 201}).status_code
            == 422
        )
    server.add_user("bob")  # keys are per owner
    with server.api("bob") as c:
        r = c.post("/api/v1/jobs", json={"command": ["true"]}, headers={"Idempotency-Key": "k-1"})
        assert r.status_code == 201 and r.json() != a.json()


def test_kill9_while_submitting_then_retry_stores_each_batch_once(server: ServerProc) -> None:
    """The server is killed at random moments while a 300-job batch is submitted; the
    client retries with the same key until it gets an answer. Each batch is stored exactly
    once: never twice, never lost."""
    rng = random.Random(18)
    trials, cut = 8, 0
    for t in range(trials):
        body = {"jobs": [{"command": ["true"], "labels": {"trial": str(t)}, "cpus": "0.1"} for _ in range(300)]}
        headers = {"Idempotency-Key": f"trial-{t}"}
        killer = threading.Timer(rng.uniform(0.0, 0.25), server.kill9)
        killer.start()
        answer = None
        deadline = time.monotonic() + 60
        while answer is None:
            try:
                with server.api() as c:
                    r = c.post("/api/v1/jobs/batch", json=body, headers=headers)
                answer = r
            except httpx.TransportError:
                cut += 1
                killer.join()
                if server.proc is not None and server.proc.poll() is not None:
                    server.start()
            assert time.monotonic() < deadline
        killer.join()
        if server.proc is not None and server.proc.poll() is not None:  # killed after it answered
            server.start()
        assert answer.status_code == 201, answer.text
        with server.api() as c:
            stored = c.get("/api/v1/jobs", params={"label": f"trial={t}", "limit": 1000}).json()["jobs"]
        assert len(stored) == 300, f"trial {t}: {len(stored)} stored"
        assert sorted(j["id"] for j in stored) == sorted(answer.json()["ids"])
    print(f"{trials} trials, {cut} requests cut off by the kill and retried")


def _stored(server: ServerProc, trial: str) -> int:
    import sqlite3

    con = sqlite3.connect(server.data_dir / "kran.db", timeout=5)
    try:
        q = "SELECT count(*) FROM job_labels WHERE key = 'trial' AND value = ?"
        return int(con.execute(q, (trial,)).fetchone()[0])
    finally:
        con.close()


def _post_losing_the_answer(server: ServerProc, body: dict[str, Any], headers: dict[str, str]) -> None:
    try:
        with server.api() as c:
            c.post("/api/v1/jobs/batch", json=body, headers=headers)
    except httpx.TransportError:
        pass  # the answer is lost


def test_kill9_right_after_the_commit_then_retry_stores_once(server: ServerProc) -> None:
    """The worst moment: the batch is committed, the answer not yet read (the server is
    killed as soon as the rows are in the database); the client retries with its key."""
    for t in range(5):
        trial = f"w{t}"
        body = {"jobs": [{"command": ["true"], "labels": {"trial": trial}, "cpus": "0.1"} for _ in range(300)]}
        headers = {"Idempotency-Key": f"worst-{t}"}

        sender = threading.Thread(target=_post_losing_the_answer, args=(server, body, headers))
        sender.start()
        deadline = time.monotonic() + 30
        while _stored(server, trial) < 300:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        server.kill9()
        sender.join()
        server.start()
        with server.api() as c:
            r = c.post("/api/v1/jobs/batch", json=body, headers=headers)
            assert r.status_code == 201, r.text
            stored = c.get("/api/v1/jobs", params={"label": f"trial={trial}", "limit": 1000}).json()["jobs"]
        assert len(stored) == 300, f"trial {trial}: {len(stored)} stored"
        assert sorted(j["id"] for j in stored) == sorted(r.json()["ids"])


def test_an_upload_with_a_key_stores_once(server: ServerProc, tmp_path: Any) -> None:
    """An upload (a job with input files) took no Idempotency-Key: a retry after a lost
    answer stored the job and its files twice; the CLI did not retry at all."""
    job = json.dumps({"sh": "cat in.txt", "labels": {"trial": "up"}})
    with server.api() as c:
        key = {"Idempotency-Key": "up-1"}
        a = c.post("/api/v1/jobs/upload", data={"job": job}, files=[("input", ("in.txt", b"one"))], headers=key)
        b = c.post("/api/v1/jobs/upload", data={"job": job}, files=[("input", ("in.txt", b"one"))], headers=key)
        assert a.status_code == b.status_code == 201 and a.json() == b.json(), (a.text, b.text)
        other = c.post("/api/v1/jobs/upload", data={"job": job}, files=[("input", ("in.txt", b"four"))], headers=key)
        assert other.status_code == 422 and "Idempotency-Key" in other.json()["error"]
        assert server.wait_state(a.json()["id"], {"succeeded"})["state"] == "succeeded"
        assert c.get(f"/api/v1/jobs/{a.json()['id']}/logs").content == b"one"
    assert _stored(server, "up") == 1
    assert len(list((server.data_dir / "uploads").iterdir())) == 1  # the retry's copy is not kept

    # the CLI sends a key and retries a lost connection, opening the files again
    local = tmp_path / "in.txt"
    local.write_text("from the cli")
    proxy = Relay(server.port, drop_first_answer=True)
    try:
        env = {**server.client_env(), "KRAN_URL": f"http://127.0.0.1:{proxy.port}"}
        args = ["submit", "--input", f"{local}:in.txt", "--label", "trial=cli", "--sh", "cat in.txt"]
        r = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
        assert r.exit_code == 0, r.output
    finally:
        proxy.stop()
    assert proxy.dropped == 1 and _stored(server, "cli") == 1
    with server.api() as c:
        assert server.wait_state(int(r.output), {"succeeded"})["state"] == "succeeded"
        assert c.get(f"/api/v1/jobs/{int(r.output)}/logs").content == b"from the cli"
