"""`kran app`: load, list, show, enable, disable, unload."""

from __future__ import annotations

from typing import Any

import click

from kran.cli.client import Client, owned
from kran.cli.jobs import field_option, fields_body
from kran.cli.render import kv_table, print_json
from kran.domain.jobs import JOB_FIELDS

APP_FIELDS = [f for f in JOB_FIELDS if f.app]
APP_FLAGS = {"files": "--file", "cached_files": "--cached-file"}  # not --fetch: an app's files are its own


def app_job_options(f: Any) -> Any:
    """The job defaults an app may give (domain.jobs.JOB_FIELDS); a job's own value wins."""
    for jf in reversed(APP_FIELDS):
        f = field_option(jf, APP_FLAGS.get(jf.name))(f)
    return f


@click.group("app")
def app() -> None:
    """Apps: named execution environments that jobs run in (kran run --app NAME)."""


@app.command("load")
@click.argument("name", metavar="NAME|OWNER/NAME")
@click.option("--volume", metavar="NAME:SIZE_MB", help="a persistent volume at $KRAN_VOLUME, one job at a time")
@click.option("--user", help="UID[:GID] the app's jobs run as")
@app_job_options
@click.option("--private", is_flag=True, help="only you (and admins) may run it")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def load_cmd(name: str, private: bool, output: str, **o: Any) -> None:
    """Load an app, or re-load it as a new version (jobs keep the version they got).

    The job options are the defaults of the app's jobs: a job's own value wins."""
    body: dict[str, Any] = {"shared": not private, **fields_body(o, APP_FIELDS, APP_FLAGS)}
    for key in ("volume", "user"):
        if o[key] is not None:
            body[key] = o[key]
    path, owner = owned("/api/v1/apps", name)
    _show(Client().post(path, json=body, params=owner), output)


@app.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def list_cmd(output: str) -> None:
    """Apps you may run."""
    apps = Client().get("/api/v1/apps")["apps"]
    if output == "json":
        print_json(apps)
        return
    rows = [
        {
            "name": a["name"],
            "version": a["version"],
            "image": a["defaults"].get("image") or "(host)",
            "owner": a["owner"],
            "enabled": "yes" if a["enabled"] else "no",
            "shared": "yes" if a["shared"] else "no",
            "volume": f"{a['volume']['name']}:{a['volume']['size_mb']}" if a["volume"] else "",
        }
        for a in apps
    ]
    kv_table(rows, ["name", "version", "image", "owner", "enabled", "shared", "volume"])


@app.command("show")
@click.argument("name", metavar="NAME|OWNER/NAME")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def show_cmd(name: str, output: str) -> None:
    """One app: current version, defaults, user, volume."""
    path, owner = owned("/api/v1/apps", name)
    _show(Client().get(path, params=owner), output)


@app.command("enable")
@click.argument("name", metavar="NAME|OWNER/NAME")
def enable_cmd(name: str) -> None:
    """Let new jobs use the app again."""
    path, owner = owned("/api/v1/apps", name)
    Client().post(f"{path}/enable", params=owner)
    click.echo(f"app {name} enabled")


@app.command("disable")
@click.argument("name", metavar="NAME|OWNER/NAME")
def disable_cmd(name: str) -> None:
    """Refuse new jobs for the app (jobs already submitted go on)."""
    path, owner = owned("/api/v1/apps", name)
    Client().post(f"{path}/disable", params=owner)
    click.echo(f"app {name} disabled")


@app.command("unload")
@click.argument("name", metavar="NAME|OWNER/NAME")
@click.option("--keep-volume", is_flag=True, help="keep the volume's data (a re-load with it finds it again)")
def unload_cmd(name: str, keep_volume: bool) -> None:
    """Remove the app, and its volume unless --keep-volume."""
    path, owner = owned("/api/v1/apps", name)
    Client().delete(path, params={"keep_volume": keep_volume, **owner})
    click.echo(f"app {name} unloaded")


def _show(a: dict[str, Any], output: str) -> None:
    if output == "json":
        print_json(a)
        return
    vol = a["volume"]
    rows = [
        ("name", a["name"]),
        ("version", a["version"]),
        ("owner", a["owner"]),
        ("enabled", a["enabled"]),
        ("shared", a["shared"]),
        ("user", a["user"] or "(server default)"),
        ("volume", f"{vol['name']} ({_used(vol)} of {vol['size_mb']} MiB used)" if vol else "none"),
    ]
    rows += [(k, v) for k, v in a["defaults"].items()]
    kv_table([{"key": k, "value": v} for k, v in rows], ["key", "value"])


def _used(vol: dict[str, Any]) -> str:
    return "?" if vol.get("used_mb") is None else str(vol["used_mb"])
