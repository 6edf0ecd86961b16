"""Pure pieces of the CWL seam and the workflow client: resources, redirections, output
locations, the stored job spec."""

from __future__ import annotations

from pathlib import Path

from kran.adapters.cwl.reasons import MAX_REASON, failure_reason
from kran.adapters.cwl.steps import resource_request, wrap_stdio
from kran.cli.workflows import relocate
from kran.domain.jobs import JobSpec
from kran.domain.resources import Range, ResourceRequest
from kran.domain.workflows import (
    CACHE_KEY,
    EXIT_SUCCESS,
    EXIT_UNSUPPORTED,
    RunState,
    final_state,
    inputs_digest,
    run_relative,
    without_run_dir,
)


def test_cwl_resource_ranges_become_kran_ranges() -> None:
    r = resource_request({"coresMin": 1.25, "coresMax": 4, "ramMin": 254.1, "ramMax": 1024})
    assert r.cpus == Range(1250, 4000) and r.mem_mb == Range(255, 1024) and r.gpus == Range(0, 0)
    r = resource_request({"coresMin": 2, "coresMax": 1, "cudaDeviceCountMin": 1, "cudaDeviceCountMax": 2})
    assert r.cpus == Range(2000, 2000)  # a max below the min is the min
    assert r.gpus == Range(1, 2)
    assert resource_request({}).mem_mb == Range(256, 256)  # CWL v1.2's default


def test_redirections_are_done_by_a_shell_in_the_container() -> None:
    assert wrap_stdio(["cat", "a b"], None, None, None) == ["cat", "a b"]
    argv = wrap_stdio(["cat", "a b"], "/in/x y", "/out/o.txt", None)
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3:] == ["sh", "cat", "a b"]
    assert argv[2] == "exec \"$@\" < '/in/x y' > /out/o.txt"


def test_output_locations_move_to_the_download_dir(tmp_path: Path) -> None:
    server = "/data/workflows/7/outputs"
    obj = {
        "out": {"class": "File", "location": f"file://{server}/a.txt", "path": f"{server}/a.txt"},
        "many": [{"class": "Directory", "location": f"file://{server}/d", "listing": []}],
        "n": 3,
    }
    moved = relocate(obj, server, tmp_path)
    assert moved["out"]["location"] == f"file://{tmp_path.resolve()}/a.txt"
    assert moved["out"]["path"] == f"{tmp_path.resolve()}/a.txt"
    assert moved["many"][0]["location"] == f"file://{tmp_path.resolve()}/d" and moved["n"] == 3


def test_run_relative_output_locations_move_to_the_download_dir(tmp_path: Path) -> None:
    server = "/data/workflows/7/outputs"
    obj = {
        "out": {"class": "File", "location": f"file://{server}/a%20b.txt", "path": f"{server}/a b.txt"},
        "many": [{"class": "Directory", "location": f"file://{server}/d", "listing": []}],
        "lit": {"class": "File", "location": "_:abc"},
        "shared": {"class": "File", "location": "file:///shared/x"},
    }
    shown = run_relative(obj, server)
    assert shown["out"] == {"class": "File", "location": "a%20b.txt", "path": "a b.txt"}
    assert shown["many"][0]["location"] == "d" and shown["lit"] == obj["lit"] and shown["shared"] == obj["shared"]
    moved = relocate(shown, None, tmp_path / "o u t")
    top = (tmp_path / "o u t").resolve()
    assert moved["out"]["location"] == f"{top.as_uri()}/a%20b.txt" and moved["out"]["path"] == f"{top}/a b.txt"
    assert moved["many"][0]["location"] == f"{top.as_uri()}/d"
    assert moved["lit"] == obj["lit"] and moved["shared"] == obj["shared"]


def test_the_run_dir_is_left_out_of_reasons_and_logs() -> None:
    run = "/data/workflows/7"
    text = f"../../data/workflows/7/in/wf.cwl:1:1: bad; file://{run}/outputs/o; {run}/tmp/x; /data/workflows/77/y"
    assert without_run_dir(text, run) == "in/wf.cwl:1:1: bad; outputs/o; tmp/x; /data/workflows/77/y"


def test_binds_survive_the_store_round_trip() -> None:
    req = ResourceRequest(Range(1000, 1000), Range(256, 256), Range(0, 0), Range(0, 0))
    spec = JobSpec(command=("true",), request=req, binds=(("/h/out", "/var/spool/cwl", True),), cwd="/var/spool/cwl")
    again = JobSpec.from_json(spec.to_json())
    assert again == spec


def test_run_end_states() -> None:
    assert final_state(EXIT_SUCCESS, cancelled=False) == RunState.SUCCEEDED
    assert final_state(EXIT_UNSUPPORTED, cancelled=False) == RunState.FAILED
    assert final_state(EXIT_SUCCESS, cancelled=True) == RunState.CANCELLED
    assert RunState.CANCELLED.is_final and not RunState.RUNNING.is_final


def test_a_steps_inputs_digest_is_stable_and_tells_inputs_apart() -> None:
    f = {"class": "File", "location": "file:///d/a.txt", "path": "/d/a.txt", "size": 3}
    literal = {"class": "File", "location": "_:1f0c", "contents": "x"}
    digest = inputs_digest({"word": "a", "f": f, "lit": literal})
    # the same inputs, with derived paths and random literal locations left out
    assert inputs_digest({"lit": {**literal, "location": "_:99aa"}, "f": {**f, "path": "/x"}, "word": "a"}) == digest
    assert inputs_digest({"word": "b", "f": f, "lit": literal}) != digest
    assert inputs_digest({"word": "a", "f": {**f, "size": 4}, "lit": literal}) != digest
    assert CACHE_KEY.fullmatch(f"{digest}/{'0' * 32}") and not CACHE_KEY.fullmatch(f"../{'0' * 32}")


def test_a_failure_reason_is_the_whole_message_on_one_bounded_line() -> None:
    empty = "I'm sorry, I couldn't load this CWL file, try again with --debug for more information.\nThe error was: "
    assert failure_reason(empty, StopIteration()) == "StopIteration"
    wrapped = "Tool definition failed validation:\nwf.cwl:1:1: Object\n      'wf.cwl'\n      is not valid\x00"
    assert failure_reason(wrapped) == "wf.cwl:1:1: Object 'wf.cwl' is not valid\\x00"
    assert len(failure_reason("x" * 5000)) == MAX_REASON
