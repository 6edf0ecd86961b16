"""Job commands: submit, run, jobs, job, kill, logs, files, get."""

from __future__ import annotations

import io
import shlex
import sys
import tarfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from kran.cli.client import Client, ClientError
from kran.cli.render import arrays_table, job_detail, jobs_table, kv_table, print_json
from kran.domain.jobs import JOB_FIELDS, JobField, Kind

# exit codes of `kran run` for jobs that did not exit by themselves
RUN_EXIT = {"timed_out": 124, "killed": 137, "lost": 1}
KRAN_FAILED = 125  # `kran run`: kran itself failed, not the job (docker run's code for the same)


def pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"{item!r} must be K=V", param_hint=f"--{what}")
        out[k] = v
    return out


def _ids(values: tuple[str, ...], what: str) -> list[int]:
    try:
        return [int(v) for item in values for v in item.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter("job ids are whole numbers, e.g. 12,13", param_hint=f"--{what}") from None


METAVARS = {Kind.PAIRS: "K=V", Kind.URLS: "URL", Kind.IDS: "ID[,ID]"}


def field_option(f: JobField, flag: str | None = None) -> Any:
    """The option of a declared job field (domain.jobs.JOB_FIELDS), its value under `f.name`."""
    name = flag or f.cli
    assert name, f"{f.name} has no option"
    if f.kind is Kind.INT:
        return click.option(name, f.name, type=int, help=f.help)
    if f.kind is Kind.FLAG:
        return click.option(name, f.name, is_flag=True, default=None, help=f.help)
    if f.kind in METAVARS:
        return click.option(name, f.name, multiple=True, metavar=METAVARS[f.kind], help=f.help)
    return click.option(name, f.name, help=f.help)


def job_options(f: Any, with_deps: bool = True) -> Any:
    """The job options of submit and run (schedules: without dependencies and uploads)."""
    opts = [field_option(jf) for jf in JOB_FIELDS if jf.cli and jf.kind is not Kind.IDS]
    if with_deps:
        opts.append(
            click.option(
                "--input", "inputs", multiple=True, metavar="LOCAL[:DEST]", help="upload a file into the working dir"
            )
        )
        opts += [field_option(jf) for jf in JOB_FIELDS if jf.cli and jf.kind is Kind.IDS]
    opts.append(click.argument("command", nargs=-1, type=click.UNPROCESSED))
    for o in reversed(opts):
        f = o(f)
    return f


def fields_body(o: dict[str, Any], fields: Iterable[JobField], flags: Mapping[str, str] = {}) -> dict[str, Any]:
    """The body keys of the declared `fields` given on the command line (`flags`: options
    named otherwise than `JobField.cli`, for its error messages)."""
    body: dict[str, Any] = {}
    for f in fields:
        value = o.get(f.name)
        flag = (flags.get(f.name) or f.cli or f.name).lstrip("-")
        if f.kind is Kind.PAIRS:
            if value:
                body[f.name] = pairs(value, flag)
        elif f.kind is Kind.IDS:
            if value:
                body[f.name] = _ids(value, flag)
        elif f.kind in (Kind.URLS, Kind.ARGV):
            if value:
                body[f.name] = list(value)
        elif value is not None:
            body[f.name] = value
    return body


def job_body(**o: Any) -> dict[str, Any]:
    body = fields_body(o, JOB_FIELDS)
    if not body.get("command") and not body.get("sh"):
        raise click.UsageError("give a command after -- or a shell string with --sh")
    return body


def _batch_bodies(path: str) -> list[dict[str, Any]]:
    bodies = []
    try:
        lines = Path(path).read_text().splitlines() if path != "-" else sys.stdin.read().splitlines()
    except OSError as e:
        raise click.UsageError(f"cannot read {path}: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            ctx = submit_cmd.make_context("submit", shlex.split(line), resilient_parsing=False)
            params = dict(ctx.params)
            if params.pop("file"):
                raise click.UsageError("--file inside a batch file")
            if params.get("inputs"):
                raise click.UsageError("--input inside a batch file (submit such jobs one by one)")
            bodies.append(job_body(**params))
        except (click.UsageError, click.BadParameter, ValueError) as e:
            msg = e.format_message() if isinstance(e, click.ClickException) else str(e)
            raise click.UsageError(f"{path} line {n}: {msg}") from None
    if not bodies:
        raise click.UsageError(f"{path} holds no jobs")
    return bodies


@click.command("submit", context_settings={"ignore_unknown_options": False})
@job_options
@click.option("--file", "file", help="one job per line (same options as this command), all or nothing")
@click.option(
    "--array",
    "array",
    metavar="INDICES",
    help="a job array (prints the array's id): 0-9999%50, 0-99:5, 1,5,9; each task sees $KRAN_ARRAY_TASK_ID",
)
def submit_cmd(file: str | None, array: str | None, **o: Any) -> None:
    """Submit a job and print its id: kran submit [OPTIONS] -- CMD ARGS..."""
    client = Client()
    if array is not None:
        if file or o.get("inputs"):
            raise click.UsageError("--array takes neither --file nor --input")
        click.echo(client.submit("/api/v1/arrays", {"array": array, "job": job_body(**o)})["id"])
        return
    if file:
        if o["command"] or o["sh"]:
            raise click.UsageError("--file takes no command of its own")
        ids = client.submit("/api/v1/jobs/batch", {"jobs": _batch_bodies(file)})["ids"]
        click.echo("\n".join(str(i) for i in ids))
        return
    click.echo(submit_one(client, o))


def submit_one(client: Client, o: dict[str, Any]) -> int:
    """POST the job; with --input files, as multipart with the files."""
    body = job_body(**o)
    if not o.get("inputs"):
        return int(client.submit("/api/v1/jobs", body)["id"])
    sources = []
    for item in o["inputs"]:
        local, _, dest = item.partition(":")
        path = Path(local)
        if not path.is_file():
            raise click.BadParameter(f"{local!r} is not a file", param_hint="--input")
        sources.append((dest or path.name, path))

    def parts(stack: ExitStack) -> list[tuple[str, tuple[str, Any]]]:  # opened again for each try
        return [("input", (dest, stack.enter_context(open(path, "rb")))) for dest, path in sources]

    return int(client.submit("/api/v1/jobs/upload", body, files=parts)["id"])


@click.command("run")
@job_options
def run_cmd(**o: Any) -> None:
    """Submit a job, stream its output live and exit with its exit code (125 when kran
    itself failed: refused, unreachable; as `docker run`)."""
    try:
        _run(o)
    except ClientError as e:  # not the job's exit 1
        click.echo(f"Error: {e}", err=True)
        sys.exit(KRAN_FAILED)


def _run(o: dict[str, Any]) -> None:
    client = Client()
    job_id = submit_one(client, o)
    errors: list[Exception] = []

    def pump(stream: str, out: Any) -> None:
        try:
            with client.stream(f"/api/v1/jobs/{job_id}/logs", {"stream": stream, "follow": "true"}) as r:
                for chunk in r.iter_bytes():
                    out.write(chunk)
                    out.flush()
        except Exception as e:  # reported after the job ends
            errors.append(e)

    threads = [
        threading.Thread(target=pump, args=(s, f), daemon=True)
        for s, f in (("stdout", sys.stdout.buffer), ("stderr", sys.stderr.buffer))
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        client.post(f"/api/v1/jobs/{job_id}/kill")
        click.echo(f"kran: killed job {job_id}", err=True)
        sys.exit(130)
    if errors:
        raise ClientError(str(errors[0]))
    job = ended_job(client, job_id, "its output")
    if job["state"] == "succeeded":
        sys.exit(0)
    click.echo(f"kran: job {job_id} {job['state']}: {job.get('reason') or ''}", err=True)
    if job["state"] == "failed" and job["exit_code"]:
        sys.exit(job["exit_code"])
    sys.exit(RUN_EXIT.get(job["state"], 1))


@click.command("jobs")
@click.option("--state", help="comma-separated states, e.g. queued,running")
@click.option("--label", multiple=True, metavar="K=V", help="only jobs with this label")
@click.option("--mine/--all", default=False, help="only your jobs, or everybody's (default)")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--tasks", is_flag=True, help="list the tasks of job arrays as jobs (else: one line per array)")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def jobs_cmd(state: str | None, label: tuple[str, ...], mine: bool, limit: int, tasks: bool, output: str) -> None:
    """List jobs, newest first; job arrays one line each, with their tasks per state."""
    pairs(label, "label")
    one_line = output == "table" and not tasks  # JSON: every job, tasks too (GET /api/v1/arrays has the arrays)
    params: dict[str, Any] = {"limit": limit, "mine": mine, "label": list(label), "tasks": not one_line}
    if state:
        params["state"] = state
    client = Client()
    jobs = client.get("/api/v1/jobs", params=params)["jobs"]
    if output == "json":
        print_json(jobs)
        return
    jobs_table(jobs)
    arrays = client.get("/api/v1/arrays", params={"limit": limit, "mine": mine})["arrays"] if one_line else []
    if arrays:
        arrays_table(arrays)


@click.command("job")
@click.argument("job_id", type=int)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def job_cmd(job_id: int, output: str) -> None:
    """Show one job: spec, allocation, node, times, exit code, reason, attempts."""
    job = Client().get(f"/api/v1/jobs/{job_id}")
    print_json(job) if output == "json" else job_detail(job)


@click.command("kill")
@click.argument("job_ids", type=int, nargs=-1, required=True)
def kill_cmd(job_ids: tuple[int, ...]) -> None:
    """Kill jobs (queued ones at once; running ones get SIGTERM, then SIGKILL)."""
    client, failed = Client(), 0
    for job_id in job_ids:
        try:
            r = client.post(f"/api/v1/jobs/{job_id}/kill")
            click.echo(f"{job_id}: {'killed' if r['state'] == 'killed' else 'killing'}")
        except ClientError as e:
            click.echo(f"{job_id}: {e}", err=True)
            failed += 1
    if failed:
        sys.exit(1)


@click.command("logs")
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="keep printing until the job ends")
@click.option("--stderr", is_flag=True, help="stderr instead of stdout")
@click.option("--tail", type=click.IntRange(0), help="only the last N lines")
def logs_cmd(job_id: int, follow: bool, stderr: bool, tail: int | None) -> None:
    """Print a job's output (its latest attempt)."""
    params: dict[str, Any] = {"stream": "stderr" if stderr else "stdout", "follow": follow}
    if tail is not None:
        params["tail"] = tail
    client = Client()
    with client.stream(f"/api/v1/jobs/{job_id}/logs", params) as r:
        for chunk in r.iter_bytes():
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    if follow:
        ended_job(client, job_id, "the log")


def ended_job(client: Client, job_id: int, what: str) -> dict[str, Any]:
    """The job, once a stream that follows it to its end has ended: a server that stops
    ends its streams too, and that is no end of the job."""
    try:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}")
    except ClientError as e:  # (a stopping server closes its port right after its streams)
        raise ClientError(f"the server ended the stream of {what} before job {job_id} was seen to end ({e})") from None
    if job["finished_at"] is None:
        raise ClientError(
            f"the server ended the stream of {what} before job {job_id} ended (it is {job['state']}; "
            "the server may be stopping): follow it again"
        )
    return job


@click.command("files")
@click.argument("job_id", type=int)
@click.argument("path", default="")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def files_cmd(job_id: int, path: str, output: str) -> None:
    """List the job's working dir (or a path in it)."""
    client = Client()
    r = client.get(f"/api/v1/jobs/{job_id}/files", params={"path": path})
    while r.get("next_cursor"):  # (the server lists a dir a page at a time)
        more = client.get(f"/api/v1/jobs/{job_id}/files", params={"path": path, "cursor": r["next_cursor"]})
        r = {**more, "entries": r["entries"] + more["entries"]}
    print_json(r) if output == "json" else kv_table(r["entries"], ["name", "type", "size", "mtime"])


@click.command("get")
@click.argument("job_id", type=int)
@click.argument("path", required=False)
@click.option("--all", "everything", is_flag=True, help="the whole working dir (into -o DIR)")
@click.option("-o", "--output", "dest", help="file to write (- for stdout), or the dir for --all")
def get_cmd(job_id: int, path: str | None, everything: bool, dest: str | None) -> None:
    """Download a file from the job's working dir, or all of it with --all -o DIR."""
    if everything:
        if path:
            raise click.UsageError("give a PATH or --all, not both")
        _get_all(job_id, Path(dest or f"job-{job_id}"))
        return
    if not path:
        raise click.UsageError("give a PATH in the job's working dir, or --all")
    dest = dest or Path(path).name
    with Client().stream(f"/api/v1/jobs/{job_id}/files/{path.lstrip('/')}") as r:
        out = sys.stdout.buffer if dest == "-" else open(dest + ".part", "wb")
        try:
            for chunk in r.iter_bytes():
                out.write(chunk)
        finally:
            if dest != "-":
                out.close()
    if dest != "-":
        Path(dest + ".part").replace(dest)


def _get_all(job_id: int, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    extract_stream(Client(), f"/api/v1/jobs/{job_id}/archive", dest)
    click.echo(f"job {job_id}'s files are in {dest}/", err=True)


def extract_stream(client: Client, path: str, dest: Path) -> None:
    """A tar stream from the server, extracted into `dest` as it arrives."""
    with client.stream(path) as r:
        with tarfile.open(fileobj=io.BufferedReader(_Reader(r.iter_bytes())), mode="r|") as tar:
            tar.extractall(dest, filter=_skip_unsafe)


def _skip_unsafe(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "data" filter (no absolute paths, no links leaving dest), skipping what it
    refuses instead of stopping there."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError as e:
        click.echo(f"kran: skipped {member.name}: {e}", err=True)
        return None


class _Reader(io.RawIOBase):
    """A byte iterator as a raw stream, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self._buf:
            self._buf = next(self._chunks, b"")
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n
