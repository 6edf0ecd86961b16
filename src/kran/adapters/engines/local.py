"""The local node: image jobs on Docker, the others as host processes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from kran.adapters.engines.docker_engine import PREFIX as DOCKER
from kran.adapters.engines.docker_engine import DockerEngine
from kran.adapters.engines.process import ProcessEngine
from kran.domain.accounting import Usage
from kran.domain.retry import AttemptEnd
from kran.ports import AttemptRef, EngineCapabilities, LaunchSpec


class LocalEngine:
    capabilities = EngineCapabilities(host_processes=True, containers=True, volumes=True)

    def __init__(self, process: ProcessEngine, docker: DockerEngine) -> None:
        self.process = process
        self.docker = docker

    def _for(self, ref: AttemptRef) -> ProcessEngine | DockerEngine:
        return self.docker if (ref.handle or "").startswith(DOCKER) else self.process

    def launch(self, spec: LaunchSpec) -> str:
        return (self.docker if spec.image else self.process).launch(spec)

    def check(self, refs: Sequence[AttemptRef]) -> dict[tuple[int, int], AttemptEnd]:
        return {**self.process.check(refs), **self.docker.check(refs)}

    def kill(self, ref: AttemptRef) -> None:
        self._for(ref).kill(ref)

    def cheap_collect(self, ref: AttemptRef) -> bool:
        return self._for(ref).cheap_collect(ref)

    def cheap_launch(self, image: bool) -> bool:
        return (self.docker if image else self.process).cheap_launch(image)

    def collect(self, ref: AttemptRef) -> Usage:
        return self._for(ref).collect(ref)

    def stream_logs(self, ref: AttemptRef, stream: str, follow: bool) -> Iterator[bytes]:
        return self._for(ref).stream_logs(ref, stream, follow)

    def close(self) -> None:
        self.process.close()
        self.docker.close()

    def discover(self) -> list[AttemptRef]:
        found = self.process.discover()
        if self.docker.health()["docker"] is None:
            found += self.docker.discover()
        return found

    def health(self) -> dict[str, str | None]:
        return {**self.process.health(), **self.docker.health()}

    def probe(self) -> bool:
        return self.docker.probe()

    def warnings(self) -> list[str]:
        return self.docker.warnings()

    def unavailable(self, image: bool) -> str | None:
        return (self.docker if image else self.process).unavailable(image)

    def handle_of_ended(self, attempt_dir: Path) -> str | None:
        return self.process.handle_of_ended(attempt_dir)
