"""The stops kran sends containers: the stop signal now, SIGKILL after the grace, and
when the first stop was sent (kept in the attempt dir, so a restart keeps it too) until the
container is collected: its signal is kran's, not a stopping daemon's, and an end after it
was a stop (a preempted job that exits 0 on SIGTERM is not done).

No thread waits out a grace: a user's jobs that ignore their signal with a long grace held
the engine pool's threads (`docker stop` blocks), and every launch and collect waited."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docker.errors import APIError, DockerException, NotFound

from kran.adapters.engines.containers import explain, timed_out
from kran.adapters.engines.later import Later
from kran.adapters.engines.spawner import STOP_SENT, mark_stop  # (when kran first sent the stop: epoch seconds)
from kran.errors import EngineError

log = logging.getLogger(__name__)

KILL_AGAIN_S = 5.0  # a SIGKILL the daemon did not take


class ContainerStops:
    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client
        self._sent: dict[str, float] = {}  # container id -> when its first stop was sent (until collected)
        self.later = Later("kran-docker-kills")  # the SIGKILLs after the grace

    def stop(self, c: Any, attempt_dir: Path, grace_s: float) -> None:
        """Send `c` (a container model) its image's stop signal, SIGTERM by default, and
        return; its SIGKILL follows once `grace_s` since the first stop has passed."""
        first = None
        try:
            sent = self.sent(c.id, attempt_dir)
            if sent is None:
                sent = first = self._sent[c.id] = time.time()
                mark_stop(attempt_dir, first)
            self.later.call(sent + grace_s - time.time(), self._kill_now, c.id)
            try:
                self._client().api.kill(c.id, c.attrs.get("Config", {}).get("StopSignal") or "SIGTERM")
            except APIError as e:
                if "invalid signal" not in str(e).lower():
                    raise
                # an image's stop signal the daemon refuses (then it refuses every signal but
                # SIGKILL for the container): no grace, or the job could never be killed
                log.warning("container %s: its image's stop signal is refused: SIGKILL now", c.id[:12])
                self._client().api.kill(c.id, "SIGKILL")
        except NotFound:
            pass
        except (DockerException, OSError) as e:
            if _not_running(e):
                return  # ended already: as `docker stop` does
            if first is not None and not timed_out(e):  # not sent: an end before it is sent again is no stop
                self.forget(c.id)
                with contextlib.suppress(OSError):
                    (attempt_dir / STOP_SENT).unlink()
            raise EngineError(f"could not stop container: {explain(e)}") from e

    def sent(self, cid: str, attempt_dir: Path) -> float | None:
        """When kran first sent the container its stop (None: never, or collected)."""
        if cid not in self._sent:
            try:
                self._sent[cid] = float((attempt_dir / STOP_SENT).read_text())
            except (OSError, ValueError):
                return None
        return self._sent[cid]

    def forget(self, cid: str) -> None:
        """The container was collected (a SIGKILL still due is not sent)."""
        self._sent.pop(cid, None)

    def _kill_now(self, cid: str) -> None:
        """The SIGKILL after the grace, while the container is not collected yet; tried
        again a little later while the daemon does not take it."""
        if cid not in self._sent:
            return  # collected (or its stop never sent)
        try:
            self._client().api.kill(cid, "SIGKILL")
        except NotFound:
            pass
        except (DockerException, OSError) as e:
            if not _not_running(e):
                log.warning("could not kill container %s: %s (again in %s s)", cid[:12], explain(e), KILL_AGAIN_S)
                self.later.call(KILL_AGAIN_S, self._kill_now, cid)


def _not_running(e: Exception) -> bool:
    """The daemon's answer to a signal for a container that has ended (409)."""
    return isinstance(e, APIError) and e.status_code == 409 and "is not running" in str(e)
