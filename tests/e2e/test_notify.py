"""Notifications with a real server and a local receiver (issue 20.7): signed events,
retries, a kill -9 in between, URLs outside the allowed prefixes refused."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import ServerProc


@dataclass
class Receiver:
    url: str
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    fail_first: int = 0  # answer 500 to this many requests first

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in list(self.got)]

    def wait_for(self, pred: Any, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            evs = self.events()
            if pred(evs):
                return evs
            assert time.monotonic() < deadline, evs
            time.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if rec.fail_first > 0:
                rec.fail_first -= 1
                self.send_response(500)
            else:
                rec.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    rec.url = f"http://127.0.0.1:{httpd.server_address[1]}/hooks/"
    yield rec
    httpd.shutdown()
    httpd.server_close()


def test_signed_events_to_a_job_url_and_a_webhook(make_server: Any, receiver: Receiver) -> None:
    server: ServerProc = make_server(KRAN_NOTIFY_ALLOWED_PREFIXES=receiver.url)
    server.add_user("alice")
    with server.api() as admin, server.api("alice") as a:
        secret = admin.get("/api/v1/admin/notify").json()["secret"].encode()
        hook = admin.post("/api/v1/admin/webhooks", json={"url": receiver.url + "all", "events": ["job.failed"]})
        assert hook.status_code == 201, hook.text
        # outside the prefixes: refused at submit, for a job, an array, a schedule, a webhook
        port = receiver.url.split(":")[2].split("/")[0]
        for bad in (
            f"http://127.0.0.1:{port}/other",
            f"http://127.0.0.1:{port}/hooksx",
            f"http://127.0.0.1.nip.io:{port}/hooks/",
            f"http://user:pw@127.0.0.1:{port}/hooks/",
            f"https://127.0.0.1:{port}/hooks/",
            "http://10.0.0.1/hooks/",
        ):
            r = a.post("/api/v1/jobs", json={"command": ["true"], "notify": bad})
            assert r.status_code == 422 and "is not under a prefix the admin allowed" in r.json()["error"], bad
        job = {"command": ["true"], "notify": receiver.url + "alice"}
        assert a.post("/api/v1/arrays", json={"array": "0-1", "job": {**job, "notify": "http://x/"}}).status_code == 422
        r = a.post("/api/v1/schedules", json={"name": "s", "every": "PT1H", "job": {**job, "notify": "http://x/"}})
        assert r.status_code == 422, r.text
        assert admin.post("/api/v1/admin/webhooks", json={"url": "http://x/"}).status_code == 422
        ok = a.post("/api/v1/jobs", json={**job, "notify_on": "all"}).json()["id"]
        bad = a.post("/api/v1/jobs", json={"command": ["false"], "notify": receiver.url + "alice"}).json()["id"]
        arr = a.post("/api/v1/arrays", json={"array": "0-2", "job": job}).json()["id"]
    evs = receiver.wait_for(lambda evs: len(evs) >= 5)
    time.sleep(1.5)  # nothing more comes
    kinds = sorted((e["type"], e.get("job", e.get("array", {})).get("id")) for e in receiver.events())
    # the array tells once, as a whole; the failed job tells its URL and the webhook
    assert kinds == sorted(
        [("job.started", ok), ("job.succeeded", ok), ("job.failed", bad), ("job.failed", bad), ("array.ended", arr)]
    ), kinds
    distinct = {h["x-kran-event-id"] for h, _ in receiver.got}
    assert len(distinct) == 4  # the failure is one event (one id) sent to two URLs
    for headers, body in receiver.got:
        want = (
            "sha256=" + hmac.new(secret, headers["x-kran-timestamp"].encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        assert headers["x-kran-signature"] == want
        assert headers["x-kran-event-id"] == json.loads(body)["id"]
    ended = next(e for e in evs if e["type"] == "array.ended")
    assert ended["array"]["outcome"] == "succeeded" and ended["array"]["tasks"] == {"succeeded": 3}
    failed = next(e for e in evs if e["type"] == "job.failed")
    assert failed["job"]["exit_code"] == 1 and failed["job"]["owner"] == "alice"


def test_every_event_arrives_through_failures_and_a_kill_9(make_server: Any, receiver: Receiver) -> None:
    server: ServerProc = make_server(KRAN_NOTIFY_ALLOWED_PREFIXES=receiver.url)
    receiver.fail_first = 6
    with server.api() as c:
        ids = [
            c.post("/api/v1/jobs", json={"sh": f"sleep 0.{i}", "notify": receiver.url}).json()["id"] for i in range(8)
        ]
    time.sleep(1.0)  # some have ended and been refused by the receiver; some not yet
    server.kill9()
    server.start()
    evs = receiver.wait_for(lambda evs: {e["job"]["id"] for e in evs} >= set(ids), timeout=90)
    unique = {e["id"]: e for e in evs}
    assert sorted(e["job"]["id"] for e in unique.values()) == sorted(ids)  # each job's end, once by id
    assert all(e["type"] == "job.succeeded" for e in unique.values())


BIG_TOOL = b"""cwlVersion: v1.2
class: CommandLineTool
requirements: {ResourceRequirement: {coresMin: 48}}
baseCommand: 'true'
inputs: []
outputs: []
"""


def test_a_workflow_run_tells_when_it_ends(make_server: Any, receiver: Receiver) -> None:
    server: ServerProc = make_server(KRAN_NOTIFY_ALLOWED_PREFIXES=receiver.url)
    files = [("file", ("t.cwl", BIG_TOOL))]
    with server.api() as c:
        bad = c.post(
            "/api/v1/workflows", data={"run": json.dumps({"workflow": "t.cwl", "notify": "http://x/"})}, files=files
        )
        assert bad.status_code == 422 and "not under a prefix" in bad.json()["error"], bad.text
        run = c.post(
            "/api/v1/workflows",
            data={"run": json.dumps({"workflow": "t.cwl", "notify": receiver.url + "wf"})},
            files=files,
        )
        assert run.status_code == 201, run.text
    evs = receiver.wait_for(lambda evs: any(e["type"] == "workflow.ended" for e in evs), timeout=90)
    ended = next(e for e in evs if e["type"] == "workflow.ended")
    assert ended["workflow"]["id"] == run.json()["id"] and ended["workflow"]["state"] == "failed"
    assert ended["id"] == f"workflow-{run.json()['id']}-ended"
