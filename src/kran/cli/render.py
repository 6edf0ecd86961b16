"""Human output: tables and job details (rich); JSON output is printed as is."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

# Piped output gets room for the whole table instead of Rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def short_time(iso: str | None) -> str:
    return "-" if not iso else iso.replace("T", " ")[:19]


def jobs_table(jobs: list[dict[str, Any]]) -> None:
    t = Table(box=None, pad_edge=False)
    for col in ("ID", "NAME", "STATE", "PRI", "IMAGE", "CPUS", "MEM", "SUBMITTED", "EXIT", "COMMAND"):
        t.add_column(col, overflow="fold" if col == "COMMAND" else "ellipsis", no_wrap=col != "COMMAND")
    for j in jobs:
        alloc = j.get("allocation") or {}
        t.add_row(
            str(j["id"]),
            j.get("name") or "-",
            j["state"],
            str(j["priority"]),
            j.get("image") or "(host)",
            str(alloc.get("cpus", j["request"]["cpus"])),
            str(alloc.get("mem_mb", j["request"]["mem_mb"])),
            short_time(j["submitted_at"]),
            "-" if j["exit_code"] is None else str(j["exit_code"]),
            " ".join(j["command"])[:80],
        )
    console.print(t)


def arrays_table(arrays: list[dict[str, Any]]) -> None:
    """Job arrays, one line each: tasks per state (`pending`: not yet made jobs)."""
    t = Table(title="arrays", box=None, pad_edge=False, title_justify="left")
    for col in ("ARRAY", "NAME", "OWNER", "STATE", "INDICES", "TASKS"):
        t.add_column(col)
    for a in arrays:
        counts = {**({"pending": a["pending"]} if a["pending"] else {}), **a["tasks"]}
        state = "killed" if a["kill_requested"] else a["state"]
        t.add_row(
            str(a["id"]),
            a.get("name") or "-",
            a["owner"],
            state,
            a["indices"],
            " ".join(f"{k} {v}" for k, v in counts.items()),
        )
    console.print(t)


def job_detail(j: dict[str, Any]) -> None:
    rows = [
        ("id", j["id"]),
        ("name", j.get("name") or "-"),
        ("owner", j["owner"]),
        ("account", j.get("account") or "-"),
        ("state", j["state"]),
        ("reason", j.get("reason") or "-"),
        ("priority", j["priority"]),
        ("image", j.get("image") or "(host process)"),
        ("command", " ".join(j["command"])),
        ("request", "  ".join(f"{k}={v}" for k, v in j["request"].items())),
        ("allocation", "  ".join(f"{k}={v}" for k, v in (j.get("allocation") or {}).items()) or "-"),
        ("node", _node_text(j.get("node"))),
        ("retries", j["retries"]),
        ("timeout", j.get("timeout_s") or "-"),
        ("labels", "  ".join(f"{k}={v}" for k, v in j["labels"].items()) or "-"),
        ("submitted", short_time(j["submitted_at"])),
        ("started", short_time(j["started_at"])),
        ("finished", short_time(j["finished_at"])),
        ("exit code", "-" if j["exit_code"] is None else j["exit_code"]),
    ]
    if j.get("app"):
        rows.insert(7, ("app", f"{j['app']} (version {j['app_version']})"))
    if j.get("array"):
        a = j["array"]
        rows.insert(2, ("array", f"{a['id']}, task {a['index']} of {a['count']}"))
    if j.get("pull"):
        p = j["pull"]
        rows.append(("pulling", f"{p['image']} on {p['node']}: {p['done']} of {p['total'] or '?'} bytes"))
    if j.get("image_size"):
        rows.append(("image size", f"{j['image_size']} bytes, class {j.get('image_class') or 'normal'}"))
    if j.get("volume"):
        rows.append(("volume", j["volume"]))
    for url in [*(j.get("files") or []), *(j.get("cached_files") or [])]:
        rows.append(("fetches", url))
    if j.get("files_expired"):
        rows.append(("files", "removed by retention"))
    if j.get("queue_position"):
        rows.append(("queue position", j["queue_position"]))
        rows.append(("waiting because", j.get("waiting_because") or "-"))
    if j.get("priority_factors"):  # as sprio: what the job's place in the queue comes from
        f = j["priority_factors"]
        text = f"priority {f['priority']}"
        if f.get("fair_share") is not None:
            used = f.get("effective_usage")
            text += f"  fair-share {f['fair_share']:.4f} (shares {f['norm_shares']:.4f}"
            text += f", usage {used:.4f})" if used is not None else ")"
        rows.append(("factors", text + f"  age {f['age_s']:.0f}s"))
    u = j.get("usage") or {}
    if u.get("wall_seconds") is not None:
        rows.append(("usage", "  ".join(f"{k}={_fmt_usage(k, v)}" for k, v in u.items() if v is not None)))
    for hint in j.get("hints") or []:
        rows.append(("hint", hint))
    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, str(v))
    console.print(t)
    if j["attempts"]:
        a = Table(title="attempts", box=None, pad_edge=False, title_justify="left")
        for col in ("#", "STATE", "NODE", "CPUS", "MEM", "STARTED", "FINISHED", "EXIT", "REASON"):
            a.add_column(col)
        for at in j["attempts"]:
            al = at["allocation"] or {}
            a.add_row(
                str(at["number"]),
                at["state"],
                at["node"],
                str(al.get("cpus")),
                str(al.get("mem_mb")),
                short_time(at["started_at"]),
                short_time(at["finished_at"]),
                "-" if at["exit_code"] is None else str(at["exit_code"]),
                at.get("reason") or "-",
            )
        console.print(a)


def _fmt_usage(key: str, value: float | int) -> str:
    if key.endswith("_bytes"):
        return f"{value / 1048576:.1f}MiB"
    return f"{value:.2f}s" if key.endswith("_seconds") else str(value)


def kv_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    t = Table(box=None, pad_edge=False)
    for c in columns:
        t.add_column(c.upper())
    for r in rows:
        t.add_row(*("-" if r.get(c) is None else str(r.get(c)) for c in columns))
    console.print(t)


def _node_text(node: dict[str, Any] | None) -> str:
    if not node:
        return "-"
    return (
        node["id"]
        if not node.get("hostname") or node["hostname"] == node["id"]
        else f"{node['hostname']} ({node['id']})"
    )
