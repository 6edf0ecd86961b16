"""`kran image ...` and `kran registry ...`."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from kran.cli.client import Client, ClientError
from kran.cli.render import console, kv_table, print_json


@click.group("image")
def image() -> None:
    """Images: sizes and classes, warm (pre-pull), pins, disk GC."""


@image.command("inspect")
@click.argument("ref")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def inspect_cmd(ref: str, output: str) -> None:
    """Digest, size, layers, class, and which nodes hold it."""
    info = Client().get("/api/v1/images/inspect", params={"ref": ref})
    if output == "json":
        print_json(info)
        return
    rows = [
        ("ref", info["ref"]),
        ("digest", info["digest"]),
        ("size", f"{info['size']} bytes ({info['size'] / 2**20:.1f} MiB, compressed)"),
        ("class", info["class"] or "(normal)"),
        ("layers", len(info["layers"])),
        ("nodes", ", ".join(info["nodes"]) or "none"),
        ("pinned", info["pinned"]),
    ]
    kv_table([{"key": k, "value": v} for k, v in rows], ["key", "value"])


@image.command("warm")
@click.argument("ref")
@click.option("--class", "node_class", help="every node of this class")
@click.option("--nodes", help="N1,N2: these nodes (ids or hostnames)")
@click.option("--no-wait", is_flag=True, help="start the pulls and return")
def warm_cmd(ref: str, node_class: str | None, nodes: str | None, no_wait: bool) -> None:
    """Pull REF on nodes in parallel, with a progress bar per node."""
    client = Client()
    body: dict[str, Any] = {"ref": ref}
    if nodes:
        body["nodes"] = [n.strip() for n in nodes.split(",") if n.strip()]
    if node_class:
        body["node_class"] = node_class
    started = client.post("/api/v1/images/warm", json=body)["nodes"]
    if no_wait:
        click.echo(f"warming {ref} on {len(started)} node(s)")
        return
    failed = []
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=console) as bars:
        tasks: dict[str, Any] = {}
        while True:
            rows = {r["node"]: r for r in client.get("/api/v1/images/status", params={"ref": ref})["nodes"]}
            pending = 0
            for node in started:
                r = rows.get(node, {})
                if node not in tasks:
                    tasks[node] = bars.add_task(r.get("hostname", node), total=None)
                total = r.get("total") or None
                bars.update(tasks[node], completed=r.get("done", 0), total=total)
                if r.get("state") == "pulling":
                    pending += 1
                elif r.get("state") == "failed" and node not in failed:
                    failed.append(node)
                    bars.update(tasks[node], description=f"{r.get('hostname', node)} FAILED: {r.get('error')}")
                elif r.get("state") in ("done", "present"):
                    bars.update(tasks[node], completed=total or 1, total=total or 1)
            if not pending:
                break
            time.sleep(0.3)
    if failed:
        raise ClientError(f"the pull failed on {len(failed)} node(s)")


@image.command("status")
@click.argument("ref")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def status_cmd(ref: str, output: str) -> None:
    """Per node: present, pulling (bytes done/total) or failed."""
    rows = Client().get("/api/v1/images/status", params={"ref": ref})["nodes"]
    print_json(rows) if output == "json" else kv_table(rows, ["hostname", "state", "done", "total", "error"])


@image.command("pin")
@click.argument("ref")
def pin_cmd(ref: str) -> None:
    """Never garbage-collect REF."""
    Client().post("/api/v1/images/pins", json={"ref": ref})
    click.echo(f"{ref} pinned")


@image.command("unpin")
@click.argument("ref")
def unpin_cmd(ref: str) -> None:
    Client().delete("/api/v1/images/pins", params={"ref": ref})
    click.echo(f"{ref} unpinned")


@image.command("gc")
@click.option("--dry-run", is_flag=True, help="only list what would be removed")
@click.option("--target", help="remove down to this size (e.g. 0, 10G), overriding the low-water mark")
@click.option("--node", help="only this node")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def gc_cmd(dry_run: bool, target: str | None, node: str | None, output: str) -> None:
    """Remove least recently used images (never pinned or in-use ones) above the high-water mark."""
    body: dict[str, Any] = {"dry_run": dry_run, "target": target, "node": node}
    result = Client().post("/api/v1/images/gc", json=body)
    removed = result["removed"]
    if output == "json":
        print_json(removed)
        return
    rows = [{**r, "refs": " ".join(r["refs"]) or r["image"][:19]} for r in removed]
    kv_table(rows, ["node", "refs", "size", "freed", "reason"])
    click.echo(f"{'would remove' if dry_run else 'removed'} {len(removed)} image(s)", err=True)
    for n in result["nodes"]:
        verb = "would go" if dry_run else "went"
        click.echo(f"node {n['node']}: image layers {verb} from {n['before']} to {n['after']} bytes", err=True)
        if n["short"]:
            click.echo(f"node {n['node']}: {n['short']}", err=True)


@click.group("registry")
def registry() -> None:
    """Registry credentials (admin): used for size lookups and pulls, never shown."""


@registry.command("login")
@click.argument("host")
@click.option("--username", required=True)
@click.option("--password-stdin", is_flag=True, required=True, help="read the password from stdin")
def login_cmd(host: str, username: str, password_stdin: bool) -> None:
    """Store credentials for HOST after the registry accepted them."""
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise click.UsageError("no password on stdin")
    Client().post(f"/api/v1/registries/{host}/login", json={"username": username, "password": password})
    click.echo(f"logged in to {host} as {username}")


@registry.command("list")
def list_cmd() -> None:
    kv_table(Client().get("/api/v1/registries")["registries"], ["host", "username"])


@registry.command("logout")
@click.argument("host")
def logout_cmd(host: str) -> None:
    Client().delete(f"/api/v1/registries/{host}")
    click.echo(f"credentials for {host} removed")
