"""The dashboard's schedules and workflow runs over plain HTTP against a real `kran serve`:
what the pages show, that their forms change what the API then reports, CSRF, and that
another user's schedule or run is not found, as a missing one."""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from typing import Any

import pytest

from kran.web.render import when
from tests.conftest import ServerProc
from tests.e2e.test_workflows import CAT
from tests.web.webclient import WebClient

HOURLY = {"every": "PT1H", "start": "2099-01-01T00:00:00Z"}  # fire times known in advance, none soon


def add_schedule(server: ServerProc, user: str, name: str = "nightly", **trigger: Any) -> None:
    body = {"name": name, "job": {"command": ["true"]}, **(trigger or HOURLY)}
    with server.api(user) as api:
        r = api.post("/api/v1/schedules", json=body)
        assert r.status_code == 201, r.text


def schedule(server: ServerProc, user: str, name: str = "nightly") -> dict[str, Any]:
    with server.api(user) as api:
        r = api.get(f"/api/v1/schedules/{name}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def row(html: str, key: str) -> str:
    m = re.search(rf'<tr data-schedule="{re.escape(key)}".*?</tr>', html, re.S)
    assert m, html
    return m.group(0)


def test_schedules_show_next_fire_times_and_run_now_submits_a_run(server: ServerProc) -> None:
    server.add_user("alice")
    add_schedule(server, "alice")
    with server.api("alice") as api:
        upcoming = api.get("/api/v1/schedules/nightly/next", params={"n": 3}).json()["next"]
    with WebClient(server, "alice") as web:
        page = web.get("/ui/schedules")
        assert page.status_code == 200 and '<table id="schedules">' in page.text
        mine = row(page.text, "alice/nightly")
        assert "every PT1H" in mine and "true" in mine and "2099-01-01 01:00:00" in mine
        assert [when(t) for t in upcoming] == re.findall(r"<time datetime=\"[^\"]+\">([^<]+)</time>", mine)[:3]
        assert "<th>Owner</th>" not in page.text  # a user sees their own only
        assert 'data-action="run-now"' in mine and 'data-action="disable"' in mine
        assert 'name="owner"' not in mine

        r = web.post("/ui/schedules/nightly/run-now")
        assert r.status_code == 303
        job_id = int(re.fullmatch(r"/ui/schedules\?ran=(\d+)", r.headers["location"]).group(1))  # type: ignore[union-attr]
        runs = schedule(server, "alice")["runs"]
        assert [run["job_id"] for run in runs] == [job_id]
        assert server.wait_state(job_id, {"succeeded"})["labels"]["kran.schedule"] == "nightly"
        after = web.get(r.headers["location"]).text
        assert f'<a href="/ui/jobs/{job_id}">job {job_id}</a>' in after  # the notice
        mine = row(after, "alice/nightly")
        assert f'href="/ui/jobs/{job_id}"' in mine and "succeeded" in mine

        detail = web.get("/ui/schedules/nightly")
        assert detail.status_code == 200 and f'href="/ui/jobs/{job_id}"' in detail.text
        assert len(re.findall(r"<li><time", detail.text)) == 10  # ten next fire times on its own page


def test_disable_and_enable_through_the_forms_and_a_forged_token_changes_nothing(server: ServerProc) -> None:
    server.add_user("alice")
    add_schedule(server, "alice", cron="0 3 * * *")
    with WebClient(server, "alice") as web:
        r = web.post("/ui/schedules/nightly/disable")
        assert r.status_code == 303 and r.headers["location"] == "/ui/schedules?done=disabled&key=alice%2Fnightly"
        assert schedule(server, "alice")["enabled"] is False
        page = web.get(r.headers["location"]).text
        assert "Schedule alice/nightly disabled." in page
        mine = row(page, "alice/nightly")
        assert 'data-enabled="false"' in mine and 'data-action="enable"' in mine and "none (disabled)" in mine
        # a notice names only a schedule the viewer has: a crafted link shows nothing of its own
        assert "evil" not in web.get("/ui/schedules", params={"done": "enabled", "key": "evil"}).text

        forged = web.http.post("/ui/schedules/nightly/enable", data={"csrf": "forged"})
        assert forged.status_code == 403 and "CSRF" in forged.text
        absent = web.http.post("/ui/schedules/nightly/enable", data={})
        assert absent.status_code == 403
        assert schedule(server, "alice")["enabled"] is False

        back = "/ui/schedules/nightly"
        r = web.post("/ui/schedules/nightly/enable", {"back": back})
        assert r.status_code == 303 and r.headers["location"].startswith(back + "?")
        assert schedule(server, "alice")["enabled"] is True
        assert "Schedule alice/nightly enabled." in web.get(r.headers["location"]).text
        r = web.post("/ui/schedules/nightly/enable", {"back": "https://evil.test/"})
        assert r.headers["location"].startswith("/ui/schedules?")


def test_another_users_schedule_is_not_found_and_an_admin_names_its_owner(server: ServerProc) -> None:
    server.add_user("alice")
    server.add_user("bob")
    add_schedule(server, "alice")
    with WebClient(server, "bob") as bob:
        assert "alice/nightly" not in bob.get("/ui/schedules").text
        missing = bob.post("/ui/schedules/nosuch/disable")
        assert missing.status_code == 404
        for action in ("enable", "disable", "run-now"):
            for form in ({}, {"owner": "alice"}):
                r = bob.post(f"/ui/schedules/nightly/{action}", form)
                assert r.status_code == 404, (action, form)
                assert r.text.replace("nightly", "nosuch") == missing.text
        assert bob.get("/ui/schedules/nightly", params={"owner": "alice"}).status_code == 404
        assert bob.get("/ui/schedules/nightly").status_code == 404
    theirs = schedule(server, "alice")
    assert theirs["enabled"] is True and theirs["runs"] == []

    with WebClient(server) as admin:
        page = admin.get("/ui/schedules").text
        assert "<th>Owner</th>" in page
        mine = row(page, "alice/nightly")
        assert '<input type="hidden" name="owner" value="alice">' in mine
        assert admin.post("/ui/schedules/nightly/disable").status_code == 404  # the admin has none of that name
        r = admin.post("/ui/schedules/nightly/disable", {"owner": "alice"})
        assert r.status_code == 303
        assert schedule(server, "alice")["enabled"] is False
        detail = admin.get("/ui/schedules/nightly", params={"owner": "alice"})
        assert detail.status_code == 200 and '<input type="hidden" name="owner" value="alice">' in detail.text
        r = admin.post("/ui/schedules/nightly/enable", {"owner": "alice", "back": "/ui/schedules/nightly"})
        assert r.headers["location"] == "/ui/schedules/nightly?done=enabled&key=alice%2Fnightly&owner=alice"
        assert admin.get(r.headers["location"]).status_code == 200


def test_bad_schedule_input_gives_a_reason_not_a_traceback(server: ServerProc) -> None:
    with WebClient(server) as web:
        r = web.post("/ui/schedules/x/run-now", {"owner": "o" * 101})
        assert r.status_code == 422 and "owner" in r.text
        r = web.get("/ui/schedules/" + "n" * 201)
        assert r.status_code == 422
        r = web.get("/ui/schedules", params={"ran": "-1"})
        assert r.status_code == 422 and "Traceback" not in r.text


# ---- workflows

ECHO = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: echo
inputs:
  word: {{type: string, inputBinding: {{position: 1}}}}
  after: {{type: "File[]?"}}
stdout: said.txt
outputs: {{out: {{type: stdout}}}}
"""

# a diamond: first, then left and a scatter of right, then gather
DIAMOND = """
cwlVersion: v1.2
class: Workflow
requirements: {ScatterFeatureRequirement: {}, MultipleInputFeatureRequirement: {}}
inputs: {words: "string[]"}
outputs: {all: {type: File, outputSource: gather/out}}
steps:
  first: {run: echo.cwl, in: {word: {default: start}}, out: [out]}
  left:
    run: echo.cwl
    in: {word: {default: left}, after: {source: [first/out], linkMerge: merge_flattened}}
    out: [out]
  right:
    run: echo.cwl
    scatter: word
    in: {word: words, after: {source: [first/out], linkMerge: merge_flattened}}
    out: [out]
  gather:
    run: cat.cwl
    in: {files: {source: [left/out, right/out], linkMerge: merge_flattened}}
    out: [out]
"""


def submit_run(server: ServerProc, user: str | None, image: str) -> int:
    files = [
        ("file", ("wf.cwl", DIAMOND.encode())),
        ("file", ("echo.cwl", ECHO.format(image=image).encode())),
        ("file", ("cat.cwl", CAT.format(image=image).encode())),
    ]
    run = {"workflow": "wf.cwl", "inputs": {"words": ["a", "b"]}, "name": "diamond"}
    with server.api(user) as api:
        r = api.post("/api/v1/workflows", data={"run": json.dumps(run)}, files=files)
        assert r.status_code == 201, r.text
        run_id: int = r.json()["id"]
        return run_id


def message(html: str) -> str:
    found = re.search(r'<p class="error" role="alert">([^<]*)</p>', html)
    assert found, html
    return found.group(1)


def nodes(html: str) -> dict[str, dict[str, str]]:
    """Each step's box: its class, job and shown state."""
    out = {}
    for m in re.finditer(r'<g class="node ([^"]+)" data-step="([^"]+)"([^>]*)>(.*?)</g>', html, re.S):
        job = re.search(r'data-job="(\d+)"', m.group(3))
        state = re.search(r"<text[^>]*data-step-state>([^<]*)</text>", m.group(4))
        href = re.search(r'<a href="([^"]+)"', m.group(4))
        out[m.group(2)] = {
            "class": m.group(1),
            "job": job.group(1) if job else "",
            "state": state.group(1) if state else "",
            "href": href.group(1).replace("&amp;", "&") if href else "",
            "body": m.group(4),
        }
    return out


@pytest.mark.docker
def test_a_workflow_run_shows_its_step_graph_and_serves_its_outputs(server: ServerProc, test_image: str) -> None:
    server.add_user("alice")
    server.add_user("bob")
    run_id = submit_run(server, "alice", test_image)
    with WebClient(server, "alice") as web:
        listing = web.get("/ui/workflows")
        assert listing.status_code == 200 and '<table id="workflows">' in listing.text
        assert f'<tr data-run="{run_id}">' in listing.text and f'href="/ui/workflows/{run_id}"' in listing.text

        page = web.get(f"/ui/workflows/{run_id}")  # while it runs: the boxes are there already
        assert page.status_code == 200 and "data-dag-live" in page.text
        assert set(nodes(page.text)) == {"first", "left", "right", "gather"}

        deadline = time.monotonic() + 120
        with server.api("alice") as api:
            while (run := api.get(f"/api/v1/workflows/{run_id}").json())["state"] in ("queued", "running"):
                assert time.monotonic() < deadline, run
                live = web.get(f"/ui/workflows/{run_id}/graph")  # the refresh of a running run's page
                assert live.status_code == 200 and 'hx-swap-oob="true"' in live.text
                time.sleep(0.5)
        assert run["state"] == "succeeded", run
        jobs = {s["step"]: s["job"] for s in run["steps"]}

        page = web.get(f"/ui/workflows/{run_id}")
        html = page.text
        assert html.count("data-step=") == 4  # one box per step, the scatter's two jobs in one
        drawn = nodes(html)
        assert set(drawn) == {"first", "left", "right", "gather"}
        for name in ("first", "left", "gather"):
            assert drawn[name]["class"] == "succeeded" and drawn[name]["state"] == "succeeded"
            assert drawn[name]["job"] == str(jobs[name])
            assert drawn[name]["href"] == f"/ui/jobs/{jobs[name]}"
        right = drawn["right"]
        assert right["class"] == "succeeded" and right["job"] == "" and "2/2 done" in right["body"]
        assert right["href"].startswith(f"/ui/jobs?label=kran.workflow%3D{run_id}&name=diamond%2Fright")
        assert html.count('<path class="edge"') == 4
        edges = set(re.findall(r'<path class="edge"[^>]*data-from="([^"]+)" data-to="([^"]+)"', html))
        assert edges == {("first", "left"), ("first", "right"), ("left", "gather"), ("right", "gather")}
        assert "hx-get" not in html.split("data-dag-live", 1)[1].split(">", 1)[0]  # ended: no refresh
        assert web.get(f"/ui/workflows/{run_id}/graph").headers.get("hx-refresh") == "true"
        # the scatter's link lists its jobs, and only them
        listed = web.get(right["href"]).text
        scattered = {s["job"] for s in run["steps"] if s["step"].startswith("right")}
        assert set(map(int, re.findall(r'<tr data-job="(\d+)"', listed))) == scattered and len(scattered) == 2
        inputs = html.split('id="run-inputs"', 1)[1].split("</pre>", 1)[0]
        assert "words" in inputs and "&#34;a&#34;" in inputs  # the job order, escaped

        one = web.get(f"/ui/workflows/{run_id}/outputs/all.txt")
        assert one.status_code == 200 and one.text == "left\na\nb\n"
        assert one.headers["content-disposition"] == 'attachment; filename="all.txt"'
        assert one.headers["content-type"] == "application/octet-stream"
        assert f'href="/ui/workflows/{run_id}/outputs/all.txt"' in html
        archive = web.get(f"/ui/workflows/{run_id}/outputs.tar")
        assert archive.status_code == 200
        assert archive.headers["content-disposition"] == f'attachment; filename="workflow-{run_id}-outputs.tar"'
        with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
            member = tar.extractfile("all.txt")
            assert member is not None and member.read() == b"left\na\nb\n"
        assert web.get(f"/ui/workflows/{run_id}/outputs/nothing.txt").status_code == 404
        assert web.get(f"/ui/workflows/{run_id}/outputs/../../run.log").status_code in (404, 422)

    with WebClient(server, "bob") as bob:
        assert f'data-run="{run_id}"' not in bob.get("/ui/workflows").text
        for path in ("", "/graph", "/outputs.tar", "/outputs/all.txt", "/log"):
            theirs = bob.get(f"/ui/workflows/{run_id}{path}")
            missing = bob.get(f"/ui/workflows/999999{path}")
            assert theirs.status_code == missing.status_code == 404, path
            assert message(theirs.text) == f"workflow run {run_id} not found", path
            assert message(missing.text) == "workflow run 999999 not found", path
        r = bob.post(f"/ui/workflows/{run_id}/cancel")
        assert r.status_code == 404


def test_bad_workflow_requests_give_a_reason(server: ServerProc) -> None:
    with WebClient(server) as web:
        r = web.get("/ui/workflows", params={"state": "nonsense"})
        assert r.status_code == 422 and "state must be among" in r.text
        assert web.get("/ui/workflows/0").status_code == 422
        assert web.get("/ui/workflows/999999").status_code == 404
        empty = web.get("/ui/workflows")
        assert empty.status_code == 200 and "No workflow runs" in empty.text


SLEEPS = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: [sleep, "60"]
inputs: []
outputs: []
"""


@pytest.mark.docker
def test_cancel_through_the_form_kills_the_running_step(server: ServerProc, test_image: str) -> None:
    server.add_user("alice")
    server.add_user("bob")
    files = [("file", ("sleeps.cwl", SLEEPS.format(image=test_image).encode()))]
    with server.api("alice") as api:
        r = api.post("/api/v1/workflows", data={"run": json.dumps({"workflow": "sleeps.cwl"})}, files=files)
        run_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while not any(s["state"] == "running" for s in api.get(f"/api/v1/workflows/{run_id}").json()["steps"]):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    with WebClient(server, "alice") as web:
        page = web.get(f"/ui/workflows/{run_id}").text
        assert 'data-action="cancel"' in page and "hx-get" in page.split("data-dag-live", 1)[1].split(">", 1)[0]
        (step,) = nodes(page).values()
        assert step["class"] == "running" and step["job"]
        assert web.http.post(f"/ui/workflows/{run_id}/cancel", data={"csrf": "forged"}).status_code == 403
        with WebClient(server, "bob") as bob:
            assert bob.post(f"/ui/workflows/{run_id}/cancel").status_code == 404
        assert server.poll(f"/api/v1/workflows/{run_id}", {"running"}, 5)["cancel_requested"] is False
        r = web.post(f"/ui/workflows/{run_id}/cancel")
        assert r.status_code == 303 and r.headers["location"] == f"/ui/workflows/{run_id}"
        run = server.poll(f"/api/v1/workflows/{run_id}", {"cancelled", "failed", "succeeded"}, 30)
        assert run["state"] == "cancelled"
        (step,) = nodes(web.get(f"/ui/workflows/{run_id}").text).values()
        assert step["class"] == "killed" and step["state"] == "killed"
