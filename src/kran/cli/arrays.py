"""`kran array ...` (issue 20.4): show, list and kill job arrays (`kran submit --array` makes one)."""

from __future__ import annotations

import click

from kran.cli.client import Client
from kran.cli.render import arrays_table, kv_table, print_json

OUTPUT = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")


@click.group("array")
def array() -> None:
    """Job arrays: kran submit --array 0-99%10 -- CMD makes one."""


@array.command("show")
@click.argument("array_id", type=int)
@click.option("--tasks", is_flag=True, help="list each task made so far with its job id")
@OUTPUT
def array_show(array_id: int, tasks: bool, output: str) -> None:
    """One array: its tasks per state."""
    a = Client().get(f"/api/v1/arrays/{array_id}", params={"tasks": tasks, "limit": 100_000})
    if output == "json":
        print_json(a)
        return
    arrays_table([a])
    if tasks:
        kv_table(a["task_jobs"], ["index", "job_id"])


@array.command("list")
@click.option("--mine/--all", default=False)
@OUTPUT
def array_list(mine: bool, output: str) -> None:
    """Arrays, newest first."""
    rows = Client().get("/api/v1/arrays", params={"mine": mine})["arrays"]
    print_json(rows) if output == "json" else arrays_table(rows)


@array.command("kill")
@click.argument("array_id", type=int)
@click.option("--task", "index", type=int, help="kill only this task (its index)")
def array_kill(array_id: int, index: int | None) -> None:
    """Kill an array (no task starts any more, running ones are killed), or one task of it."""
    path = f"/api/v1/arrays/{array_id}/kill" if index is None else f"/api/v1/arrays/{array_id}/tasks/{index}/kill"
    Client().post(path)
    click.echo(f"array {array_id}" + (f" task {index}" if index is not None else "") + " killed")
