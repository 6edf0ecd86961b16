"""GA4GH TES 1.1 on a default server (issue 21), through the real client `py-tes`: tasks
with inputs and outputs, each view, paging and filters, cancel, executor errors, several
executors, isolation between users, and every answer checked against the TES 1.1 schemas
(tests/data/tes-1.1.schema.json)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import tes

from tests.conftest import ServerProc

pytestmark = pytest.mark.timeout(180)

SCHEMA = json.loads((Path(__file__).parent.parent / "data" / "tes-1.1.schema.json").read_text())
TES = "/ga4gh/tes/v1"


def _valid(body: Any, definition: str) -> Any:
    """`body` against one of the TES 1.1 schemas (a failure names the first problem)."""
    schema = {**SCHEMA, "$ref": f"#/definitions/{definition}"}
    errors = [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}"
        for e in jsonschema_rs.validator_for(schema).iter_errors(body)
    ]
    assert not errors, (definition, errors, body)
    return body


def _client(server: ServerProc, user: str | None = None) -> tes.HTTPClient:
    key_id, secret = server.users[user] if user else (server.credentials["key_id"], server.credentials["secret"])
    return tes.HTTPClient(server.url, timeout=30, token=f"{key_id}.{secret}")


def _wait(c: tes.HTTPClient, task_id: str, timeout: float = 60) -> tes.Task:
    return c.wait(task_id, timeout=timeout)


def test_a_task_with_inputs_and_outputs_in_each_view(server: ServerProc, test_image: str) -> None:
    c = _client(server)
    script = (
        "mkdir -p /data/out/sub && wc -c < /data/in.txt > /data/out/count && echo deep > /data/out/sub/x && echo said"
    )
    task = tes.Task(
        name="count",
        inputs=[tes.Input(path="/data/in.txt", content="hello\n")],
        outputs=[
            tes.Output(path="/data/out/count", url="file:///elsewhere/count"),
            tes.Output(path="/data/out/sub", url="s3://bucket/sub", type="DIRECTORY"),
        ],
        executors=[tes.Executor(image=test_image, command=["sh", "-c", script], stderr="/logs/err")],
        resources=tes.Resources(cpu_cores=1, ram_gb=0.25),
        tags={"project": "p1"},
    )
    task_id = c.create_task(task)
    done = _wait(c, task_id)
    assert done.state == "COMPLETE"
    with server.api() as h:
        minimal = _valid(h.get(f"{TES}/tasks/{task_id}").json(), "tesTask")
        assert minimal == {"id": task_id, "state": "COMPLETE"}
        basic = _valid(h.get(f"{TES}/tasks/{task_id}", params={"view": "BASIC"}).json(), "tesTask")
        full = _valid(h.get(f"{TES}/tasks/{task_id}", params={"view": "FULL"}).json(), "tesTask")
        assert "content" not in basic["inputs"][0] and full["inputs"][0]["content"] == "hello\n"
        (log,) = basic["logs"]
        assert "system_logs" not in log and "stdout" not in log["logs"][0]
        assert full["logs"][0]["logs"][0]["stdout"] == "said\n" and full["logs"][0]["logs"][0]["exit_code"] == 0
        outputs = {o["path"]: o for o in log["outputs"]}
        assert set(outputs) == {"/data/out/count", "/data/out/sub/x"}
        assert outputs["/data/out/count"]["size_bytes"] == "2"
        assert outputs["/data/out/count"]["url"].startswith(server.url + TES)  # where kran keeps it
        got = h.get(outputs["/data/out/count"]["url"])
        assert got.status_code == 200 and got.text == "6\n"
        assert h.get(outputs["/data/out/sub/x"]["url"]).text == "deep\n"
        assert basic["tags"] == {"project": "p1"} and basic["creation_time"]
    # py-tes reads its own model back from each view
    assert {o.size_bytes for o in c.get_task(task_id, view="FULL").logs[0].outputs} == {2, 5}


def test_executor_error_cancel_and_several_executors(server: ServerProc, test_image: str) -> None:
    c = _client(server)
    failing = c.create_task(tes.Task(executors=[tes.Executor(image=test_image, command=["sh", "-c", "exit 3"])]))
    assert _wait(c, failing).state == "EXECUTOR_ERROR"
    assert c.get_task(failing, "BASIC").logs[0].logs[0].exit_code == 3
    missing = c.create_task(tes.Task(executors=[tes.Executor(image="kran-test/not-here:1", command=["true"])]))
    assert _wait(c, missing).state == "SYSTEM_ERROR"  # not the executor's: it never ran
    with server.api() as h:
        why = h.get(f"{TES}/tasks/{missing}", params={"view": "FULL"}).json()["logs"][0]["system_logs"]
        assert any("not-here" in line or "pull" in line for line in why), why

    steps = [
        tes.Executor(image=test_image, command=["sh", "-c", "echo one > /vol/a; exit 1"], ignore_error=True),
        tes.Executor(image=test_image, command=["sh", "-c", "cat /vol/a > /vol/b"], workdir="/vol"),
        tes.Executor(image=test_image, command=["cat", "/vol/b"], stdout="/vol/out.txt"),
    ]
    chained = c.create_task(
        tes.Task(volumes=["/vol"], executors=steps, outputs=[tes.Output(path="/vol/out.txt", url="file:///x")])
    )
    done = _wait(c, chained)
    assert done.state == "COMPLETE", done
    with server.api() as h:
        full = h.get(f"{TES}/tasks/{chained}", params={"view": "FULL"}).json()
        assert [e["exit_code"] for e in full["logs"][0]["logs"]] == [1, 0, 0]
        assert h.get(full["logs"][0]["outputs"][0]["url"]).text == "one\n"

    sleeper = c.create_task(tes.Task(executors=[tes.Executor(image=test_image, command=["sleep", "300"])]))
    deadline = time.monotonic() + 60
    while c.get_task(sleeper).state != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    c.cancel_task(sleeper)
    assert c.get_task(sleeper).state in ("CANCELING", "CANCELED")
    deadline = time.monotonic() + 30  # SIGTERM; py-tes's wait() takes CANCELING for an end
    while (state := c.get_task(sleeper).state) == "CANCELING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert state == "CANCELED"
    c.cancel_task(sleeper)  # again: it has ended, nothing to do


def test_list_pages_and_filters(server: ServerProc, test_image: str) -> None:
    c = _client(server)
    true = [tes.Executor(image=test_image, command=["true"])]
    ids = [c.create_task(tes.Task(name=f"batch-{i}", tags={"n": str(i % 2)}, executors=true)) for i in range(5)]
    other = c.create_task(tes.Task(name="other", executors=true))
    for t in [*ids, other]:
        _wait(c, t)
    seen: list[str] = []
    token = None
    with server.api() as h:
        while True:
            params: dict[str, Any] = {"page_size": 2, "name_prefix": "batch-", "view": "BASIC"}
            if token:
                params["page_token"] = token
            page = _valid(h.get(f"{TES}/tasks", params=params).json(), "tesListTasksResponse")
            seen += [t["id"] for t in page["tasks"]]
            token = page.get("next_page_token")
            if not token:
                break
        assert seen == ids[::-1]  # newest first, every one once
        odd = h.get(f"{TES}/tasks", params={"tag_key": "n", "tag_value": "1"}).json()["tasks"]
        assert {t["id"] for t in odd} == {ids[1], ids[3]}
        complete = h.get(f"{TES}/tasks", params={"state": "COMPLETE", "name_prefix": "oth"}).json()["tasks"]
        assert [t["id"] for t in complete] == [other]
        assert h.get(f"{TES}/tasks", params={"state": "RUNNING"}).json()["tasks"] == []
    listed = c.list_tasks(view="MINIMAL", page_size=3)
    assert len(listed.tasks) == 3 and listed.next_page_token


def test_bad_tasks_are_400_naming_the_field_and_nothing_is_stored(server: ServerProc, test_image: str) -> None:
    ex = {"image": test_image, "command": ["true"]}
    bad = {
        "inputs[0].path": {"executors": [ex], "inputs": [{"path": "relative", "content": "x"}]},
        "outputs[0].path": {"executors": [ex], "outputs": [{"path": "/data/../etc/x", "url": "file:///x"}]},
        "volumes[0]": {"executors": [ex], "volumes": ["/proc/self"]},
        "inputs[0]": {"executors": [ex], "inputs": [{"path": "/data/x"}]},
        "executors": {"executors": []},
        "resources.backend_parameters": {
            "executors": [ex],
            "resources": {"backend_parameters": {"VmSize": "big"}, "backend_parameters_strict": True},
        },
        "inputs[0].url": {"executors": [ex], "inputs": [{"path": "/data/x", "url": "s3://bucket/key"}]},
    }
    with server.api() as h:
        for field, body in bad.items():
            r = h.post(f"{TES}/tasks", json=body)
            assert r.status_code == 400 and r.json()["field"] == field, (field, r.text)
        r = h.post(f"{TES}/tasks", json={"executors": [{"image": test_image}]})
        assert r.status_code == 400 and "command" in r.json()["field"]
        r = h.post(f"{TES}/tasks", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400
        assert h.get(f"{TES}/tasks").json() == {"tasks": []}


def test_another_users_task_is_not_found(server: ServerProc, test_image: str) -> None:
    server.add_user("alice")
    server.add_user("bob")
    alice, bob = _client(server, "alice"), _client(server, "bob")
    task_id = alice.create_task(tes.Task(executors=[tes.Executor(image=test_image, command=["sleep", "60"])]))
    for call in (lambda: bob.get_task(task_id), lambda: bob.cancel_task(task_id)):
        with pytest.raises(Exception) as e:
            call()
        assert "404" in str(e.value)
    with server.api("bob") as h:
        assert h.get(f"{TES}/tasks").json() == {"tasks": []}
        assert h.get(f"{TES}/tasks/{task_id}/outputs/x").status_code == 404
    assert alice.get_task(task_id).state in ("QUEUED", "INITIALIZING", "RUNNING")
    alice.cancel_task(task_id)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}{TES}/tasks").raise_for_status()  # no credentials: 401


def test_service_info_and_kran_openapi_for_the_tes_routes(server: ServerProc) -> None:
    info = _valid(_client(server).get_service_info().as_dict(), "tesServiceInfo")
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    with server.api() as h:
        _valid(h.get(f"{TES}/service-info").json(), "tesServiceInfo")
        paths = h.get("/api/v1/openapi.json").json()["paths"]
    ours = {p: sorted(ops) for p, ops in paths.items() if p.startswith(TES)}
    assert ours == {
        f"{TES}/service-info": ["get"],
        f"{TES}/tasks": ["get", "post"],
        f"{TES}/tasks/{{id}}": ["get"],
        f"{TES}/tasks/{{id}}:cancel": ["post"],
    }
    listing = {p["name"] for p in paths[f"{TES}/tasks"]["get"]["parameters"]}
    assert listing == {"name_prefix", "state", "tag_key", "tag_value", "page_size", "page_token", "view"}
    # kran's own description of the bodies: the fields TES names, no other, the required ones required
    with server.api() as h:
        components = h.get("/api/v1/openapi.json").json()["components"]["schemas"]
    ours_by_tes = {
        "tesTask": "TaskOut",
        "tesInput": "InputOut",
        "tesOutput": "TesOutput",
        "tesExecutor": "TesExecutor",
        "tesResources": "TesResources",
        "tesTaskLog": "TaskLog",
        "tesExecutorLog": "ExecutorLog",
        "tesOutputFileLog": "OutputFileLog",
        "tesListTasksResponse": "ListTasksResponse",
        "tesCreateTaskResponse": "CreateTaskResponse",
        "tesServiceInfo": "ServiceInfo",
    }
    for theirs, name in ours_by_tes.items():
        mine = next(v for k, v in components.items() if k == name or k.startswith(name + "-"))
        spec = SCHEMA["definitions"][theirs]
        if theirs == "tesServiceInfo":  # GA4GH service-info's optional fields kran leaves out
            assert set(mine["properties"]) <= set(spec["properties"]), theirs
        else:
            assert set(mine["properties"]) == set(spec["properties"]), theirs
        assert set(spec.get("required", ())) <= set(mine.get("required", ())) | {"executors"}, theirs


def test_file_outputs_are_written_as_the_tasks_user_under_the_allowed_roots(
    make_server: Any, request: pytest.FixtureRequest, test_image: str
) -> None:
    """tes.output_roots with {user}: alice's file:// outputs land in her dir, written by a
    process of her jobs' uid (what she may write there is what that uid may); an output
    URL in bob's dir is not written for her (kran keeps it, and says so); a dir her uid
    cannot write fails the task."""
    shared = Path(tempfile.mkdtemp(prefix="kran-tes-out-"))  # where other uids may pass (pytest's tmp is root's alone)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o755)
    (shared / "alice").mkdir()
    (shared / "bob").mkdir()
    (shared / "alice").chmod(0o1777)
    (shared / "bob").chmod(0o1777)
    server = make_server(KRAN_TES_OUTPUT_ROOTS=f"{shared}/{{user}}")
    server.add_user("alice")
    c = tes.HTTPClient(server.url, timeout=30, user=server.users["alice"][0], password=server.users["alice"][1])
    make = "mkdir -p /w/d && echo a > /w/one && echo b > /w/d/two && echo c > /w/d/three.log"
    task_id = c.create_task(
        tes.Task(
            executors=[tes.Executor(image=test_image, command=["sh", "-c", make])],
            outputs=[
                tes.Output(path="/w/one", url=f"file://{shared}/alice/run1/one.txt"),
                tes.Output(path="/w/d", url=f"file://{shared}/alice/run1/d", type="DIRECTORY"),
                tes.Output(path="/w/d/*.log", path_prefix="/w", url=f"file://{shared}/alice/logs"),
                tes.Output(path="/w/one", url=f"file://{shared}/bob/stolen"),
            ],
        )
    )
    assert _wait(c, task_id).state == "COMPLETE"
    written = shared / "alice" / "run1" / "one.txt"
    assert written.read_text() == "a\n" and (shared / "alice/run1/d/two").read_text() == "b\n"
    assert (shared / "alice/logs/d/three.log").read_text() == "c\n"
    assert written.stat().st_uid >= 1_100_000_000  # her jobs' uid (local.job_uids), not the server's root
    assert not (shared / "bob" / "stolen").exists()
    with server.api("alice") as h:
        full = _valid(h.get(f"{TES}/tasks/{task_id}", params={"view": "FULL"}).json(), "tesTask")
    urls = {o["url"] for o in full["logs"][0]["outputs"]}
    assert f"file://{written}" in urls and any(u.startswith(server.url + TES) for u in urls)
    assert any("kept by kran" in line for line in full["logs"][0]["system_logs"])

    (shared / "alice").chmod(0o755)  # root's: her uid may not write there
    denied = c.create_task(
        tes.Task(
            executors=[tes.Executor(image=test_image, command=["sh", "-c", "echo x > /w/x"])],
            outputs=[tes.Output(path="/w/x", url=f"file://{shared}/alice/x")],
        )
    )
    assert _wait(c, denied).state == "SYSTEM_ERROR"
    assert not (shared / "alice" / "x").exists()


def test_ended_tasks_dirs_go_with_files_retention(make_server: Any, test_image: str) -> None:
    server = make_server(KRAN_FILES_RETENTION="2s", KRAN_FILES_RETENTION_CHECK_S="0.2")
    c = _client(server)
    task_id = c.create_task(
        tes.Task(
            executors=[tes.Executor(image=test_image, command=["sh", "-c", "echo kept > /w/o"])],
            outputs=[tes.Output(path="/w/o", url="s3://b/o")],
        )
    )
    assert _wait(c, task_id).state == "COMPLETE"
    with server.api() as h:
        url = h.get(f"{TES}/tasks/{task_id}", params={"view": "BASIC"}).json()["logs"][0]["outputs"][0]["url"]
        assert h.get(url).text == "kept\n"
        deadline = time.monotonic() + 20
        while (server.data_dir / "tes" / task_id).exists():
            assert time.monotonic() < deadline, "the task's dir outlived files.retention"
            time.sleep(0.3)
        assert h.get(url).status_code == 404
        assert h.get(f"{TES}/tasks/{task_id}").json()["state"] == "COMPLETE"  # the record stays


def test_http_inputs_through_kran_fetcher_and_tags_as_job_labels(
    make_server: Any, file_server: Any, test_image: str
) -> None:
    server = make_server(KRAN_FILES_FETCH_HOSTS="127.0.0.1")  # (loopback: refused unless named)
    data = b"ref\n" * 1000
    (file_server.root / "ref.txt").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    c = _client(server)
    good = c.create_task(
        tes.Task(
            inputs=[tes.Input(path="/ref/genome.txt", url=f"{file_server.url}/ref.txt#sha256={digest}")],
            executors=[tes.Executor(image=test_image, command=["wc", "-c", "/ref/genome.txt"])],
            tags={"project": "p1", "not a label key": "kept on the task"},
        )
    )
    bad = c.create_task(
        tes.Task(
            inputs=[tes.Input(path="/ref/genome.txt", url=f"{file_server.url}/ref.txt#sha256={'0' * 64}")],
            executors=[tes.Executor(image=test_image, command=["true"])],
        )
    )
    assert _wait(c, good).state == "COMPLETE" and _wait(c, bad).state == "SYSTEM_ERROR"
    with server.api() as h:
        full = h.get(f"{TES}/tasks/{good}", params={"view": "FULL"}).json()
        assert full["logs"][0]["logs"][0]["stdout"].split()[0] == str(len(data))
        assert full["tags"] == {"project": "p1", "not a label key": "kept on the task"}
        job = h.get(f"/api/v1/jobs/{full['logs'][0]['metadata']['kran_jobs']}").json()
        assert job["labels"] == {"project": "p1", "tes.task": good}
        why = h.get(f"{TES}/tasks/{bad}", params={"view": "FULL"}).json()["logs"][0]["system_logs"]
        assert any("sha256 mismatch" in line for line in why), why


def test_an_app_as_a_backend_parameter_runs_only_its_own_image(server: ServerProc, test_image: str) -> None:
    with server.api() as h:
        h.post(
            "/api/v1/apps/counter", json={"image": test_image, "env": {"GREETING": "from the app"}}
        ).raise_for_status()
        ex = {"image": test_image, "command": ["sh", "-c", 'echo "$GREETING"']}
        params = {"backend_parameters": {"app": "counter"}}
        r = h.post(f"{TES}/tasks", json={"executors": [ex], "resources": params})
        assert r.status_code == 200, r.text
        task_id = r.json()["id"]
        other = {**ex, "image": "kran-test/entrypoint:latest"}
        r = h.post(f"{TES}/tasks", json={"executors": [other], "resources": params})
        assert r.status_code == 400 and r.json()["field"] == "executors[0].image", r.text
        r = h.post(f"{TES}/tasks", json={"executors": [ex], "resources": {"backend_parameters": {"app": "nope"}}})
        assert r.status_code == 400 and r.json()["field"] == "resources.backend_parameters", r.text
    done = _wait(_client(server), task_id)
    assert done.state == "COMPLETE"
    with server.api() as h:
        full = h.get(f"{TES}/tasks/{task_id}", params={"view": "FULL"}).json()
        assert full["logs"][0]["logs"][0]["stdout"] == "from the app\n"
        job = h.get(f"/api/v1/jobs/{full['logs'][0]['metadata']['kran_jobs']}").json()
        assert job["app"] == "counter" and job["labels"]["kran.app"] == "counter"
