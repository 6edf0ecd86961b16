"""`kran schedule ...`: periodic jobs and schedules that follow other schedules."""

from __future__ import annotations

from typing import Any

import click

from kran.cli.client import Client, owned
from kran.cli.jobs import job_body, job_options
from kran.cli.render import console, kv_table, print_json


@click.group("schedule")
def schedule() -> None:
    """Periodic schedules: every ISO 8601 interval, cron, or after other schedules."""


def _schedule_job_options(f: Any) -> Any:
    return job_options(f, with_deps=False)


@schedule.command("add")
@click.argument("schedule_name", metavar="NAME")
@click.option("--every", help="ISO 8601 repeating interval: R5/2026-12-01T02:00:00Z/PT6H, R/P1D, PT1H")
@click.option("--cron", help="five-field cron expression, e.g. '30 2 * * *'")
@click.option(
    "--after", "parents", multiple=True, metavar="SCHEDULE", help="fire when runs of these (NAME or OWNER/NAME) succeed"
)
@click.option("--after-mode", type=click.Choice(["all", "any"]), default="all", show_default=True)
@click.option("--tz", default="UTC", show_default=True, help="time zone (Area/City) for --cron and --start")
@click.option("--start", help="first fire time (--every) or not before (--cron), ISO 8601")
@click.option("--repeat", type=click.IntRange(1), help="at most N fire times")
@click.option("--max-lateness", help="skip a run that cannot start within this (e.g. 10m)")
@click.option("--overlap", type=click.Choice(["allow", "forbid", "replace"]), default="allow", show_default=True)
@click.option("--catch-up", type=click.Choice(["all", "last", "none"]), default="last", show_default=True)
@_schedule_job_options
def add(
    schedule_name: str,
    every: str | None,
    cron: str | None,
    parents: tuple[str, ...],
    after_mode: str,
    tz: str,
    start: str | None,
    repeat: int | None,
    max_lateness: str | None,
    overlap: str,
    catch_up: str,
    **o: Any,
) -> None:
    """Add a schedule: kran schedule add NAME (--every I | --cron C | --after S) [job options] -- CMD"""
    body: dict[str, Any] = {
        "name": schedule_name,
        "after_mode": after_mode,
        "tz": tz,
        "overlap": overlap,
        "catch_up": catch_up,
        "job": job_body(**o),
        "after": list(parents),
    }
    for key, value in (
        ("every", every),
        ("cron", cron),
        ("start", start),
        ("repeat", repeat),
        ("max_lateness", max_lateness),
    ):
        if value is not None:
            body[key] = value
    s = Client().post("/api/v1/schedules", json=body)
    click.echo(f"schedule {s['name']} added; next fire time: {s['next_fire_time'] or '(after its parents)'}")


@schedule.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def list_(output: str) -> None:
    """List schedules."""
    rows = Client().get("/api/v1/schedules")["schedules"]
    if output == "json":
        print_json(rows)
        return
    for r in rows:
        r["trigger"] = f"{r['kind']} {r['expr'] or ','.join(r['after'])}".strip()
    kv_table(rows, ["name", "owner", "trigger", "tz", "enabled", "fired", "next_fire_time", "overlap"])


@schedule.command("show")
@click.argument("name", metavar="NAME|OWNER/NAME")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def show(name: str, limit: int, output: str) -> None:
    """A schedule and the history of its runs (newest first)."""
    path, owner = owned("/api/v1/schedules", name)
    s = Client().get(path, params={"limit": limit, **owner})
    if output == "json":
        print_json(s)
        return
    for key in (
        "name",
        "kind",
        "expr",
        "after",
        "tz",
        "start",
        "repeat",
        "max_lateness_s",
        "overlap",
        "catch_up",
        "enabled",
        "fired",
        "next_fire_time",
    ):
        console.print(f"[bold]{key}[/bold]  {s[key]}")
    console.print(f"[bold]command[/bold]  {' '.join(s['command'])}")
    kv_table(s["runs"], ["fire_time", "job_id", "state", "reason"])


@schedule.command("next")
@click.argument("name", metavar="NAME|OWNER/NAME")
@click.option("-n", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def next_(name: str, n: int, output: str) -> None:
    """The next N fire times."""
    path, owner = owned("/api/v1/schedules", name)
    times = Client().get(f"{path}/next", params={"n": n, **owner})["next"]
    if output == "json":
        print_json(times)
        return
    for t in times:
        click.echo(t)


@schedule.command("enable")
@click.argument("name", metavar="NAME|OWNER/NAME")
def enable(name: str) -> None:
    """Enable a schedule (it fires from now on)."""
    path, owner = owned("/api/v1/schedules", name)
    Client().post(f"{path}/enable", params=owner)
    click.echo(f"schedule {name} enabled")


@schedule.command("disable")
@click.argument("name", metavar="NAME|OWNER/NAME")
def disable(name: str) -> None:
    """Disable a schedule."""
    path, owner = owned("/api/v1/schedules", name)
    Client().post(f"{path}/disable", params=owner)
    click.echo(f"schedule {name} disabled")


@schedule.command("run-now")
@click.argument("name", metavar="NAME|OWNER/NAME")
def run_now(name: str) -> None:
    """Submit one run now and print its job id."""
    path, owner = owned("/api/v1/schedules", name)
    click.echo(Client().post(f"{path}/run-now", params=owner)["job_id"])


@schedule.command("delete")
@click.argument("name", metavar="NAME|OWNER/NAME")
def delete(name: str) -> None:
    """Delete a schedule (its jobs and their files stay)."""
    path, owner = owned("/api/v1/schedules", name)
    Client().request("DELETE", path, params=owner)
    click.echo(f"schedule {name} deleted")
