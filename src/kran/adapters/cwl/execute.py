"""One workflow run through cwltool's own `main`, with kran's tool factory and a fetcher
that reads documents only under the run's dir and the shared roots (never the network)."""

from __future__ import annotations

import copy
import functools
import io
import json
import logging
import os
import queue
import shutil
import sys
import threading
import types
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cwltool.executors
import cwltool.main
import cwltool.process
from cwltool.argparser import arg_parser
from cwltool.context import LoadingContext
from cwltool.executors import MultithreadedJobExecutor
from cwltool.task_queue import TaskQueue
from schema_salad.exceptions import ValidationException
from schema_salad.fetcher import DefaultFetcher

from kran.adapters.cwl import nodejs
from kran.adapters.cwl.documents import yaml_problem
from kran.adapters.cwl.outputs import RUN_ROOTS, confined_copytree
from kran.adapters.cwl.reasons import failure_reason
from kran.adapters.cwl.steps import StepContext, make_tool_factory, user_changeable
from kran.domain.workflows import EXIT_FAILED, EXIT_SUCCESS, EXIT_UNSUPPORTED, RunResult
from kran.ports import StepLauncher


class OnDemandTaskQueue(TaskQueue):
    """cwltool's task queue of a run's steps, its threads started as steps come (up to the
    same number) rather than all when the run starts: a run's executor has one per step
    that may wait on kran at a time (`max_parallel`, 64), and making 64 threads for a
    one-step run cost it about 10 ms of the server's CPU."""

    def __init__(self, lock: threading.Lock, thread_count: int) -> None:
        super().__init__(lock, 0)  # no threads yet (0 would also make add() run tasks inline)
        self.thread_count = thread_count
        self.task_queue = queue.Queue(maxsize=thread_count)

    def add(self, task: Any, unlock: Any = None, check_done: Any = None) -> None:
        if self.thread_count > 0:
            with self.lock:  # a thread for every task in flight, this one included
                if len(self.task_queue_threads) < min(self.in_flight + 1, self.thread_count):
                    thread = threading.Thread(target=self._task_queue_func, name="kran-cwl-step")
                    self.task_queue_threads.append(thread)
                    thread.start()
        super().add(task, unlock, check_done)


cwltool.executors.TaskQueue = OnDemandTaskQueue  # type: ignore[attr-defined]

_cwltool_schema = cwltool.process.get_schema


def _schema_of_the_run(version: str) -> Any:
    """cwltool's parsed schema (cached for the process, see `_keep_schemas`), with an RDF
    graph and a fetch cache of the run's own: a document's `$schemas` ontologies are parsed
    into them, and shared they would carry one user's ontology into every later run."""
    loader, names, metaschema, metaloader = _cwltool_schema(version)
    own = copy.copy(loader)
    own.graph = type(loader.graph)()  # rdflib's Graph (cwltool's dependency)
    own.graph += loader.graph  # empty: the CWL schema itself loads no ontology
    own.cache = dict(loader.cache)  # the schema's own documents, as text
    return own, names, metaschema, metaloader


cwltool.process.get_schema = _schema_of_the_run
_confined_shutil = types.ModuleType("shutil")  # shutil as cwltool's relocation of outputs sees it
_confined_shutil.__dict__.update(shutil.__dict__)
_confined_shutil.copytree = confined_copytree  # type: ignore[attr-defined]
cwltool.process.shutil = _confined_shutil  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RunPaths:
    """Where a run keeps things, all on the data dir (the same path on every node)."""

    dir: Path

    @property
    def outputs(self) -> Path:
        return self.dir / "outputs"

    @property
    def cache(self) -> Path:  # cwltool's job cache: finished steps are reused after a restart
        return self.dir / "cache"

    @property
    def tmp(self) -> Path:
        return self.dir / "tmp"

    @property
    def log(self) -> Path:
        return self.dir / "run.log"

    def make(self) -> None:
        for d in (self.outputs, self.cache, self.tmp):
            d.mkdir(parents=True, exist_ok=True)


def restricted_fetcher(roots: tuple[Path, ...], run_dir: Path) -> Any:
    class RootsFetcher(DefaultFetcher):
        def _allowed(self, url: str) -> None:
            split = urllib.parse.urlsplit(url)
            if split.scheme != "file":
                raise ValidationException(f"{url}: kran reads workflow documents from files only")
            given = Path(os.path.abspath(urllib.request.url2pathname(split.path)))
            path = given.resolve()
            if not any(path.is_relative_to(r) for r in roots):
                raise ValidationException(f"{path} is outside the places this server shares with workflows")
            # both ways: the one checked, and the one cwltool opens (a link on it could be re-pointed)
            if not path.is_relative_to(run_dir.resolve()) and (dir_ := user_changeable(path) or user_changeable(given)):
                raise ValidationException(
                    f"{path}: {dir_} may be changed by users, so what is read could differ from what was"
                    " checked: documents are read by path only from dirs only root can change (send it with the run)"
                )

        def fetch_text(self, url: str, content_types: list[str] | None = None) -> str:
            if isinstance(self.cache.get(url), str):
                return super().fetch_text(url, content_types)
            self._allowed(url)
            text = super().fetch_text(url, content_types)
            problem = yaml_problem(text, Path(urllib.parse.urlsplit(url).path).name)
            if problem:  # every document, $import and job order cwltool reads comes here
                raise ValidationException(f"refused: {problem}")
            return text

        def check_exists(self, url: str) -> bool:
            if url in self.cache:
                return True
            try:
                self._allowed(url)
            except ValidationException:
                return False
            return super().check_exists(url)

    return RootsFetcher


class _LastError(logging.Handler):
    """Writes the run's own log lines to its log file and keeps the last error."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.INFO)
        self.threads: set[int] = {threading.get_ident()}
        self.file = logging.FileHandler(path, encoding="utf-8")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.last_error: str | None = None
        self.addFilter(lambda r: r.thread in self.threads)

    def emit(self, record: logging.LogRecord) -> None:
        self.file.emit(record)
        if record.levelno >= logging.ERROR and record.getMessage().strip():
            # logged while cwltool handles the exception: sys.exc_info() is it
            self.last_error = failure_reason(record.getMessage(), sys.exc_info()[1])

    def close(self) -> None:
        self.file.close()
        super().close()


@functools.cache
def install_nodejs() -> None:
    """The JavaScript engine, once (by the first run)."""
    nodejs.install()


def _keep_schemas() -> None:
    """cwltool's schema set-up: kran never installs custom (extension) schemas, so the
    standard ones cwltool caches in `cwltool.process.SCHEMA_CACHE` stay valid."""


def run_cwl(
    document: str,
    job_order: str | None,
    paths: RunPaths,
    launcher: StepLauncher,
    roots: tuple[Path, ...],
    default_image: str,
    max_parallel: int = 64,
) -> RunResult:
    """Run the workflow to its end (blocking); steps go through `launcher`."""
    paths.make()
    handler = _LastError(paths.log)
    ctx = StepContext(launcher, roots, paths.dir, lambda: handler.threads.add(threading.get_ident()))
    loading = LoadingContext()
    loading.construct_tool_object = make_tool_factory(ctx)  # type: ignore[assignment]
    loading.fetcher_constructor = restricted_fetcher(ctx.roots, ctx.run_dir)
    loading.relax_path_checks = True  # any file name: inputs are bound into containers, never shell-expanded
    args = [
        "--outdir", str(paths.outputs),
        "--cachedir", str(paths.cache),
        "--tmpdir-prefix", f"{paths.tmp}/",
        "--default-container", default_image,
        "--disable-color",
        "--skip-schemas",
        document,
    ]  # fmt: skip
    if job_order:
        args.append(job_order)
    executor = MultithreadedJobExecutor()
    # kran places the steps on its nodes: cwltool's count of this machine's cores, memory
    # and GPUs must not hold them back. Its cores are its step threads (started as steps
    # come, see OnDemandTaskQueue): they bound how many steps of one run wait on kran at a time.
    executor.max_cores, executor.max_ram, executor.max_cuda = float(max_parallel), 1 << 50, 1 << 20
    out = io.StringIO()
    RUN_ROOTS.roots = (paths.dir.resolve(), *(Path(os.path.realpath(r)) for r in roots))
    try:
        parsed = arg_parser().parse_args(args)
        # outdirs of steps the cache does not keep (WorkReuse: false) on the data dir too;
        # cwltool's parser refuses this beside --cachedir, its runtime does not
        parsed.tmp_outdir_prefix = f"{paths.tmp}/"
        code = cwltool.main.main(
            args=parsed,
            stdout=out,
            stderr=io.StringIO(),
            logger_handler=handler,
            executor=executor,
            loadingContext=loading,  # the run context comes from the arguments
            # the standard schemas, as without it, but kept between runs: without a callback
            # cwltool drops its parsed schema at every start, and parsing it again took 70 %
            # of a short run's CPU in the server (py-spy, issue 23.5)
            custom_schema_callback=_keep_schemas,
        )
    except SystemExit as e:  # cwltool's argument parser
        return RunResult(EXIT_FAILED, None, f"cwltool: exited with {e.code}")
    except Exception as e:  # cwltool's own failure: the run fails, the server goes on
        logging.getLogger("kran.workflows").exception("workflow executor failed")
        return RunResult(EXIT_FAILED, None, failure_reason(f"cwltool: {e}"))
    finally:
        RUN_ROOTS.roots = None
        handler.close()
        nodejs.reap()  # the run's step threads have ended: their nodejs processes go too
    outputs: dict[str, Any] | None = None
    text = out.getvalue().strip()
    if text:
        try:
            outputs = json.loads(text)
        except ValueError:
            outputs = None
    if code == EXIT_SUCCESS:
        return RunResult(EXIT_SUCCESS, outputs, None)
    if code == EXIT_UNSUPPORTED:
        return RunResult(EXIT_UNSUPPORTED, outputs, handler.last_error or "unsupported requirement")
    return RunResult(EXIT_FAILED, outputs, handler.last_error or f"cwltool exited with {code}")
