"""A job's stdout/stderr, read or followed across its attempts."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

from kran.domain.records import AttemptRecord, JobRecord
from kran.errors import InvalidInput, NotFound
from kran.ports import Engine, Store
from kran.services.datadir import DataDir

STREAMS = ("stdout", "stderr")


def _file_from(path: object, offset: int) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:  # type: ignore[call-overload]
            f.seek(offset)
            while chunk := f.read(65536):
                yield chunk
    except FileNotFoundError:
        return


class JobLogs:
    def __init__(self, store: Store, dirs: DataDir, engine: Engine) -> None:
        self.store = store
        self.dirs = dirs
        self.engine = engine

    def _job(self, job_id: int) -> JobRecord:
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    def _attempt_chunks(self, job_id: int, att: AttemptRecord, stream: str, follow: bool) -> Iterator[bytes]:
        """One attempt's output: live from the engine while active, then the stored file."""
        sent = 0
        while att.state.is_active:
            if att.handle is not None:
                for chunk in self.engine.stream_logs(self.dirs.ref(job_id, att.number, att.handle), stream, follow):
                    sent += len(chunk)
                    yield chunk
                if not follow:
                    return
            time.sleep(0.1)
            att = self._job(job_id).attempt_list[att.number - 1]
        yield from _file_from(self.dirs.attempt_dir(job_id, att.number) / stream, sent)

    def log_chunks(self, job_id: int, stream: str, follow: bool, skip: int = 0) -> Iterator[bytes]:
        """The latest attempt's output; with follow, waits for the job to start and follows
        retries until the job ends. `skip` drops that many leading bytes."""
        if stream not in STREAMS:
            raise InvalidInput(f"stream must be stdout or stderr, not {stream!r}", "stream")
        job = self._job(job_id)
        number = 0
        while True:
            if job.attempts > number and job.attempt_list:
                att = job.attempt_list[-1]
                number = att.number
                for chunk in self._attempt_chunks(job_id, att, stream, follow):
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    if chunk:
                        yield chunk
                skip = 0
            if not follow:
                return
            job = self._job(job_id)
            if job.state.is_final and job.attempts <= number:
                return
            if job.attempts <= number:
                time.sleep(0.2)
                job = self._job(job_id)

    def tail_lines(self, job_id: int, stream: str, lines: int) -> tuple[bytes, int]:
        """The last `lines` lines of the current output and the byte count read so far."""
        if lines < 0:
            raise InvalidInput("tail must not be negative", "tail")
        data = b"".join(self.log_chunks(job_id, stream, follow=False))
        kept = deque(data.splitlines(keepends=True), maxlen=lines) if lines else deque()
        return b"".join(kept), len(data)
