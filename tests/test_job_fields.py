"""A job field is declared once (domain.jobs.JOB_FIELDS, JobSpec); every place that is not
made from the declaration is checked against it here, so a field missed in one fails."""

from __future__ import annotations

import json
from dataclasses import field, fields, make_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints

import click
import pytest
from pydantic import BaseModel, TypeAdapter, create_model
from sqlalchemy import create_engine, select

from kran.adapters.store.job_inserts import insert_rows
from kran.adapters.store.tables import jobs, metadata
from kran.api.responses import Job
from kran.api.schemas import AppLoad, JobSubmit, to_spec
from kran.api.views import SPEC_NOT_AS_IS
from kran.cli.apps import load_cmd
from kran.cli.jobs import run_cmd, submit_cmd
from kran.cli.schedules import add as schedule_add
from kran.domain.apps import DEFAULTABLE
from kran.domain.jobs import JOB_FIELDS, JobField, JobSpec, Kind, plain, validate_spec
from kran.domain.records import Submission
from kran.domain.resources import Range, ResourceRequest
from kran.errors import InvalidInput

# fields of a request that to_spec does not read: the route and spec_for consume them
NOT_SPEC = {"app": "spec_for merges the app and pins it", "on_behalf_of": "the route: whom the job is for"}
# a value unlike the default, per kind
SAMPLES: dict[Kind, Any] = {
    Kind.TEXT: "x",
    Kind.INT: 7,
    Kind.FLAG: True,
    Kind.AMOUNT: "2",
    Kind.DURATION: "7s",
    Kind.ARGV: ["echo", "hi"],
    Kind.URLS: ["https://example.com/a.txt"],
    Kind.IDS: [3],
    Kind.PAIRS: {"K": "v"},
}
BASE = {"command": ["true"]}


def _names(fs: Any) -> set[str]:
    return {f.name for f in fs}


def _missed_by_to_spec(declared: list[JobField], model: type[BaseModel]) -> list[str]:
    """The declared fields whose value does not reach the JobSpec (a missed to_spec argument)."""
    base0 = to_spec(model.model_validate(BASE))  # type: ignore[arg-type]
    missed = []
    for f in declared:
        base = base0
        if f.name in NOT_SPEC:
            continue
        special = {"dependency": "afterok:3", "notify": "https://hooks.example.org/k", "notify_on": "all"}
        body = {**BASE, f.name: special.get(f.name, SAMPLES[f.kind])}
        if f.name == "notify_on":  # only with a URL; the spec differs by the words alone
            body["notify"] = "https://hooks.example.org/k"
            base = to_spec(model.model_validate({**BASE, "notify": body["notify"]}))  # type: ignore[arg-type]
            if to_spec(model.model_validate(body)) == base:  # type: ignore[arg-type]
                missed.append(f.name)
            continue
        if f.name == "sh":
            del body["command"]
        if to_spec(model.model_validate(body)) == base:  # type: ignore[arg-type]
            missed.append(f.name)
    return missed


def test_the_api_bodies_are_the_declared_fields() -> None:
    assert set(JobSubmit.model_fields) == _names(JOB_FIELDS)
    assert set(AppLoad.model_fields) - {"volume", "user", "shared"} == set(DEFAULTABLE)
    assert set(DEFAULTABLE) == {f.name for f in JOB_FIELDS if f.app}


def test_every_declared_field_reaches_the_spec() -> None:
    assert set(NOT_SPEC) <= _names(JOB_FIELDS)
    assert _missed_by_to_spec(list(JOB_FIELDS), JobSubmit) == []


def test_a_field_declared_but_not_passed_by_to_spec_is_caught() -> None:
    colour = JobField("colour", Kind.TEXT, "a dummy field that to_spec does not know")
    model = create_model("JobSubmit", __base__=JobSubmit, colour=(str | None, None))
    assert _missed_by_to_spec([*JOB_FIELDS, colour], model) == ["colour"]


def _params(cmd: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in cmd.params if p.name}


def test_the_cli_options_are_the_declared_fields() -> None:
    on_cli = {f.name for f in JOB_FIELDS if f.cli} | {"command"}
    for cmd, own in ((submit_cmd, {"inputs", "file", "array"}), (run_cmd, {"inputs"})):
        assert set(_params(cmd)) == on_cli | own, cmd.name
    deps = {f.name for f in JOB_FIELDS if f.kind is Kind.IDS}
    assert set(_params(schedule_add)) >= on_cli - deps
    app_params = set(_params(load_cmd)) - {"name", "volume", "user", "private", "output"}
    assert app_params == set(DEFAULTABLE)
    for f in JOB_FIELDS:
        if f.cli:
            assert f.cli in _params(submit_cmd)[f.name].opts, f.name  # type: ignore[attr-defined]


def _sample(hint: Any) -> Any:
    samples: dict[Any, Any] = {
        str: "x",
        str | None: "x",
        int: 7,
        int | None: 7,
        float | None: 1.5,
        bool: True,
        tuple[str, ...]: ("a",),
        tuple[int, ...]: (1,),
        dict[str, str]: {"K": "v"},
        tuple[int, int] | None: (1000, 1000),
        tuple[int, int, int] | None: (3, 5, 10),
        tuple[tuple[str, int], ...]: (("ok", 3),),
        tuple[tuple[str, str, bool], ...]: (("/h", "/t", True),),
        ResourceRequest: ResourceRequest(Range(1000, 2000), Range(512, None), Range(0, 0), Range(0, 0)),
    }
    return samples[hint]


def _full_spec(cls: type = JobSpec) -> Any:
    """A spec with every field set to something other than its default."""
    return cls(**{name: _sample(hint) for name, hint in get_type_hints(cls).items()})


def test_to_and_from_json_round_trip_every_field() -> None:
    spec = _full_spec()
    assert JobSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def _unshown(spec_cls: type, model: type[BaseModel]) -> list[str]:
    """Spec fields the job view shows as stored that its response model does not declare."""
    return [f.name for f in fields(spec_cls) if f.name not in SPEC_NOT_AS_IS and f.name not in model.model_fields]


def test_the_job_view_declares_every_spec_field() -> None:
    assert SPEC_NOT_AS_IS <= _names(fields(JobSpec))
    assert _unshown(JobSpec, Job) == []
    spec = _full_spec()
    for f in fields(JobSpec):  # and with a type that takes the value
        if f.name not in SPEC_NOT_AS_IS:
            TypeAdapter(Job.model_fields[f.name].annotation).validate_python(plain(getattr(spec, f.name)))


def test_a_spec_field_missing_from_the_response_model_is_caught() -> None:
    with_colour = make_dataclass(
        "WithColour", [("colour", str | None, field(default=None))], bases=(JobSpec,), frozen=True
    )
    assert _unshown(with_colour, Job) == ["colour"]


def test_spec_columns_of_the_jobs_table_are_written_from_the_spec() -> None:
    spec = replace(_full_spec(), after=(), after_any=())
    columns = _names(jobs.columns) & _names(fields(JobSpec))
    assert columns >= {"name", "priority", "image", "timeout_s", "retries", "volume"}
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as conn:
        insert_rows(conn, [Submission([spec], "alice")], now=1.0)
        row = conn.execute(select(jobs)).mappings().one()
    assert {c: row[c] for c in columns} == {c: getattr(spec, c) for c in columns}


def test_validate_spec_takes_its_callers_keywords() -> None:
    """The keywords of domain.jobs.validate_spec its callers (api.schemas.to_spec, the CWL
    steps) pass; kept as they are while spec_for moves."""
    spec = validate_spec(
        command=["true"],
        sh=None,
        request=_sample(ResourceRequest),
        image=None,
        name=None,
        env={},
        labels={},
        priority=0,
        retries=0,
        timeout_s=None,
        network=False,
        grace_s=3.0,
        node_class="x",
    )
    assert (spec.grace_s, spec.node_class) == (3.0, "x")


def _section(doc: str, title: str) -> str:
    return doc.split(title, 1)[1].split("\n## ", 1)[0]


def test_docs_api_names_every_field() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    submission = _section(doc, "## Job submission fields")
    assert [f.name for f in JOB_FIELDS if f"`{f.name}`" not in submission] == []
    shown = _section(doc, "## Job fields")
    assert [n for n in Job.model_fields if f"`{n}`" not in shown] == []


def test_amounts_are_parsed_as_given_each_time() -> None:
    """to_spec remembers the amounts it parsed: an int, a float and a string of one number
    are each their own, and a bad amount is refused every time it comes."""
    cpus = [to_spec(JobSubmit.model_validate({**BASE, "cpus": v})).request.cpus for v in (2, 2.5, "2", "2-", 2)]
    assert cpus == [Range(2000, 2000), Range(2500, 2500), Range(2000, 2000), Range(2000, None), Range(2000, 2000)]
    for _ in range(2):
        with pytest.raises(InvalidInput, match="cpus"):
            to_spec(JobSubmit.model_validate({**BASE, "cpus": "0.0001"}))
    long = "0" * 40 + "3"  # not remembered (long), parsed all the same
    assert to_spec(JobSubmit.model_validate({**BASE, "mem": long})).request.mem_mb == Range(3, 3)
