"""The `kran` command. Thin: parse, call the server (or a service), render."""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from typing import Any

import click

from kran import __version__
from kran.cli import jobs
from kran.cli.accounts import account, limit, share
from kran.cli.admin import admin
from kran.cli.apps import app
from kran.cli.arrays import array
from kran.cli.client import Client, ClientError, client_settings, unreachable
from kran.cli.images import image, registry
from kran.cli.nodes import node, nodes_cmd
from kran.cli.render import kv_table, print_json
from kran.cli.schedules import schedule
from kran.cli.workflows import cwl_runner, workflow
from kran.errors import InvalidInput, Unavailable


class CliFailure(click.ClickException):
    """A refusal or failure the user should read; exit status 1."""

    exit_code = 1


class KranGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as e:
            raise CliFailure(str(e)) from None
        except InvalidInput as e:
            raise click.UsageError(str(e)) from None
        except Unavailable as e:
            raise CliFailure(str(e)) from None


@click.group(cls=KranGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kran")
@click.option("--ca-cert", metavar="PEM", help="trust this CA for the server's certificate (also KRAN_CA_CERT)")
def cli(ca_cert: str | None) -> None:
    """kran runs containerized tools and commands as jobs."""
    if ca_cert:  # read by the client as the highest-precedence setting
        os.environ["KRAN_CA_CERT"] = ca_cert


def _server_flags(f: Any) -> Any:
    for o in reversed(
        [
            click.option("--host", help="listen address (default 127.0.0.1)"),
            click.option("--port", type=int, help="listen port (default 9090)"),
            click.option("--data-dir", help="database and job files (default ~/.local/share/kran)"),
            click.option("--engine", help="execution engine: local (default) or swarm"),
            click.option("--shared-dir", help="swarm: the shared file system holding the data dir"),
            click.option("--placement", help="swarm: spread (default) or pack"),
            click.option("--heavyweight-threshold", help="images at least this big are heavyweight (default 1G)"),
            click.option("--config", "config_file", help="TOML config file (also KRAN_CONFIG)"),
            click.option("--tls-cert", help="serve HTTPS with this certificate (PEM)"),
            click.option("--tls-key", help="the certificate's private key (PEM)"),
        ]
    ):
        f = o(f)
    return f


# the flags of `kran serve` and `kran config` -> the settings they set
FLAG_KEYS = {
    "host": "server.host",
    "port": "server.port",
    "data_dir": "server.data_dir",
    "engine": "server.engine",
    "shared_dir": "cluster.shared_dir",
    "placement": "cluster.placement",
    "heavyweight_threshold": "image.heavyweight_threshold",
    "tls_cert": "server.tls_cert",
    "tls_key": "server.tls_key",
}


def _load(config_file: str | None, **flags: Any) -> Any:
    from kran.settings_sources import load_settings

    return load_settings(config_file, {FLAG_KEYS[name]: value for name, value in flags.items()})


@cli.command()
@_server_flags
def serve(config_file: str | None, **flags: Any) -> None:
    """Run the embedded server: API, scheduler and monitor in one process."""
    from kran.bootstrap import serve as run_server

    settings, _ = _load(config_file, **flags)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_server(settings)


@cli.command()
@_server_flags
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def config(config_file: str | None, output: str, **flags: Any) -> None:
    """Print the effective configuration and where each value came from."""
    from kran.bootstrap import check_engine
    from kran.settings_sources import describe

    settings, origin = _load(config_file, **flags)
    check_engine(settings)
    rows = describe(settings, origin)
    for key, (value, source) in client_settings().items():
        shown = "***" if key == "secret" else value
        rows.append({"key": f"client.{key}", "value": shown, "source": source, "env": f"KRAN_{key.upper()}"})
    print_json(rows) if output == "json" else kv_table(rows, ["key", "value", "source", "env"])


@cli.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def status(output: str) -> None:
    """Server status: version, store and engines, queue, capacity."""
    client = Client()
    try:
        resp = client.http.get("/status")
    except Exception as e:
        raise unreachable(client.url, e) from None
    body = resp.json()
    if output == "json":
        print_json(body)
    else:
        cap = body["capacity"]
        state = "NOT READY" if not body["ready"] else body.get("state", "ok")
        click.echo(f"kran {body['version']} at {client.url}: {'ready' if state == 'ok' else state}")
        for why in body.get("degraded", []):
            click.echo(f"degraded: {why}", err=True)
        for note in body.get("warnings", []):
            click.echo(f"warning: {note}", err=True)
        click.echo(f"store: {body['store']}")
        for name, state in body["engines"].items():
            click.echo(f"engine {name}: {state}")
        click.echo(f"queued: {body['queued']}  running: {body['running']}")
        click.echo("capacity free/total: " + "  ".join(f"{k}={cap['free'][k]}/{cap['total'][k]}" for k in cap["total"]))
    if not body["ready"]:
        sys.exit(1)


@cli.command("ui-link")
@click.option("--user", help="for another user (admins only)")
def ui_link(user: str | None) -> None:
    """Print a one-time link that signs a browser in to the web dashboard (10 minutes)."""
    body = Client().post("/api/v1/web/links", json={"user": user} if user else {})
    click.echo(body["url"])
    click.echo(f"(for {body['user']}; works once, for {int(body['expires_in_s'] // 60)} minutes)", err=True)


@cli.command()
@click.option("-f", "--follow", is_flag=True, help="stream changes as they happen")
@click.option("--job", "job_id", type=int, help="only this job")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def events(follow: bool, job_id: int | None, limit: int, output: str) -> None:
    """Job state changes (the latest ones, or live with -f)."""
    client = Client()

    def show(e: dict[str, Any]) -> None:
        if output == "json":
            click.echo(json.dumps(e))
        else:
            click.echo(f"{e['at']}  job {e['job_id']}  {e['from'] or '-'} -> {e['to']}  {e['reason'] or ''}")

    if not follow:
        params: dict[str, Any] = {"limit": 10_000}
        if job_id is not None:
            params["job"] = job_id
        for e in client.get("/api/v1/events", params=params)["events"][-limit:]:
            show(e)
        return
    params = {} if job_id is None else {"job": job_id}
    with client.stream("/api/v1/events/stream", params) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                show(json.loads(line[6:]))
    raise ClientError("the server ended the event stream (it may be stopping)")


@cli.command()
@click.option("--user", help="only this user's jobs")
@click.option("--app", help="only this app's jobs")
@click.option("--since", help="ISO 8601 date or time (attempts that ended from then)")
@click.option("--until", help="ISO 8601 date or time (attempts that ended before then)")
@click.option(
    "--by", type=click.Choice(["user", "account", "app", "day", "image", "array"]), default="user", show_default=True
)
@click.option("-o", "--output", type=click.Choice(["table", "json", "csv"]), default="table")
def usage(user: str | None, app: str | None, since: str | None, until: str | None, by: str, output: str) -> None:
    """Usage report: jobs by end state, CPU hours, memory GB-hours, GPU hours, wall hours."""
    params = {k: v for k, v in {"user": user, "app": app, "since": since, "until": until, "by": by}.items() if v}
    rows = Client().get("/api/v1/usage", params=params)["rows"]
    if output == "json":
        print_json(rows)
        return
    states = sorted({s for r in rows for s in r["jobs"]})
    flat = [
        {
            by: r["key"],
            **{s: r["jobs"].get(s, 0) for s in states},
            **{k: r[k] for k in ("cpu_hours", "mem_gb_hours", "gpu_hours", "wall_hours")},
        }
        for r in rows
    ]
    columns = [by, *states, "cpu_hours", "mem_gb_hours", "gpu_hours", "wall_hours"]
    if output == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    else:
        for row in flat:
            for k in ("cpu_hours", "mem_gb_hours", "gpu_hours", "wall_hours"):
                row[k] = f"{row[k]:.4f}"
        kv_table(flat, columns)


for command in (
    jobs.submit_cmd,
    jobs.run_cmd,
    jobs.jobs_cmd,
    jobs.job_cmd,
    jobs.kill_cmd,
    jobs.logs_cmd,
    jobs.files_cmd,
    jobs.get_cmd,
):
    cli.add_command(command)
cli.add_command(schedule)
cli.add_command(admin)
cli.add_command(account)
cli.add_command(share)
cli.add_command(array)
cli.add_command(limit)
cli.add_command(app)
cli.add_command(image)
cli.add_command(registry)
cli.add_command(node)
cli.add_command(nodes_cmd)
cli.add_command(workflow)
cli.add_command(cwl_runner)


def main() -> None:
    cli(prog_name="kran")


if __name__ == "__main__":
    main()
