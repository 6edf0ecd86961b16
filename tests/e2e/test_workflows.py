"""CWL workflow runs on a real server and the real Docker engine: every tool step a kran job."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc, cli_for
from tests.relay import Relay

pytestmark = pytest.mark.docker

ECHO = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: [sh, -c]
arguments: ["sleep $0; echo $1", $(inputs.pause), $(inputs.word)]
inputs:
  word: string
  pause: {{type: int, default: 0}}
stdout: said.txt
outputs: {{out: {{type: stdout}}}}
"""

CAT = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: cat
inputs: {{files: {{type: "File[]", inputBinding: {{position: 1}}}}}}
stdout: all.txt
outputs: {{out: {{type: stdout}}}}
"""

SCATTER = """
cwlVersion: v1.2
class: Workflow
requirements: {ScatterFeatureRequirement: {}, MultipleInputFeatureRequirement: {}}
inputs: {words: "string[]", extra: File}
outputs: {all: {type: File, outputSource: gather/out}}
steps:
  say: {run: echo.cwl, scatter: word, in: {word: words}, out: [out]}
  gather:
    run: cat.cwl
    in: {files: {source: [say/out, extra], linkMerge: merge_flattened}}
    out: [out]
"""

CHAIN = """
cwlVersion: v1.2
class: Workflow
requirements: {StepInputExpressionRequirement: {}}
inputs: {pause: int}
outputs: {all: {type: File, outputSource: second/out}}
steps:
  first: {run: echo.cwl, in: {word: {default: one}}, out: [out]}
  second: {run: echo.cwl, in: {word: {source: first/out, valueFrom: two}, pause: pause}, out: [out]}
"""

FAILS = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: [sh, -c, "echo broken >&2; exit 3"]
inputs: []
outputs: []
"""

ENV_ECHO = """
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {{dockerPull: "{image}"}}
  EnvVarRequirement: {{envDef: {{WORD: $(inputs.word)}}}}
baseCommand: [sh, -c, 'echo "$WORD"']
inputs: {{word: string}}
stdout: said.txt
outputs: {{out: {{type: stdout}}}}
"""

ENV_SCATTER = """
cwlVersion: v1.2
class: Workflow
requirements: {ScatterFeatureRequirement: {}}
inputs: {words: "string[]"}
outputs: {all: {type: File, outputSource: gather/out}}
steps:
  say: {run: env_echo.cwl, scatter: word, in: {word: words}, out: [out]}
  gather: {run: cat.cwl, in: {files: say/out}, out: [out]}
"""

BUILDS = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {DockerRequirement: {dockerFile: "FROM scratch"}}
baseCommand: "true"
inputs: []
outputs: []
"""


def _write(d: Path, image: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("echo.cwl", ECHO),
        ("cat.cwl", CAT),
        ("fails.cwl", FAILS),
        ("env_echo.cwl", ENV_ECHO),
    ):
        (d / name).write_text(text.format(image=image))
    (d / "scatter.cwl").write_text(SCATTER)
    (d / "chain.cwl").write_text(CHAIN)
    (d / "builds.cwl").write_text(BUILDS)
    (d / "env_scatter.cwl").write_text(ENV_SCATTER)
    (d / "extra.txt").write_text("extra\n")
    (d / "job.yml").write_text("words: [a, b, c]\nextra: {class: File, location: extra.txt}\n")
    return d


@pytest.fixture
def wf_server(make_server: Any, tmp_path: Path, test_image: str) -> ServerProc:
    shared = tmp_path / "shared"
    _write(shared, test_image)
    s: ServerProc = make_server(KRAN_FILES_FILE_URL_ROOTS=str(shared), KRAN_WORKFLOW_DEFAULT_IMAGE=test_image)
    return s


def _wait_run(server: ServerProc, run_id: int, states: set[str], timeout: float = 60) -> dict[str, Any]:
    return server.poll(f"/api/v1/workflows/{run_id}", states, timeout, every=0.2)


def test_scatter_workflow_uploaded_runs_each_step_as_a_job(
    wf_server: ServerProc, tmp_path: Path, test_image: str
) -> None:
    kran = cli_for(wf_server)
    local = _write(tmp_path / "mine", test_image)  # not on a shared root: packed and uploaded
    r = kran("workflow", "run", str(local / "scatter.cwl"), str(local / "job.yml"), "--label", "project=x", "--wait")
    assert r.exit_code == 0, r.output
    run_id = int(r.output.split()[0])
    show = json.loads(kran("workflow", "show", str(run_id), "--json").output)
    assert show["state"] == "succeeded" and show["labels"] == {"project": "x"}
    steps = show["steps"]
    assert sorted(s["step"] for s in steps) == ["gather", "say", "say_2", "say_3"]
    assert all(s["state"] == "succeeded" and s["duration_s"] is not None for s in steps)
    assert len({s["job"] for s in steps}) == 4
    with wf_server.api() as c:  # ordinary kran jobs, with the run's label
        job = c.get(f"/api/v1/jobs/{steps[0]['job']}").json()
        assert job["labels"]["kran.workflow"] == str(run_id) and job["image"] == test_image
    table = kran("workflow", "show", str(run_id)).output
    assert "gather" in table and "succeeded" in table
    out = tmp_path / "out"
    outputs = json.loads(kran("workflow", "outputs", str(run_id), "-o", str(out)).output)
    assert (out / "all.txt").read_text() == "a\nb\nc\nextra\n"
    assert outputs["all"]["location"] == f"file://{out.resolve()}/all.txt"
    assert outputs["all"]["size"] == len("a\nb\nc\nextra\n")
    assert str(run_id) in kran("workflow", "list").output


def test_steps_differing_only_in_an_input_outside_the_command_line_each_run(
    wf_server: ServerProc, tmp_path: Path
) -> None:
    """The word reaches the step as an env var only: cwltool's cache key (command line,
    files, requirements as written) is the same for all three; the run's cache must not
    hand the first one's result to the others."""
    kran = cli_for(wf_server)
    shared = tmp_path / "shared"
    (shared / "words.yml").write_text("words: [a, b, c]\n")
    out = tmp_path / "o"
    r = kran("cwl", "--quiet", "--outdir", str(out), str(shared / "env_scatter.cwl"), str(shared / "words.yml"))
    assert r.exit_code == 0, r.output
    assert (out / "all.txt").read_text() == "a\nb\nc\n"


def test_cwl_runner_interface_exit_codes(wf_server: ServerProc, tmp_path: Path) -> None:
    kran = cli_for(wf_server)
    shared = tmp_path / "shared"  # on the root: read by path, nothing uploaded
    out = tmp_path / "o"
    r = kran("cwl", "--quiet", "--outdir", str(out), str(shared / "scatter.cwl"), str(shared / "job.yml"))
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["all"]["basename"] == "all.txt" and (out / "all.txt").read_text() == "a\nb\nc\nextra\n"
    r = kran("cwl", "--quiet", "--outdir", str(out), str(shared / "fails.cwl"))
    assert r.exit_code == 1
    assert "permanentFail" in r.stderr or "failed" in r.stderr
    assert "fails.cwl" in r.stderr and "exit code 3" in r.stderr  # the step and its job, one command away
    r = kran("cwl", "--quiet", "--outdir", str(out), str(shared / "builds.cwl"))
    assert r.exit_code == 33, r.output
    (shared / "broken.cwl").write_text("cwlVersion: v1.2\nclass: CommandLineTool\ninputs: 3\n")
    r = kran("cwl", "--quiet", "--outdir", str(out), str(shared / "broken.cwl"))
    assert r.exit_code == 1


def test_inputs_in_a_dir_users_may_change_are_not_bound(wf_server: ServerProc, tmp_path: Path) -> None:
    """kran checked an input's real path under the shared roots, then the daemon bound the
    path as root, following links: a user who may write in a dir on the way could swap in a
    link meanwhile and get any host path into their container (the race an outside attack
    won for file:// fetches). Such an input is refused, with the reason; a dir only root can
    change (pytest's tmp) is bound as before (the other tests)."""
    kran = cli_for(wf_server)
    shared = tmp_path / "shared"
    (shared / "open").mkdir()
    (shared / "open").chmod(0o777)
    (shared / "open" / "extra.txt").write_text("extra\n")
    (shared / "open.yml").write_text("words: [a]\nextra: {class: File, location: open/extra.txt}\n")
    r = kran("workflow", "run", str(shared / "scatter.cwl"), str(shared / "open.yml"), "--wait")
    assert r.exit_code != 0, r.output
    run_id = int(r.output.split()[0])
    with wf_server.api() as c:
        assert c.get(f"/api/v1/workflows/{run_id}").json()["state"] == "failed"
        log = c.get(f"/api/v1/workflows/{run_id}/log").text
    assert f"{shared / 'open'} may be changed by users" in log, log
    (shared / "open" / "scatter.cwl").write_text((shared / "scatter.cwl").read_text())  # a document there too
    r = kran("workflow", "run", str(shared / "open" / "scatter.cwl"), str(shared / "job.yml"), "--wait")
    assert r.exit_code != 0 and "may be changed by users" in r.output + r.stderr, r.output


def test_a_wait_is_answered_when_the_run_ends(wf_server: ServerProc, tmp_path: Path) -> None:
    """`GET /workflows/ID?wait_s=S` (what a quiet `kran-cwl-runner` asks) is answered when
    the run ends, not S later nor before; another user is told it is not found at once."""
    shared = tmp_path / "shared"
    (shared / "short.yml").write_text("pause: 2\n")
    wf_server.add_user("bob")
    with wf_server.api() as c:
        r = c.post(
            "/api/v1/workflows", json={"workflow": str(shared / "chain.cwl"), "job_order": str(shared / "short.yml")}
        )
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        assert c.get(f"/api/v1/workflows/{run_id}", params={"wait_s": 31}).status_code == 422
        with wf_server.api("bob") as b:
            t = time.monotonic()
            assert b.get(f"/api/v1/workflows/{run_id}", params={"wait_s": 30}).status_code == 404
            assert time.monotonic() - t < 5
        t = time.monotonic()
        r = c.get(f"/api/v1/workflows/{run_id}", params={"wait_s": 30}, timeout=60)
        took = time.monotonic() - t
    assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text
    assert 1.5 < took < 25, took  # the second step sleeps 2 s; answered when the run ended
    with wf_server.api() as c:
        t = time.monotonic()
        assert c.get(f"/api/v1/workflows/{run_id}", params={"wait_s": 30}).json()["state"] == "succeeded"
        assert time.monotonic() - t < 5  # ended: at once


def test_event_streams_are_capped_and_hold_no_request_thread(wf_server: ServerProc, tmp_path: Path) -> None:
    """Each open `/events` stream held one of the API's 40 request threads while it slept:
    a user opening 45 of them stopped the server answering anyone. They now share the
    followed logs' threads and caps (8 per user): the 9th is refused with 429."""
    shared = tmp_path / "shared"
    (shared / "slow.yml").write_text("pause: 60\n")
    with wf_server.api() as c, contextlib.ExitStack() as streams:
        r = c.post(
            "/api/v1/workflows", json={"workflow": str(shared / "chain.cwl"), "job_order": str(shared / "slow.yml")}
        )
        run_id = r.json()["id"]
        codes = []
        for i in range(45):
            resp = streams.enter_context(c.stream("GET", f"/api/v1/workflows/{run_id}/events", timeout=10))
            codes.append(resp.status_code)
            if i == 0:
                first = next(resp.iter_lines())
                assert first == "event: workflow", first
        run = c.get(f"/api/v1/workflows/{run_id}").json()  # (a step that failed at once ends the streams)
        assert codes[:8] == [200] * 8 and set(codes[8:]) == {429}, (codes, run)
        t = time.monotonic()
        with wf_server.api() as other:
            assert other.get("/api/v1/jobs", timeout=10).status_code == 200
        assert time.monotonic() - t < 5
        c.post(f"/api/v1/workflows/{run_id}/cancel")


def test_cancel_kills_running_steps(wf_server: ServerProc, tmp_path: Path) -> None:
    kran = cli_for(wf_server)
    shared = tmp_path / "shared"
    (shared / "slow.yml").write_text("pause: 60\n")
    run_id = int(kran("workflow", "run", str(shared / "chain.cwl"), str(shared / "slow.yml")).output.split()[0])
    deadline = time.monotonic() + 60
    while True:
        run = _wait_run(wf_server, run_id, {"running"})
        second = [s for s in run["steps"] if s["step"] == "second"]
        if second and second[0]["state"] == "running":
            break
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    assert kran("workflow", "cancel", str(run_id)).exit_code == 0
    run = _wait_run(wf_server, run_id, {"cancelled", "failed", "succeeded"}, timeout=30)
    assert run["state"] == "cancelled"
    assert [s["state"] for s in run["steps"] if s["step"] == "second"] == ["killed"]


def test_kill9_of_the_server_resumes_the_run_without_running_a_step_twice(
    wf_server: ServerProc, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    (shared / "pause.yml").write_text("pause: 4\n")
    with wf_server.api() as c:
        run_id = c.post(
            "/api/v1/workflows", json={"workflow": str(shared / "chain.cwl"), "job_order": str(shared / "pause.yml")}
        ).json()["id"]
    deadline = time.monotonic() + 60
    while not any(
        s["step"] == "second" and s["state"] == "running" for s in _wait_run(wf_server, run_id, {"running"})["steps"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    wf_server.kill9()
    wf_server.start()
    run = _wait_run(wf_server, run_id, {"succeeded", "failed", "cancelled"}, timeout=60)
    assert run["state"] == "succeeded", run
    assert sorted(s["step"] for s in run["steps"]) == ["first", "second"]  # each step once
    with wf_server.api() as c:
        for s in run["steps"]:
            assert len(c.get(f"/api/v1/jobs/{s['job']}").json()["attempts"]) == 1
        outputs = c.get(f"/api/v1/workflows/{run_id}/outputs").json()["outputs"]
    assert outputs["all"]["size"] == len("two\n")


def test_bad_submissions_are_refused_and_runs_are_private(wf_server: ServerProc, tmp_path: Path) -> None:
    outside = tmp_path / "mine"
    outside.mkdir()
    (outside / "x.cwl").write_text(ECHO.format(image="x"))
    wf_server.add_user("bob")
    with wf_server.api() as c:
        r = c.post("/api/v1/workflows", json={"workflow": str(outside / "x.cwl")})
        assert r.status_code == 422 and "root" in r.json()["error"]
        r = c.post("/api/v1/workflows", json={"workflow": "missing.cwl"})
        assert r.status_code == 422 and "uploaded" in r.json()["error"]
        shared = tmp_path / "shared"
        r = c.post(
            "/api/v1/workflows",
            json={
                "workflow": str(shared / "cat.cwl"),
                "inputs": {"files": [{"class": "File", "location": "/etc/shadow"}]},
            },
        )
        assert r.status_code == 422 and "/etc/shadow" in r.json()["error"]
        r = c.post("/api/v1/workflows", json={"workflow": str(shared / "echo.cwl"), "labels": {"bad key": "v"}})
        assert r.status_code == 422
        assert c.get("/api/v1/workflows/999").status_code == 404
        run_id = c.post(
            "/api/v1/workflows", json={"workflow": str(shared / "echo.cwl"), "inputs": {"word": "hi"}}
        ).json()["id"]
    with wf_server.api("bob") as c:
        # labels are anyone's: bob's job labelled as a step of alice's run is not one of its steps
        bobs = c.post("/api/v1/jobs", json={"command": ["true"], "labels": {"kran.workflow": str(run_id)}}).json()
        assert c.get(f"/api/v1/workflows/{run_id}").status_code == 404
        assert c.post(f"/api/v1/workflows/{run_id}/cancel").status_code == 404
        assert c.get("/api/v1/workflows").json()["runs"] == []
    run = _wait_run(wf_server, run_id, {"succeeded", "failed"})
    assert run["state"] == "succeeded"
    assert bobs["id"] not in [step["job"] for step in run["steps"]] and len(run["steps"]) == 1


EXPRESSION_FAILS = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {InlineJavascriptRequirement: {}}
baseCommand: echo
arguments: [$(inputs.x.y.z)]
inputs: {x: {type: Any, default: 1}}
outputs: []
"""


def test_a_failed_load_or_expression_gives_its_whole_reason(wf_server: ServerProc) -> None:
    """The reason was the last line of cwltool's message: a fragment ("the value is not
    string", a JavaScript stack frame), or "The error was:" with the error missing."""
    docs = {
        "empty": ("", "wf.cwl is empty"),
        "not a tool": ("- 1\n- 2\n", "must be a dict"),
        "bad field": (
            "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: 3\ninputs: []\noutputs: []\n",
            "the 'baseCommand' field is not valid because tried string but the value is not string",
        ),
        "expression": (EXPRESSION_FAILS, "TypeError: Cannot read properties of undefined (reading 'z')"),
    }
    ids = {}
    with wf_server.api() as c:
        for what, (doc, _) in docs.items():
            r = c.post(
                "/api/v1/workflows",
                data={"run": json.dumps({"workflow": "wf.cwl"})},
                files=[("file", ("wf.cwl", doc.encode()))],
            )
            assert r.status_code == 201, r.text
            ids[what] = r.json()["id"]
    for what, (_, expected) in docs.items():
        reason = _wait_run(wf_server, ids[what], {"succeeded", "failed"})["reason"]
        assert expected in reason and len(reason) <= 1000, (what, reason)
        assert not reason.rstrip().endswith("The error was:") and "   " not in reason, (what, reason)


NAMES_FILES = """
cwlVersion: v1.2
class: CommandLineTool
$namespaces: {{edam: http://edamontology.org/}}
$schemas: [onto.owl]
requirements:
  DockerRequirement: {{dockerPull: "{image}"}}
  InitialWorkDirRequirement: {{listing: [{{class: File, location: greeting.txt}}]}}
inputs:
  reads: {{type: File, secondaryFiles: [.idx], format: "edam:format_2330", inputBinding: {{position: 1}}}}
  extra: {{type: File, default: {{class: File, location: greeting.txt}}, inputBinding: {{position: 3}}}}
arguments: [{{position: 2, valueFrom: $(inputs.reads.path).idx}}, {{position: 4, valueFrom: greeting.txt}}]
baseCommand: cat
stdout: all.txt
outputs: {{out: {{type: stdout}}}}
"""

ONTOLOGY = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:owl="http://www.w3.org/2002/07/owl#">
  <owl:Class rdf:about="http://edamontology.org/format_2330"/>
</rdf:RDF>
"""


def _local_workflow(d: Path, image: str) -> Path:
    """A tool that names files itself (a default, a staged file, a format ontology) and
    an input with a secondary file beside it: nothing on a root the server shares."""
    d.mkdir(parents=True)
    (d / "tool.cwl").write_text(NAMES_FILES.format(image=image))
    (d / "onto.owl").write_text(ONTOLOGY)
    (d / "greeting.txt").write_text("hello\n")
    (d / "data").mkdir()
    (d / "data" / "reads.txt").write_text("reads\n")
    (d / "data" / "reads.txt.idx").write_text("index\n")
    (d / "job.yml").write_text(
        "reads: {class: File, location: data/reads.txt, format: http://edamontology.org/format_2330}\n"
    )
    return d


def test_a_workflow_runs_on_a_default_server_with_the_files_its_documents_name(
    make_server: Any, tmp_path: Path, test_image: str
) -> None:
    """Issue 25: no shared roots: the runner uploads the files the documents name (each
    once), the secondary file beside the input, and the run reads them."""
    server: ServerProc = make_server(KRAN_WORKFLOW_DEFAULT_IMAGE=test_image)
    d = _local_workflow(tmp_path / "mine", test_image)
    kran = cli_for(server)
    r = kran("workflow", "run", "--wait", str(d / "tool.cwl"), str(d / "job.yml"))
    assert r.exit_code == 0, r.output
    run_id = int(r.output.split()[0])
    out = tmp_path / "out"
    r = kran("workflow", "outputs", str(run_id), "-o", str(out))
    assert r.exit_code == 0, r.output
    assert (out / "all.txt").read_text() == "reads\nindex\nhello\nhello\n"
    uploaded = sorted(p.name for p in (server.data_dir / "workflows" / str(run_id) / "in").rglob("*") if p.is_file())
    # each once (greeting.txt is a default and a staged file), the job order as written by the server
    assert uploaded == sorted(["tool.cwl", "greeting.txt", "onto.owl", "reads.txt", "reads.txt.idx", "job.json"])


def test_uploads_past_the_limit_are_refused_first_and_a_cut_upload_leaves_nothing(
    make_server: Any, tmp_path: Path, test_image: str
) -> None:
    import os

    from click.testing import CliRunner

    from kran.cli.main import cli

    server: ServerProc = make_server(KRAN_WORKFLOW_DEFAULT_IMAGE=test_image, KRAN_SERVER_MAX_UPLOAD_MB="2")
    d = _write(tmp_path / "mine", test_image)
    (d / "big.bin").write_bytes(os.urandom(3 << 20))
    (d / "big.yml").write_text("files: [{class: File, location: big.bin}]\n")
    (d / "mid.bin").write_bytes(os.urandom(1 << 20))
    (d / "mid.yml").write_text("files: [{class: File, location: mid.bin}]\n")

    def run(relay: Relay, job: str) -> Any:
        env = {**server.client_env(), "KRAN_URL": f"http://127.0.0.1:{relay.port}"}
        return CliRunner().invoke(cli, ["workflow", "run", str(d / "cat.cwl"), str(d / job)], env=env)

    counting = Relay(server.port)
    try:
        r = run(counting, "big.yml")  # 3 MiB of inputs, 2 MiB taken: refused before a byte of them goes
        assert r.exit_code != 0 and "server.max_upload_mb = 2" in r.output, r.output
        assert counting.sent < 64 << 10
    finally:
        counting.stop()
    cutting = Relay(server.port, cut=256 << 10)
    try:
        r = run(cutting, "mid.yml")  # the connection lost a quarter of the way in
        assert r.exit_code != 0, r.output
    finally:
        cutting.stop()
    time.sleep(1)
    with server.api() as c:
        assert c.get("/api/v1/workflows").json()["runs"] == []  # no half-run
    runs_dir = server.data_dir / "workflows"
    assert not runs_dir.exists() or not [p for p in runs_dir.iterdir() if p.name.startswith(".incoming")]
