"""One scheduler pass: place queued jobs and hand their launches to the engine."""

from __future__ import annotations

from kran.domain.images import canonical
from kran.domain.placement import Assignment, Candidate, has_room, place_jobs
from kran.domain.records import StartedAttempt
from kran.errors import EngineError, FetchError
from kran.services.runtime import Runtime
from kran.services.staging import stage_attempt

PAGE = 128


def dispatch_tick(rt: Runtime) -> int:
    """Start as many queued jobs as fit; returns how many launches were handed over.

    The queue is read page by page, and reading stops once the nodes are full, so a pass
    costs what it starts, not the length of the queue.
    """
    if rt.disk.full():  # queued jobs say so (queries.get_job); space returning resumes
        return 0
    now = rt.clock.now()
    nodes = rt.nodes()
    assignments: list[Assignment] = []
    reserved_for = None
    held: set[str] | None = None  # app volumes in use, read once a candidate needs one
    if not any(has_room(n) for n in nodes):
        return 0
    for offset in range(0, rt.settings.dispatch_window, PAGE):
        rows = rt.store.queued_in_order(min(PAGE, rt.settings.dispatch_window - offset), offset)
        candidates = []
        for r in rows:
            if r.not_before <= now:
                spec = rt.spec_of(r.job_id, r.spec_json)
                waited = now - r.queued_since
                candidates.append(
                    Candidate(r.job_id, spec.request, waited, spec.volume, spec.node_class, image_key(spec.image))
                )
        if held is None and any(c.exclusive for c in candidates):
            held = set(rt.apps.volume_users())
        placement = place_jobs(candidates, nodes, reserve_after_s=rt.settings.reserve_after_s, held=held, pack=rt.pack)
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
        rt.pool.submit(_launch, rt, s)
    return len(started)


def image_key(image: str | None) -> str | None:
    """How the inventory names the image (`busybox` is listed as `busybox:latest`)."""
    return canonical(image) if image else None


def _launch(rt: Runtime, s: StartedAttempt) -> None:
    """In the pool: launches proceed in parallel (fork/exec, downloads and pulls release the GIL)."""
    try:
        handle = rt.engine.launch(stage_attempt(rt, s))
    except FetchError as e:
        rt.results.put(("launch_failed", (s.job_id, s.attempt, f"fetching the job's files: {e}")))
    except EngineError as e:
        rt.results.put(("launch_failed", (s.job_id, s.attempt, str(e))))
    except Exception as e:  # an engine bug must not leave the attempt in starting forever
        rt.results.put(("launch_failed", (s.job_id, s.attempt, f"engine error: {e!r}")))
    else:
        if s.spec.volume:
            rt.volume_attempts[(s.job_id, s.attempt)] = (s.spec.volume, s.spec.volume_mb)
        rt.results.put(("launched", (s.job_id, s.attempt, handle)))
    rt.wake.set()
