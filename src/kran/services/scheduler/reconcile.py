"""At start: make the store and the engine agree (after a crash or kill -9).

- a running attempt whose work still runs is re-adopted as it is (the monitor keeps
  checking it by its handle);
- a starting attempt (launch in flight when the server stopped) is adopted if the engine
  has it, else it never ran: it is recorded as lost and the job re-queued without using
  a retry, so nothing runs twice;
- engine-side work of this instance that the store does not count as active is stopped
  and cleaned up (also every minute while running: `sweep_strays`).
Attempts whose work vanished are found by the first monitor pass and become lost.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from kran.domain.records import AttemptOutcome
from kran.domain.retry import Settlement
from kran.domain.states import JobState
from kran.ports import AttemptRef, Clock, Engine, Store
from kran.services.datadir import DataDir
from kran.services.scheduler.state import SchedulerState

log = logging.getLogger("kran.reconcile")


class Reconciler:
    def __init__(self, store: Store, engine: Engine, clock: Clock, dirs: DataDir, state: SchedulerState) -> None:
        self.store = store
        self.engine = engine
        self.clock = clock
        self.dirs = dirs
        self.state = state

    def on_start(self) -> dict[str, int]:
        now = self.clock.now()
        active = {(a.job_id, a.attempt): a for a in self.store.active_attempts()}
        found = {(r.job_id, r.attempt): r for r in self.engine.discover()}
        adopt, requeue = [], []
        for key, a in active.items():
            if a.handle is not None:
                continue
            ref = found.get(key)
            if ref is not None and ref.handle:
                adopt.append((a.job_id, a.attempt, ref.handle))
            elif (handle := self.engine.handle_of_ended(self.dirs.attempt_dir(*key))) is not None:
                adopt.append((a.job_id, a.attempt, handle))  # ran and ended while we were down
            else:
                requeue.append(
                    AttemptOutcome(
                        a.job_id,
                        a.attempt,
                        Settlement(
                            JobState.LOST, JobState.QUEUED, "server stopped before the launch; re-queued", free=True
                        ),
                        None,
                    )
                )
        if adopt:
            self.store.mark_running(adopt, now)
        if requeue:
            self.store.settle(requeue, now)
        self.store.resolve_all_blocked(now)
        strays = [r for key, r in found.items() if key not in active]
        self._stop(strays)
        return {
            "adopted": len(adopt),
            "requeued": len(requeue),
            "strays": len(strays),
            "running": sum(1 for a in active.values() if a.handle),
        }

    def sweep_strays(self) -> int:
        """Periodically: engine-side work of this instance that the store does not count as
        active (a service left after a crash between settling and removal, say) is stopped."""
        active = {(a.job_id, a.attempt) for a in self.store.active_attempts()}
        strays = [r for r in self.engine.discover() if (r.job_id, r.attempt) not in active | self.state.in_flight]
        self._stop(strays)
        return len(strays)

    def _stop(self, refs: list[AttemptRef]) -> None:
        for ref in refs:
            ref = replace(
                ref, attempt_dir=self.dirs.attempt_dir(ref.job_id, ref.attempt)
            )  # the layout's, not a process's
            log.warning("stopping stray attempt %s/%s", ref.job_id, ref.attempt)
            try:
                self.engine.kill(ref)
                self.engine.collect(ref)
            except Exception:
                log.exception("could not clean up stray attempt %s/%s", ref.job_id, ref.attempt)
