"""kran.web.workflow_graph: a run's steps and their edges from its CWL document, its jobs
put on their steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from kran.web.dag import Step
from kran.web.workflow_graph import StepGraph, StepJob, graph_steps, read_cwl, step_graph, step_of, step_state

DIAMOND = """
cwlVersion: v1.2
class: Workflow
inputs: {words: "string[]"}
outputs: {all: {type: File, outputSource: gather/out}}
steps:
  first: {run: echo.cwl, in: {word: {default: start}}, out: [out]}
  left: {run: echo.cwl, in: {word: {default: l}, after: {source: [first/out]}}, out: [out]}
  right: {run: echo.cwl, scatter: word, in: {word: words, after: first/out}, out: [out]}
  gather:
    run: cat.cwl
    in: {files: {source: [left/out, right/out], linkMerge: merge_flattened}}
    out: [out]
"""

PACKED: dict[str, Any] = {
    "cwlVersion": "v1.2",
    "$graph": [
        {"class": "CommandLineTool", "id": "#echo.cwl", "inputs": [], "outputs": []},
        {
            "class": "Workflow",
            "id": "#main",
            "inputs": [{"id": "#main/words", "type": "string[]"}],
            "outputs": [],
            "steps": [
                {"id": "#main/say", "run": "#echo.cwl", "in": [{"id": "#main/say/word", "source": "#main/words"}]},
                {
                    "id": "#main/main",  # a step named like the workflow: still a step
                    "run": "#echo.cwl",
                    "in": [{"id": "#main/main/x", "source": "#main/say/out"}],
                },
            ],
        },
    ],
}


def no_files(_: Path) -> Any:
    return None


def load(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def test_steps_and_edges_of_a_workflow_as_written() -> None:
    g = step_graph(load(DIAMOND), "", Path("/r/in/wf.cwl"), no_files)
    assert g.steps == ("first", "left", "right", "gather")
    assert set(g.edges) == {("first", "left"), ("first", "right"), ("left", "gather"), ("right", "gather")}
    assert g.aliases == {s: s for s in g.steps}


def test_a_packed_document_and_its_ids() -> None:
    g = step_graph(PACKED, "", Path("/r/wf.cwl"), no_files)
    assert g.steps == ("say", "main") and g.edges == (("say", "main"),)
    assert step_graph(PACKED, "echo.cwl", Path("/r/wf.cwl"), no_files) == StepGraph()  # a tool: no steps


def test_list_form_steps_with_hash_sources() -> None:
    doc = {
        "class": "Workflow",
        "steps": [
            {"id": "a", "run": "x.cwl", "in": []},
            {"id": "b", "run": "x.cwl", "in": [{"id": "i", "source": ["#a/out", "#input"]}]},
        ],
    }
    assert step_graph(doc, "", Path("/r/wf.cwl"), no_files).edges == (("a", "b"),)


def test_subworkflows_put_their_steps_on_the_outer_step() -> None:
    inner = "class: Workflow\nsteps:\n  deep1: {run: t.cwl, in: {}}\n  deep2: {run: t.cwl, in: {x: deep1/o}}\n"
    docs = {Path("/r/in/sub/inner.cwl"): load(inner)}
    doc = {
        "class": "Workflow",
        "steps": {
            "outer": {"run": "sub/inner.cwl", "in": {}},
            "inline": {"run": {"class": "Workflow", "steps": {"nested": {"run": "t.cwl"}}}, "in": {"x": "outer/o"}},
        },
    }
    g = step_graph(doc, "", Path("/r/in/wf.cwl"), docs.get)
    assert g.steps == ("outer", "inline") and g.edges == (("outer", "inline"),)
    assert g.aliases["deep1"] == g.aliases["deep2"] == "outer" and g.aliases["nested"] == "inline"


def test_a_cycle_of_documents_ends() -> None:
    doc = {"class": "Workflow", "steps": {"again": {"run": "wf.cwl"}}}
    g = step_graph(doc, "", Path("/r/wf.cwl"), lambda _: doc)
    assert g.steps == ("again",)


def test_jobs_are_put_on_their_steps_by_cwltool_job_name() -> None:
    aliases = {"say": "say", "gather": "gather", "x_2": "x_2", "deep": "outer"}
    assert step_of("say", aliases) == "say"
    assert step_of("say_3", aliases) == "say"  # a scatter's third job, or a name used before
    assert step_of("x_2", aliases) == "x_2"  # a step really named so
    assert step_of("deep_2", aliases) == "outer"
    assert step_of("echo.cwl_4", aliases) == "echo.cwl"  # a plain tool's run


def test_a_steps_state_from_its_jobs() -> None:
    assert step_state([], True) == "waiting" and step_state([], False) == "not_run"
    assert step_state(["succeeded", "succeeded"], False) == "succeeded"
    assert step_state(["succeeded", "running", "queued"], True) == "running"
    assert step_state(["succeeded", "queued"], True) == "queued"
    assert step_state(["succeeded", "failed", "killed"], False) == "failed"
    assert step_state(["succeeded", "killed"], False) == "killed"


def test_one_box_per_step_with_counts_for_a_scatter() -> None:
    graph = StepGraph(("first", "say", "gather"), (("first", "say"), ("say", "gather")), {})
    graph = StepGraph(graph.steps, graph.edges, {s: s for s in graph.steps})
    jobs = [
        StepJob("first", 10, "succeeded"),
        StepJob("say_2", 12, "succeeded"),
        StepJob("say", 11, "running"),
        StepJob("say_3", 13, "succeeded"),
        StepJob("stray", 14, "queued"),
    ]
    boxes = graph_steps(graph, jobs, True, lambda step: f"/list/{step}")
    assert boxes == [
        Step("first", "succeeded", 10, "", "/ui/jobs/10"),
        Step("say", "running", None, "2/3 done", "/list/say"),
        Step("gather", "waiting"),
        Step("stray", "queued", 14, "", "/ui/jobs/14"),
    ]


def test_documents_are_read_under_the_roots_only_and_within_limits(tmp_path: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    (root / "wf.cwl").write_text(DIAMOND)
    (tmp_path / "outside.cwl").write_text(DIAMOND)
    (root / "link.cwl").symlink_to(tmp_path / "outside.cwl")
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    (root / "laughs.cwl").write_text(laughs)
    read = read_cwl((root.resolve(),))
    assert read(root / "wf.cwl")["class"] == "Workflow"
    assert read(tmp_path / "outside.cwl") is None
    assert read(root / "link.cwl") is None  # resolves outside
    assert read(root / "laughs.cwl") is None
    assert read(root / "missing.cwl") is None
