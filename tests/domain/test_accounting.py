import pytest

from kran.domain.accounting import AttemptFacts, Usage, attempt_usage, efficiency_hints, job_usage, usage_report


def fact(
    job: int,
    user: str,
    state: str,
    wall: float,
    cpu: float | None,
    mem: int,
    gpus: int = 0,
    *,
    image: str | None = None,
    app: str | None = None,
    day: float = 1_795_000_000.0,
    last: bool = True,
) -> AttemptFacts:
    return AttemptFacts(job, user, app, image, state, day, wall, cpu, mem, gpus, last)


FIXTURE = [
    fact(1, "ann", "succeeded", 3600, 1800, 1024, image="img:a"),
    fact(2, "ann", "failed", 1800, 900, 2048, 1, image="img:a", last=False),  # a retried attempt
    fact(2, "ann", "failed", 1800, None, 2048, 1, image="img:a"),
    fact(3, "bob", "succeeded", 7200, 7200, 512, app="blast", day=1_795_100_000.0),
    fact(4, "bob", "killed", 360, 36, 4096, 2, app="blast", day=1_795_100_000.0),
]


def test_report_by_user_gives_exact_totals() -> None:
    rows = {r.key: r for r in usage_report(FIXTURE, "user")}
    ann, bob = rows["ann"], rows["bob"]
    assert ann.jobs == {"succeeded": 1, "failed": 1}
    assert ann.cpu_hours == pytest.approx(0.5 + 0.25)
    assert ann.mem_gb_hours == pytest.approx(1 * 1 + 2 * 0.5 + 2 * 0.5)
    assert ann.gpu_hours == pytest.approx(1.0)
    assert ann.wall_hours == pytest.approx(2.0)
    assert bob.jobs == {"succeeded": 1, "killed": 1}
    assert bob.cpu_hours == pytest.approx(2.01)
    assert bob.mem_gb_hours == pytest.approx(0.5 * 2 + 4 * 0.1)
    assert bob.gpu_hours == pytest.approx(0.2)


def test_report_by_app_image_and_day() -> None:
    assert [r.key for r in usage_report(FIXTURE, "app")] == ["-", "blast"]
    assert [r.key for r in usage_report(FIXTURE, "image")] == ["(host)", "img:a"]
    days = usage_report(FIXTURE, "day")
    assert [r.key for r in days] == ["2026-11-18", "2026-11-19"]
    with pytest.raises(ValueError):
        usage_report(FIXTURE, "color")


def test_attempt_and_job_usage() -> None:
    a = attempt_usage(Usage(1.5, 100, 10), queued_at=10, created_at=12, started_at=13, finished_at=16, alloc_cpus=1)
    assert a["wall_seconds"] == 3 and a["queue_seconds"] == 2 and a["cpu_utilization"] == 0.5
    b = attempt_usage(
        Usage(None, 300, None), queued_at=None, created_at=20, started_at=20, finished_at=21, alloc_cpus=2
    )
    total = job_usage([a, b])
    assert total["wall_seconds"] == 4 and total["cpu_seconds"] == 1.5 and total["peak_memory_bytes"] == 300
    assert total["io_bytes"] == 10 and total["queue_seconds"] == 2


def test_efficiency_hints() -> None:
    hints = efficiency_hints(
        cpu_seconds=1, peak_memory_bytes=10 * 1048576, wall_seconds=100, alloc_cpus=4, alloc_mem_mb=1024
    )
    assert len(hints) == 2 and "1% of its 1024 MiB" in hints[0] and "0% of its 4 cpus" in hints[1]
    assert (
        efficiency_hints(
            cpu_seconds=90, peak_memory_bytes=900 * 1048576, wall_seconds=100, alloc_cpus=1, alloc_mem_mb=1024
        )
        == []
    )
