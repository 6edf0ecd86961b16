"""How submitted jobs become rows: the job, its labels, its `queued` event, its
dependencies (which may fail it at once). Used by submissions and schedule fires, each in
its own transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from kran.adapters.store.associations import association_ids, with_accounts
from kran.adapters.store.job_deps import resolve_blocked
from kran.adapters.store.tables import array_deps, events, idempotency_keys, job_deps, job_labels, jobs
from kran.domain.dependencies import AFTER_ANY, AFTER_NOTOK, AFTER_OK
from kran.domain.records import Submission
from kran.domain.states import JobState

IDEMPOTENCY_S = 86400.0  # how long an Idempotency-Key gives back what it stored


def insert_rows(conn: Connection, groups: Sequence[Submission], now: float) -> tuple[list[int], int]:
    """Insert the jobs in the caller's transaction; returns their ids and how many ended
    dependency_failed at once. The caller holds the write lock and adjusts the queued count."""
    groups = with_accounts(conn, groups)
    assoc = association_ids(conn, [(s.account or "", g.owner) for g in groups for s in g.specs], now)
    specs = [s for group in groups for s in group.specs]
    rows = [
        {
            "owner": group.owner,
            "submitted_by": group.submitted_by,
            "name": s.name,
            "state": JobState.QUEUED.value,
            "priority": s.priority,
            "spec": s.json_text(),
            "image": s.image,
            "volume": s.volume,
            "assoc": assoc[(s.account or "", group.owner)],
            "app": s.app,
            "array_id": s.array[0] if s.array else None,
            "array_index": s.array[1] if s.array else None,
            "notify": s.notify,
            "preemptible": s.preemptible,
            "notify_events": ",".join(s.notify_on) if s.notify else None,
            "req_millicpus": s.request.cpus.min,
            "req_mem_mb": s.request.mem_mb.min,
            "req_gpus": s.request.gpus.min,
            "req_disk_mb": s.request.disk_mb.min,
            "submitted_at": now,
            "queued_since": now,
            "not_before": now,
            "attempts": 0,
            "timeout_s": s.timeout_s,
            "retries": s.retries,
            "blocked": s.blocked,
        }
        for group in groups
        for s in group.specs
    ]
    ids = _insert_jobs(conn, rows)
    labels = [{"job_id": i, "key": k, "value": v} for i, s in zip(ids, specs, strict=True) for k, v in s.labels.items()]
    if labels:
        conn.execute(insert(job_labels), labels)
    conn.execute(
        insert(events),
        [
            {
                "job_id": i,
                "attempt": None,
                "from_state": None,
                "to_state": "queued",
                "reason": "submitted",
                "at": now,
            }
            for i in ids
        ],
    )
    deps: list[dict[str, Any]] = [
        {"job_id": i, "dep_id": d, "kind": kind}
        for i, s in zip(ids, specs, strict=True)
        for kind, dep_ids in ((AFTER_OK, s.after), (AFTER_ANY, s.after_any), (AFTER_NOTOK, s.after_notok))
        for d in dep_ids
    ]
    on_arrays: list[dict[str, Any]] = [
        {"job_id": i, "array_id": a, "kind": kind} for i, s in zip(ids, specs, strict=True) for kind, a in s.array_deps
    ]
    failed = 0
    if deps:
        conn.execute(insert(job_deps), deps)
    if on_arrays:
        conn.execute(insert(array_deps), on_arrays)
    if deps or on_arrays:
        failed = resolve_blocked(conn, {d["job_id"] for d in deps} | {d["job_id"] for d in on_arrays}, now)
    _store_keys(conn, groups, [int(i) for i in ids], now)
    return [int(i) for i in ids], failed


def _insert_jobs(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert the job rows; their ids in the rows' order."""
    if len(rows) == 1:  # parameters apart from the statement: its compiled form is cached
        key = conn.execute(insert(jobs), rows[0]).inserted_primary_key
        assert key is not None
        return [key[0]]
    if conn.dialect.name != "sqlite":  # PostgreSQL: a few INSERT .. RETURNING, sorted by a sentinel
        result = conn.execute(insert(jobs).returning(jobs.c.id, sort_by_parameter_order=True), rows)
        return [r[0] for r in result]
    # SQLite cannot say in which order a multi-row INSERT's RETURNING comes, and SQLAlchemy
    # then sends one INSERT per row. One prepared statement stepped per row (executemany) is
    # ordered: each new row's id is one more than the largest in the table, and this
    # transaction holds SQLite's one write lock from its first insert to its commit, so its
    # rows are the newest, with consecutive ids.
    conn.execute(insert(jobs), rows)
    newest = conn.execute(select(jobs.c.id).order_by(jobs.c.id.desc()).limit(len(rows))).scalars().all()
    ids = [int(i) for i in reversed(newest)]
    if ids[-1] - ids[0] != len(rows) - 1:  # only past the largest id SQLite has (random ids): refuse
        raise RuntimeError("job ids are not consecutive: the jobs table is out of ids")
    return ids


def _store_keys(conn: Connection, groups: Sequence[Submission], ids: list[int], now: float) -> None:
    """Each keyed group's job ids under its key, in the jobs' own transaction: a kill at
    any moment leaves both or neither."""
    rows, pos = [], 0
    for g in groups:
        if g.idempotency_key:
            rows.append(
                {
                    "owner": g.owner,
                    "key": g.idempotency_key,
                    "digest": g.request_digest,
                    "job_ids": json.dumps(ids[pos : pos + len(g.specs)]),
                    "created_at": now,
                }
            )
        pos += len(g.specs)
    if rows:
        conn.execute(delete(idempotency_keys).where(idempotency_keys.c.created_at <= now - IDEMPOTENCY_S))
        conn.execute(insert(idempotency_keys), rows)
