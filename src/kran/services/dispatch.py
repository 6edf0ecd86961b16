"""One scheduler pass: place queued jobs and hand their launches to the engine."""

from __future__ import annotations

from kran.domain.jobs import job_environment
from kran.domain.placement import Assignment, Candidate, has_room, place_jobs
from kran.errors import EngineError
from kran.ports import LaunchSpec
from kran.services.runtime import Runtime

PAGE = 128


def dispatch_tick(rt: Runtime) -> int:
    """Start as many queued jobs as fit; returns how many launches were handed over.

    The queue is read page by page, and reading stops once the nodes are full, so a pass
    costs what it starts, not the length of the queue.
    """
    now = rt.clock.now()
    nodes = rt.nodes()
    assignments: list[Assignment] = []
    reserved_for = None
    if not any(has_room(n) for n in nodes):
        return 0
    for offset in range(0, rt.settings.dispatch_window, PAGE):
        rows = rt.store.queued_in_order(min(PAGE, rt.settings.dispatch_window - offset), offset)
        candidates = [
            Candidate(r.job_id, rt.spec_of(r.job_id, r.spec_json).request, now - r.queued_since)
            for r in rows
            if r.not_before <= now
        ]
        placement = place_jobs(candidates, nodes, reserve_after_s=rt.settings.reserve_after_s)
        assignments += placement.assignments
        for a in placement.assignments:
            node = next(n for n in nodes if n.node_id == a.node_id)
            node.allocated = node.allocated + a.allocation
        reserved_for = placement.reserved_for
        if reserved_for is not None or len(rows) < PAGE or not any(has_room(n) for n in nodes):
            break
    rt.reserved_for = reserved_for
    started = rt.store.start_attempts(assignments, now)
    for s in started:
        attempt_dir = rt.attempt_dir(s.job_id, s.attempt)
        workdir = attempt_dir / "work"
        launch = LaunchSpec(
            job_id=s.job_id,
            attempt=s.attempt,
            argv=s.spec.command,
            image=s.spec.image,
            env=job_environment(s.spec, job_id=s.job_id, attempt=s.attempt, alloc=s.allocation, workdir=str(workdir)),
            attempt_dir=attempt_dir,
            allocation=s.allocation,
            network=s.spec.network,
        )
        rt.pool.submit(_launch, rt, launch)
    return len(started)


def _launch(rt: Runtime, spec: LaunchSpec) -> None:
    """In the pool: launches proceed in parallel (fork/exec and pulls release the GIL)."""
    try:
        spec.workdir.mkdir(parents=True, exist_ok=True)
        handle = rt.engine.launch(spec)
    except EngineError as e:
        rt.results.put(("launch_failed", (spec.job_id, spec.attempt, str(e))))
    except Exception as e:  # an engine bug must not leave the attempt in starting forever
        rt.results.put(("launch_failed", (spec.job_id, spec.attempt, f"engine error: {e!r}")))
    else:
        rt.results.put(("launched", (spec.job_id, spec.attempt, handle)))
    rt.wake.set()
