"""CWL output collection runs as root in the server: a step's outputs must come from its
own output dir, never from the host (issue 17.3), nor from another user's run."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc
from tests.security.test_job_files import SECRET, root_only_secret

pytestmark = pytest.mark.docker

GLOB_OUT = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: ["true"]
inputs: []
outputs:
  stolen: {{type: File, outputBinding: {{glob: "{glob}", loadContents: true}}}}
"""

LINK_OUT = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: [ln, -s, "{target}", out.txt]
inputs: []
outputs:
  stolen: {{type: File, outputBinding: {{glob: out.txt, loadContents: true}}}}
"""

DIR_LINK_OUT = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: [ln, -s, "{target}", d]
inputs: []
outputs:
  stolen: {{type: File, outputBinding: {{glob: d/x, loadContents: true}}}}
"""

FINE = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: [sh, -c, "echo fine > out.txt; mkdir sub; echo in-sub > sub/y; ln -s sub/y link"]
inputs: []
outputs:
  out: {{type: File, outputBinding: {{glob: out.txt, loadContents: true}}}}
  link: {{type: File, outputBinding: {{glob: link}}}}
"""

STAGED = """
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {{dockerPull: "{image}"}}
  InitialWorkDirRequirement: {{listing: [{{entry: $(inputs.f), entryname: renamed.txt}}, $(inputs.d)]}}
baseCommand: ["true"]
inputs: {{f: File, d: Directory}}
outputs:
  renamed: {{type: File, outputBinding: {{glob: renamed.txt, loadContents: true}}}}
  inner: {{type: File, outputBinding: {{glob: $(inputs.d.basename)/y.txt, loadContents: true}}}}
"""

RELINK = """
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {{dockerPull: "{image}"}}
  InitialWorkDirRequirement: {{listing: [{{entry: $(inputs.f), entryname: sub/x}}]}}
baseCommand: [sh, -c, "mv sub sub2 && ln -s {target} sub"]
inputs: {{f: File}}
outputs: {{}}
"""

DIR_WITH_LINK = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: [sh, -c, "mkdir d && echo fine > d/ok && ln -s {target} d/leak"]
inputs: []
outputs: {{d: {{type: Directory, outputBinding: {{glob: d}}}}}}
"""

LOOP = """
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: [sh, -c, "mkdir d && echo x > d/f && ln -s . d/a && ln -s . d/b"]
inputs: []
outputs: {{d: {{type: Directory, outputBinding: {{glob: d, loadListing: deep_listing}}}}}}
"""

TMP_ROUTE = r"""
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: [sh, -c]
arguments:
  - |
    T=`awk '$5=="/tmp"{{print $4}}' /proc/self/mountinfo`
    ln -s {target} /tmp/evil
    mkdir d && echo fine > d/ok && ln -s "$T" d/leak
inputs: []
outputs: {{d: {{type: Directory, outputBinding: {{glob: d}}}}}}
"""

TMP_LOOP = r"""
cwlVersion: v1.2
class: CommandLineTool
requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
baseCommand: [sh, -c]
arguments:
  - |
    T=`awk '$5=="/tmp"{{print $4}}' /proc/self/mountinfo`
    mkdir -p d && ln -s "$T" d/a && ln -s "$T" /tmp/a && ln -s "$T" /tmp/b
inputs: []
outputs: {{d: {{type: Directory, outputBinding: {{glob: d, loadListing: deep_listing}}}}}}
"""

IN_PLACE = r"""
cwlVersion: v1.2
class: Workflow
requirements: {{InlineJavascriptRequirement: {{}}}}
inputs: []
outputs: {{out: {{type: Directory, outputSource: s2/d2}}}}
steps:
  s1:
    in: []
    out: [d]
    run:
      class: CommandLineTool
      requirements: {{DockerRequirement: {{dockerPull: "{image}"}}}}
      baseCommand: [sh, -c, "mkdir d && echo ok > d/ok"]
      inputs: []
      outputs: {{d: {{type: Directory, outputBinding: {{glob: d}}}}}}
  s2:
    in: {{d: s1/d}}
    out: [d2]
    run:
      class: CommandLineTool
      requirements:
        DockerRequirement: {{dockerPull: "{image}"}}
        InplaceUpdateRequirement: {{inplaceUpdate: true}}
        InitialWorkDirRequirement: {{listing: [{{entry: $(inputs.d), writable: true}}]}}
      baseCommand: [sh, -c, "ln -s {target} d/leak"]
      inputs: {{d: Directory}}
      outputs: {{d2: {{type: Directory, outputBinding: {{glob: $(inputs.d.basename)}}}}}}
"""

LINKS_OK = r"""
cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement: {{dockerPull: "{image}"}}
  InitialWorkDirRequirement: {{listing: [$(inputs.f)]}}
baseCommand: [sh, -c]
arguments:
  - ln -s $(inputs.f.basename) l1 && mkdir d && echo a > d/a && ln -s a d/b && ln -s ../$(inputs.f.basename) d/c
    && ln -s $(inputs.f.path) in-container
inputs: {{f: File}}
outputs:
  l1: {{type: File, outputBinding: {{glob: l1, loadContents: true}}}}
  d: {{type: Directory, outputBinding: {{glob: d, loadListing: deep_listing}}}}
"""


def _run(
    server: ServerProc, document: Path, user: str | None = None, inputs: dict[str, Any] | None = None
) -> dict[str, Any]:
    with server.api(user) as c:
        r = c.post("/api/v1/workflows", json={"workflow": str(document), **({"inputs": inputs} if inputs else {})})
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
    run = server.poll(f"/api/v1/workflows/{run_id}", {"succeeded", "failed"}, 90, every=0.2)
    with server.api(user) as c:
        archive = c.get(f"/api/v1/workflows/{run_id}/outputs/archive").content
        log = c.get(f"/api/v1/workflows/{run_id}/log").text
        outputs = c.get(f"/api/v1/workflows/{run_id}/outputs").json()
    return {"run": run, "archive": archive, "log": log, "outputs": outputs}


def test_outputs_outside_the_step_dir_fail_the_step(make_server: Any, tmp_path: Path, test_image: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    with root_only_secret() as secret:
        ups = "../" * 20
        (shared / "glob.cwl").write_text(GLOB_OUT.format(image=test_image, glob=f"{ups}{str(secret / 'x')[1:]}"))
        (shared / "link.cwl").write_text(LINK_OUT.format(image=test_image, target=secret / "x"))
        (shared / "dirlink.cwl").write_text(DIR_LINK_OUT.format(image=test_image, target=secret))
        (shared / "fine.cwl").write_text(FINE.format(image=test_image))
        server = make_server(KRAN_FILES_FILE_URL_ROOTS=str(shared), KRAN_WORKFLOW_DEFAULT_IMAGE=test_image)
        for name in ("glob.cwl", "link.cwl", "dirlink.cwl"):
            got = _run(server, shared / name)
            assert got["run"]["state"] == "failed", (name, got["run"])
            assert SECRET not in got["archive"] and SECRET.decode() not in json.dumps(got["outputs"]), name
            assert "leads outside the step's output dir" in got["log"], (name, got["log"][-2000:])
        got = _run(server, shared / "fine.cwl")  # inside the dir, links included: as before
        assert got["run"]["state"] == "succeeded", got["log"][-2000:]
        tar = tarfile.open(fileobj=io.BytesIO(got["archive"]))
        out = tar.extractfile("out.txt")
        assert out is not None and out.read() == b"fine\n"


def test_staged_inputs_are_outputs_where_the_tool_names_them(make_server: Any, tmp_path: Path, test_image: str) -> None:
    """InitialWorkDir inputs come back to the output dir as links to the inputs (on a shared
    root): a glob naming them, or a file inside a staged dir, is an output (conformance tests
    such as rename.cwl and iwd-subdir-wf.cwl failed when the glob's link was resolved first)."""
    shared = tmp_path / "shared"
    (shared / "dir").mkdir(parents=True)
    (shared / "in.txt").write_text("staged\n")
    (shared / "dir" / "y.txt").write_text("inside\n")
    (shared / "staged.cwl").write_text(STAGED.format(image=test_image))
    server = make_server(KRAN_FILES_FILE_URL_ROOTS=str(shared), KRAN_WORKFLOW_DEFAULT_IMAGE=test_image)
    inputs = {
        "f": {"class": "File", "location": (shared / "in.txt").as_uri()},
        "d": {"class": "Directory", "location": (shared / "dir").as_uri()},
    }
    got = _run(server, shared / "staged.cwl", inputs=inputs)
    assert got["run"]["state"] == "succeeded", got["log"][-2000:]
    tar = tarfile.open(fileobj=io.BytesIO(got["archive"]))
    for key, want in (("renamed", b"staged\n"), ("inner", b"inside\n")):
        f = tar.extractfile(got["outputs"]["outputs"][key]["location"])
        assert f is not None and f.read() == want, key


def test_a_run_cannot_name_another_runs_files(make_server: Any, tmp_path: Path, test_image: str) -> None:
    """The workflows dir was a root of every run: bob's job order could name alice's outputs."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "fine.cwl").write_text(FINE.format(image=test_image))
    (shared / "cat.cwl").write_text(
        "cwlVersion: v1.2\nclass: CommandLineTool\n"
        f'requirements: {{DockerRequirement: {{dockerPull: "{test_image}"}}}}\n'
        "baseCommand: cat\ninputs: {f: {type: File, inputBinding: {position: 1}}}\nstdout: o.txt\n"
        "outputs: {o: {type: stdout}}\n"
    )
    server = make_server(KRAN_FILES_FILE_URL_ROOTS=str(shared), KRAN_WORKFLOW_DEFAULT_IMAGE=test_image)
    server.add_user("alice")
    server.add_user("bob")
    alice = _run(server, shared / "fine.cwl", "alice")
    assert alice["run"]["state"] == "succeeded"
    # the API names outputs relative to the run (18.8.7): bob guesses where they are on the server
    rel = alice["outputs"]["outputs"]["out"]["location"]
    theirs = (server.data_dir / "workflows" / str(alice["run"]["id"]) / "outputs" / rel).as_uri()
    with server.api("bob") as c:
        r = c.post(
            "/api/v1/workflows",
            json={"workflow": str(shared / "cat.cwl"), "inputs": {"f": {"class": "File", "location": theirs}}},
        )
    assert r.status_code == 422, r.text


def test_a_step_cannot_have_root_remove_or_replace_files_through_its_links(
    make_server: Any, tmp_path: Path, test_image: str
) -> None:
    """cwltool links staged inputs back into the output dir as root, removing what is at
    each place first. A step that moved the staged dir away and left a link to a host dir
    (or to a dir on a shared root) in its place had root delete the file there and plant a
    link (found by review). Now the step fails and the files stay as they were."""
    shared = tmp_path / "shared"
    (shared / "victim").mkdir(parents=True)
    (shared / "in.txt").write_text("input\n")
    (shared / "victim" / "x").write_bytes(SECRET)
    (shared / "victim" / "x").chmod(0o600)
    inputs = {"f": {"class": "File", "location": (shared / "in.txt").as_uri()}}
    with root_only_secret() as secret:
        (shared / "host.cwl").write_text(RELINK.format(image=test_image, target=secret))
        (shared / "onroot.cwl").write_text(RELINK.format(image=test_image, target=shared / "victim"))
        server = make_server(KRAN_FILES_FILE_URL_ROOTS=str(shared), KRAN_WORKFLOW_DEFAULT_IMAGE=test_image)
        for name, victim in (("host.cwl", secret / "x"), ("onroot.cwl", shared / "victim" / "x")):
            got = _run(server, shared / name, inputs=inputs)
            assert got["run"]["state"] == "failed", (name, got["log"][-2000:])
            assert "(refused)" in got["log"], (name, got["log"][-2000:])
            assert not victim.is_symlink() and victim.read_bytes() == SECRET, name


def test_links_inside_a_directory_output_are_not_followed_out(
    make_server: Any, tmp_path: Path, test_image: str
) -> None:
    """A Directory output is copied into the run's outputs, and the copy follows the links
    in it: a link to a root-only file came back as that file's contents (found by review).
    A link loop in a Directory listed deeply kept a server core busy for ever."""
    shared = tmp_path / "shared"
    shared.mkdir()
    with root_only_secret() as secret:
        (shared / "dir.cwl").write_text(DIR_WITH_LINK.format(image=test_image, target=secret / "x"))
        (shared / "loop.cwl").write_text(LOOP.format(image=test_image))
        server = make_server(KRAN_FILES_FILE_URL_ROOTS=str(shared), KRAN_WORKFLOW_DEFAULT_IMAGE=test_image)
        got = _run(server, shared / "dir.cwl")
        assert got["run"]["state"] == "failed", got["log"][-2000:]
        assert SECRET not in got["archive"] and "leads outside the step's output dir" in got["log"]
        got = _run(server, shared / "loop.cwl")  # _run gives up after 90 s
        assert got["run"]["state"] == "failed", got["log"][-2000:]
        assert "(a loop: refused)" in got["log"], got["log"][-2000:]


def test_links_through_the_run_dir_are_followed_and_checked(make_server: Any, tmp_path: Path, test_image: str) -> None:
    """The run's dir holds places steps write (their tmp dirs; an earlier step's output
    updated in place by a later one): a link to such a place passed the first check, and
    what it led to was copied as root, root-only files included, or listed for ever
    (found by a second review). The walk now follows links into the run's dir."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("input\n")
    with root_only_secret() as secret:
        for name, doc in (("tmp.cwl", TMP_ROUTE), ("loop.cwl", TMP_LOOP), ("inplace.cwl", IN_PLACE)):
            (shared / name).write_text(doc.format(image=test_image, target=secret / "x"))
        (shared / "ok.cwl").write_text(LINKS_OK.format(image=test_image))
        server = make_server(KRAN_FILES_FILE_URL_ROOTS=str(shared), KRAN_WORKFLOW_DEFAULT_IMAGE=test_image)
        for name in ("tmp.cwl", "loop.cwl", "inplace.cwl"):
            got = _run(server, shared / name)
            assert got["run"]["state"] == "failed", (name, got["log"][-2000:])
            assert SECRET not in got["archive"] and "refused)" in got["log"], (name, got["log"][-2000:])
        got = _run(server, shared / "ok.cwl", inputs={"f": {"class": "File", "location": (shared / "in.txt").as_uri()}})
        assert got["run"]["state"] == "succeeded", got["log"][-2000:]  # links to inputs, within, to nowhere here
