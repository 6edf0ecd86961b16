import pytest

from kran.domain.resources import Range, ResourceRequest, Resources, format_cpus, parse_range


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("1-4", "cpus", Range(1000, 4000)),
        ("2", "cpus", Range(2000, 2000)),
        ("0.5-", "cpus", Range(500, None)),
        (2, "cpus", Range(2000, 2000)),
        (0.25, "cpus", Range(250, 250)),
        ("512-2048", "mem_mb", Range(512, 2048)),
        ("1G-2G", "mem_mb", Range(1024, 2048)),
        ("512M", "mem_mb", Range(512, 512)),
        ("1-", "gpus", Range(1, None)),
        ("0", "disk_mb", Range(0, 0)),
    ],
)
def test_parse_range(text: str, kind: str, expected: Range) -> None:
    assert parse_range(text, kind) == expected


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("-1", "cpus", "negative"),
        ("4-1", "cpus", "below min"),
        ("abc", "cpus", "not a number"),
        ("1.5", "gpus", "whole number"),
        ("", "mem_mb", "empty"),
        ("1e30", "cpus", "not a number"),
        ("99999999999", "cpus", "absurdly large"),
        ("12X", "mem_mb", "not a size"),
        ("0.0001", "cpus", "resolution"),
    ],
)
def test_parse_range_rejects(text: str, kind: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_range(text, kind)


def test_parse_range_rejects_bool() -> None:
    with pytest.raises(ValueError):
        parse_range(True, "cpus")


def request(cpus: str = "1", mem: str = "512", gpus: str = "0", disk: str = "0") -> ResourceRequest:
    return ResourceRequest(
        parse_range(cpus, "cpus"), parse_range(mem, "mem_mb"), parse_range(gpus, "gpus"), parse_range(disk, "disk_mb")
    )


def test_grant_takes_largest_value_that_fits() -> None:
    free = Resources(3000, 1000, 0, 0)
    assert request("1-4", "256-2048").grant(free) == Resources(3000, 1000, 0, 0)
    assert request("1-2", "256").grant(free) == Resources(2000, 256, 0, 0)
    assert request("1-", "1-").grant(free) == Resources(3000, 1000, 0, 0)


def test_grant_refuses_when_minimum_does_not_fit() -> None:
    assert request("4").grant(Resources(3000, 1000, 0, 0)) is None
    assert request("1", "2048").grant(Resources(3000, 1000, 0, 0)) is None
    assert request("1", "512", "1").grant(Resources(3000, 1000, 0, 0)) is None


def test_resources_arithmetic_and_format() -> None:
    a = Resources(1500, 100, 1, 10)
    assert a + a - a == a
    assert Resources(2000, 200, 1, 10).covers(a)
    assert not a.covers(Resources(1501, 0, 0, 0))
    assert format_cpus(1000) == "1" and format_cpus(250) == "0.25" and format_cpus(1500) == "1.5"
    assert Range(1000, None).text(scale=1000) == "1-" and Range(500, 2000).text(scale=1000) == "0.5-2"
