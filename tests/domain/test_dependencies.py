from kran.domain.dependencies import AFTER_ANY, AFTER_OK, Dependency, dependency_verdict
from kran.domain.states import JobState as S


def test_after_ok_waits_then_runs_or_fails() -> None:
    assert dependency_verdict([Dependency(3, AFTER_OK, S.RUNNING)]).reason == "waiting for job 3"
    assert dependency_verdict([Dependency(3, AFTER_OK, S.SUCCEEDED)]).status == "ready"
    for end in (S.FAILED, S.KILLED, S.TIMED_OUT, S.LOST, S.DEPENDENCY_FAILED):
        v = dependency_verdict([Dependency(3, AFTER_OK, end)])
        assert (v.status, v.reason) == ("failed", f"dependency job 3 ended {end}")


def test_after_any_only_waits_for_the_end() -> None:
    assert dependency_verdict([Dependency(4, AFTER_ANY, S.FAILED)]).status == "ready"
    assert dependency_verdict([Dependency(4, AFTER_ANY, S.QUEUED)]).status == "wait"


def test_mixed_reports_the_first_unfinished_and_fails_early() -> None:
    deps = [
        Dependency(9, AFTER_OK, S.QUEUED),
        Dependency(2, AFTER_ANY, S.RUNNING),
        Dependency(5, AFTER_OK, S.SUCCEEDED),
    ]
    assert dependency_verdict(deps).reason == "waiting for job 2"
    assert dependency_verdict([*deps, Dependency(7, AFTER_OK, S.KILLED)]).status == "failed"
