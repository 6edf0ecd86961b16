"""Admission in-process: each rule, and the allow_host_processes bug it removes by construction."""

from __future__ import annotations

import pytest

from kran.errors import InvalidInput
from kran.ports import EngineCapabilities
from tests.services.fakes import FakeEngine, admission, spec


def test_no_host_processes_refuses_host_jobs_only() -> None:
    adm = admission(allow_host_processes=False)
    adm.check([spec(image="busybox")])  # image jobs go on (the bug refused them too)
    with pytest.raises(InvalidInput, match="without --image are not allowed"):
        adm.check([spec()])


def test_each_rule_names_its_reason() -> None:
    containers_only = FakeEngine(EngineCapabilities(host_processes=False, containers=True, volumes=False))
    hosts_only = FakeEngine(EngineCapabilities(host_processes=True, containers=False, volumes=True))
    cases = [
        (admission(containers_only), spec(), InvalidInput, "give the job an --image"),
        (admission(hosts_only), spec(image="busybox"), InvalidInput, "host processes only"),
        (admission(containers_only), spec(image="x", volume="~a/b/c"), InvalidInput, "app volumes"),
        (admission(cpus=2), spec(cpus="3"), InvalidInput, "more than the largest node"),
    ]
    for adm, s, kind, text in cases:
        with pytest.raises(kind, match=text):
            adm.check([s])
        assert adm.refusal(s) is not None and text in adm.refusal(s)  # type: ignore[operator]


def test_a_job_for_an_engine_that_is_down_is_taken() -> None:
    # it waits in the queue for the engine (the dispatcher holds it and says why)
    assert admission(FakeEngine(down="docker engine unreachable since 03:48:59 UTC")).refusal(spec(image="x")) is None


def test_a_batch_names_the_job_refused() -> None:
    with pytest.raises(InvalidInput, match="^job 2: .*more than the largest node"):
        admission(cpus=2).check([spec(), spec(cpus="3")])
    assert admission().refusal(spec()) is None
