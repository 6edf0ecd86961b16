"""One scheduler pass: place queued jobs and hand their launches to the engine."""

from __future__ import annotations

from kran.domain.jobs import job_environment
from kran.domain.placement import Candidate, place_jobs
from kran.errors import EngineError
from kran.ports import LaunchSpec
from kran.services.runtime import Runtime


def dispatch_tick(rt: Runtime) -> int:
    """Start as many queued jobs as fit; returns how many launches were handed over."""
    now = rt.clock.now()
    candidates = []
    for row in rt.store.queued_in_order(rt.settings.dispatch_window):
        if row.not_before > now:
            continue
        spec = rt.spec_of(row.job_id, row.spec_json)
        candidates.append(Candidate(row.job_id, spec.request, now - row.queued_since))
    if not candidates:
        rt.reserved_for = None
        return 0
    placement = place_jobs(candidates, rt.nodes(), reserve_after_s=rt.settings.reserve_after_s)
    rt.reserved_for = placement.reserved_for
    started = rt.store.start_attempts(placement.assignments, now)
    for s in started:
        attempt_dir = rt.attempt_dir(s.job_id, s.attempt)
        workdir = attempt_dir / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        launch = LaunchSpec(
            job_id=s.job_id,
            attempt=s.attempt,
            argv=s.spec.command,
            image=s.spec.image,
            env=job_environment(s.spec, job_id=s.job_id, attempt=s.attempt, alloc=s.allocation,
                                workdir=str(workdir)),
            attempt_dir=attempt_dir,
            allocation=s.allocation,
            network=s.spec.network,
        )
        rt.pool.submit(_launch, rt, launch)
    return len(started)


def _launch(rt: Runtime, spec: LaunchSpec) -> None:
    try:
        handle = rt.engine.launch(spec)
    except EngineError as e:
        rt.results.put(("launch_failed", (spec.job_id, spec.attempt, str(e))))
    except Exception as e:  # an engine bug must not leave the attempt in starting forever
        rt.results.put(("launch_failed", (spec.job_id, spec.attempt, f"engine error: {e!r}")))
    else:
        rt.results.put(("launched", (spec.job_id, spec.attempt, handle)))
    rt.wake.set()
