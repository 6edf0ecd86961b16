"""Before an attempt starts: its working dir gets the job's inputs and files, its app
volume is mounted, and the engine gets the launch. Runs in the engine pool (a quick
launch: in the scheduler's pass)."""

from __future__ import annotations

import shutil
from collections.abc import Callable

from kran.domain.datafiles import parse_source
from kran.domain.jobs import JobSpec, job_environment
from kran.domain.records import StartedAttempt
from kran.errors import EngineError, FetchError
from kran.ports import Fetcher, LaunchSpec, Volumes
from kran.services.datadir import DataDir
from kran.services.images import ImageManager

Identity = Callable[[int | None], tuple[int, int] | None]


class Stager:
    def __init__(
        self, dirs: DataDir, fetcher: Fetcher, volumes: Volumes, images: ImageManager, identity: Identity
    ) -> None:
        self.dirs = dirs
        self.fetcher = fetcher
        self.volumes = volumes
        self.images = images
        self.identity = identity  # the uid:gid a user's jobs run as (None: the server's own)

    @staticmethod
    def nothing_to_stage(spec: JobSpec) -> bool:
        """No inputs, downloads, image or volume: `stage` only makes the dirs (quick)."""
        return not (spec.image or spec.inputs or spec.files or spec.cached_files or spec.volume)

    def stage(self, s: StartedAttempt) -> LaunchSpec:
        """Make the attempt's working dir and mounts ready; raises EngineError with the reason."""
        try:  # an app's user (admin-approved) or the owner's own uid
            run_as = s.spec.run_as or self.identity(s.owner_id)
        except ValueError as e:
            raise EngineError(str(e)) from None
        attempt_dir = self.dirs.attempt_dir(s.job_id, s.attempt)
        workdir = attempt_dir / "work"
        for d in (attempt_dir.parent, attempt_dir, workdir):  # root's alone until the engine hands them out
            d.mkdir(mode=0o700, exist_ok=True)
        spec = s.spec
        if spec.inputs:
            try:
                shutil.copytree(self.dirs.upload_dir(spec.inputs), workdir, dirs_exist_ok=True)
            except OSError as e:
                raise EngineError(f"copying the job's inputs: {e}") from None
        for urls, cached in ((spec.files, False), (spec.cached_files, True)):
            for url in urls:
                try:
                    self.fetcher.fetch_into(parse_source(url), workdir, cached)
                except ValueError as e:  # checked at submit; only a changed rule gets here
                    raise FetchError(str(e)) from None
                except OSError as e:
                    raise FetchError(f"{url}: {e}") from None
        self.images.ensure_on_node(s)  # `pulling`, with progress, when the node lacks the image
        volume = None
        if spec.volume:
            volume = self.volumes.ensure(spec.volume, spec.volume_mb)
        env = job_environment(
            spec,
            job_id=s.job_id,
            attempt=s.attempt,
            alloc=s.allocation,
            workdir=str(workdir),
            volume=str(volume) if volume else None,
            preempted=s.preempted,
        )
        return LaunchSpec(
            job_id=s.job_id,
            attempt=s.attempt,
            argv=spec.command,
            image=spec.image,
            env=env,
            attempt_dir=attempt_dir,
            allocation=s.allocation,
            network=spec.network,
            run_as=run_as,
            mounts=(volume,) if volume else (),
            node=s.node,
            grace_s=spec.grace_s,
            binds=spec.binds,
            cwd=spec.cwd,
        )
