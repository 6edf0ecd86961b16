"""`kran workflow ...` and `kran-cwl-runner`: CWL workflow runs on the server."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from kran.cli.bundle import make_bundle, post_bundle
from kran.cli.client import Client, ClientError
from kran.cli.jobs import extract_stream, pairs
from kran.cli.render import console, kv_table, print_json, short_time
from kran.domain.workflows import EXIT_FAILED

FINAL = ("succeeded", "failed", "cancelled")


@click.group("workflow")
def workflow() -> None:
    """CWL workflow runs: every tool step is a kran job."""


def submit(
    client: Client, wf: str, job: str | None, name: str | None, labels: dict[str, str], notify: str | None = None
) -> dict[str, Any]:
    shared = client.get("/api/v1/workflows/roots")
    roots = [Path(r) for r in shared["roots"]]
    bundle = make_bundle(wf, job, roots, name, labels)
    if notify:
        bundle.run["notify"] = notify
    return post_bundle(client, bundle, shared.get("max_upload_mb"))


LONG_POLL_S = 10.0  # quiet waits ask the server to answer when the run ends


def wait(client: Client, run_id: int, quiet: bool = True) -> dict[str, Any]:
    """Until the run ends. Quiet, the server holds each request until the run has ended
    (up to LONG_POLL_S); showing the steps' progress, or when the server answered at once
    (the run is not executing on it, or the server is older), it asks every 0.3 s."""
    seen: dict[int, str] = {}
    while True:
        asked = time.monotonic()
        run = client.get(f"/api/v1/workflows/{run_id}", params={"wait_s": LONG_POLL_S} if quiet else None)
        if not quiet:
            for s in run["steps"]:
                if seen.get(s["job"]) != s["state"]:
                    seen[s["job"]] = s["state"]
                    click.echo(f"  {s['step']:<30} job {s['job']:<8} {s['state']}", err=True)
        if run["state"] in FINAL:
            return dict(run)
        if not quiet or time.monotonic() - asked < 0.25:
            time.sleep(0.3)


@workflow.command("run")
@click.argument("document")
@click.argument("job_order", required=False)
@click.option("--name", help="the run's name (default: the document's file name)")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="label the run")
@click.option("--wait", "wait_", is_flag=True, help="wait for the end; exit 0 when it succeeded")
@click.option("--notify", help="POST a signed JSON event to this URL when the run ends")
def run_cmd(
    document: str, job_order: str | None, name: str | None, labels: tuple[str, ...], wait_: bool, notify: str | None
) -> None:
    """Run WORKFLOW.cwl with JOB.yml's inputs (files on a shared root go by path, others are uploaded)."""
    client = Client()
    run = submit(client, document, job_order, name, pairs(labels, "label"), notify)
    click.echo(run["id"])
    if wait_:
        run = wait(client, run["id"], quiet=False)
        click.echo(
            f"workflow run {run['id']} {run['state']}" + (f": {run['reason']}" if run["reason"] else ""), err=True
        )
        sys.exit(0 if run["state"] == "succeeded" else 1)


@workflow.command("list")
@click.option("--state", "states", multiple=True, help="only runs in this state")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_cmd(states: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Workflow runs, newest first."""
    runs = Client().get("/api/v1/workflows", params={"state": list(states), "limit": limit})["runs"]
    if as_json:
        print_json(runs)
        return
    rows = [{**r, "submitted": short_time(r["submitted_at"]), "ended": short_time(r["finished_at"])} for r in runs]
    kv_table(rows, ["id", "name", "owner", "state", "submitted", "ended", "reason"])


@workflow.command("show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def show_cmd(run_id: int, as_json: bool) -> None:
    """A run and its steps: step, state, job id, node, duration."""
    run = Client().get(f"/api/v1/workflows/{run_id}")
    if as_json:
        print_json(run)
        return
    console.print(f"[bold]workflow run {run['id']}[/] {run['name']}  [bold]{run['state']}[/]  owner {run['owner']}")
    if run["reason"]:
        console.print(f"reason: {run['reason']}")
    rows = []
    for s in run["steps"]:
        node = s["node"]
        rows.append(
            {
                "step": s["step"],
                "state": s["state"],
                "job": s["job"],
                "node": None if not node else node.get("hostname") or node["id"],
                "duration": None if s["duration_s"] is None else f"{s['duration_s']:.1f}s",
                "exit": s["exit_code"],
            }
        )
    kv_table(rows, ["step", "state", "job", "node", "duration", "exit"])
    failed = [s for s in run["steps"] if s["state"] in ("failed", "timeout", "lost")]
    if failed:
        console.print(f"logs of a failed step: kran logs {failed[0]['job']} (and --stderr)")


@workflow.command("cancel")
@click.argument("run_id", type=int)
def cancel_cmd(run_id: int) -> None:
    """Cancel a run: no new steps start, running ones are killed."""
    run = Client().post(f"/api/v1/workflows/{run_id}/cancel")
    click.echo(f"workflow run {run_id}: {run['state']}" + (" (cancelling)" if run["state"] not in FINAL else ""))


def download_outputs(client: Client, run_id: int, dest: Path) -> dict[str, Any]:
    """The output files into `dest`; the output object with its locations there."""
    info = client.get(f"/api/v1/workflows/{run_id}/outputs")
    dest.mkdir(parents=True, exist_ok=True)
    if info["outputs"] is None:
        return {}
    extract_stream(client, f"/api/v1/workflows/{run_id}/outputs/archive", dest)
    return dict(relocate(info["outputs"], info.get("outputs_dir"), dest))


def relocate(obj: Any, server_dir: str | None, dest: Path) -> Any:
    """Locations relative to the outputs archive (or, from a server before 18.8, under its
    outputs dir `server_dir`) moved to `dest`."""
    if isinstance(obj, list):
        return [relocate(v, server_dir, dest) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: relocate(v, server_dir, dest) for k, v in obj.items()}
    top = dest.resolve()
    for key, at in (("location", f"{top.as_uri()}/"), ("path", f"{top}/")):
        v = out.get(key)
        if not isinstance(v, str):
            continue
        if server_dir is not None:
            prefix = f"file://{server_dir}/" if key == "location" else f"{server_dir}/"
            if v.startswith(prefix):
                out[key] = at + v[len(prefix) :]
        elif v == ".":
            out[key] = at.rstrip("/")
        elif not v.startswith("/") and (key == "path" or ":" not in v.split("/", 1)[0]):  # not a URL, _:literal
            out[key] = at + v
    return out


@workflow.command("outputs")
@click.argument("run_id", type=int)
@click.option("-o", "--output", "dest", help="download the output files into this dir")
def outputs_cmd(run_id: int, dest: str | None) -> None:
    """The run's output object (JSON); with -o DIR, the files too."""
    client = Client()
    if dest:
        print_json(download_outputs(client, run_id, Path(dest)))
    else:
        print_json(client.get(f"/api/v1/workflows/{run_id}/outputs")["outputs"])


@click.command("cwl", context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]})
@click.option("--outdir", default=".", show_default=True, help="where the output files go")
@click.option("--quiet", is_flag=True, help="only the output object on stdout")
@click.option("--name", help="the run's name")
@click.argument("document")
@click.argument("job_order", required=False)
def cwl_runner(outdir: str, quiet: bool, name: str | None, document: str, job_order: str | None) -> None:
    """The CWL runner interface: run DOCUMENT [JOB_ORDER] on kran, each tool step a job;
    the output object as JSON on stdout; exit 0, 1 (failed) or 33 (unsupported feature)."""
    try:
        client = Client()
        run = submit(client, document, job_order, name, {})
        if not quiet:
            click.echo(f"kran: workflow run {run['id']}", err=True)
        run = wait(client, run["id"], quiet=quiet)
        outputs = download_outputs(client, run["id"], Path(outdir)) if run["state"] == "succeeded" else {}
    except ClientError as e:
        click.echo(f"kran-cwl-runner: {e}", err=True)
        sys.exit(EXIT_FAILED)
    if run["state"] != "succeeded":
        click.echo(f"kran-cwl-runner: workflow run {run['id']} {run['state']}: {run['reason']}", err=True)
        if run["state"] == "failed":
            _print_failed_step(client, run)
    print(json.dumps(outputs, indent=2, sort_keys=True))
    sys.exit(run["exit_code"] if run["exit_code"] is not None else EXIT_FAILED)


def _print_failed_step(client: Client, run: dict[str, Any]) -> None:
    for s in run.get("steps", []):
        if s["state"] in ("failed", "timeout", "lost", "killed"):
            click.echo(f"kran-cwl-runner: step {s['step']} (job {s['job']}) {s['state']}: {s['reason']}", err=True)


def cwl_main() -> None:
    cwl_runner(prog_name="kran-cwl-runner")
