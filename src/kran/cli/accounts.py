"""`kran account ...`, `kran share`, `kran limit ...` (issue 20): accounts and their users,
the fair-share report (as Slurm's sshare), limits."""

from __future__ import annotations

from typing import Any

import click

from kran.cli.client import Client
from kran.cli.render import kv_table, print_json
from kran.domain.durations import parse_duration

OUTPUT = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")


@click.group("account")
def account() -> None:
    """Accounts: users belong to them, jobs are charged to them (fair share, limits)."""


@account.command("add")
@click.argument("name")
@click.option("--shares", type=int, default=1, show_default=True, help="the account's share of the cluster")
@click.option("--description", default="")
def account_add(name: str, shares: int, description: str) -> None:
    """Add an account (admin)."""
    Client().post("/api/v1/accounts", json={"name": name, "shares": shares, "description": description})
    click.echo(f"account {name} added ({shares} shares)")


@account.command("set")
@click.argument("name")
@click.option("--shares", type=int)
@click.option("--description")
def account_set(name: str, shares: int | None, description: str | None) -> None:
    """Change an account's shares or description (admin)."""
    body: dict[str, Any] = {}
    if shares is not None:
        body["shares"] = shares
    if description is not None:
        body["description"] = description
    Client().request("PATCH", f"/api/v1/accounts/{name}", json=body)
    click.echo(f"account {name} changed")


@account.command("list")
@OUTPUT
def account_list(output: str) -> None:
    """Accounts with their shares and users (a user sees their own)."""
    rows = Client().get("/api/v1/accounts")["accounts"]
    if output == "json":
        print_json(rows)
    else:
        kv_table([{**r, "users": ",".join(r["users"])} for r in rows], ["name", "shares", "users", "description"])


@account.command("add-user")
@click.argument("name")
@click.argument("user")
@click.option("--shares", type=int, help="the user's shares within the account (default 1)")
def account_add_user(name: str, user: str, shares: int | None) -> None:
    """Make USER a member of account NAME, or set their shares there (admin). A user's
    first account is where their jobs go without --account."""
    Client().request("PUT", f"/api/v1/accounts/{name}/users/{user}", json={"shares": shares})
    click.echo(f"{user} is a member of account {name}")


@account.command("remove-user")
@click.argument("name")
@click.argument("user")
def account_remove_user(name: str, user: str) -> None:
    """Remove USER from account NAME (admin); their usage stays on record."""
    Client().request("DELETE", f"/api/v1/accounts/{name}/users/{user}")
    click.echo(f"{user} is no longer a member of account {name}")


@click.command("share")
@click.option("--user", help="one user's associations (admins; a user sees their own)")
@OUTPUT
def share(user: str | None, output: str) -> None:
    """Fair share: each account and user with shares, decayed usage and the factor (as sshare)."""
    rows = Client().get("/api/v1/share", params={"user": user} if user else None)["associations"]
    if output == "json":
        print_json(rows)
        return
    columns = ["account", "user", "account_shares", "shares", "norm_shares", "usage", "effective_usage", "fair_share"]
    if rows and all(r.get("effective_usage") is None for r in rows):
        columns.remove("effective_usage")  # (admins only)
    kv_table(rows, columns)


@click.group("limit")
def limit() -> None:
    """Limits per account, user, app, and the default for users."""


@limit.command("set")
@click.argument("scope", type=click.Choice(["default", "account", "user", "app"]))
@click.argument("name", required=False, default="")
@click.option("--max-running-jobs", type=int)
@click.option("--max-running-cpus", type=float)
@click.option("--max-running-mem", "max_running_mem_mb", type=int, help="MiB")
@click.option("--max-running-gpus", type=int)
@click.option("--max-queued-jobs", type=int)
@click.option("--max-wall", help="e.g. 2h, 1d")
@click.option("--max-priority", type=click.IntRange(-1000, 1000), help="the highest --priority a job may ask for")
@click.option("--clear", multiple=True, help="a limit to remove, e.g. --clear max_running_jobs")
def limit_set(scope: str, name: str, clear: tuple[str, ...], max_wall: str | None, **given: int | float | None) -> None:
    """Set limits of SCOPE NAME (admin): `kran limit set user alice --max-running-jobs 8`,
    `kran limit set default --max-queued-jobs 10000`."""
    body: dict[str, Any] = {"scope": scope, "name": name}
    body |= {k: v for k, v in given.items() if v is not None}
    if max_wall is not None:
        try:
            body["max_wall_s"] = parse_duration(max_wall)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--max-wall") from None
    body |= {k.replace("-", "_"): None for k in clear}
    r = Client().request("PUT", "/api/v1/limits", json=body)
    shown = {k: v for k, v in r.items() if k.startswith("max_") and v is not None}
    click.echo(f"{scope} {name}".strip() + ": " + (", ".join(f"{k}={v}" for k, v in shown.items()) or "no limits"))


@limit.command("list")
@OUTPUT
def limit_list(output: str) -> None:
    """Limits in force (a user sees those that apply to them)."""
    rows = Client().get("/api/v1/limits")["limits"]
    if output == "json":
        print_json(rows)
    else:
        kv_table(
            rows,
            ["scope", "name", "max_running_jobs", "max_running_cpus", "max_running_mem_mb", "max_running_gpus",
             "max_queued_jobs", "max_wall_s", "max_priority"],
        )  # fmt: skip
