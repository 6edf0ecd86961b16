"""`kran nodes` and `kran node ...`: the cluster's nodes."""

from __future__ import annotations

from typing import Any

import click

from kran.cli.client import Client
from kran.cli.render import kv_table, print_json


@click.command("nodes")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def nodes_cmd(output: str) -> None:
    """Nodes: class, labels, state, cpus/mem/gpus used/total, running jobs."""
    nodes = Client().get("/api/v1/nodes")["nodes"]
    if output == "json":
        print_json(nodes)
        return
    rows = []
    for n in nodes:
        t, u = n["total"], n["used"]
        rows.append(
            {
                "id": n["id"][:12],
                "hostname": n["hostname"],
                "class": n["class"] or "-",
                "state": n["state"] if n["availability"] == "active" else f"{n['state']}/{n['availability']}",
                "cpus": f"{u['cpus']:g}/{t['cpus']:g}",
                "mem_mb": f"{u['mem_mb']}/{t['mem_mb']}",
                "gpus": f"{u['gpus']}/{t['gpus']}",
                "jobs": len(n["running_jobs"]),
                "labels": " ".join(f"{k}={v}" for k, v in n["labels"].items()) or "-",
            }
        )
    kv_table(rows, ["id", "hostname", "class", "state", "cpus", "mem_mb", "gpus", "jobs", "labels"])


@click.group("node")
def node() -> None:
    """Change cluster nodes (admin)."""


@node.command("label")
@click.argument("node_ref", metavar="NODE")
@click.argument("pairs", nargs=-1, required=True, metavar="K=V|K-")
def label_cmd(node_ref: str, pairs: tuple[str, ...]) -> None:
    """Set labels (K=V) or remove them (K-), e.g. kran node label n2 kran.class=heavyweight"""
    labels: dict[str, Any] = {}
    for p in pairs:
        if p.endswith("-") and "=" not in p:
            labels[p[:-1]] = None
            continue
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"{p!r}: use K=V to set or K- to remove", param_hint="labels")
        labels[k] = v
    Client().post(f"/api/v1/nodes/{node_ref}/labels", json={"labels": labels})
    click.echo(f"node {node_ref} labelled")


@node.command("drain")
@click.argument("node_ref", metavar="NODE")
def drain_cmd(node_ref: str) -> None:
    """No new jobs on NODE; running ones finish."""
    Client().post(f"/api/v1/nodes/{node_ref}/drain")
    click.echo(f"node {node_ref} draining")


@node.command("activate")
@click.argument("node_ref", metavar="NODE")
def activate_cmd(node_ref: str) -> None:
    """Schedule jobs on NODE again."""
    Client().post(f"/api/v1/nodes/{node_ref}/activate")
    click.echo(f"node {node_ref} active")


@node.command("join-command")
def join_cmd() -> None:
    """Print the `docker swarm join` line to run on a new machine."""
    click.echo(Client().get("/api/v1/nodes/join-command")["command"])


@node.command("remove")
@click.argument("node_ref", metavar="NODE")
@click.option("--force", is_flag=True, help="even while jobs run there (they end as lost)")
def remove_cmd(node_ref: str, force: bool) -> None:
    """Remove NODE from the swarm (refused while jobs run on it)."""
    Client().delete(f"/api/v1/nodes/{node_ref}", params={"force": force})
    click.echo(f"node {node_ref} removed")
