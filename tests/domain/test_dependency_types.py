"""Slurm's dependency types (issue 20.5): afternotok, the --dependency form, singleton."""

from __future__ import annotations

import pytest

from kran.domain.dependencies import (
    AFTER_ANY,
    AFTER_NOTOK,
    AFTER_OK,
    Dependency,
    ParsedDependency,
    dependency_verdict,
    parse_dependency,
)
from kran.domain.jobs import SpecError, validate_spec
from kran.domain.resources import Range, ResourceRequest
from kran.domain.states import JobState

REQ = ResourceRequest(Range(1000, 1000), Range(64, 64), Range(0, 0), Range(0, 0))


def test_the_slurm_form() -> None:
    assert parse_dependency("afterok:12:13,afterany:14,afternotok:15") == ParsedDependency(
        [12, 13], [14], [15], [], None, False
    )
    assert parse_dependency("singleton") == ParsedDependency([], [], [], [], None, True)
    got = parse_dependency("afterok:12:a7,afterany:a8,aftercorr:a9")
    assert (got.after, got.arrays, got.corr) == ([12], [(AFTER_OK, 7), (AFTER_ANY, 8)], 9)
    for bad, why in (
        ("afterok:1?afterany:2", "'?'"),
        ("after:3", "use afterok"),
        ("aftercorr:3", "aftercorr names one array"),
        ("aftercorr:a3:a4", "aftercorr names one array"),
        ("afterok", "name at least one job"),
        ("afterok:x", "ids are numbers"),
        ("afterok:a", "ids are numbers"),
        ("afterok:0", "ids are numbers"),
        ("afterok:9223372036854775808", "ids are numbers"),
        ("afterok:a99999999999999999999", "ids are numbers"),
        ("afterok:\u00b2", "ids are numbers"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_dependency(bad)


def test_afternotok_waits_for_a_failure() -> None:
    def v(state: JobState) -> str:
        return dependency_verdict([Dependency(7, AFTER_NOTOK, state)]).status

    assert v(JobState.RUNNING) == "wait"
    assert v(JobState.FAILED) == v(JobState.KILLED) == v(JobState.DEPENDENCY_FAILED) == "ready"
    got = dependency_verdict([Dependency(7, AFTER_NOTOK, JobState.SUCCEEDED)])
    assert got.status == "failed" and got.reason and "job 7 succeeded" in got.reason
    mixed = [Dependency(1, AFTER_OK, JobState.SUCCEEDED), Dependency(2, AFTER_NOTOK, JobState.FAILED)]
    assert dependency_verdict(mixed).status == "ready"


def _spec(**kw: object) -> object:
    base: dict[str, object] = dict(
        command=["true"], sh=None, request=REQ, image=None, name=None, env={}, labels={}, priority=0, retries=0,
        timeout_s=None, network=False,
    )  # fmt: skip
    return validate_spec(**{**base, **kw})  # type: ignore[arg-type]


def test_the_form_adds_to_the_lists_and_singleton_needs_a_name() -> None:
    s = _spec(after=[1], dependency="afterok:2,afternotok:3,singleton", name="nightly")
    assert (s.after, s.after_notok, s.singleton) == ((1, 2), (3,), True)  # type: ignore[attr-defined]
    with pytest.raises(SpecError, match="singleton needs a job name"):
        _spec(dependency="singleton")
    with pytest.raises(SpecError, match="use afterok"):
        _spec(dependency="before:1")


def test_an_array_as_a_dependency() -> None:
    running = Dependency(7, AFTER_OK, JobState.RUNNING, "array")
    assert dependency_verdict([running]) == dependency_verdict([running]).__class__("wait", "waiting for array 7")
    failed = dependency_verdict([Dependency(7, AFTER_OK, JobState.FAILED, "array")])
    assert failed.status == "failed" and failed.reason == "dependency array 7 ended failed"
