"""Which attempts ended with their daemon: explicit times (epoch seconds) around one outage."""

from __future__ import annotations

from kran.domain.outages import SHUTDOWN_S, Outage, ended_with_daemon, undecided

RESTART = Outage(down=1000.0, up=1010.0, kept=False)  # last answer at 1000, first again at 1010


def test_a_stop_in_the_outage_is_the_daemons_and_a_success_is_a_success() -> None:
    assert "restarted" in (ended_with_daemon(1005.0, 137, False, [RESTART], 2000.0) or "")
    assert "restarted" in (ended_with_daemon(1011.0, 1, False, [RESTART], 2000.0) or "")  # killed as it started again
    assert ended_with_daemon(1005.0, 0, False, [RESTART], 2000.0) is None
    assert ended_with_daemon(None, 143, False, [RESTART], 2000.0) is None
    assert ended_with_daemon(1005.0, 143, False, [Outage(1000.0, 1010.0, kept=True)], 2000.0) is None  # live-restore


def test_signals_count_up_to_the_shutdown_timeout_before_it_went_away() -> None:
    # dockerd stops the containers while it still answers, then goes: a SIGTERM exit 12 s
    # before the last answer is the daemon's; an exit 1 that early is the job's own
    assert ended_with_daemon(988.0, 143, False, [RESTART], 2000.0) is not None
    assert ended_with_daemon(1000.0 - SHUTDOWN_S - 1, 143, False, [RESTART], 2000.0) is None
    assert ended_with_daemon(988.0, 1, False, [RESTART], 2000.0) is None
    assert ended_with_daemon(988.0, 137, True, [RESTART], 2000.0) is None  # out of memory: the job's own
    assert ended_with_daemon(1020.0, 143, False, [RESTART], 2000.0) is None  # after it was back


def test_an_outage_not_yet_over_counts_until_now() -> None:
    open_ = Outage(down=1000.0, up=None, kept=False)
    assert "to now" in (ended_with_daemon(1003.0, 143, False, [open_], 1004.0) or "")
    assert ended_with_daemon(1003.0, 143, False, [open_], 1004.0) is not None
    assert ended_with_daemon(1010.0, 143, False, [open_], 1004.0) is None


def test_a_signal_exit_waits_until_the_daemon_has_answered_past_it() -> None:
    assert undecided(1000.0, 143, False, False, False, last_up=1001.0)  # it may be shutting down
    assert not undecided(1000.0, 143, False, False, False, last_up=1000.0 + SHUTDOWN_S)  # it kept answering
    assert not undecided(1000.0, 143, False, True, False, last_up=1001.0)  # kran's own kill
    assert not undecided(1000.0, 143, False, False, True, last_up=1001.0)  # live-restore: the daemon stops none
    assert not undecided(1000.0, 1, False, False, False, last_up=1001.0)
    assert not undecided(1000.0, 137, True, False, False, last_up=1001.0)
