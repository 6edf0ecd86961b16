"""The narrow boundaries the services talk through."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kran.domain.resources import Resources
from kran.domain.retry import AttemptEnd


@dataclass(frozen=True)
class LaunchSpec:
    """Everything an engine needs to start one attempt."""

    job_id: int
    attempt: int
    argv: tuple[str, ...]
    image: str | None
    env: dict[str, str]
    attempt_dir: Path  # holds stdout, stderr, exit_code; `work/` below it is the cwd
    allocation: Resources
    network: bool

    @property
    def workdir(self) -> Path:
        return self.attempt_dir / "work"


@dataclass(frozen=True)
class AttemptRef:
    """An attempt the engine may be running; `handle` is what `launch` returned."""

    job_id: int
    attempt: int
    handle: str | None
    attempt_dir: Path


class Engine(Protocol):
    """Runs attempts. The core owns loops, state and retries; an engine only acts and reports."""

    def launch(self, spec: LaunchSpec) -> str:
        """Start the attempt; return a handle. Raises EngineError with a reason."""
        ...

    def check(self, refs: Sequence[AttemptRef]) -> dict[tuple[int, int], AttemptEnd]:
        """Which of these attempts have ended, and how. Running ones are left out."""
        ...

    def kill(self, ref: AttemptRef) -> None:
        """Stop the attempt (and everything it started). Idempotent."""
        ...

    def collect(self, ref: AttemptRef) -> None:
        """After the end: make sure stdout/stderr are in the attempt dir and remove
        engine-side leftovers. Idempotent."""
        ...

    def cheap_collect(self, ref: AttemptRef) -> bool:
        """Whether `collect` is quick enough for the scheduler loop (no I/O beyond local files)."""
        ...

    def stream_logs(self, ref: AttemptRef, stream: str, follow: bool) -> Iterator[bytes]:
        """The attempt's stdout or stderr while it runs; ends when it ends (follow)."""
        ...

    def discover(self) -> list[AttemptRef]:
        """Attempts of this kran instance that the engine knows of (by labels)."""
        ...

    def health(self) -> dict[str, str | None]:
        """Per sub-engine: None when usable, else why not."""
        ...


class Clock(Protocol):
    def now(self) -> float: ...
