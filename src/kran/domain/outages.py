"""Engine outages and the attempts that ended in them: a pure decision.

A Docker daemon that restarts without live-restore ends every container of kran's: on the
way down it stops them (SIGTERM, then SIGKILL after its shutdown timeout) while it still
answers, then goes away; one killed with -9 leaves them to be killed when it starts again.
The server probes the daemon every second and keeps each time it did not answer. An
attempt whose container ended in such a time ended with its daemon, not by itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

SLACK_S = 2.0  # the probe's granularity and the daemon's own clock
SHUTDOWN_S = 16.0  # dockerd's shutdown timeout (15 s) and a probe: how long it stops containers before it goes
SIGNALLED = (137, 143)  # SIGKILL, SIGTERM: how a stopping daemon ends a container


@dataclass(frozen=True)
class Outage:
    down: float  # the last answer before it (epoch seconds)
    up: float | None  # the first answer after it; None: not yet
    kept: bool  # whether containers outlived it (live-restore on both sides, or only slow answers)


def hms(t: float) -> str:
    """A time of day in UTC, as the reasons show it (03:48:59)."""
    return time.strftime("%H:%M:%S", time.gmtime(t))


def ended_with_daemon(
    finished_at: float | None, exit_code: int | None, oom: bool, outages: Sequence[Outage], now: float
) -> str | None:
    """Why an attempt whose container ended at `finished_at` with `exit_code` ended with its
    daemon, or None (it ended by itself). Exit 0 is a success whenever it happened; a
    signal's exit (137, 143) may come up to SHUTDOWN_S before the daemon stops answering."""
    if finished_at is None or exit_code == 0:
        return None
    before = SHUTDOWN_S if exit_code in SIGNALLED and not oom else SLACK_S
    for o in outages:
        up = now if o.up is None else o.up
        if not o.kept and o.down - before <= finished_at <= up + SLACK_S:
            until = "now" if o.up is None else hms(o.up)
            return f"the docker engine restarted (unreachable from {hms(o.down)} to {until} UTC)"
    return None


def undecided(
    finished_at: float | None,
    exit_code: int | None,
    oom: bool,
    killed_by_kran: bool,
    live_restore: bool,
    last_up: float,
) -> bool:
    """Whether to wait before settling an attempt: a signal's exit that kran did not send
    may be its daemon shutting down (it stops containers first, then goes away). Settled
    as the job's own once the daemon has answered SHUTDOWN_S past it."""
    if finished_at is None or exit_code not in SIGNALLED or oom or killed_by_kran or live_restore:
        return False
    return last_up < finished_at + SHUTDOWN_S


REREGISTERED_S = 5.0  # a swarm node's agent reports its tasks' ends this soon after it registers again
OWN_WRITE_S = 3.0  # a task attaching to an overlay network writes its node as it starts: not a return
FREED_S = 2.0  # a node's overlay attachment, freed as its last task on the network ends, is written this soon


def reported_on_return(
    exit_code: int | None,
    task_created: float | None,
    task_updated: float | None,
    writes: Sequence[float],
    network: bool,
) -> bool:
    """Whether a swarm task that failed with a signal's exit was reported as its node came
    back. A node's dockerd that restarts stops its containers (SIGTERM, 143) while its agent
    is away; the agent, once it registers again (the manager writes the node), reports them
    at once. `writes` are the times the manager wrote the task's node (its event stream).

    A task that ends by itself is reported while the agent is there, not in the seconds
    after a write. But a task on an overlay network writes its node too: as it starts (the
    node's attachment to the network; a write in its first OWN_WRITE_S is not a return) and
    as it ends when it was the node's last on that network (the attachment freed, just
    before the task's last update). A restart ends all of them, so it writes the node twice:
    the agent registering, then the freed attachment; one write near a network task's end is
    taken for its own. Misread: a job's own signal exit just after another task's attachment
    on its node (the engine's fault, once: retry.settle_attempt), and a restart while a task
    started after it keeps the attachment (the job's own). Times are the manager's."""
    if exit_code not in SIGNALLED or task_created is None or task_updated is None:
        return False
    near = [w for w in writes if task_created + OWN_WRITE_S < w and task_updated - REREGISTERED_S <= w]
    if not any(w <= task_updated for w in near):
        return False
    return not network or len([w for w in near if w <= task_updated + FREED_S]) >= 2
