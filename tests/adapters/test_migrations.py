"""Migrations over a store with data in it: nothing lost, the new constraints hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from kran.adapters.store.app_store import SqlApps
from kran.adapters.store.schedule_store import SqlSchedules
from kran.adapters.store.sql_store import SqlStore
from kran.domain.jobs import JobSpec
from kran.domain.resources import Range, ResourceRequest
from kran.errors import Conflict

ONE = Range(1, 1)
JOB = JobSpec(("true",), ResourceRequest(ONE, ONE, Range(0, 0), Range(0, 0)))
SPEC = json.dumps(JOB.to_json())


def _schedule(conn: object, sid: int, name: str, owner: str, parents: list[str]) -> None:
    conn.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO schedules (id, name, owner, kind, expr, tz, start_at, overlap, catch_up, parents,"
            " after_mode, spec, enabled, fired, seen, created_at) VALUES (:id, :name, :owner, 'every', 'PT1H',"
            " 'UTC', 0, 'allow', 'last', :parents, 'all', :spec, 1, 0, '{}', 0)"
        ),
        {"id": sid, "name": name, "owner": owner, "parents": json.dumps(parents), "spec": SPEC},
    )


def test_names_per_owner_keep_every_row(tmp_path: Path) -> None:
    store = SqlStore.for_data_dir(tmp_path)
    store.migrate("0009")
    with store.db.engine.begin() as conn:
        _schedule(conn, 1, "p", "alice", [])
        _schedule(conn, 2, "c", "bob", ["p"])  # linked to alice's when a name was everyone's
        _schedule(conn, 3, "a", "root", ["p", "gone"])
        conn.execute(text("INSERT INTO users (name, role, disabled, created_at) VALUES ('root', 'admin', 0, 0)"))
        for rid, sid in ((1, 1), (2, 1), (3, 2)):
            conn.execute(
                text(
                    "INSERT INTO schedule_runs (id, schedule_id, fire_time, state, created_at)"
                    " VALUES (:r, :s, :r, 'skipped', 0)"
                ),
                {"r": rid, "s": sid},
            )
        conn.execute(
            text(
                "INSERT INTO apps (name, owner, shared, enabled, version, created_at, updated_at) VALUES"
                " ('tool', 'alice', 1, 1, 2, 0, 0), ('x', 'bob', 0, 1, 1, 0, 0)"
            )
        )
        vol = json.dumps({"defaults": {}, "run_as": None, "volume": ["store", 16]})
        plain = json.dumps({"defaults": {}, "run_as": None, "volume": None})
        conn.execute(
            text(
                "INSERT INTO app_versions (app, version, spec, created_at) VALUES"
                " ('tool', 1, :vol, 0), ('tool', 2, :vol, 0), ('x', 1, :plain, 0)"
            ),
            {"vol": vol, "plain": plain},
        )
    store.migrate()

    with store.db.engine.connect() as conn:  # a DROP TABLE of a parent cascades: the runs must be there
        assert conn.execute(text("SELECT count(*) FROM schedule_runs")).scalar() == 3
        assert conn.execute(text("SELECT count(*) FROM app_versions")).scalar() == 3
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
    schedules, apps = SqlSchedules(store), SqlApps(store)
    child, admins = schedules.get("bob", "c"), schedules.get("root", "a")
    # only an admin's schedule may follow another user's; a user's follows their own (none yet)
    assert child is not None and child.parents == ["bob/p"]
    assert admins is not None and admins.parents == ["alice/p", "root/gone"]
    assert [r.id for r in schedules.runs(1)] == [2, 1]
    tool = apps.get("alice", "tool")
    assert tool is not None and tool.version == 2 and tool.volume_key == "tool/store"  # its volume stays put
    assert [v for v, _ in apps.versions("alice", "tool")] == [1, 2]
    assert apps.get("bob", "x") is not None and apps.get("alice", "x") is None

    # the new rules: a name per owner; a shared name once among the shared apps
    added = schedules.add({**_values("p", "bob"), "parents": []})
    assert added.id == 4 and added.owner == "bob"
    with pytest.raises(Conflict):
        schedules.add({**_values("p", "bob"), "parents": []})
    assert apps.load("bob", "tool", False, {}, None, None, None, 1.0).owner == "bob"
    with pytest.raises(Conflict, match="a shared app 'tool' exists already"):
        apps.load("carol", "tool", True, {}, None, None, None, 1.0)
    apps.delete("alice", "tool")
    with store.db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM app_versions WHERE app = 'tool'")).scalar() == 1  # bob's
    store.close()


def _values(name: str, owner: str) -> dict[str, object]:
    return {
        "name": name,
        "owner": owner,
        "kind": "every",
        "expr": "PT1H",
        "tz": "UTC",
        "start_at": 0.0,
        "repeat": None,
        "max_lateness_s": None,
        "overlap": "allow",
        "catch_up": "last",
        "after_mode": "all",
        "spec": JOB,
        "enabled": True,
        "next_fire_at": None,
        "fired": 0,
        "seen": {},
        "created_at": 0.0,
    }


def test_fair_share_charges_every_existing_job_to_default(tmp_path: Path) -> None:
    """0013 over a store with jobs: each owner gets a "default" association, every job is
    charged to it, and the queue goes on in the same order."""
    store = SqlStore.for_data_dir(tmp_path)
    store.migrate("0012")
    with store.db.engine.begin() as conn:
        for i, (owner, state, prio) in enumerate(
            [("alice", "queued", 0), ("bob", "queued", 5), ("alice", "succeeded", 0), ("alice", "queued", 0)], 1
        ):
            conn.execute(
                text(
                    "INSERT INTO jobs (id, owner, state, priority, spec, req_millicpus, req_mem_mb, req_gpus,"
                    " req_disk_mb, submitted_at, queued_since, not_before, attempts, retries, requeues, blocked,"
                    " files_expired) VALUES (:id, :o, :s, :p, :spec, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)"
                ),
                {"id": i, "o": owner, "s": state, "p": prio, "spec": SPEC},
            )
    store.migrate()
    with store.db.engine.begin() as conn:
        assocs = dict(conn.execute(text("SELECT \"user\", id FROM associations WHERE account = 'default'")).all())
        charged = dict(conn.execute(text("SELECT id, assoc FROM jobs")).all())
    assert sorted(assocs) == ["alice", "bob"]
    assert charged == {1: assocs["alice"], 2: assocs["bob"], 3: assocs["alice"], 4: assocs["alice"]}
    assert [r.job_id for r in store.queued_in_order(10)] == [2, 1, 4]
