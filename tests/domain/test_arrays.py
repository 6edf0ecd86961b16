"""--array over explicit cases (issue 20.4)."""

from __future__ import annotations

import pytest

from kran.domain.arrays import BUFFER, parse_array, tasks_to_create


def test_ranges_steps_lists_and_the_cap() -> None:
    a = parse_array("0-9999%50")
    assert (a.count, a.throttle, a.index_at(0), a.index_at(9999)) == (10_000, 50, 0, 9999)
    b = parse_array("0-99:5")
    assert b.count == 20 and [b.index_at(i) for i in (0, 1, 19)] == [0, 5, 95]
    c = parse_array("1,5,9")
    assert c.count == 3 and [c.index_at(i) for i in range(3)] == [1, 5, 9] and c.throttle is None
    d = parse_array("1-10:4,20,30-31%2")  # 1-10:4 is 1, 5, 9
    assert [d.index_at(i) for i in range(d.count)] == [1, 5, 9, 20, 30, 31] and d.text() == "1-9:4,20,30-31%2"
    with pytest.raises(IndexError):
        d.index_at(6)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("5-1", "ends before it starts"),
        ("1-10:0", "step is at least 1"),
        ("a-b", "write ranges as"),
        ("", "write ranges as"),
        ("1-5%0", "the cap is a number of tasks"),
        ("1-5%x", "the cap is a number of tasks"),
        ("0-3%", "the cap is a number of tasks"),
        ("0-3%9223372036854775808", "the cap is a number of tasks"),
        ("0-\u00b2", "write ranges as"),
        ("0-1000000", "at most 1000000"),
        ("1-10,5", "index 5 is given twice"),
        ("0-20:2,1-21:2,10", "index 10 is given twice"),
        ("0-2000000000", "indices go up to"),
        (",".join(f"{i * 10}" for i in range(101)), "at most 100 comma-separated parts"),
    ],
)
def test_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_array(text)


def test_interleaved_steps_do_not_overlap() -> None:
    assert parse_array("0-20:2,1-21:2").count == 22


def test_tasks_made_under_the_cap_or_the_buffer() -> None:
    assert tasks_to_create(count=100, created=0, live=0, queued=0, throttle=20) == 20
    assert tasks_to_create(count=100, created=20, live=20, queued=0, throttle=20) == 0
    assert tasks_to_create(count=100, created=20, live=13, queued=0, throttle=20) == 7
    assert tasks_to_create(count=100, created=95, live=0, queued=0, throttle=20) == 5
    assert tasks_to_create(count=10**5, created=0, live=0, queued=0, throttle=None) == BUFFER
    assert tasks_to_create(count=10**5, created=BUFFER, live=900, queued=600, throttle=None) == BUFFER - 600


def test_overlap_is_found_by_arithmetic_not_by_walking() -> None:
    assert parse_array("0-999998000:2000,1-999998001:2000%5").count == 1_000_000  # odd and even: apart
    with pytest.raises(ValueError, match="index 999999994 is given twice"):
        parse_array("999999994-999999999:3,999999990-999999999:4")  # 999999994 is in both
    with pytest.raises(ValueError, match="index 15 is given twice"):
        parse_array("3-100:6,5-50:10")  # 3, 9, 15 ... and 5, 15, ...
