"""Job states and the one table of allowed transitions."""

from enum import StrEnum

from kran.errors import IllegalTransition


class JobState(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    DEPENDENCY_FAILED = "dependency_failed"
    PREEMPTED = "preempted"  # an attempt's end only: stopped for another job, its job queued again

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def is_active(self) -> bool:
        """Holds resources on a node."""
        return self in (JobState.STARTING, JobState.RUNNING)


FINAL_STATES = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.KILLED,
        JobState.TIMED_OUT,
        JobState.LOST,
        JobState.DEPENDENCY_FAILED,
    }
)

# An attempt that fails or is lost with retries left sends its job back to QUEUED.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.STARTING, JobState.KILLED, JobState.DEPENDENCY_FAILED}),
    JobState.STARTING: frozenset({JobState.RUNNING, JobState.QUEUED, JobState.FAILED, JobState.LOST, JobState.KILLED}),
    JobState.RUNNING: frozenset(
        {
            JobState.QUEUED,
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.KILLED,
            JobState.TIMED_OUT,
            JobState.LOST,
        }
    ),
    **{s: frozenset() for s in FINAL_STATES},
    JobState.PREEMPTED: frozenset(),  # never a job's state
}


def check_transition(current: JobState, new: JobState) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"job state {current} cannot become {new}")


def parse_states(text: str) -> list[JobState]:
    """`queued,running` -> states; raises ValueError naming the bad one."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(JobState(part))
        except ValueError:
            valid = ", ".join(s.value for s in JobState)
            raise ValueError(f"unknown state {part!r} (one of: {valid})") from None
    return out
