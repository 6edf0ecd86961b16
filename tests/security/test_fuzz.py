"""Property-based fuzz of the submit, schedule, app, upload and workflow schemas (issue
18): whatever the body, no 5xx, and every accepted object can be read back and listed.
Strings include lone surrogates, NUL bytes and odd Unicode; numbers include huge ones
and bools; upload and bundle file names paths that leave, nest, repeat or are empty."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import ServerProc

texts = st.text(st.characters(codec=None, categories=None), max_size=12) | st.sampled_from(
    ["\ud800", "x\udfff", "\udc80y", "a\x00b", "", " ", "1-", "2G", "R/PT1H", "0 3 * * *", "../x", "é" * 3]
)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | texts
values = (
    st.lists(texts, min_size=1, max_size=3)
    | st.dictionaries(texts, texts, max_size=2)
    | st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=6
    )
)

JOB_FIELDS = ["command", "sh", "image", "name", "cpus", "mem", "env", "labels", "priority", "retries", "timeout",
              "network", "files", "grace", "on_behalf_of"]  # fmt: skip
BLOCKER = 1  # the fixture's first job, which never ends: accepted jobs wait on it, none runs
good_job = st.fixed_dictionaries({"command": st.just(["true"]), "after": st.just([BLOCKER])})
jobs = st.builds(
    lambda base, extra: {**base, **extra},
    good_job,
    st.dictionaries(st.sampled_from(JOB_FIELDS), values, min_size=1, max_size=3),
)
schedules = st.builds(
    lambda job, trig, extra: {"name": "s", "job": job, **trig, **extra},
    jobs,
    st.sampled_from([{"every": "R/PT1H"}, {"cron": "0 3 * * *"}])
    | st.dictionaries(st.sampled_from(["every", "cron"]), texts, max_size=1),
    st.dictionaries(
        st.sampled_from(["tz", "start", "repeat", "max_lateness", "overlap", "catch_up"]), values, max_size=2
    ),
)
apps = st.dictionaries(
    st.sampled_from(["image", "cpus", "mem", "env", "timeout", "retries", "network", "shared", "volume"]),
    values,
    max_size=3,
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import os

    from tests.conftest import _cleanup_engine_leftovers, free_port

    data, home = tmp_path_factory.mktemp("fuzz-data"), tmp_path_factory.mktemp("fuzz-home")
    env = {**os.environ, "HOME": str(home), "KRAN_CAPACITY_CPUS": "4",
           "KRAN_CAPACITY_MEM_MB": "8192", "KRAN_CAPACITY_GPUS": "0"}  # fmt: skip
    env.pop("KRAN_CONFIG", None)
    s = ServerProc(data, free_port(), env)
    s.start()
    s.add_user("fz")
    with s.api("fz") as c:
        assert c.post("/api/v1/jobs", json={"command": ["sleep", "3600"]}).json()["id"] == BLOCKER
    yield s
    s.stop()
    _cleanup_engine_leftovers(data)


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _post(server: ServerProc, path: str, body: Any) -> httpx.Response:
    with server.api("fz") as c:
        return c.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


@FUZZ
@given(body=jobs)
def test_fuzz_job_submit(fuzz_server: ServerProc, body: dict[str, Any]) -> None:
    r = _post(fuzz_server, "/api/v1/jobs", body)
    assert r.status_code < 500, (body, r.text)
    if r.status_code == 201:
        with fuzz_server.api("fz") as c:
            assert c.get(f"/api/v1/jobs/{r.json()['id']}").status_code == 200
            assert c.get("/api/v1/jobs", params={"limit": 5}).status_code == 200


@FUZZ
@given(body=schedules)
def test_fuzz_schedule_add(fuzz_server: ServerProc, body: dict[str, Any]) -> None:
    r = _post(fuzz_server, "/api/v1/schedules", body)
    assert r.status_code < 500, (body, r.text)
    with fuzz_server.api("fz") as c:
        if r.status_code == 201:
            assert c.get("/api/v1/schedules/s").status_code == 200
            assert c.get("/api/v1/schedules/s/next").status_code == 200
            assert c.delete("/api/v1/schedules/s").status_code < 500
        assert c.get("/api/v1/schedules").status_code == 200


@FUZZ
@given(body=apps)
def test_fuzz_app_load(fuzz_server: ServerProc, body: dict[str, Any]) -> None:
    r = _post(fuzz_server, "/api/v1/apps/fuzzed", body)
    assert r.status_code < 500, (body, r.text)
    with fuzz_server.api("fz") as c:
        if r.status_code == 201:
            assert c.get("/api/v1/apps/fuzzed").status_code == 200
        assert c.get("/api/v1/apps").status_code == 200


# multipart file names travel as UTF-8 in the part's header: no lone surrogates there
names = st.text(st.characters(codec="utf-8"), max_size=20) | st.sampled_from(
    ["../x", "/etc/passwd", "a/../../b", "a", "a/b", "./a", "a//b", "", ".", "..", "x" * 300, "/".join("d" * 300),
     "a\x00b", "in/ok.txt", "sp ace", "é/ü"]
)  # fmt: skip
contents = st.binary(max_size=64) | st.sampled_from([b"", b"hello\n"])


@FUZZ
@given(parts=st.lists(st.tuples(names, contents), max_size=4), job=good_job | jobs)
def test_fuzz_job_upload(fuzz_server: ServerProc, parts: list[tuple[str, bytes]], job: dict[str, Any]) -> None:
    with fuzz_server.api("fz") as c:
        r = c.post(
            "/api/v1/jobs/upload",
            data={"job": json.dumps(job)},
            files=[("input", (name, data)) for name, data in parts] or None,
        )
        assert r.status_code < 500, (parts, job, r.text)
        event(f"status {r.status_code}")
        if r.status_code == 201:
            assert c.get(f"/api/v1/jobs/{r.json()['id']}").status_code == 200
            assert c.get("/api/v1/jobs", params={"limit": 5}).status_code == 200


TOOL = b"cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: 'true'\ninputs: []\noutputs: []\n"
documents = st.sampled_from([TOOL, b"", b"{", b"cwlVersion: v1.2\nclass: Nope\n", b"a: &a [*a]"]) | st.binary(
    max_size=40
)
run_fields = st.dictionaries(st.sampled_from(["workflow", "job_order", "inputs", "name", "labels"]), values, max_size=3)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    run=st.just({}) | run_fields,
    workflow=st.just("tool.cwl") | names,
    bundle=st.lists(st.tuples(st.just("tool.cwl") | names, documents), max_size=3),
)
def test_fuzz_workflow_submit(
    fuzz_server: ServerProc, run: dict[str, Any], workflow: str, bundle: list[tuple[str, bytes]]
) -> None:
    body = {"workflow": workflow, **run}
    with fuzz_server.api("fz") as c:
        if bundle:
            files = [("file", (name, doc)) for name, doc in bundle]
            r = c.post("/api/v1/workflows", data={"run": json.dumps(body)}, files=files)
        else:
            r = c.post(
                "/api/v1/workflows", content=json.dumps(body).encode(), headers={"content-type": "application/json"}
            )
        assert r.status_code < 500, (body, bundle, r.text)
        event(f"status {r.status_code}")
        if r.status_code == 201:
            run_id = r.json()["id"]
            assert c.get(f"/api/v1/workflows/{run_id}").status_code == 200
            c.post(f"/api/v1/workflows/{run_id}/cancel")
        assert c.get("/api/v1/workflows").status_code == 200
